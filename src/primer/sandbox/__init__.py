"""Run untrusted, model-written Python (HumanEval/MBPP tests, GSM8K programs, synth's checked
exercises) in an isolated, limited process.

Isolation, the first that works on this machine (`available()` says which and why not):
  * `bwrap`: bubblewrap, the sandbox Flatpak uses (Debian/Ubuntu package `bubblewrap`);
  * `namespaces`: the same sandbox built by primer from kernel namespaces (`namespaces.py`), for
    machines without bubblewrap that allow user namespaces (or where primer runs as root).
Both give the program: no network (a new network namespace), a root of read-only system directories
and the Python install only (the project, its data, the benchmark folder and home directories are
absent), private tmpfs /tmp and /dev/shm that vanish with it, its own PID namespace whose processes
all die when it ends or is killed (`setsid` orphans and fork bombs included), no privileges (a root
caller's program runs as `nobody`), and hard resource limits (address space, CPU seconds, file size,
open files, processes) it sets on itself before the program starts (`inside.py`).

Where neither works (a container without user namespaces, a kernel that forbids them), model code is
refused with a `PrimerError` that says why and what to install, unless the caller allowed unsafe
execution (`allow_unsafe(True)`, the `--unsafe-code` flag): then only the resource limits, a fresh
session killed on timeout, and the in-interpreter guard remain.

A program passes when it exits 0 within its limits *and* ran to its end: the runner prints a random
marker after the program returns, so `exit(0)` before the tests run is a failure.
"""

from __future__ import annotations

import functools
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from primer.errors import PrimerError

ISOLATIONS = ("bwrap", "namespaces")
"""Isolation modes, strongest-supported first."""
UNSAFE = "none"
UNSAFE_FLAG = "--unsafe-code"
OUTPUT_LIMIT = 64 * 1024  # bytes of stdout/stderr kept in the result
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
_HERE = Path(__file__).resolve().parent
_unsafe = False


@dataclass
class Result:
    status: str
    """passed | failed | timeout"""
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    isolation: str = ""
    """bwrap | namespaces | none"""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


# -- which isolation this machine offers ---------------------------------------------------------------


@contextmanager
def allow_unsafe(flag: bool = True) -> Iterator[None]:
    """Within this block, run model code without isolation where none is available (resource limits only)."""
    global _unsafe
    before, _unsafe = _unsafe, bool(flag) or _unsafe
    try:
        yield
    finally:
        _unsafe = before


@functools.cache
def available() -> dict[str, str | None]:
    """Each isolation mode -> None when it works here, else why not (probed once per process)."""
    out: dict[str, str | None] = {}
    for mode in ISOLATIONS:
        if mode == "bwrap" and not shutil.which("bwrap"):
            out[mode] = "bubblewrap is not installed (no `bwrap` on PATH)"
            continue
        r = run_python("print(6 * 7)", timeout=20, isolation=mode)
        ok = r.passed and r.stdout.strip() == "42"
        why = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
        out[mode] = None if ok else why.removeprefix("bwrap: ")
    return out


def isolation_mode() -> str:
    """The isolation model code gets here: the first mode that works, else 'none' when unsafe runs are
    allowed, else a PrimerError that says why and how to fix it."""
    why = available()
    for mode in ISOLATIONS:
        if why[mode] is None:
            return mode
    if _unsafe:
        return UNSAFE
    raise PrimerError(
        "refusing to run model-written code without isolation: "
        + "; ".join(f"{m}: {why[m]}" for m in ISOLATIONS)
        + ". Install bubblewrap (apt install bubblewrap) or allow user namespaces "
        "(sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0; in Docker: a seccomp profile "
        f"that permits them), or pass {UNSAFE_FLAG} to run it with resource limits only (it can then reach "
        "the network and your files)")


# -- running one program ------------------------------------------------------------------------------


def _nobody() -> tuple[int, int]:
    try:
        pw = pwd.getpwnam("nobody")
        return pw.pw_uid, pw.pw_gid
    except KeyError:
        return 65534, 65534


def _world_usable(path: str) -> bool:
    """True when a user with no rights of its own can execute `path` (every parent dir o+x)."""
    p = os.path.realpath(path)
    try:
        if not os.stat(p).st_mode & 0o001:
            return False
        while p != os.path.dirname(p):
            p = os.path.dirname(p)
            if not os.stat(p).st_mode & 0o001:
                return False
        return True
    except OSError:
        return False


def _interpreter(as_nobody: bool) -> str:
    """This Python; for a sandbox started as `nobody`, one that nobody can reach (programs need only the
    stdlib, so the system python3 will do when ours lives under /root)."""
    ours = os.path.realpath(sys.executable)
    if not as_nobody or _world_usable(ours):
        return ours
    v = sys.version_info
    for name in (f"python{v.major}.{v.minor}", "python3"):
        cand = shutil.which(name, path="/usr/local/bin:/usr/bin:/bin")
        if cand and _world_usable(cand):
            return os.path.realpath(cand)
    return ours


def _python_home(python: str) -> list[str]:
    """The directory a Python install needs besides the system ones: its prefix, unless under one of them."""
    ours = python == os.path.realpath(sys.executable)
    prefix = os.path.realpath(sys.base_prefix) if ours else os.path.dirname(os.path.dirname(python))
    return [] if any(prefix == d or prefix.startswith(d + "/") for d in SYSTEM_DIRS) else [prefix]


