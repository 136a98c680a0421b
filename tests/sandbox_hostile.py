"""Hostile programs for the sandbox, and what must hold after each one (tests/test_sandbox.py runs them).

`breaches(mode, secrets)` runs every program under one isolation mode and returns what got out, by
name (empty: all contained). Run as a script (`python sandbox_hostile.py MODE SECRET...`) it prints
that as JSON, so the test can run the same matrix in a process with fewer capabilities
(`setpriv --bounding-set -sys_admin`, like a default Docker container).

Every program marks what it leaves running with a fresh token (a `sleep` argument, or the process
name via prctl), so what survives is found in /proc afterwards, whatever PID namespace it was in.
"""

from __future__ import annotations

import json
import os
import secrets as _secrets
import socket
import sys
import time
from pathlib import Path

from primer.sandbox import run_python


def _alive(token: str) -> list[int]:
    """Host PIDs whose command line or name carries `token`."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            comm = (d / "comm").read_text().strip()
            state = next((ln for ln in (d / "status").read_text().splitlines() if ln.startswith("State:")), "")
        except OSError:
            continue
        if (token in cmd or token in comm) and "zombie" not in state:
            pids.append(int(d.name))
    return pids


def _gone(token: str, wait: float = 2.0) -> list[int]:
    """PIDs still carrying `token` after `wait` seconds (the kernel tears a PID namespace down at once;
    the wait only absorbs scheduling on a busy machine)."""
    end = time.monotonic() + wait
    while (left := _alive(token)) and time.monotonic() < end:
        time.sleep(0.1)
    return left


def _sleep_arg() -> str:
    return f"600.{_secrets.randbelow(10**9):09d}"  # GNU sleep takes fractions: a unique, findable argument


def _name_self(token: str) -> str:
    return f"import ctypes\nctypes.CDLL(None).prctl(15, {token.encode()!r}, 0, 0, 0)\n"  # PR_SET_NAME


def breaches(mode: str, secret_paths: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}

    def note(name: str, problem: str | None) -> None:
        if problem:
            out[name] = problem

    # -- network: `_socket` straight to a listener on the host's loopback, and out to the internet
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.setblocking(False)
    port = srv.getsockname()[1]
    prog = (
        "import _socket\n"
        f"for host, port in (('127.0.0.1', {port}), ('1.1.1.1', 53)):\n"
        "    s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)\n"
        "    s.settimeout(2)\n"
        "    try:\n"
        "        s.connect((host, port))\n"
        "        print('connected', host)\n"
        "    except OSError as e:\n"
        "        print('refused', host, e)\n"
    )
    r = run_python(prog, isolation=mode, timeout=10)
    try:
        srv.accept()
        note("network: a connection reached the host's loopback", "accepted")
    except BlockingIOError:
        pass
    srv.close()
    note("network: _socket connected", "connected" in r.stdout and r.stdout)

    # -- posix.system / posix.execv / posix.fork reach around the in-interpreter guard: what they run
    # must be as contained as the program, and nothing may outlive it
    host_file = Path(os.path.realpath(sys.base_prefix)) / f"primer-sandbox-escape-{_secrets.token_hex(6)}"
    outside = Path("/var/tmp") / f"primer-sandbox-escape-{_secrets.token_hex(6)}"
    arg = _sleep_arg()
    prog = (
        "import posix\n"
        f"posix.system('echo pwned > {host_file}; echo pwned > {outside}; /bin/sleep {arg} &')\n"
        f"pid = posix.fork()\n"
        f"if pid == 0:\n"
        f"    posix.execv('/bin/sleep', ['sleep', '{arg}'])\n"
        "print('forked', pid)\n"
    )
    r = run_python(prog, isolation=mode, timeout=10)
    note("posix.system wrote into the (read-only) Python install", host_file.exists() and str(host_file))
    note("posix.system wrote a host file", outside.exists() and str(outside))
    note("posix.fork/execv/system children outlived the program", _gone(arg) and f"pids {_alive(arg)}")
    for f in (host_file, outside):
        f.unlink(missing_ok=True)

    # -- a setsid orphan (its own session, so a process-group kill misses it), also past a timeout
    arg = _sleep_arg()
    prog = (
        "import posix, time\n"
        "if posix.fork() == 0:\n"
        "    posix.setsid()\n"
        "    if posix.fork() == 0:\n"
        f"        posix.execv('/bin/sleep', ['sleep', '{arg}'])\n"
        "    posix._exit(0)\n"
        "time.sleep(60)\n"
    )
    r = run_python(prog, isolation=mode, timeout=1.5)
    note("setsid orphan: the program was not stopped at its timeout", r.status != "timeout" and r.status)
    note("setsid orphan outlived the sandbox", _gone(arg) and f"pids {_alive(arg)}")

    # -- fork bomb through posix.fork (os.fork is removed by the guard)
    token = "pb" + _secrets.token_hex(6)
    t0 = time.monotonic()
    r = run_python(_name_self(token) + "import posix\nwhile True:\n    try:\n        posix.fork()\n"
                   "    except OSError:\n        pass\n", isolation=mode, timeout=2, max_procs=32)
    note("fork bomb: not stopped", (r.passed or time.monotonic() - t0 > 20) and f"{r.status} {time.monotonic() - t0:.1f}s")
    note("fork bomb: children outlived the sandbox", _gone(token) and f"{len(_alive(token))} processes")

    # -- files in /tmp and /dev/shm must vanish with the sandbox
    names = [f"/tmp/primer-sandbox-leftover-{_secrets.token_hex(6)}", f"/dev/shm/primer-sandbox-leftover-{_secrets.token_hex(6)}"]
    prog = "".join(f"open({n!r}, 'w').write('left behind')\n" for n in names) + "print('wrote')\n"
    r = run_python(prog, isolation=mode)
    note("/tmp and /dev/shm: the program could not write its scratch files", not r.passed and r.stderr[-300:])
    for n in names:
        note(f"{n.split('/')[1]} write outlived the sandbox", os.path.exists(n) and n)
        if os.path.exists(n):
            os.unlink(n)

    # -- the project, the benchmark folder (HumanEval's canonical solutions), the home directory
    prog = (
        "import os\n"
        f"for p in {secret_paths!r}:\n"
        "    try:\n"
        "        if os.path.isdir(p):\n"
        "            print('LISTED', p, os.listdir(p)[:3])\n"
        "        else:\n"
        "            print('READ', p, open(p, 'rb').read(40))\n"
        "    except OSError as e:\n"
        "        print('hidden', p, type(e).__name__)\n"
    )
    r = run_python(prog, isolation=mode)
    note("secret paths: the probe did not run", not r.passed and r.stderr[-300:])
    for line in r.stdout.splitlines():
        if line.startswith(("LISTED", "READ")):
            note(f"visible: {line.split()[1]}", line[:200])

    # -- 20 GB allocation, and an infinite loop
    r = run_python("x = bytearray(20 * 1024**3)\nprint(len(x))", isolation=mode)
    note("20 GB allocation was not refused", (r.passed or "MemoryError" not in r.stderr) and f"{r.status} {r.stderr[-200:]}")
    t0 = time.monotonic()
    r = run_python("while True:\n    pass", isolation=mode, timeout=1.5)
    note("infinite loop not stopped at its timeout", (r.status != "timeout" or time.monotonic() - t0 > 10)
         and f"{r.status} {time.monotonic() - t0:.1f}s")
    return out


if __name__ == "__main__":
    print(json.dumps(breaches(sys.argv[1], sys.argv[2:])))
