"""The code sandbox: correct code passes, wrong or early-exiting code fails, and hostile programs stay
contained under every isolation mode this machine offers, also with fewer capabilities (a default
Docker container: `setpriv --bounding-set -sys_admin`); where no isolation works, model code is refused
unless unsafe execution is asked for."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA_DIR
from sandbox_hostile import breaches

from primer.errors import PrimerError
from primer.sandbox import ISOLATIONS, allow_unsafe, available, isolation_mode, run_many, run_python

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent


def _secret_paths() -> list[str]:
    """What model code must not see: the project, the benchmark folder (HumanEval's canonical solutions
    when the data is here), the home directory's files."""
    paths = [REPO / "README.md", REPO, Path.home() / ".bashrc", Path.home() / ".cache", DATA_DIR,
             DATA_DIR / "humaneval" / "HumanEval.jsonl"]
    return [str(p) for p in paths if p.exists()]


def _mode(mode: str) -> str:
    why = available()[mode]
    if why is not None:
        pytest.skip(f"{mode} isolation is not available here: {why}")
    return mode


@pytest.mark.parametrize("mode", ISOLATIONS)
def test_hostile_programs_are_contained(mode):
    assert breaches(_mode(mode), _secret_paths()) == {}


@pytest.mark.parametrize("mode", ISOLATIONS)
def test_hostile_programs_are_contained_without_cap_sys_admin(mode):
    """The case the old sandbox lost: root without CAP_SYS_ADMIN, as in a default Docker container."""
    _mode(mode)
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to drop CAP_SYS_ADMIN from the bounding set")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(HERE)])}
    p = subprocess.run(["setpriv", "--bounding-set", "-sys_admin", "--", sys.executable, str(HERE / "sandbox_hostile.py"),
                        mode, *_secret_paths()], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.splitlines()[-1]) == {}


def _without_namespaces(code: str) -> subprocess.CompletedProcess:
    """Run `code` where bubblewrap and namespaces both fail for real: inside a user namespace that may
    not create another (bwrap --disable-userns), without capabilities."""
    if "bwrap" not in available() or available()["bwrap"] is not None:
        pytest.skip("needs a working bwrap to build the no-namespaces environment")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(HERE)])}
    return subprocess.run(["bwrap", "--dev-bind", "/", "/", "--unshare-user", "--disable-userns", "--uid", "1000",
                           "--gid", "1000", "--", sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)


def test_without_isolation_model_code_is_refused_unless_unsafe_is_asked_for():
    p = _without_namespaces(
        "import json\n"
        "from primer.errors import PrimerError\n"
        "from primer.sandbox import allow_unsafe, available, isolation_mode, run_python\n"
        "out = {'available': available()}\n"
        "try:\n"
        "    run_python('print(1)')\n"
        "except PrimerError as e:\n"
        "    out['refused'] = str(e)\n"
        "with allow_unsafe(True):\n"
        "    r = run_python('print(1)')\n"
        "    out['unsafe'] = [r.status, r.isolation, r.stdout]\n"
        "print(json.dumps(out))\n")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.splitlines()[-1])
    assert all(why for why in out["available"].values())  # both modes fail here, each with its reason
    assert "refusing to run model-written code" in out["refused"] and "--unsafe-code" in out["refused"]
    assert "apt install bubblewrap" in out["refused"]
    assert out["unsafe"] == ["passed", "none", "1\n"]


def test_correct_solution_passes():
    r = run_python("def add(a, b):\n    return a + b\nassert add(2, 3) == 5\nprint('ok')")
    assert r.passed and r.stdout.strip() == "ok" and r.isolation == isolation_mode()


def test_wrong_solution_fails():
    r = run_python("def add(a, b):\n    return a * b\nassert add(2, 3) == 5")
    assert r.status == "failed" and "AssertionError" in r.stderr


def test_python_level_guard_still_names_the_accident():
    r = run_python("import shutil\nshutil.rmtree('/usr')")
    assert r.status == "failed" and "TypeError" in r.stderr  # rmtree removed: a clear error, nothing touched


def test_huge_output_is_bounded():
    r = run_python("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", timeout=3, max_file_mb=1)
    assert not r.passed and len(r.stdout) <= 64 * 1024


def test_runs_in_a_scratch_directory_with_a_clean_environment():
    os.environ["PRIMER_SECRET_FOR_TEST"] = "x"
    try:
        r = run_python("import os\nprint(os.getcwd())\nprint(os.environ.get('PRIMER_SECRET_FOR_TEST'))")
    finally:
        del os.environ["PRIMER_SECRET_FOR_TEST"]
    assert r.stdout.split() == ["/tmp", "None"]


def test_run_many_keeps_order():
    rs = run_many([f"print({i})" for i in range(5)] + ["raise SystemExit(3)"])
    assert [r.stdout.strip() for r in rs[:5]] == [str(i) for i in range(5)]
    assert rs[5].status == "failed" and rs[5].returncode == 3


@pytest.mark.parametrize("escape", ["exit(0)", "import sys\nsys.exit(0)", "import os\nos._exit(0)"])
def test_exiting_before_the_tests_is_a_failure(escape):
    # A completion that exits with status 0 before the asserts run must not count as a pass.
    r = run_python(f"def f():\n    return 1\n{escape}\nassert f() == 2\n")
    assert r.returncode == 0 and r.status == "failed"


def test_unknown_isolation_is_an_error():
    with pytest.raises(PrimerError, match="unknown sandbox isolation"):
        run_python("print(1)", isolation="chroot")
    with allow_unsafe(False):
        assert isolation_mode() in ISOLATIONS  # this machine isolates; the flag changes nothing here
