"""Output directories and files: one lock for every directory a verb writes, and atomic writes.

`DirLock` is an advisory `flock` on `DIR/.lock`: a second process that wants the same directory
gets one line naming the directory and how to proceed, and the lock goes away with the process
(a killed run leaves no stale lock behind).
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from primer.errors import PrimerError


class DirLock:
    """with DirLock(out, "primer synth"): ...  -- exclusive use of `out` by this process."""

    def __init__(self, directory: str | Path, holder: str = "primer", hint: str = "wait for it or use another output directory") -> None:
        self.directory = Path(directory)
        self.holder = holder
        self.hint = hint
        self.fd = -1

    def __enter__(self) -> DirLock:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = -1
            raise PrimerError(f"another {self.holder} is using {self.directory}; {self.hint}") from None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd >= 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `path` so a reader (or a crash) sees the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n").encode("utf-8"))
