"""Output directories and files: one lock for every output a verb writes, atomic writes, and content digests.

`DirLock` claims an output directory (or, with `for_file`, one output file) for this process before
any work starts, so every verb fails fast and in one line when it cannot write there:
  * the path is a file where a directory is wanted (or the reverse), or cannot be created, or is not
    writable (the lock file is created in it: that is the writability check) -> `PrimerError` naming
    the path;
  * another process holds it -> `PrimerError` naming the holder (pid, command, start time, written
    into the lock file) and how to proceed.
The lock is an advisory `flock` on `DIR/.lock` (`DIR/.NAME.lock` for a file), so it goes away with
the process (a killed run leaves no stale lock behind). It is re-entrant within a process: a verb
called by `primer run`, or a library function that locks what its caller already locked, goes on.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from primer.errors import PrimerError

_held: dict[Path, int] = {}  # lock file -> how many times this process entered it
_held_lock = threading.Lock()


def os_problem(e: OSError, path: str | Path | None = None) -> str:
    """One line for an OSError about `path`: what is wrong with it and what to do."""
    path = path if path is not None else (e.filename or "")
    why = OS_HINTS.get(e.errno or -1, e.strerror or str(e))
    return f"{path}: {why}" if path else why


OS_HINTS = {
    errno.ENOENT: "not found",
    errno.ENOTDIR: "a part of this path is a file, not a directory",
    errno.EISDIR: "is a directory, not a file",
    errno.EEXIST: "already exists",
    errno.EACCES: "permission denied; choose a location you can write to (or fix its permissions)",
    errno.EPERM: "operation not permitted; choose a location you can write to",
    errno.EROFS: "is on a read-only file system; choose a writable location",
    errno.ENOSPC: "no space left on the device; free some or choose another location",
    errno.EDQUOT: "disk quota exceeded; free some space or choose another location",
    errno.ENAMETOOLONG: "file name too long",
}
"""The OS errors a user causes and fixes (a path that is wrong, full, or not theirs); the CLI shows these
as one line, every other OSError keeps its traceback."""


class DirLock:
    """with DirLock(out, "primer synth"): ...  -- exclusive use of directory `out` by this process."""

    def __init__(self, directory: str | Path, holder: str = "primer",
                 hint: str = "wait for it to finish or use another output directory", *, _file: Path | None = None,
                 _any_kind: bool = False) -> None:
        self.directory = Path(directory)
        self.holder = holder
        self.hint = hint
        self.file = _file
        self.any_kind = _any_kind
        self.lock_path = self.directory / (f".{_file.name}.lock" if _file is not None else ".lock")
        self.fd = -1

    @classmethod
    def for_file(cls, path: str | Path, holder: str = "primer",
                 hint: str = "wait for it to finish or write another file") -> DirLock:
        """Claim one output file (its directory is created; the lock sits beside it)."""
        path = Path(path)
        return cls(path.parent, holder, hint, _file=path)

    @classmethod
    def beside(cls, path: str | Path, holder: str = "primer",
               hint: str = "wait for it to finish or write elsewhere") -> DirLock:
        """Claim an output that is replaced whole (a file, or a directory renamed into place), by a lock
        beside it, which the replacement does not touch."""
        path = Path(path)
        return cls(path.parent, holder, hint, _file=path, _any_kind=True)

    def _check_paths(self) -> None:
        target = self.file if self.file is not None else self.directory
        for p in [*reversed(self.directory.parents), self.directory]:
            if p.exists() and not p.is_dir():
                raise PrimerError(f"{p} is a file, not a directory; "
                                  f"{'give an output directory there' if p == self.directory else 'fix the path'} "
                                  "(or move the file away)")
        if self.file is not None and not self.any_kind and self.file.is_dir():
            raise PrimerError(f"{self.file} is a directory; give a file name for the output")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PrimerError(f"cannot create the output directory: {os_problem(e, e.filename or target)}") from None

    def __enter__(self) -> DirLock:
        self._check_paths()
        self._key = self.lock_path.resolve()
        with _held_lock:
            if self._key in _held:  # this process holds it already (e.g. `primer run` around a stage)
                _held[self._key] += 1
                return self
        try:
            self.fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise PrimerError(f"cannot write to the output directory: {os_problem(e, self.directory)}") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = _read_holder(self.fd)
            os.close(self.fd)
            self.fd = -1
            what = self.file if self.file is not None else self.directory
            raise PrimerError(f"{what} is in use by another {self.holder}{who}; {self.hint}") from None
        os.ftruncate(self.fd, 0)
        info = {"pid": os.getpid(), "command": " ".join(["primer", *sys.argv[1:]]) if sys.argv else self.holder,
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.pwrite(self.fd, (json.dumps(info) + "\n").encode(), 0)
        with _held_lock:
            _held[self._key] = 1
        return self

    def __exit__(self, *exc: Any) -> None:
        with _held_lock:
            _held[self._key] -= 1
            if not _held[self._key]:
                del _held[self._key]
        if self.fd >= 0:  # the outermost holder releases it
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1


def _read_holder(fd: int) -> str:
    """' (pid 123: primer train ..., since 12:00:01)' from a held lock file, or '' when it says nothing."""
    try:
        raw = os.pread(fd, 4096, 0).decode("utf-8", errors="replace").strip()
        info = json.loads(raw)
        return f" (pid {info['pid']}: {info['command']}, since {info['started']})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def sha256_file(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes, read a MiB at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_KEPT_FROM = 1 << 20  # files this size or larger keep their digest in primer's cache, by (size, mtime, inode)


def content_digest(path: str | Path, say: Callable[[str], None] | None = None) -> str:
    """What a file or a folder holds, as one sha256 hex digest: a file's bytes; a folder's files, each by its path
    relative to the folder and its bytes, in path order (empty folders do not count).

    Why bytes and not size + mtime: a copied, re-extracted or freshly cloned folder of the same data has new mtimes,
    and a run's fingerprint that counted them started every stage after it over (a day of training) for nothing.
    A file of 1 MiB or more is read once per (size, mtime, inode): its digest is kept in primer's cache
    (`file-digests.json`), as git and DVC keep theirs, so a large corpus is not read again at every `primer run`.
    `say` hears one line before more than 1 GiB is read."""
    from primer.common.paths import cache_dir

    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    store = cache_dir() / "file-digests.json"
    try:
        kept = json.loads(store.read_text())
    except (OSError, ValueError):
        kept = {}
    todo, stats = 0, {}
    for f in files:
        st = f.stat()
        stats[f] = [st.st_size, st.st_mtime_ns, st.st_ino]
        if st.st_size >= _KEPT_FROM and (kept.get(str(f.resolve())) or {}).get("stat") != stats[f]:
            todo += st.st_size
    if todo > 1 << 30 and say:
        say(f"reading {todo / (1 << 30):.1f} GiB under {p} for its fingerprint (once: kept in {store})")
    h, changed = hashlib.sha256(), False
    for f in files:
        key, entry = str(f.resolve()), None
        if stats[f][0] >= _KEPT_FROM:
            entry = kept.get(key)
            if not entry or entry.get("stat") != stats[f]:
                entry = kept[key] = {"stat": stats[f], "sha256": sha256_file(f)}
                changed = True
        digest = entry["sha256"] if entry else sha256_file(f)
        h.update(f"{f.relative_to(p) if p.is_dir() else ''}\0{digest}\n".encode())
    if changed:
        kept = {k: v for k, v in kept.items() if os.path.exists(k)}  # files gone since: forgotten
        try:  # a cache that cannot be written costs only the reading next time
            store.parent.mkdir(parents=True, exist_ok=True)
            tmp = store.with_name(f"{store.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(kept))
            os.replace(tmp, store)
        except OSError:
            pass
    return h.hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `path` so a reader (or a crash) sees the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n").encode("utf-8"))
