"""primer eval agrees with lm-evaluation-harness on the same model and documents (bench/eval.py)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="lm-eval not installed (pip install -e '.[bench]')")
def test_agrees_with_lm_eval_on_a_subset(data_dir, tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    try:
        import eval as bench_eval  # bench/eval.py
    finally:
        sys.path.pop(0)
    out = tmp_path / "summary.json"
    assert bench_eval.main(["--tasks", "piqa,winogrande,arc_challenge", "--limit", "12", "--data-dir", str(data_dir),
                            "--threads", "1", "--repeats", "1", "--output", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["max_abs_diff"] is not None and summary["max_abs_diff"] <= 0.5, summary
    assert set(summary["tasks"]) == {"piqa", "winogrande", "arc_challenge"}
