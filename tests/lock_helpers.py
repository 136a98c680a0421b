"""Hold an output lock from another process (the lock is re-entrant within one process, so a test that
means "a second primer" must take it in a second process)."""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

_HOLDER = (
    "import sys, time\n"
    "from primer.common.files import DirLock\n"
    "path, kind = sys.argv[1], sys.argv[2]\n"
    "lock = DirLock.for_file(path, 'primer test') if kind == 'file' else DirLock(path, 'primer test')\n"
    "with lock:\n"
    "    print('held', flush=True)\n"
    "    time.sleep(600)\n"
)


@contextmanager
def held_elsewhere(path: str | Path, file: bool = False):
    """While inside, another process holds the lock on directory `path` (or on output file `path`)."""
    p = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path), "file" if file else "dir"], stdout=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        yield p.pid
    finally:
        p.kill()
        p.wait()
