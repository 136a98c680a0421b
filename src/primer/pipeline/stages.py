"""The pipeline `primer run` drives: each stage's own config dataclass and a small adapter.

An adapter does three things and nothing else: it points the stage's path fields at the run
directory (the previous stage's output in, `RUN_DIR/<stage>/` out), calls the stage's library
function, and turns what came back into a JSON-able summary for `primer report` (counts, curves,
tables, a few samples). All the work lives in the stage modules; the orchestration (fingerprints,
caching, failure handling) lives in `primer.pipeline.runner`.

Fields an adapter sets are listed in each spec's `wired`; a recipe that sets one gets an error saying the run
directory decides it, so a recipe never points a stage at a stale or foreign directory.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

from primer.common.paths import benchmark_dir
from primer.errors import PrimerError
from primer.pipeline.spec import StageContext, StageSpec

SAMPLE_CHARS = 2000


def _with_data_dir(cfg, name: str = "data_dir"):
    """None means "the benchmark data of this machine" (so the resolved recipe in run.json names it)."""
    if getattr(cfg, name, None) is None:
        found = benchmark_dir()
        if found is not None:
            cfg = dataclasses.replace(cfg, **{name: found if name == "data_dir" else str(found)})
    return cfg


def _curate_resolve(cfg):
    # decontaminate against the benchmarks found unless the recipe says benchmarks = "" (off)
    return _with_data_dir(cfg, "benchmarks")


def _jsonl(path: Path, limit: int | None = None):
    n = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except ValueError:
                continue
            n += 1
            if limit is not None and n >= limit:
                return


def _cut(text: str, n: int = SAMPLE_CHARS) -> str:
    return text if len(text) <= n else text[:n] + " …"


# ---------------------------------------------------------------------------------------- synth


def _synth_cfg():
    from primer.synth.run import SynthConfig

    return SynthConfig


def run_synth(cfg, ctx: StageContext) -> dict:
    from primer.synth.run import synth

    s = synth(dataclasses.replace(cfg, out=ctx.out_dir))
    fmt, aud = Counter(), Counter()
    samples = []
    for shard in sorted(ctx.out_dir.glob("data-*.jsonl")):
        for d in _jsonl(shard):
            fmt[d.get("format") or "?"] += 1
            aud[(d.get("audience") or "?").replace("_", " ")] += 1
            if len(samples) < 3 and d.get("format") not in {x.get("format") for x in samples}:
                samples.append({"topic": d.get("topic"), "format": d.get("format"), "audience": d.get("audience"),
                                "text": _cut(d.get("text", ""))})
    return {
        "teacher": s.get("teacher"),
        "documents": s.get("documents"),
        "tokens": s.get("completion_tokens_total"),
        "tokens_per_s": (s.get("this_run") or {}).get("tokens_per_s"),
        "rejects": s.get("rejects_total") or {},
        "near_dup_rate": s.get("near_dup_rate"),
        "distinct_ngram_ratio": s.get("distinct_3gram_ratio"),
        "by_format": dict(fmt),
        "by_audience": dict(aud),
        "samples": samples,
        "data": [str(p) for p in sorted(ctx.out_dir.glob("data-*.jsonl"))],
    }


# --------------------------------------------------------------------------------------- curate


def _curate_cfg():
    from primer.curate.pipeline import CurateConfig

    return CurateConfig


def _link_inputs(cfg, ctx: StageContext) -> Path:
    """RUN_DIR/curate/input/{synth,web}/: links to the synth shards and the web sample, one folder
    curate reads as shards; output files keep the shard name, so counts per source fall out."""
    root = ctx.out_dir / "input"
    if root.exists():
        import shutil

        shutil.rmtree(root)
    (root / "synth").mkdir(parents=True)
    for f in sorted(ctx.inputs["synth"].glob("data-*.jsonl")):
        (root / "synth" / f.name).symlink_to(f.resolve())
    if cfg.input:
        if str(cfg.input).startswith("hf:"):
            raise PrimerError("[curate] input: `primer run` curates local files; download the dataset first "
                              "(or run `primer curate` on it directly)")
        web = Path(cfg.input).expanduser()
        if not web.exists():
            raise PrimerError(f"[curate] input (the web sample) not found: {web}")
        (root / "web").mkdir()
        files = [web] if web.is_file() else sorted(f for f in web.rglob("*") if f.is_file() and not f.name.startswith("."))
        for i, f in enumerate(files):
            (root / "web" / f"{i:03d}-{f.name}").symlink_to(f.resolve())
    return root


def _count_lines(path: Path) -> int:
    import gzip

    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        return sum(1 for line in f if line.strip())


def _iter_records(path: Path):
    import gzip

    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError:
                    continue


def run_curate(cfg, ctx: StageContext) -> dict:
    from primer.curate.pipeline import curate

    if cfg.out_format == "parquet":
        raise PrimerError("[curate] out_format: `primer run` reads the curated corpus as JSONL; use jsonl or jsonl.gz")
    if cfg.scorer and not Path(cfg.scorer).exists():
        raise PrimerError(f"[curate] scorer not found: {cfg.scorer} (train one with `primer curate train-scorer`)")
    web_input = cfg.input
    root = _link_inputs(cfg, ctx)
    r = curate(dataclasses.replace(cfg, input=str(root), out=str(ctx.out_dir)))
    files = [Path(f) for f in r.get("output_files", [])]

    def source(name: str) -> str:
        return "web" if name.startswith("web") else "synth"

    # documents read per source: lines of the linked input files
    sources: dict[str, dict[str, int]] = {}
    for f in sorted(root.rglob("*")):
        if f.is_file():
            src = sources.setdefault(f.parent.name, {"in": 0, "kept": 0})
            src["in"] += _count_lines(f) if f.name.endswith((".jsonl", ".jsonl.gz", ".json")) else 0
    scores: list[float] = []
    samples: list[dict] = []
    for f in files:
        src = sources.setdefault(source(f.name), {"in": 0, "kept": 0})
        for rec in _iter_records(f):
            src["kept"] += 1
            if isinstance(rec.get("edu_score"), (int, float)):
                scores.append(float(rec["edu_score"]))
            if len(samples) < 3 and (not samples or samples[-1]["source"] != source(f.name)):
                samples.append({"id": rec.get("id"), "source": source(f.name), "edu_score": rec.get("edu_score"),
                                "title": rec.get("topic"), "text": _cut(rec.get("text", ""))})
    dropped_dir = ctx.out_dir / "dropped"
    if dropped_dir.is_dir():  # with write_dropped, the scores of what the edu filter dropped too
        for f in sorted(dropped_dir.rglob("*.jsonl*")):
            for rec in _iter_records(f):
                if isinstance(rec.get("edu_score"), (int, float)):
                    scores.append(float(rec["edu_score"]))
    rejects: dict[str, int] = {}
    dedup = {"exact": 0, "near": 0}
    decontam = 0
    for step, st in (r.get("steps") or {}).items():
        for reason, n in (st.get("dropped") or {}).items():
            key = reason if ":" in reason else f"{step}:{reason}"
            rejects[key] = rejects.get(key, 0) + n
            low = f"{step} {reason}".lower()
            if "exact" in low:
                dedup["exact"] += n
            elif "near" in low or "minhash" in low or step.startswith("dedup"):
                dedup["near"] += n
            if "decontam" in low or "benchmark" in low:
                decontam += n
    matches = r.get("benchmark_items_matched") or {}
    per_bench: dict[str, int] = {}
    for item, n in matches.items():
        bench = str(item).split("/")[0]
        per_bench[bench] = per_bench.get(bench, 0) + n
    return {
        "web_input": web_input or None,
        "sources": sources,
        "documents_in": r.get("documents_read"),
        "documents_kept": r.get("documents_kept"),
        "rejects": rejects,
        "edu_scores": scores[:20000] or None,
        "edu_threshold": cfg.edu_threshold if cfg.edu_threshold is not None else (3.0 if cfg.scorer else None),
        "dedup": dedup if cfg.dedup else None,
        "dedup_settings": r.get("dedup"),
        "decontam": {"dropped": decontam, "matches": per_bench, "items": len(matches)} if cfg.benchmarks else None,
        "bad_input": (r.get("bad_input") or {}).get("count"),
        "samples": samples,
        "data": [str(f) for f in files],
    }


# ------------------------------------------------------------------------------------- tokenize


def _tokenize_cfg():
    from primer.tokens.shards import TokenizeConfig

    return TokenizeConfig


def corpus_files(stage_dir: Path, summary: dict) -> list[str]:
    """The kept-document files a stage wrote (its summary's `data`, else its data-*.jsonl)."""
    files = summary.get("data") or [str(p) for p in sorted(stage_dir.glob("data-*.jsonl"))]
    if not files:
        raise PrimerError(f"{stage_dir} holds no documents to tokenize")
    return files


def run_tokenize(cfg, ctx: StageContext) -> dict:
    from primer.tokens.shards import tokenize_corpus

    inputs = corpus_files(ctx.inputs["curate"], ctx.summaries["curate"])
    meta = tokenize_corpus(dataclasses.replace(cfg, inputs=inputs, out=str(ctx.out_dir), overwrite=True))
    sp = meta.get("splits") or {}
    return {
        "tokenizer": cfg.tokenizer or "byte-level BPE trained on the curated corpus",
        "vocab_size": meta.get("vocab_size"),
        "train_documents": (sp.get("train") or {}).get("documents"),
        "train_tokens": (sp.get("train") or {}).get("tokens"),
        "val_documents": (sp.get("val") or {}).get("documents"),
        "val_tokens": (sp.get("val") or {}).get("tokens"),
        "tokenizer_hash": meta.get("tokenizer_hash"),
    }


# ---------------------------------------------------------------------------------------- train


def _train_cfg():
    from primer.train.config import TrainConfig

    return TrainConfig


def run_train(cfg, ctx: StageContext) -> dict:
    from primer.train import train

    s = train(dataclasses.replace(cfg, data=str(ctx.inputs["tokenize"]), out_dir=str(ctx.out_dir)))
    lc = s.get("loss_curve") or []
    vc = s.get("val_curve") or []
    if len(lc) > 400:  # keep the report light; the full curve is in train/metrics.jsonl
        step = -(-len(lc) // 400)
        lc = lc[::step] + ([lc[-1]] if (len(lc) - 1) % step else [])
    if not s.get("checkpoint"):
        raise PrimerError("training finished without writing a checkpoint")
    return {
        "shape": cfg.model + (f" {cfg.model_overrides}" if cfg.model_overrides else ""),
        "params": s.get("params"),
        "steps": s.get("steps"),
        "tokens": s.get("tokens"),
        "tokens_per_s": s.get("tokens_per_s"),
        "mfu": s.get("mfu"),
        "final_train_loss": s.get("final_loss"),
        "final_val_loss": s.get("val_loss"),
        "curve": {"step": [p[0] for p in lc], "loss": [p[1] for p in lc]},
        "val_curve": {"step": [p[0] for p in vc], "loss": [p[1] for p in vc]},
        "checkpoint": s.get("checkpoint"),
        "samples": [_cut(t, 600) for t in (s.get("samples") or [])],
    }


# ----------------------------------------------------------------------------------------- eval


def _eval_cfg():
    from primer.eval.runner import EvalConfig

    return EvalConfig


def _primary(task_res: dict) -> tuple[str | None, float | None, float | None]:
    metrics = task_res.get("metrics") or {}
    name = task_res.get("primary") or next((k for k in metrics if not k.endswith("_stderr")), None)
    if name is None:
        return None, None, None

    def num(x):
        return None if x is None or (isinstance(x, float) and x != x) else x

    return name, num(metrics.get(name)), num(metrics.get(name + "_stderr"))


def run_eval(cfg, ctx: StageContext) -> dict:
    import torch

    from primer.eval.lm import PrimerLM
    from primer.eval.runner import run as run_evaluation

    opts = ctx.recipe.run
    reason = None if cfg.tasks else "no tasks in [eval] tasks"
    if cfg.tasks and (cfg.data_dir is None or not Path(cfg.data_dir).is_dir()):
        if cfg.data_dir is not None:
            raise PrimerError(f"[eval] data_dir {cfg.data_dir} is not a directory (expected a folder laid out like "
                              "shared/benchmarks)")
        reason = ("no benchmark data found: set PRIMER_DATA to a folder laid out like shared/benchmarks "
                  "(or [eval] data_dir in the recipe) and re-run; only generation samples were made")
        ctx.log(f"  eval: {reason}")
        cfg = dataclasses.replace(cfg, tasks=[])
    if cfg.cache is None:  # outside eval/ so the reference model's answers survive a re-train
        cfg = dataclasses.replace(cfg, cache=ctx.run_dir / ".cache" / "eval.sqlite")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ckpt = ctx.summaries["train"].get("checkpoint")
    if not ckpt or not Path(ckpt).exists():
        raise PrimerError(f"the train stage's checkpoint is missing ({ckpt}); re-run the train stage")
    models = {"model": ckpt}
    if opts.reference:
        models["teacher"] = opts.reference
    results: dict[str, dict] = {}
    generations = [{"prompt": p} for p in opts.sample_prompts]
    for who, spec in models.items():
        ctx.log(f"  eval: {who} ({spec})")
        lm = PrimerLM.load(spec, batch_size=opts.eval_batch_size, device=device)
        results[who] = (run_evaluation(lm, cfg, output=ctx.out_dir / f"results-{who}.json") if cfg.tasks
                        else {"tasks": {}})
        if generations:
            outs = lm.generate([g["prompt"] for g in generations], stop=["\n\n\n"], max_tokens=opts.sample_tokens,
                               temperature=0.0)
            for g, o in zip(generations, outs):
                g[who] = o
        del lm
    tasks: dict[str, dict] = {}
    for name, r in (results["model"].get("tasks") or {}).items():
        metric, v, e = _primary(r)
        row = {"metric": metric, "n": r.get("n"), "shots": r.get("shots"), "model": v, "model_stderr": e}
        t = (results.get("teacher") or {}).get("tasks", {}).get(name)
        if t:
            _, tv, te = _primary(t)
            row.update(teacher=tv, teacher_stderr=te)
        tasks[name] = row
    return {
        "skipped": reason,
        "model": "our model",
        "teacher": opts.reference or None,
        "tasks": tasks,
        "generations": generations,
    }


# ---------------------------------------------------------------------------------------- audit


def _audit_cfg():
    from primer.audit.run import AuditConfig

    return AuditConfig


def run_audit(cfg, ctx: StageContext) -> dict:
    import torch

    from primer.audit.run import audit
    from primer.eval.lm import PrimerLM

    if cfg.data_dir is None:
        reason = ("no benchmark data found: set PRIMER_DATA to a folder laid out like shared/benchmarks "
                  "(or [audit] data_dir in the recipe) and re-run")
        ctx.log(f"  audit: {reason}")
        return {"skipped": reason, "gaps": [], "contamination": []}
    if not Path(cfg.data_dir).is_dir():
        raise PrimerError(f"[audit] data_dir {cfg.data_dir} is not a directory (expected a folder laid out like "
                          "shared/benchmarks)")
    ckpt = ctx.summaries["train"].get("checkpoint")
    if not ckpt or not Path(ckpt).exists():
        raise PrimerError(f"the train stage's checkpoint is missing ({ckpt}); re-run the train stage")
    corpus = corpus_files(ctx.inputs["curate"], ctx.summaries["curate"])
    if cfg.cache is None:
        cfg = dataclasses.replace(cfg, cache=ctx.run_dir / ".cache" / "eval.sqlite")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    lm = PrimerLM.load(ckpt, batch_size=ctx.recipe.run.eval_batch_size, device=device)
    r = audit(lm, dataclasses.replace(cfg, corpus=corpus, out=ctx.out_dir))
    task = r.get("task") or cfg.task
    gaps = []
    rob = r.get("robustness") or {}
    for c in rob.get("conditions") or []:
        if not c.get("n"):
            continue
        ci = c.get("drop_ci") or [None, None]
        gaps.append({"task": task, "suite": c.get("name"), "description": c.get("description"),
                     "baseline": c.get("baseline"), "n": c.get("n"), "original": c.get("acc_orig"),
                     "perturbed": c.get("acc_pert"), "drop": c.get("drop"), "ci_low": ci[0], "ci_high": ci[1],
                     "significant": c.get("significant")})
    signals = [{"task": task, "signal": v.get("signal"), "value": "flagged" if v.get("flag") else "not flagged",
                "verdict": v.get("verdict")} for v in r.get("verdicts") or []]
    return {"task": task, "items": r.get("n_items"), "metric": rob.get("metric"), "baselines": rob.get("baselines"),
            "gaps": gaps, "contamination": signals}


# ------------------------------------------------------------------------------------------------

STAGES: list[StageSpec] = [
    StageSpec("synth", (), _synth_cfg, run_synth, "synthetic textbook documents from the teacher", wired=("out",)),
    StageSpec("curate", ("synth",), _curate_cfg, run_curate, "filter, score, dedup, decontaminate", wired=("out",),
              env=("PRIMER_DATA",), resolve=_curate_resolve),
    StageSpec("tokenize", ("curate",), _tokenize_cfg, run_tokenize, "BPE tokenizer + token shards",
              wired=("inputs", "out", "overwrite")),
    StageSpec("train", ("tokenize",), _train_cfg, run_train, "pretrain the small model", wired=("data", "out_dir")),
    StageSpec("eval", ("train",), _eval_cfg, run_eval, "benchmarks, beside the reference model",
              run_fields=("reference", "sample_prompts", "sample_tokens"), env=("PRIMER_DATA",),
              resolve=_with_data_dir),
    StageSpec("audit", ("train", "curate"), _audit_cfg, run_audit, "perturbation gaps and contamination",
              wired=("corpus", "out"), env=("PRIMER_DATA",), resolve=_with_data_dir),
]
