"""Curate: the quality filter (reference-LM perplexity + gibberish signals) on real text and real teacher output."""

from __future__ import annotations

import gzip
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from primer.curate.document import Document
from primer.curate.pipeline import CurateConfig, curate
from primer.curate.quality import LMScorer, QualityFilter, QualityScorer, QualitySettings, badness
from primer.curate.steps import Context

# Real output of the bundled teacher (SmolLM2-135M-Instruct through `primer synth`), kept as generated, each
# read and judged unfit to train on ("why" in each record): one document of a default-recipe synth run and
# 24 high-temperature "exercises" samples.
TEACHER_BAD = Path(__file__).parent / "data" / "teacher_degenerate.jsonl"
# The document the issue quotes (a default `primer run` kept it), as far as the issue quotes it.
ISSUE_DOC = "BEGINED WITH MODEL OF THE ADVENTURE: ### PLAYUP - LEARNING AND CONFUSING COUNSELS ..."


@pytest.fixture(scope="module")
def scorer(bundled_gguf):
    return QualityScorer(QualitySettings.from_curate(CurateConfig()))


def teacher_bad() -> list[dict]:
    return [json.loads(ln) for ln in TEACHER_BAD.read_text(encoding="utf-8").splitlines() if ln.strip()]


def test_badness_is_the_worst_signal_over_its_limit():
    limits = QualitySettings.from_curate(CurateConfig()).limits
    assert badness({"nll": 2.3, "nll_std": 1.7, "repeat": 0.0, "caps": 0.0, "nondict": 0.02, "language": 0.99},
                   limits)[0] < 1
    assert badness({"nll": 9.2}, limits) == (pytest.approx(9.2 / limits["nll"][1]), "nll")
    assert badness({"nll": 0.3}, limits) == (pytest.approx(limits["nll_low"][1] / 0.3), "nll_low")
    assert badness({"caps": 0.9, "nll": 3.0}, limits)[1] == "caps"
    assert badness({"language": 0.0}, limits) == (math.inf, "language")
    off = QualitySettings.from_curate(CurateConfig(), max_caps=None, language=None)
    assert "caps" not in off.limits and "language" not in off.limits


@pytest.mark.slow
def test_clean_and_bad_are_separated(scorer, data_dir):
    """AUROC >= 0.95 of the filter's score, clean vs bad, and <= 2% of clean text dropped at the shipped limits."""
    from sklearn.metrics import roc_auc_score

    from quality_set import labelled_set

    items = labelled_set(data_dir, per_source=40, per_corruption=30, part="test")
    items += [("teacher", r["text"], 1) for r in teacher_bad()]
    t0 = time.perf_counter()
    sig = scorer.signals([t for _, t, _ in items], lazy=False)
    seconds = time.perf_counter() - t0
    labels = [lab for _, _, lab in items]
    score = [min(s["score"], 1e6) for s in sig]
    auc = roc_auc_score(labels, score)
    auc_nll = roc_auc_score(labels, [s["nll"] for s in sig])
    kinds = sorted({k for k, _, _ in items})
    rates = {k: sum(s["reason"] is not None for (kk, _, _), s in zip(items, sig) if kk == k)
             / sum(kk == k for kk, _, _ in items) for k in kinds}
    clean_drop = sum(s["reason"] is not None for (_, _, lab), s in zip(items, sig) if lab == 0) / labels.count(0)
    print(f"\n{len(items)} documents ({labels.count(0)} clean) scored in {seconds:.1f} s; AUROC of the score "
          f"{auc:.4f} (mean NLL alone {auc_nll:.4f}); clean dropped {clean_drop:.3f}; dropped per kind "
          + ", ".join(f"{k} {v:.2f}" for k, v in rates.items()))
    assert auc >= 0.95
    assert clean_drop <= 0.02
    assert all(rates[k] >= 0.8 for k in ("shuffled", "noised", "looped", "mixed_script", "teacher")), rates


def test_issue_document_and_real_teacher_babble_are_dropped(scorer):
    docs = [ISSUE_DOC] + [r["text"] for r in teacher_bad()]
    sig = scorer.signals(docs)
    kept = [(d[:80], s) for d, s in zip(docs, sig) if s["reason"] is None]
    assert not kept, kept
    assert sig[0]["reason"] == "quality:all_caps"


