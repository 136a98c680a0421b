"""`primer report`: one self-contained HTML file that renders in headless Chromium, every plot visible."""

from __future__ import annotations

import re

import pytest

from primer.errors import PrimerError
from primer.pipeline.report import SUMMARIES, STAGE_ORDER, render, write_report
from primer.pipeline.summaries import read_summary

from report_fixture import check_in_chromium, make_run_dir

EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["'](?!data:|#)""", re.I)


def test_full_report_is_self_contained(tmp_path):
    html = render(make_run_dir(tmp_path / "run"))
    assert not EXTERNAL.search(html), EXTERNAL.search(html)
    assert "<script" not in html.replace("&lt;script", "")  # sample text is escaped, never markup
    assert "&lt;script&gt;alert(1)" in html
    # six plots of data + training curve + benchmarks + audit + time per stage
    assert html.count('<img class="plot"') >= 8
    for heading in ("Data", "Training", "On-device file", "Benchmarks", "Audit", "Generation samples", "Recipe", "Hardware"):
        assert f"<h2>{heading}" in html
    assert "gsm8k" in html and "[2.0, 18.0]" in html
    assert "<td>exercises</td>" in html and "36%" in html  # the verified share per format: 30 of 84
    assert "bundled, first 256 tokens" in html  # the quality filter's model; its NLL histogram is a plot
    assert "stage <b>" not in html  # nothing missing


def test_partial_and_failed_runs_render(tmp_path):
    html = render(make_run_dir(tmp_path / "a", stages=("synth", "curate")))
    for stage in ("tokenize", "train", "eval", "audit", "export"):
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


def test_report_renders_in_headless_chromium(tmp_path):
    rd = make_run_dir(tmp_path / "run")
    shot = check_in_chromium(write_report(rd), "report-fixture")
    assert shot.is_file()
    partial = make_run_dir(tmp_path / "partial", failed="eval")
    check_in_chromium(write_report(partial), "report-fixture-failed-eval")


def test_skipped_eval_and_audit_say_why(tmp_path):
    import json

    rd = make_run_dir(tmp_path / "run")
    for stage in ("eval", "audit"):
        p = rd / stage / "stage.json"
        rec = json.loads(p.read_text())
        rec["summary"]["skipped"] = "no benchmark data found: set PRIMER_DATA"
        p.write_text(json.dumps(rec))
    html = render(rd)
    assert "benchmarks skipped: no benchmark data found" in html
    assert "audit skipped: no benchmark data found" in html


@pytest.mark.parametrize("stage", STAGE_ORDER)
def test_a_summary_without_a_field_the_report_shows_fails_and_says_which(tmp_path, stage):
    """The summaries are typed: every field without a default is one the report shows; a stored summary
    that lacks one is an error naming it (and the report says so), never an empty table cell."""
    import dataclasses
    import json

    rd = make_run_dir(tmp_path / "run")
    path = rd / stage / "stage.json"
    rec = json.loads(path.read_text())
    cls = SUMMARIES[stage]
    shown = [f.name for f in dataclasses.fields(cls)
             if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    assert shown and read_summary(cls, rec["summary"], stage)
    for name in shown:
        partial = {k: v for k, v in rec["summary"].items() if k != name}
        with pytest.raises(PrimerError, match=rf"stage '{stage}': missing field\(s\) \['{name}'\]"):
            read_summary(cls, partial, stage)
    del rec["summary"][shown[-1]]
    path.write_text(json.dumps(rec))
    html = render(rd)
    assert f"stage <b>{stage}</b>: summary unreadable" in html and f"[&#x27;{shown[-1]}&#x27;]" in html
