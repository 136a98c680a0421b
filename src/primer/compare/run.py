"""`primer compare RUN_DIR...`: runs side by side, the way the phi-1.5 report set phi-1.5 beside phi-1.5-web-only.

What it measures itself (the rest it reads from each run's stage summaries):

- **Validation loss on one common held-out set, in bits per byte.** Each run keeps its own tokenizer, so
  loss per token does not compare across runs; every model scores the same texts with its own tokenizer
  and the summed log-likelihood is divided by the texts' UTF-8 bytes (the Pile / lm-eval `bits_per_byte`).
  The held-out texts are `--heldout FILE` (JSONL with a "text" field, or plain text with one paragraph per line, as WikiText),
  else WikiText-2's test split from the benchmark data; the same first `--heldout-docs` documents for all.
- **Benchmark scores with paired differences.** Each run's own eval stage settings (tasks, limit, shots) are
  replayed through eval's cache in the run directory (answers already computed are read back, not
  recomputed), with per-item scores, so the difference between two runs is taken on the same items: a
  paired bootstrap interval of (run - first run) per task, the way the audit compares conditions.

The first run is the baseline every other run is compared with.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from primer.audit.stats import paired_bootstrap
from primer.common.jsonl import read_jsonl
from primer.common.paths import benchmark_dir, embedded_dir
from primer.config import Count, check_config
from primer.errors import PrimerError
from primer.pipeline.records import RunRecord, read_run, read_stage
from primer.pipeline.summaries import (AuditSummary, CurateSummary, EvalSummary, SynthSummary, TokenizeSummary,
                                       TrainSummary, read_summary)

SUMMARIES = {"synth": SynthSummary, "curate": CurateSummary, "tokenize": TokenizeSummary, "train": TrainSummary,
             "eval": EvalSummary, "audit": AuditSummary}
WIKITEXT = Path("wikitext2") / "wikitext-2-raw-test.txt"


@dataclass
class CompareConfig:
    runs: list[Path]
    """Run directories (`primer run --run-dir`); the first is the baseline."""
    heldout: Path | None = None
    """Held-out texts every model scores (JSONL with "text", or plain text with one paragraph per line;
    lines under 200 characters and headings are left out); default:
    WikiText-2 test from the benchmark data."""
    heldout_docs: Count = 200
    """How many held-out documents (the same first N for every model)."""
    benchmarks: bool = True
    """Replay each run's eval settings for per-item paired differences (answers come from the run's cache)."""
    bootstrap: Count = 2000
    """Paired bootstrap draws for the differences."""
    seed: int = 0


@dataclass
class RunView:
    """One run as the comparison shows it."""

    name: str
    path: str
    summaries: dict[str, Any]
    """stage -> typed summary, for the stages that are done"""
    recipe: dict[str, Any]
    heldout_bpb: float | None = None
    scores: dict[str, list[float]] = field(default_factory=dict)
    """task -> per-item primary metric, in eval's item order"""
    metrics: dict[str, str] = field(default_factory=dict)
    """task -> the primary metric's name"""


@dataclass
class Difference:
    task: str
    metric: str
    run: str
    baseline: str
    n: int
    run_score: float
    baseline_score: float
    diff: float
    ci: tuple[float, float]
    p: float
    significant: bool


@dataclass
class Comparison:
    runs: list[RunView]
    heldout: str | None
    heldout_docs: int
    heldout_bytes: int
    differences: list[Difference]
    notes: list[str]


def load_run(path: Path) -> RunView:
    run: RunRecord | None = read_run(path)
    if run is None:
        raise PrimerError(f"{path} is not a primer run directory (no run.json): give the --run-dir of `primer run`")
    summaries = {}
    for name, cls in SUMMARIES.items():
        rec = read_stage(path, name)
        if rec is not None and rec.status == "done":
            summaries[name] = read_summary(cls, rec.summary, name)
    name = run.recipe.get("run", {}).get("name") or path.name
    return RunView(name=name, path=str(path), summaries=summaries, recipe=run.recipe)


