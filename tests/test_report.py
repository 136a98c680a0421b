"""`primer report`: one self-contained HTML file that renders in headless Chromium, every plot visible."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from primer.errors import PrimerError
from primer.report import render, write_report

from report_fixture import make_run_dir

ARTIFACTS = Path(os.environ.get("PRIMER_TEST_ARTIFACTS", Path(__file__).resolve().parent / "artifacts"))
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["'](?!data:|#)""", re.I)


def test_full_report_is_self_contained(tmp_path):
    html = render(make_run_dir(tmp_path / "run"))
    assert not EXTERNAL.search(html), EXTERNAL.search(html)
    assert "<script" not in html.replace("&lt;script", "")  # sample text is escaped, never markup
    assert "&lt;script&gt;alert(1)" in html
    # six plots of data + training curve + benchmarks + audit + time per stage
    assert html.count('<img class="plot"') >= 8
    for heading in ("Data", "Training", "Benchmarks", "Audit", "Generation samples", "Recipe", "Hardware"):
        assert f"<h2>{heading}" in html
    assert "gsm8k" in html and "[2.0, 18.0]" in html
    assert "stage <b>" not in html  # nothing missing


def test_partial_and_failed_runs_render(tmp_path):
    html = render(make_run_dir(tmp_path / "a", stages=("synth", "curate")))
    for stage in ("tokenize", "train", "eval", "audit"):
        assert f"stage <b>{stage}</b> not run" in html
    html = render(make_run_dir(tmp_path / "b", failed="train"))
    assert "stage <b>train</b> failed" in html and "something broke" in html
    assert "at stage <b>train</b>" in html


def test_not_a_run_dir(tmp_path):
    with pytest.raises(PrimerError, match="not found"):
        render(tmp_path / "nope")
    with pytest.raises(PrimerError, match="not a primer run directory"):
        render(tmp_path)


def test_cli_report(tmp_path):
    from primer.cli import main

    rd = make_run_dir(tmp_path / "run")
    assert main(["report", str(rd), "-o", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").stat().st_size > 10_000


# ----------------------------------------------------------------------------------------------
# Headless Chromium


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("headless Chromium not installed (Debian: apt-get install chromium); report rendering not checked")


def _chrome(exe: str, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
             f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args],
            capture_output=True, text=True, timeout=timeout,
        )


def check_in_chromium(report: Path, name: str) -> Path:
    """Screenshot `report` into the artifacts dir and check that every <img> decoded and nothing was blocked."""
    exe = chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"{name}.png"
    shot.unlink(missing_ok=True)
    r = _chrome(exe, f"--screenshot={shot}", "--window-size=1280,4000", "--hide-scrollbars", report.resolve().as_uri())
    assert shot.is_file() and shot.stat().st_size > 20_000, r.stderr[-3000:]
    console = [line for line in r.stderr.splitlines() if "CONSOLE" in line or "Refused" in line
               or "net::ERR" in line]
    assert not console, console

    # The report itself has no script (its CSP forbids any); a probe copy adds one that counts images
    # whose bitmap decoded (naturalWidth > 0) and writes the result into the DOM for --dump-dom.
    html = report.read_text()
    n_img = html.count("<img ")
    probe = report.with_name(report.stem + ".probe.html")
    script = ("<script>window.addEventListener('load',()=>{const im=[...document.images];"
              "const ok=im.filter(i=>i.complete&&i.naturalWidth>0&&i.naturalHeight>0).length;"
              "const p=document.createElement('p');p.id='probe';p.textContent='IMAGES '+ok+'/'+im.length;"
              "document.body.appendChild(p);});</script>")
    probe.write_text(re.sub(r"<meta http-equiv=\"Content-Security-Policy\"[^>]*>", "", html)
                     .replace("</body>", script + "</body>"))
    r = _chrome(exe, "--dump-dom", "--virtual-time-budget=10000", probe.resolve().as_uri())
    m = re.search(r"IMAGES (\d+)/(\d+)", r.stdout)
    assert m, r.stderr[-3000:]
    assert int(m.group(2)) == n_img and int(m.group(1)) == n_img, m.group(0)
    return shot


def test_report_renders_in_headless_chromium(tmp_path):
    rd = make_run_dir(tmp_path / "run")
    shot = check_in_chromium(write_report(rd), "report-fixture")
    assert shot.is_file()
    partial = make_run_dir(tmp_path / "partial", failed="eval")
    check_in_chromium(write_report(partial), "report-fixture-failed-eval")
