"""The code sandbox contains malicious programs and scores them as failed; correct code passes."""

import os
import time

import pytest

from primer.eval.sandbox import run_many, run_python


def test_correct_solution_passes():
    r = run_python("def add(a, b):\n    return a + b\nassert add(2, 3) == 5\nprint('ok')")
    assert r.passed and r.stdout.strip() == "ok"


def test_wrong_solution_fails():
    r = run_python("def add(a, b):\n    return a * b\nassert add(2, 3) == 5")
    assert r.status == "failed" and "AssertionError" in r.stderr


def test_infinite_loop_times_out():
    t = time.monotonic()
    r = run_python("while True:\n    pass", timeout=2)
    assert r.status == "timeout" and not r.passed
    assert time.monotonic() - t < 10


def test_sleeping_program_times_out():
    r = run_python("import time\ntime.sleep(60)", timeout=1)
    assert r.status == "timeout"


def test_huge_allocation_is_contained():
    r = run_python("x = bytearray(64 * 1024**3)\nprint(len(x))", timeout=10, memory_mb=512)
    assert not r.passed and "MemoryError" in r.stderr


def test_fork_bomb_is_contained():
    # os.fork is removed by the guard; posix.fork bypasses it and meets the process limit,
    # the timeout, and (where available) the PID namespace that dies with the program.
    bomb = "import posix\nwhile True:\n    try:\n        posix.fork()\n    except OSError:\n        pass\n"
    t = time.monotonic()
    r = run_python(bomb, timeout=3, max_procs=32)
    assert not r.passed
    assert time.monotonic() - t < 20
    r2 = run_python("import os\nwhile True:\n    os.fork()\n", timeout=3)
    assert not r2.passed
    # the machine still runs programs normally afterwards
    assert run_python("print(1)").passed


def test_file_deletion_outside_its_dir_is_contained(tmp_path):
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("keep me")
    target = str(sentinel)
    evil = (
        "import os, shutil, posix, subprocess\n"
        f"p = {target!r}\n"
        "done = False\n"
        "for f in (lambda: os.remove(p), lambda: os.unlink(p), RAW,\n"
        "          lambda: shutil.rmtree(os.path.dirname(p)), lambda: open(p, 'w').write('gone'),\n"
        "          lambda: subprocess.run(['rm', '-rf', os.path.dirname(p)])):\n"
        "    try:\n"
        "        f()\n"
        "        done = True\n"
        "    except Exception as e:\n"
        "        print(type(e).__name__)\n"
        "assert done, 'every attempt was refused'\n"
    )
    # posix.unlink bypasses the in-interpreter guard; only the switch to `nobody` (as root) stops it.
    evil = evil.replace("RAW", "lambda: posix.unlink(p)" if os.geteuid() == 0 else "lambda: 1 / 0")
    r = run_python(evil, timeout=10)
    assert not r.passed
    assert sentinel.read_text() == "keep me"


def test_network_is_blocked():
    r = run_python("import socket\ns = socket.create_connection(('127.0.0.1', 9), timeout=2)\nprint('connected')")
    assert not r.passed and "connected" not in r.stdout
    r = run_python("import _socket\ns = _socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', 9))\nprint('connected')")
    assert "connected" not in r.stdout


def test_runs_in_a_temporary_directory_with_a_clean_environment():
    os.environ["PRIMER_SECRET_FOR_TEST"] = "x"
    try:
        r = run_python("import os\nprint(os.getcwd())\nprint(os.environ.get('PRIMER_SECRET_FOR_TEST'))")
    finally:
        del os.environ["PRIMER_SECRET_FOR_TEST"]
    cwd, secret = r.stdout.split()
    assert "primer-sandbox-" in cwd and secret == "None"
    assert not os.path.exists(cwd)  # removed afterwards


def test_huge_output_is_bounded():
    r = run_python("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", timeout=3, max_file_mb=1)
    assert not r.passed and len(r.stdout) <= 64 * 1024


def test_run_many_keeps_order():
    rs = run_many([f"print({i})" for i in range(5)] + ["raise SystemExit(3)"])
    assert [r.stdout.strip() for r in rs[:5]] == [str(i) for i in range(5)]
    assert rs[5].status == "failed" and rs[5].returncode == 3


@pytest.mark.parametrize("escape", ["exit(0)", "import sys\nsys.exit(0)", "import os\nos._exit(0)"])
def test_exiting_before_the_tests_is_a_failure(escape):
    # A completion that exits with status 0 before the asserts run must not count as a pass.
    r = run_python(f"def f():\n    return 1\n{escape}\nassert f() == 2\n")
    assert r.returncode == 0 and r.status == "failed"
