"""The pipeline `primer run` drives: each stage's own config dataclass and a small adapter.

An adapter does three things and nothing else: it points the stage's path fields at the run
directory (the previous stage's output in, `RUN_DIR/<stage>/` out), calls the stage's library
function, and turns the typed result that came back into the stage's summary for `primer report`
(a `primer.pipeline.summaries` dataclass: counts, curves, tables, a few samples, and the input
lines it could not read, counted and named). Every file it reads back goes through
`primer.common.jsonl`, so a malformed line is never skipped silently. All the work lives in the
stage modules; the orchestration (fingerprints, caching, failure handling) lives in
`primer.pipeline.runner`.

Fields an adapter sets are listed in each spec's `wired`; a recipe that sets one gets an error saying the run
directory decides it, so a recipe never points a stage at a stale or foreign directory.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from primer.common.jsonl import BadInput, count_records, read_jsonl
from primer.common.paths import benchmark_dir, embedded_dir, is_embedded, pull_hint
from primer.config import to_dict
from primer.errors import PrimerError
from primer.pipeline.spec import StageContext, StageSpec
from primer.pipeline.summaries import (AuditSummary, CurateSummary, Curve, DecontamCounts, DedupCounts, DocSample,
                                       EvalRow, EvalSummary, ExportSummary, Gap, Generation, Signal, SourceCounts,
                                       SynthSummary, TokenizeSummary, TrainSummary, TuneSummary)

if TYPE_CHECKING:
    from primer.eval.runner import TaskResult

SAMPLE_CHARS = 2000


def _with_data_dir(cfg, name: str = "data_dir"):
    """None means "the benchmark data of this machine" (so the resolved recipe in run.json names it); eval and
    audit fall back on the slice embedded in the package, so a fresh offline install still scores its model."""
    if getattr(cfg, name, None) is None:
        found = benchmark_dir() or (embedded_dir() if name == "data_dir" else None)
        if found is not None:
            cfg = dataclasses.replace(cfg, **{name: found if name == "data_dir" else str(found)})
    return cfg


def _curate_resolve(cfg):
    # decontaminate against the benchmarks found unless the recipe says benchmarks = "" (off)
    return _with_data_dir(cfg, "benchmarks")


def _cut(text: str, n: int = SAMPLE_CHARS) -> str:
    return text if len(text) <= n else text[:n] + " …"


# ---------------------------------------------------------------------------------------- synth


def _synth_cfg():
    from primer.synth.run import SynthConfig

    return SynthConfig


def run_synth(cfg, ctx: StageContext) -> SynthSummary:
    from primer.synth.run import synth

    s = synth(dataclasses.replace(cfg, out=ctx.out_dir))
    fmt, aud = Counter(), Counter()
    samples: list[DocSample] = []
    bad = BadInput()
    bad.merge(s.bad_input)
    files = sorted(ctx.out_dir.glob("data-*.jsonl"))
    for shard in files:
        for d in read_jsonl(shard, bad):
            fmt[d.get("format") or "?"] += 1
            aud[(d.get("audience") or "?").replace("_", " ")] += 1
            if len(samples) < 3 and d.get("format") not in {x.format for x in samples}:
                samples.append(DocSample(title=d.get("topic") or "document", text=_cut(d.get("text", "")),
                                         format=d.get("format"), audience=d.get("audience")))
    return SynthSummary(
        teacher=s.teacher, documents=s.documents, tokens=s.completion_tokens_total,
        tokens_per_s=s.this_run.tokens_per_s, rejects=s.rejects_total, near_dup_rate=s.near_dup_rate,
        distinct_ngram_ratio=s.distinct_3gram_ratio, by_format=dict(fmt), by_audience=dict(aud),
        verification=s.verification, samples=samples,
        data=[ctx.rel(p) for p in files], bad_input=bad,
    )


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
    for f in sorted(ctx.inputs["synth"].glob("data-*.jsonl")):  # relative: a moved run dir keeps them
        (root / "synth" / f.name).symlink_to(os.path.relpath(f.resolve(), (root / "synth").resolve()))
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


def source_of(curated_file: str | Path) -> str:
    """Which input a curated output file came from: 'web' or 'synth' (output files keep the input shard's name)."""
    return "web" if Path(curated_file).name.startswith("web") else "synth"


def run_curate(cfg, ctx: StageContext) -> CurateSummary:
    from primer.curate.pipeline import curate

    if cfg.out_format == "parquet":
        raise PrimerError("[curate] out_format: `primer run` reads the curated corpus as JSONL; use jsonl or jsonl.gz")
    if cfg.scorer and not Path(cfg.scorer).exists():
        raise PrimerError(f"[curate] scorer not found: {cfg.scorer} (train one with `primer curate train-scorer`)")
    web_input = cfg.input
    root = _link_inputs(cfg, ctx)
    r = curate(dataclasses.replace(cfg, input=str(root), out=str(ctx.out_dir)))
    files = [Path(f) for f in r.output_files]
    bad = BadInput()  # curate's own count of unreadable input, plus any met reading its output back
    bad.merge(r.bad_input)

    # documents read per source: records of the linked input files
    sources: dict[str, SourceCounts] = {}
    for f in sorted(root.rglob("*")):
        if f.is_file():
            src = sources.setdefault(f.parent.name, SourceCounts(0, 0))
            src.read += count_records(f) if f.name.endswith((".jsonl", ".jsonl.gz", ".json")) else 0
    scores: list[float] = []
    samples: list[DocSample] = []
    for f in files:
        src = sources.setdefault(source_of(f), SourceCounts(0, 0))
        for rec in read_jsonl(f, bad):
            src.kept += 1
            if isinstance(rec.get("edu_score"), (int, float)):
                scores.append(float(rec["edu_score"]))
            if len(samples) < 3 and (not samples or samples[-1].source != source_of(f)):
                did = None if rec.get("id") is None else str(rec["id"])
                samples.append(DocSample(title=rec.get("topic") or did or "document", text=_cut(rec.get("text", "")),
                                         id=did, source=source_of(f), edu_score=rec.get("edu_score")))
    dropped_dir = ctx.out_dir / "dropped"
    if dropped_dir.is_dir():  # with write_dropped, the scores of what the edu filter dropped too
        for f in sorted(dropped_dir.rglob("*.jsonl*")):
            for rec in read_jsonl(f, bad):
                if isinstance(rec.get("edu_score"), (int, float)):
                    scores.append(float(rec["edu_score"]))
    rejects: dict[str, int] = {}
    dedup = DedupCounts(0, 0)
    decontam = 0
    for step, st in r.steps.items():
        for reason, n in st["dropped"].items():
            key = reason if ":" in reason else f"{step}:{reason}"
            rejects[key] = rejects.get(key, 0) + n
            low = f"{step} {reason}".lower()
            if "exact" in low:
                dedup.exact += n
            elif "near" in low or "minhash" in low or step.startswith("dedup"):
                dedup.near += n
            if "decontam" in low or "benchmark" in low:
                decontam += n
    per_bench: dict[str, int] = {}
    for item, n in r.benchmark_items_matched.items():
        bench = str(item).split("/")[0]
        per_bench[bench] = per_bench.get(bench, 0) + n
    return CurateSummary(
        web_input=web_input or None, sources=sources, documents_in=r.documents_read,
        documents_kept=r.documents_kept, rejects=rejects, edu_scores=scores[:20000] or None,
        edu_threshold=cfg.edu_threshold if cfg.edu_threshold is not None else (3.0 if cfg.scorer else None),
        dedup=dedup if cfg.dedup else None, dedup_settings=r.dedup,
        decontam=DecontamCounts(decontam, per_bench, len(r.benchmark_items_matched),
                                r.decontam_index["n_per_benchmark"],
                                {b: c for b, c in r.decontam_index["unchecked_per_benchmark"].items() if c})
        if cfg.benchmarks else None,
        samples=samples, data=[ctx.rel(f) for f in files], bad_input=bad,
        quality=r.quality, quality_nll=(r.scores or {}).get("quality"),
    )


# ------------------------------------------------------------------------------------- tokenize


def _tokenize_cfg():
    from primer.tokens.shards import TokenizeConfig

    return TokenizeConfig


def corpus_files(ctx: StageContext, stage: str) -> list[str]:
    """The kept-document files stage `stage` wrote (its summary's `data`), as paths to read now."""
    summary = ctx.summaries[stage]
    if not summary.data:
        raise PrimerError(f"{ctx.inputs[stage]} holds no documents to tokenize")
    files = [ctx.path(f) for f in summary.data]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise PrimerError(f"the {stage} stage's output is missing ({missing[0]}); {_rerun(ctx, stage)}")
    return [str(f) for f in files]


def run_tokenize(cfg, ctx: StageContext) -> TokenizeSummary:
    from primer.tokens.shards import tokenize_corpus

    inputs = corpus_files(ctx, "curate")
    meta = tokenize_corpus(dataclasses.replace(cfg, inputs=inputs, out=str(ctx.out_dir), overwrite=True))
    train, val = meta.split("train"), meta.split("val")
    return TokenizeSummary(
        tokenizer=cfg.tokenizer or "byte-level BPE trained on the curated corpus", vocab_size=meta.vocab_size,
        train_documents=train.documents, train_tokens=train.tokens, val_documents=val.documents,
        val_tokens=val.tokens, tokenizer_hash=meta.tokenizer_hash, bad_input=meta.bad_input,
    )


# ---------------------------------------------------------------------------------------- train


def _train_cfg():
    from primer.train.config import TrainConfig

    return TrainConfig


def _curve(points: list[tuple[int, float]]) -> Curve:
    return Curve([p[0] for p in points], [p[1] for p in points])


def run_train(cfg, ctx: StageContext) -> TrainSummary:
    from primer.train import train

    s = train(dataclasses.replace(cfg, data=str(ctx.inputs["tokenize"]), out_dir=str(ctx.out_dir)))
    lc = s.loss_curve
    if len(lc) > 400:  # keep the report light; the full curve is in train/metrics.jsonl
        step = -(-len(lc) // 400)
        lc = lc[::step] + ([lc[-1]] if (len(lc) - 1) % step else [])
    if not s.checkpoint:
        raise PrimerError("training finished without writing a checkpoint")
    return TrainSummary(
        shape=cfg.model + (f" {cfg.model_overrides}" if cfg.model_overrides else ""), params=s.params, steps=s.steps,
        tokens=s.tokens, tokens_per_s=s.tokens_per_s, mfu=s.mfu, final_train_loss=s.final_loss,
        final_val_loss=s.val_loss, curve=_curve(lc), val_curve=_curve(s.val_curve), checkpoint=ctx.rel(s.checkpoint),
        samples=[_cut(t, 600) for t in s.samples],
    )


# ----------------------------------------------------------------------------------------- eval


def _eval_cfg():
    from primer.eval.runner import EvalConfig

    return EvalConfig


def _primary(task_res: TaskResult) -> tuple[float | None, float | None]:
    """The task's primary metric and its standard error (NaN, as lm-eval writes for n = 1, as None)."""

    def num(x):
        return None if x is None or (isinstance(x, float) and x != x) else x

    return num(task_res.metrics.get(task_res.primary)), num(task_res.metrics.get(task_res.primary + "_stderr"))


def _rerun(ctx: StageContext, stage: str) -> str:
    return f"re-run that stage: primer run RECIPE --run-dir {ctx.run_dir} --stages {stage}"


def _checkpoint(ctx: StageContext) -> str:
    ckpt = ctx.path(ctx.summaries["train"].checkpoint)
    if not ckpt.exists():
        raise PrimerError(f"the train stage's checkpoint is missing ({ckpt}); {_rerun(ctx, 'train')}")
    return str(ckpt)


def _benchmark_data(section: str, data_dir, ctx: StageContext, then: str = "") -> str | None:
    """Why the stage cannot score benchmarks (None: it can). A data_dir that is set but not a folder is an error."""
    if data_dir is None:
        reason = (f"no benchmark data found: set PRIMER_DATA to a folder laid out like shared/benchmarks "
                  f"(or [{section}] data_dir in the recipe) and re-run{then}")
        ctx.log(f"  {section}: {reason}")
        return reason
    if not Path(data_dir).is_dir():
        raise PrimerError(f"[{section}] data_dir {data_dir} is not a directory (expected a folder laid out like "
                          "shared/benchmarks)")
    return None


def _embedded_note(data_dir, tasks: list[str], ctx: StageContext, section: str) -> tuple[list[str], str | None]:
    """On the embedded slice: the tasks it holds, and the line the report shows (size, interval, how to get more)."""
    if not is_embedded(data_dir):
        return tasks, None
    from primer.benchmarks.slice import SLICE_ITEMS, TASKS

    kept, dropped = [t for t in tasks if t in TASKS], [t for t in tasks if t not in TASKS]
    note = (f"no benchmark data folder was found, so [{section}] used the slice embedded in primer (the first "
            f"{SLICE_ITEMS} items of {', '.join(TASKS)}; a 95% interval of up to +-{_half_width(SLICE_ITEMS):.1f} "
            f"points at {SLICE_ITEMS} items): enough to tell a model from chance, not to rank close ones. "
            + (f"Not in the slice, so not scored: {', '.join(dropped)}. " if dropped else "")
            + f"Full sets: {pull_hint(tasks)} (needs network once), or set PRIMER_DATA.")
    ctx.log(f"  {section}: {note}")
    return kept, note


def _half_width(n: int) -> float:
    """95% interval half-width of an accuracy near 50% on n items, in points."""
    return 100 * 1.96 * (0.25 / n) ** 0.5


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _shared_cache(cfg, ctx: StageContext):
    """Answers cached outside the stage folder, so the reference model's survive a re-train."""
    return cfg if cfg.cache is not None else dataclasses.replace(cfg, cache=ctx.run_dir / ".cache" / "eval.sqlite")


def run_eval(cfg, ctx: StageContext) -> EvalSummary:
    from primer.eval.lm import PrimerLM
    from primer.eval.runner import run as run_evaluation

    opts = ctx.recipe.run
    reason = None if cfg.tasks else "no tasks in [eval] tasks"
    if cfg.tasks and (reason := _benchmark_data("eval", cfg.data_dir, ctx, "; only generation samples were made")):
        cfg = dataclasses.replace(cfg, tasks=[])
    tasks, data_note = _embedded_note(cfg.data_dir, list(cfg.tasks), ctx, "eval")
    cfg = dataclasses.replace(cfg, tasks=tasks)
    cfg = _shared_cache(cfg, ctx)
    models = {"model": _checkpoint(ctx)}
    if opts.reference:
        models["teacher"] = opts.reference
    results = {}
    generations = [Generation(prompt=p) for p in opts.sample_prompts]
    for who, spec in models.items():
        ctx.log(f"  eval: {who} ({spec})")
        lm = PrimerLM.load(spec, batch_size=opts.eval_batch_size, device=_device())
        if cfg.tasks:
            results[who] = run_evaluation(lm, cfg, output=ctx.out_dir / f"results-{who}.json")
        if generations:
            outs = lm.generate([g.prompt for g in generations], stop=["\n\n\n"], max_tokens=opts.sample_tokens,
                               temperature=0.0)
            for g, o in zip(generations, outs):
                setattr(g, who, o)
        del lm
    tasks: dict[str, EvalRow] = {}
    if "model" in results:
        for name, r in results["model"].tasks.items():
            v, e = _primary(r)
            row = EvalRow(metric=r.primary, n=r.n, shots=r.shots, model=v, model_stderr=e)
            t = results["teacher"].tasks.get(name) if "teacher" in results else None
            if t is not None:
                row.teacher, row.teacher_stderr = _primary(t)
            tasks[name] = row
    return EvalSummary(skipped=reason, model="our model", teacher=opts.reference or None, tasks=tasks,
                       generations=generations, data=data_note)


# ---------------------------------------------------------------------------------------- audit


def _audit_cfg():
    from primer.audit.run import AuditConfig

    return AuditConfig


def run_audit(cfg, ctx: StageContext) -> AuditSummary:
    from primer.audit.run import audit
    from primer.eval.lm import PrimerLM

    reason = _benchmark_data("audit", cfg.data_dir, ctx)
    if reason is not None:
        return AuditSummary(skipped=reason, task=None, items=None, metric=None, baselines=None, gaps=[],
                            contamination=[], bad_input=BadInput())
    kept, data_note = _embedded_note(cfg.data_dir, [cfg.task], ctx, "audit")
    if not kept:
        return AuditSummary(skipped=data_note, task=None, items=None, metric=None, baselines=None, gaps=[],
                            contamination=[], bad_input=BadInput())
    ckpt = _checkpoint(ctx)
    corpus = corpus_files(ctx, "curate")
    cfg = _shared_cache(cfg, ctx)
    lm = PrimerLM.load(ckpt, batch_size=ctx.recipe.run.eval_batch_size, device=_device())
    r = audit(lm, dataclasses.replace(cfg, corpus=corpus, out=ctx.out_dir))
    rob = r.robustness
    gaps = [Gap(task=r.task, suite=c.name, description=c.description, baseline=c.baseline, n=c.n,
                original=c.acc_orig, perturbed=c.acc_pert, drop=c.drop, ci_low=c.drop_ci[0], ci_high=c.drop_ci[1],
                significant=c.significant) for c in (rob.conditions if rob else []) if c.n]
    signals = [Signal(task=r.task, signal=v.signal, value=v.state, verdict=v.verdict)
               for v in r.verdicts + ([r.overall] if r.overall else [])]
    return AuditSummary(skipped=None, task=r.task, items=r.n_items, metric=rob.metric if rob else None,
                        baselines=to_dict(rob.baselines) if rob else None, gaps=gaps, contamination=signals,
                        bad_input=r.bad_input, data=data_note)


# --------------------------------------------------------------------------------------- export


def _export_cfg():
    from primer.weights.export import ExportConfig

    return ExportConfig


def run_export(cfg, ctx: StageContext) -> ExportSummary:
    from primer.weights.export import export_model

    out = ctx.out_dir / (f"model-{cfg.quant}.gguf" if cfg.to == "gguf" else "hf")
    r = export_model(_checkpoint(ctx), out, cfg)
    return ExportSummary(path=ctx.rel(r.path), format=r.format, arch=r.arch, quant=r.quant, bytes=r.bytes,
                         chat=f"primer chat --model {ctx.rel(r.path)}  (in the run directory)")


# ----------------------------------------------------------------------------------------- tune


def _tune_cfg():
    from primer.pipeline.chat import ChatTuneConfig

    return ChatTuneConfig


def run_tune(cfg, ctx: StageContext) -> TuneSummary:
    if not cfg.enabled:
        return TuneSummary(skipped="off in this recipe ([tune] enabled = true turns it on; recipes/chat.toml does)",
                           model=None, conversations=None, pairs=None, sft_curve=None, dpo_curve=None,
                           dpo_margin=None, rows=[], checkpoint=None, seconds={})
    from primer.pipeline.chat import run_chat_tune

    # the curated documents are only the teacher's sources: with both data files given they are not read
    sources = [] if cfg.sft_data and cfg.pairs_data else corpus_files(ctx, "curate")
    return run_chat_tune(cfg, sources, ctx.out_dir, ctx.log, device=_device(), rel=ctx.rel)


# ------------------------------------------------------------------------------------------------

STAGES: list[StageSpec] = [
    StageSpec("synth", (), _synth_cfg, run_synth, SynthSummary, "synthetic textbook documents from the teacher",
              wired=("out",)),
    StageSpec("curate", ("synth",), _curate_cfg, run_curate, CurateSummary, "filter, score, dedup, decontaminate",
              wired=("out",), env=("PRIMER_DATA",), resolve=_curate_resolve),
    StageSpec("tokenize", ("curate",), _tokenize_cfg, run_tokenize, TokenizeSummary, "BPE tokenizer + token shards",
              wired=("inputs", "out", "overwrite")),
    StageSpec("train", ("tokenize",), _train_cfg, run_train, TrainSummary, "pretrain the small model",
              wired=("data", "out_dir")),
    StageSpec("eval", ("train",), _eval_cfg, run_eval, EvalSummary, "benchmarks, beside the reference model",
              run_fields=("reference", "sample_prompts", "sample_tokens"), env=("PRIMER_DATA",),
              resolve=_with_data_dir),
    StageSpec("audit", ("train", "curate"), _audit_cfg, run_audit, AuditSummary, "perturbation gaps and contamination",
              wired=("corpus", "out"), env=("PRIMER_DATA",), resolve=_with_data_dir),
    StageSpec("export", ("train",), _export_cfg, run_export, ExportSummary, "the trained model as a GGUF file llama.cpp runs"),
    StageSpec("tune", ("curate",), _tune_cfg, run_tune, TuneSummary,
              "chat data from the corpus, SFT + DPO of [tune] model, evals before/after (off by default)",
              env=("PRIMER_DATA",), resolve=_with_data_dir, keeps_valid=True),
]
