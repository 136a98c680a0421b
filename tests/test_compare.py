"""`primer compare` on eval results files: two evaluations paired item by item (primer.eval.items)."""

import json
import os
import subprocess
import sys

import pytest

from primer.errors import PrimerError
from primer.eval.items import is_item_mean, item_values, paired_values


def test_items_pair_by_document_with_each_metrics_own_items():
    """IFEval's instruction-level verdicts are items of their own; a metric a document lacks (an XSTest rate of the
    other half) leaves it out; documents pair by doc_id whatever their order; a perplexity is no mean of items."""
    base = [{"doc_id": 0, "scores": {"prompt": True, "inst": [True, False], "unsafe": 1.0, "ppl": [-12.5, 4]}},
            {"doc_id": 1, "scores": {"prompt": False, "inst": [False], "safe": 0.0, "ppl": [-3.0, 2]}},
            {"doc_id": 2, "scores": {"prompt": True, "inst": [True], "unsafe": 0.0, "ppl": [-1.0, 1]}}]
    other = [{"doc_id": 1, "scores": {"prompt": True, "inst": [True], "safe": 1.0}},  # another order, doc 2 missing
             {"doc_id": 0, "scores": {"prompt": False, "inst": [True, True], "unsafe": 0.0}}]
    assert item_values(base, "unsafe") == {0: [1.0], 2: [0.0]}
    assert paired_values(base, other, "prompt") == ([1.0, 0.0], [0.0, 1.0])
    assert paired_values(base, other, "inst") == ([1.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    assert paired_values(base, other, "unsafe") == ([1.0], [0.0])
    assert is_item_mean(base, "inst", 2 / 4) and is_item_mean(base, "unsafe", 0.5)
    assert not is_item_mean(base, "ppl", 1.9) and not is_item_mean(base, "prompt", None)
    with pytest.raises(PrimerError, match="did not score the same items"):
        paired_values(base, [{"doc_id": 0, "scores": {"inst": [True]}}], "inst")


def _eval(data_dir, out, *extra):
    env = {**os.environ, "PRIMER_DATA": str(data_dir)}
    r = subprocess.run([sys.executable, "-m", "primer", "eval", "bundled", "--tasks", "ifeval,arc_easy",
                        "--log-samples", "--cache", "none", "--output", str(out), *extra],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(out.read_text())


def test_compare_two_eval_results_files(data_dir, bundled_gguf, tmp_path):
    """`primer compare before.json after.json`: every metric both report as a mean of items, on the items both
    scored (6 and 4 documents here: the first 4), a paired interval each, printed and in compare.json / .html."""
    a = _eval(data_dir, tmp_path / "before.json", "--limit", "6", "--max-gen-tokens", "16")
    b = _eval(data_dir, tmp_path / "after.json", "--limit", "4", "--max-gen-tokens", "24")
    r = subprocess.run([sys.executable, "-m", "primer", "compare", str(tmp_path / "before.json"),
                        str(tmp_path / "after.json"), "--out", str(tmp_path / "c.html"), "--bootstrap", "500"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = {(d["task"], d["metric"]): d for d in json.loads((tmp_path / "c.json").read_text())["differences"]}
    assert set(got) == {("ifeval", m) for m in ("prompt_level_strict_acc", "prompt_level_loose_acc",
                                                "inst_level_strict_acc", "inst_level_loose_acc")} | \
        {("arc_easy", "acc"), ("arc_easy", "acc_norm")}
    for (task, metric), d in got.items():
        def mean_of_first_4(res):
            vals = []
            for s in res["samples"][task][:4]:
                v = s["scores"][metric]
                vals += [float(x) for x in v] if isinstance(v, list) else [float(v)]
            return sum(vals) / len(vals), len(vals)

        (mb, n), (ma, _) = mean_of_first_4(a), mean_of_first_4(b)
        assert d["n"] == n and d["baseline_score"] == pytest.approx(mb) and d["run_score"] == pytest.approx(ma)
        assert d["diff"] == pytest.approx(ma - mb) and d["ci"][0] <= d["diff"] <= d["ci"][1]
        assert f"{task} {metric}: after {100 * ma:.1f} vs before {100 * mb:.1f}" in r.stdout
    assert got[("ifeval", "prompt_level_loose_acc")]["n"] == 4 and got[("arc_easy", "acc")]["n"] == 4
    assert "Paired differences on the same items" in (tmp_path / "c.html").read_text()
    # a run directory beside a results file, or a file without per-item scores: a clear error, exit 2
    (tmp_path / "bare.json").write_text(json.dumps({**a, "samples": None}))
    for args, needle in (([str(tmp_path / "before.json"), str(tmp_path)], "not both"),
                         ([str(tmp_path / "bare.json"), str(tmp_path / "after.json")], "--log-samples")):
        r = subprocess.run([sys.executable, "-m", "primer", "compare", *args, "--out", str(tmp_path / "x.html")],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