@pytest.mark.slow
def test_default_recipe_curate_drops_them(tmp_path, bundled_gguf):
    """The default recipe's [curate] on the issue's document and the real teacher output: the heuristics alone
    keep the default run's French "textbook" section; with the quality filter (the default) nothing survives."""
    import dataclasses

    from primer.config import load_section
    from primer.pipeline.runner import default_recipe_path

    cfg = load_section(default_recipe_path(), "curate", CurateConfig)
    assert cfg.quality
    inp = tmp_path / "synth.jsonl"
    recs = [{"id": "issue", "text": ISSUE_DOC}] + [{"id": f"t{i}", "text": r["text"]} for i, r in enumerate(teacher_bad())]
    inp.write_text("".join(json.dumps(r) + "\n" for r in recs))
    runs = {}
    for on in (False, True):
        c = dataclasses.replace(cfg, input=str(inp), out=str(tmp_path / f"q{on}"), quality=on, benchmarks=None, workers=1)
        runs[on] = curate(c, quiet=True)
    print(f"\nkept without / with the quality filter: {runs[False].documents_kept} / {runs[True].documents_kept} "
          f"of {len(recs)}; quality step {runs[True].steps['quality']}")
    assert runs[False].documents_kept >= 1
    assert runs[True].documents_kept == 0 and runs[True].steps["quality"]["dropped"] == {"quality:language": 1}


def test_pipeline_counts_reasons_writes_drops_and_the_histogram(tmp_path, bundled_gguf):
    good = ("Plants make their food by photosynthesis. In the leaves, chlorophyll absorbs light, and the plant uses "
            "that energy to turn water and carbon dioxide into sugar and oxygen. The sugar feeds the plant and the "
            "oxygen is released into the air, which is why forests matter for the animals that breathe it.")
    docs = [{"id": "good", "text": good},
            {"id": "caps", "text": good.upper()},
            {"id": "shuffled", "text": " ".join(sorted(good.split(), key=lambda w: (len(w), w[::-1])))},
            {"id": "loop", "text": " ".join(["the leaf makes sugar from light and water"] * 12)}]
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(d) + "\n" for d in docs))
    r = curate(CurateConfig(input=str(inp), out=str(tmp_path / "out"), heuristics=False, dedup=False, quality=True,
                            write_dropped=True, workers=1, out_format="jsonl"), quiet=True)
    st = r.steps["quality"]
    assert (st["in"], st["out"]) == (4, 1)
    assert st["dropped"] == {"quality:all_caps": 1, "quality:nll_high": 1, "quality:repeated_ngrams": 1}
    kept = [json.loads(ln) for f in r.output_files for ln in Path(f).read_text().splitlines()]
    assert [k["id"] for k in kept] == ["good"] and kept[0]["quality"]["nll"] < CurateConfig().quality_max_nll
    dropped = [json.loads(ln) for f in sorted((tmp_path / "out" / "dropped").glob("*.jsonl.gz"))
               for ln in gzip.open(f, "rt")]
    assert {d["id"]: d["reason"] for d in dropped} == {"caps": "quality:all_caps", "shuffled": "quality:nll_high",
                                                      "loop": "quality:repeated_ngrams"}
    assert all(d["dropped_by"] == "quality" and "nll" in d["quality"] or d["id"] != "shuffled" for d in dropped)
    # the NLL histogram holds the documents the model scored (the cheap signals dropped the other two first)
    assert sum(r.scores["quality"].values()) == 2
    assert r.quality["limits"]["nll"] == {"max": CurateConfig().quality_max_nll} and r.quality["window_tokens"] == 256


@pytest.mark.slow
def test_percentile_limit_is_resolved_once_on_a_sample(tmp_path, bundled_gguf, data_dir):
    from quality_set import tinystories

    texts = tinystories(data_dir)[:20]
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)))
    cfg = CurateConfig(input=str(inp), out=str(tmp_path / "out"), heuristics=False, dedup=False, quality=True,
                       quality_nll_percentile=0.75, workers=1)
    r = curate(cfg, quiet=True)
    lim = r.quality["percentile"]["max_nll"]
    nll = [s["nll"] for s in LMScorer("bundled").score(texts)]
    assert lim == pytest.approx(float(np.quantile(nll, 0.75)), abs=1e-4)  # the sample is the whole input here
    assert r.steps["quality"]["dropped"] == {"quality:nll_high": 5}  # above the 75th percentile of 20
    again = curate(cfg, quiet=True)  # a rerun reuses the resolved limit
    assert again.quality["percentile"]["max_nll"] == lim


def test_step_keeps_signals_in_metadata(scorer):
    ctx = Context()
    d = Document("a", "Water boils at one hundred degrees Celsius at sea level. At higher places the air pressure is "
                      "lower, so water boils at a lower temperature, and food takes longer to cook there.")
    out = list(QualityFilter(scorer).run([d], ctx))
    assert out == [d] and set(d.metadata["quality"]) >= {"nll", "nll_std", "repeat", "caps", "nondict", "language"}
    assert ctx.stats.steps["quality"]["out"] == 1
