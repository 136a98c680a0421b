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

Results files of `primer eval --log-samples --output FILE` compare the same way, without a run: `primer compare
before.json after.json` pairs every task both scored, item by item (`primer.eval.items`), for every reported metric
that is a mean of per-item values (IFEval's four, XSTest's rates, accuracies...): a tuned model against its base.

The first run (or file) is the baseline every other one is compared with.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from primer.audit.stats import paired_bootstrap
from primer.common.jsonl import read_jsonl
from primer.common.paths import benchmark_dir, embedded_dir
from primer.config import Count, check_config
from primer.errors import PrimerError
from primer.eval.items import is_item_mean, item_values, paired_values
from primer.pipeline.records import RunRecord, read_run, read_stage
from primer.pipeline.summaries import (AuditSummary, CurateSummary, EvalSummary, SynthSummary, TokenizeSummary,
                                       TrainSummary, read_summary)

SUMMARIES = {"synth": SynthSummary, "curate": CurateSummary, "tokenize": TokenizeSummary, "train": TrainSummary,
             "eval": EvalSummary, "audit": AuditSummary}
WIKITEXT = Path("wikitext2") / "wikitext-2-raw-test.txt"


@dataclass
class CompareConfig:
    runs: list[Path]
    """Run directories (`primer run --run-dir`), or results files of `primer eval --log-samples --output` (one kind
    or the other); the first is the baseline."""
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
    samples: dict[str, list[dict]] = field(default_factory=dict)
    """task -> eval's logged samples (doc_id, per-item scores)"""
    metrics: dict[str, list[str]] = field(default_factory=dict)
    """task -> the metrics compared, each a mean of per-item values: a run's primary one; every one a results file
    reports"""

    def score(self, task: str, metric: str) -> tuple[float, int] | None:
        """(mean of `metric`'s per-item values, items) on `task`, or None where it has none."""
        xs = [x for vs in item_values(self.samples.get(task) or [], metric).values() for x in vs]
        return (sum(xs) / len(xs), len(xs)) if xs else None


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
    """None when comparing eval results files (no models to score)"""
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


def load_results(path: Path) -> RunView:
    """A results file of `primer eval --log-samples --output` as a view: its samples and its item-mean metrics."""
    try:
        res = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PrimerError(f"{path}: not a readable results file ({e})") from None
    if not isinstance(res, dict) or not isinstance(res.get("tasks"), dict):
        raise PrimerError(f"{path} is not a results file of `primer eval --output` (no 'tasks')")
    samples = res.get("samples") or {}
    if not samples:
        raise PrimerError(f"{path} has no per-item scores to pair: rerun the same `primer eval` with --log-samples "
                          f"--output {path} (the answers come back from eval's cache)")
    view = RunView(name=path.stem, path=str(path), summaries={}, recipe={})
    for task, t in res["tasks"].items():
        if samples.get(task):
            view.samples[task] = samples[task]
            view.metrics[task] = [m for m in t.get("reported") or [t.get("primary")]
                                  if is_item_mean(samples[task], m, (t.get("metrics") or {}).get(m))]
    return view


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
        t = res.tasks[task]
        view.samples[task] = rows
        view.metrics[task] = [m for m in [t.primary] if is_item_mean(rows, m, t.metrics.get(m))]


def differences(views: list[RunView], cfg: CompareConfig) -> list[Difference]:
    base, out = views[0], []
    for view in views[1:]:
        for task in [t for t in base.metrics if t in view.metrics]:
            for metric in [m for m in base.metrics[task] if m in view.metrics[task]]:
                # the items both scored (runs may have used different limits)
                b, a = paired_values(base.samples[task], view.samples[task], metric)
                if not a:
                    continue
                r = paired_bootstrap(a, b, iters=cfg.bootstrap, seed=cfg.seed)
                out.append(Difference(task=task, metric=metric, run=view.name, baseline=base.name, n=len(a),
                                      run_score=r.acc_orig, baseline_score=r.acc_pert, diff=r.drop, ci=r.drop_ci,
                                      p=r.p_bootstrap, significant=r.significant))
    return out


def compare(cfg: CompareConfig, progress: bool = True) -> Comparison:
    cfg = check_config(cfg)
    if len(cfg.runs) < 2:
        raise PrimerError("primer compare needs at least two run directories or eval results files")
    paths = [Path(p) for p in cfg.runs]
    files = [p for p in paths if p.is_file()]
    if files and len(files) < len(paths):
        raise PrimerError(f"give run directories or eval results files, not both (files: {', '.join(map(str, files))})")
    views = [load_results(p) if files else load_run(p) for p in paths]
    names = [v.name for v in views]
    for v in views:  # two runs of one recipe share a name: tell them apart by folder
        if names.count(v.name) > 1:
            v.name = f"{v.name} ({Path(v.path).parent.name if files else Path(v.path).name})"
    if files:
        return Comparison(runs=views, heldout=None, heldout_docs=0, heldout_bytes=0,
                          differences=differences(views, cfg), notes=[])
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