def _limits(timeout: float, memory_mb: int, max_procs: int, max_file_mb: int) -> dict[str, int]:
    return {"as": memory_mb << 20, "cpu": int(timeout) + 1, "fsize": max_file_mb << 20, "nofile": 64,
            "nproc": max_procs, "core": 0}


def _env(mode: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1",
            "PYTHONDONTWRITEBYTECODE": "1", "PRIMER_SANDBOX": mode, "no_proxy": "*", "NO_PROXY": "*"}


def _command(mode: str, args: list[str], tmpfs_bytes: int, scratch: str) -> tuple[list[str], dict]:
    """(argv, extra Popen arguments) that run inside.py with `args` under `mode`."""
    runner = (_HERE / "inside.py").read_text()
    root = os.geteuid() == 0
    if mode == "bwrap":
        python = _interpreter(as_nobody=root)
        argv = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session"]
        for d in SYSTEM_DIRS + tuple(_python_home(python)):
            if os.path.islink(d):
                argv += ["--symlink", os.readlink(d), d]
            elif os.path.isdir(d):
                argv += ["--ro-bind", d, d]
        argv += ["--proc", "/proc", "--dev", "/dev", "--size", str(tmpfs_bytes), "--tmpfs", "/tmp",
                 "--size", str(tmpfs_bytes), "--tmpfs", "/dev/shm", "--chdir", "/tmp",
                 "--", python, "-I", "-c", runner, *args]
        # bubblewrap started by root keeps root's uid on the host side; started as nobody it cannot
        # touch root's files and sets up its namespaces the unprivileged way.
        extra = {"user": _nobody()[0], "group": _nobody()[1], "extra_groups": []} if root else {}
        return argv, extra
    if mode == "namespaces":
        python = _interpreter(as_nobody=root)
        newroot = os.path.join(scratch, "root")
        os.mkdir(newroot, 0o700)
        cfg = {"python": python, "runner": runner, "args": args, "env": _env(mode), "root": newroot,
               "ro": list(SYSTEM_DIRS) + _python_home(python), "tmpfs_bytes": tmpfs_bytes, "parent": os.getpid()}
        return [python, "-I", "-c", (_HERE / "namespaces.py").read_text(), json.dumps(cfg)], {}
    if mode == UNSAFE:
        return [os.path.realpath(sys.executable), "-I", "-c", runner, *args], {"cwd": scratch}
    raise PrimerError(f"unknown sandbox isolation '{mode}'; known: {', '.join(ISOLATIONS + (UNSAFE,))}")


def run_python(
    code: str,
    *,
    timeout: float = 10.0,
    memory_mb: int = 2048,
    max_procs: int = 64,
    max_file_mb: int = 16,
    isolation: str | None = None,
) -> Result:
    """Run `code` as a Python program in the sandbox; never raises for anything the code does.

    isolation: None = the best this machine offers (`isolation_mode()`, which refuses when there is none
    and unsafe runs are not allowed); or a mode by name (tests run every mode).
    """
    mode = isolation or isolation_mode()
    start = time.monotonic()
    marker = "__primer_sandbox_done_" + secrets.token_hex(16)
    limits = _limits(timeout, memory_mb, max_procs, max_file_mb)
    with tempfile.TemporaryDirectory(prefix="primer-sandbox-") as scratch:
        program = os.path.join(scratch, "program.py")
        with open(program, "w", encoding="utf-8") as f:
            f.write(code)
        argv, extra = _command(mode, [marker, json.dumps(limits)], 4 * (max_file_mb << 20), scratch)
        out_path, err_path = os.path.join(scratch, "stdout"), os.path.join(scratch, "stderr")
        with open(program, "rb") as src, open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(argv, stdin=src, stdout=out, stderr=err, start_new_session=True,
                                    env=_env(mode), **extra)
            timed_out = False
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill(proc)
                rc = proc.wait()
        stdout, stderr = _read(out_path), _read(err_path)
        finished = _tail(out_path).rstrip().endswith(marker)
        stdout = stdout.replace("\n" + marker + "\n", "")
    status = "timeout" if timed_out else ("passed" if rc == 0 and finished else "failed")
    return Result(status, rc, stdout, stderr, time.monotonic() - start, mode)


def _kill(proc: subprocess.Popen) -> None:
    """SIGTERM the launcher (which SIGKILLs the program and waits for its namespace to empty), then
    SIGKILL the whole session: bwrap, or a launcher that did not stop, or the unsafe mode's program."""
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=2)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read(path: str) -> str:
    with open(path, "rb") as f:
        data = f.read(OUTPUT_LIMIT)
    return data.decode("utf-8", errors="replace")


def _tail(path: str, n: int = 256) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, os.path.getsize(path) - n))
        return f.read().decode("utf-8", errors="replace")


def run_many(programs: list[str], *, timeout: float = 10.0, workers: int | None = None, **kw) -> list[Result]:
    """Run several programs concurrently (one process each), results in input order."""
    if not programs:
        return []
    mode = kw.pop("isolation", None) or isolation_mode()  # refuse (or probe) once, before any program starts
    workers = workers or max(1, min(4, os.cpu_count() or 1, len(programs)))
    with ThreadPoolExecutor(workers) as ex:
        return list(ex.map(lambda c: run_python(c, timeout=timeout, isolation=mode, **kw), programs))