def heldout_texts(cfg: CompareConfig) -> tuple[str, list[str]]:
    path = cfg.heldout
    if path is None:
        data = benchmark_dir()
        if data is None or data == embedded_dir() or not (data / WIKITEXT).is_file():
            raise PrimerError("no held-out text: pass --heldout FILE (JSONL with a 'text' field, or plain text), "
                              "or make WikiText-2 findable (PRIMER_DATA, `primer data pull wikitext`)")
        path = data / WIKITEXT
    path = Path(path)
    if not path.is_file():
        raise PrimerError(f"--heldout {path}: no such file")
    if path.suffix == ".jsonl":
        texts = [str(r["text"]) for r in read_jsonl(path) if isinstance(r, dict) and r.get("text")]
    else:
        texts = [t.strip() for t in path.read_text(encoding="utf-8").splitlines()]
        texts = [t for t in texts if len(t) > 200 and not t.startswith("=")]  # WikiText: paragraphs, not headings
    if not texts:
        raise PrimerError(f"--heldout {path}: no documents in it")
    return str(path), texts[: cfg.heldout_docs]


def _checkpoint(view: RunView) -> Path:
    train = view.summaries.get("train")
    if train is None:
        raise PrimerError(f"run {view.path}: its train stage is not done; finish it with `primer run` first")
    ckpt = Path(train.checkpoint)
    return ckpt if ckpt.is_absolute() else Path(view.path) / ckpt


def bits_per_byte(lm, texts: list[str]) -> float:
    lls = lm.loglikelihood_rolling(texts)
    return -sum(lls) / sum(len(t.encode("utf-8")) for t in texts) / math.log(2)


def replay_eval(lm, view: RunView, progress: bool) -> None:
    """Per-item scores of the run's own eval settings, read from (or added to) the run's answer cache."""
    from primer.eval.runner import EvalConfig, evaluate

    section = dict(view.recipe.get("eval") or {})
    tasks = list((view.summaries["eval"].tasks or {}).keys())
    if not tasks:
        return
    known = {f.name for f in dataclasses.fields(EvalConfig)}
    kw = {k: v for k, v in section.items() if k in known and k not in ("tasks", "cache", "log_samples")}
    if kw.get("data_dir") is not None:
        d = Path(kw["data_dir"])
        kw["data_dir"] = d if d.is_absolute() or d.is_dir() else Path(view.path) / d
    cfg = EvalConfig(**{**kw, "tasks": tasks, "log_samples": True,
                        "cache": Path(view.path) / ".cache" / "eval.sqlite"})
    res = evaluate(lm, cfg, progress=progress)
    for task, rows in (res.samples or {}).items():
        metric = res.tasks[task].primary
        view.metrics[task] = metric
        view.scores[task] = [float(r["scores"][metric]) for r in rows]


def differences(views: list[RunView], cfg: CompareConfig) -> list[Difference]:
    base, out = views[0], []
    for view in views[1:]:
        for task in [t for t in base.scores if t in view.scores]:
            a, b = view.scores[task], base.scores[task]
            n = min(len(a), len(b))  # the same first n items (runs may have used different limits)
            r = paired_bootstrap(a[:n], b[:n], iters=cfg.bootstrap, seed=cfg.seed)
            out.append(Difference(task=task, metric=view.metrics[task], run=view.name, baseline=base.name, n=n,
                                  run_score=r.acc_orig, baseline_score=r.acc_pert, diff=r.drop, ci=r.drop_ci,
                                  p=r.p_bootstrap, significant=r.significant))
    return out


def compare(cfg: CompareConfig, progress: bool = True) -> Comparison:
    cfg = check_config(cfg)
    if len(cfg.runs) < 2:
        raise PrimerError("primer compare needs at least two run directories")
    views = [load_run(Path(p)) for p in cfg.runs]
    names = [v.name for v in views]
    for i, v in enumerate(views):  # two runs of one recipe share a name: tell them apart by folder
        if names.count(v.name) > 1:
            v.name = f"{v.name} ({Path(v.path).name})"
    source, texts = heldout_texts(cfg)
    notes = []
    from primer.eval.lm import PrimerLM

    for v in views:
        lm = PrimerLM.load(str(_checkpoint(v)))
        if progress:
            print(f"compare: {v.name}: held-out bits per byte on {len(texts)} documents", flush=True)
        v.heldout_bpb = bits_per_byte(lm, texts)
        if cfg.benchmarks and "eval" in v.summaries:
            replay_eval(lm, v, progress)
        elif cfg.benchmarks:
            notes.append(f"{v.name}: no finished eval stage, so no benchmark scores")
        del lm
    return Comparison(runs=views, heldout=source, heldout_docs=len(texts),
                      heldout_bytes=sum(len(t.encode("utf-8")) for t in texts),
                      differences=differences(views, cfg), notes=notes)
