"""`audit(...)`: robustness under perturbations and contamination evidence for one model and task.

Flow: load the task's documents (items `start`..`start+limit`), build each perturbation's variants
(seeded), score originals and variants with the task's own prompts and metric through the eval
runner's request builder and its cache -> answer -> score loop (`eval.runner.score_docs`: answers
cached in eval's sqlite cache, so an interrupted audit resumes), compare each perturbation with its
baseline on the same items (paired bootstrap), find the memorisation signature; then the
contamination signals: n-gram overlap with the training corpus when it is given, and the corpus-free
signals on the items' own text ("Question: ...\\nAnswer: <gold>", the task's solved-example text)
against controls (`controls`), with the reference model as a check (`signals`, `evidence`).
Optionally the same corpus-free signals on a known-clean model over other slices of the task: the
false-positive rate observed at the shipped thresholds (`calibrate`).

Few-shot examples are drawn per item with a seed of its own, so an item and its variants see the
same examples and only the perturbation differs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from primer.audit import perturb as P
from primer.audit import stats as S
from primer.audit.controls import KINDS, Controls, choose
from primer.audit.evidence import decide, overall
from primer.audit.result import (
    FLAGGED,
    AuditResult,
    Baseline,
    Calibration,
    Condition,
    Robustness,
    SliceCheck,
)
from primer.audit.signals import CORPUS_FREE, Reference, finish, load_lm, slice_tests
from primer.audit.suites import suite_for
from primer.common.files import DirLock
from primer.common.jsonl import Utf8Policy
from primer.common.paths import benchmark_dir
from primer.config import Count, PositiveFraction, to_dict
from primer.config import check_config as check_fields
from primer.errors import PrimerError
from primer.eval.served import NeedsPromptLogprobs

SIGNALS = ("robustness", "ngram") + CORPUS_FREE


@dataclass
class AuditConfig:
    task: str = "gsm8k"
    """Task to audit (a `primer eval` task name: gsm8k, arc_easy, arc_challenge, hellaswag, ...)."""
    data_dir: Path | None = None
    """Folder laid out like shared/benchmarks; None = $PRIMER_DATA."""
    start: int = 0
    """First audited item (0-based position in the task's evaluated split)."""
    limit: Count | None = 50
    """Audit this many items from `start` (None: all)."""
    perturbations: list[str] = field(default_factory=list)
    """Perturbations to run (empty: every one that applies to the task)."""
    variants: Count = 1
    """Variants per item for the randomised perturbations (numbers, symbolic, names, noop, shuffle)."""
    shots: int | None = None
    """Few-shot examples (default: the task's own; gsm8k 5)."""
    metric: str | None = None
    """Per-item metric compared (default: the task's primary; GSM8K: flexible-extract exact match)."""
    max_tokens: Count | None = None
    """Generation budget in tokens for generative tasks (default: the task's own)."""
    corpus: list[str] = field(default_factory=list)
    """Training corpus files or folders (.jsonl/.txt/.parquet) for the n-gram overlap signal."""
    text_field: str = "text"
    """Field holding the text in JSONL/Parquet corpus files."""
    signals: list[str] = field(default_factory=lambda: list(SIGNALS))
    """Which signals to compute: robustness, ngram, mink, loss, zlib, verbatim, permutation."""
    controls: str = "auto"
    """What the corpus-free signals compare the items with: split (another split of the task), heldout (the
    neighbouring block of the same split), rewrite (each item with new numbers/names; needs the reference), auto
    (split where the task has one, else heldout)."""
    reference: str | None = "bundled"
    """Reference model (any model spec `load_model` reads; 'none': no reference): checks each rejection, and
    is subtracted for rewritten controls."""
    alpha: float = 0.01
    """Family-wise false-positive rate of the contamination verdict (Holm across the corpus-free signals)."""
    ngram_n: Count = 13
    """Word n-gram length for overlap (13 as GPT-3 / lm-eval decontamination)."""
    ngram_threshold: PositiveFraction = 0.5
    """An item counts as in the corpus when this fraction of its n-grams occur in one document."""
    mink_k: PositiveFraction = 0.2
    """Min-K%++: fraction of lowest-scoring tokens averaged."""
    verbatim_words: Count = 32
    """Verbatim completion: words of each item's second half the completion is scored against."""
    permutation_shards: Count | None = None
    """Shards for Oren et al.'s permutation test (None: one per 5 items)."""
    permutations: Count = 5
    """Shuffled orders per shard (the sharded test's p does not depend on it: its noise is in the t-test)."""
    calibrate: str | None = None
    """A known-clean model (a model spec, or 'reference'): run the corpus-free signals on it over other slices
    of the task and print the false-positive rate observed at these thresholds."""
    calibration_slices: Count = 5
    """Slices (of `limit` items each, beside the audited ones) for --calibrate."""
    bootstrap: Count = 2000
    """Bootstrap resamples (paired for robustness; for the intervals of the contamination effects)."""
    seed: int = 0
    """Seed of perturbations, few-shot draws, controls, shuffles and resampling."""
    cache: Path | None = None
    """sqlite cache of model answers (default: eval's, ~/.cache/primer/eval-cache.sqlite); 'none' disables."""
    out: Path | None = None
    """Write audit.json and audit.png into this directory."""
    chat: bool = False
    """Generative tasks: send each prompt as one user turn through the model's chat template (a served model:
    /v1/chat/completions, so a chat-only endpoint gets a robustness audit)."""
    strict: bool = False
    """Stop at the first malformed line of a --corpus file (naming file and line) instead of counting and
    naming it in the result."""
    invalid_utf8: Utf8Policy = "drop"
    """A document line with bytes that are not UTF-8: drop it, or keep it with U+FFFD in their place
    (either way counted and named in the result)."""
    unsafe_code: bool = False
    """Auditing a code task: run model-written code even where no sandbox isolation works (resource limits
    only; the code can reach the network and your files). Off: such a run is refused."""


def check_config(cfg: AuditConfig) -> None:
    """Refuse what cannot give a meaningful audit, before any model loads (the fields' own checks first)."""
    check_fields(cfg)
    unknown = sorted(set(cfg.signals) - set(SIGNALS))
    if unknown:
        raise PrimerError(f"unknown signal(s) {unknown}; choose from {', '.join(SIGNALS)}")
    if cfg.controls not in KINDS:
        raise PrimerError(f"unknown --controls '{cfg.controls}'; choose from {', '.join(KINDS)}")
    if not 0 < cfg.alpha < 1:
        raise PrimerError(f"--alpha must be between 0 and 1 (got {cfg.alpha})")
    if cfg.start < 0 or (cfg.limit is not None and cfg.limit < 1):
        raise PrimerError("--start must be >= 0 and --limit >= 1")
    if cfg.permutations < 1 or cfg.calibration_slices < 1:
        raise PrimerError("--permutations and --calibration-slices must be >= 1")


def audit(model: Any, cfg: AuditConfig, progress: bool = True, reference: Any = None, clean: Any = None) -> AuditResult:
    """Run the audit. `model` is a model spec for `load_lm` or an LM object; `reference` and `clean`
    (LM objects) override `cfg.reference` and `cfg.calibrate`."""
    check_config(cfg)
    with DirLock(cfg.out, "primer audit") if cfg.out is not None else contextlib.nullcontext():
        return _audit(model, cfg, progress, reference, clean)


def _audit(model: Any, cfg: AuditConfig, progress: bool, reference: Any, clean: Any) -> AuditResult:
    from primer.eval.runner import Cache, code_sandbox  # noqa: PLC0415
    from primer.eval.tasks import get_task  # noqa: PLC0415

    t0 = time.time()
    task = get_task(cfg.task)
    code_sandbox([task], cfg.unsafe_code)  # a code task on a machine that cannot isolate it: refused before loading
    lm = load_lm(model)
    data_dir = benchmark_dir(cfg.data_dir)
    all_docs = [{**d, "_index": i} for i, d in enumerate(task.docs(data_dir))]
    docs = all_docs[cfg.start: cfg.start + cfg.limit] if cfg.limit is not None else all_docs[cfg.start:]
    if not docs:
        raise PrimerError(f"task {task.name} has no documents from item {cfg.start} ({len(all_docs)} in its split)")
    log = _Log(progress)
    result = AuditResult(
        model={"name": getattr(lm, "name", str(model)), "fingerprint": getattr(lm, "fingerprint", None)},
        task=task.name, n_items=len(docs),
        config={k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()},
    )
    ref = Reference(reference if reference is not None else cfg.reference, lm, log)
    cache = Cache.open(cfg.cache)
    want_rewrites = cfg.controls == "rewrite" and any(s in cfg.signals for s in CORPUS_FREE)
    suite = suite_for(task, cfg.perturbations or None) if "robustness" in cfg.signals or want_rewrites else []
    coverage: dict[str, Any] = {}
    for p in suite:
        if p.prepare is not None:  # e.g. GSM-Symbolic: find each item's template; new numbers: coverage
            docs, found = p.prepare(docs, all_docs, data_dir, cfg.seed)
            coverage.update(found)
    variants = build_variants(task, docs, suite, cfg)
    if "robustness" in cfg.signals:
        log(f"robustness: {len(suite)} conditions on {len(docs)} items")
        try:
            result.robustness = robustness(lm, task, docs, suite, variants, cfg, data_dir, log)
            result.robustness.coverage = coverage
        except NeedsPromptLogprobs as e:  # a served model scoring a multiple-choice task
            result.skipped["robustness"] = f"robustness on {task.name} (multiple choice) needs prompt log-probs: {e}"
            log(result.skipped["robustness"])
    if "ngram" in cfg.signals:
        result.contamination["ngram"] = _ngram(task, docs, cfg, result, log)
    from primer.audit.report import verdicts  # noqa: PLC0415

    result.verdicts = verdicts(result)
    corpus_free = [s for s in CORPUS_FREE if s in cfg.signals]
    if corpus_free:
        controls = choose(task, docs, all_docs, data_dir, cfg.controls, cfg.seed, variants, suite)
        result.controls = controls.summary()
        log(f"controls: {controls.description}")
        measured, tests = slice_tests(lm, ref, task, docs, controls, cfg, cache, log, corpus_free)
        result.verdicts += decide(tests, cfg.alpha)
        result.contamination.update(finish(measured))
    result.overall = overall(result.verdicts, cfg.alpha)
    result.reference = ref.describe() if corpus_free else None
    if corpus_free and (clean is not None or cfg.calibrate):
        clean_lm = clean
        if clean_lm is None:
            clean_lm = ref.lm if cfg.calibrate == "reference" else load_lm(cfg.calibrate, like=lm)
        if clean_lm is None:
            raise PrimerError(f"--calibrate reference: {ref.reason}")
        # The clean model's own reference check, refused when the reference is the clean model itself.
        clean_ref = Reference(ref.lm, clean_lm, log, reason=None if ref.lm is not None else ref.reason)
        result.calibration = calibrate(clean_lm, clean_ref, task, all_docs, docs, controls, data_dir, cfg, cache,
                                       log, corpus_free, suite)
    result.seconds = round(time.time() - t0, 2)
    if cfg.out is not None:
        from primer.audit.report import write  # noqa: PLC0415

        result.files = write(result, Path(cfg.out))
    return result


def _ngram(task, docs, cfg: AuditConfig, result: AuditResult, log) -> dict[str, Any]:
    from primer.audit.contamination import ngram_overlap  # noqa: PLC0415

    if not cfg.corpus:
        return {"skipped": "no --corpus given (the training data to look the items up in)"}
    from primer.tokens.shards import iter_documents  # noqa: PLC0415

    log(f"ngram: {len(docs)} items against {', '.join(cfg.corpus)}")
    result.bad_input.invalid_utf8 = cfg.invalid_utf8
    corpus = iter_documents(cfg.corpus, cfg.text_field, result.bad_input, cfg.strict)
    out = ngram_overlap([task.decontam_parts(d) for d in docs], corpus, n=cfg.ngram_n, threshold=cfg.ngram_threshold)
    if result.bad_input.count:
        log(f"ngram: {result.bad_input.describe()}")
    return out


def calibrate(clean, ref: Reference, task, all_docs: list[dict], audited: list[dict], controls: Controls, data_dir,
              cfg: AuditConfig, cache, log, signals: list[str], suite: list[P.Perturbation]) -> Calibration:
    """The corpus-free signals on a known-clean model over `calibration_slices` other slices of `len(audited)`
    items (each with its own controls of the same kind), decided exactly as the audit decides: the observed
    false-positive rate. Slices are the split's blocks that touch neither the audited items nor their controls."""
    n = len(audited)
    taken = {d["_index"] for d in audited}
    if controls.kind == "heldout":
        taken |= {d["_index"] for d in controls.docs}
    width = 2 * n if controls.kind == "heldout" else n  # a heldout slice brings its neighbouring block
    starts = [b for b in range(0, len(all_docs) - width + 1, width) if not taken & set(range(b, b + width))]
    note = ""
    if len(starts) < cfg.calibration_slices:
        note = f"the split holds only {len(starts)} free slices of {n} items"
    slices, per_signal = [], {s: 0 for s in signals}
    for b in starts[: cfg.calibration_slices]:
        docs = all_docs[b: b + n]
        log(f"calibration: items {b}-{b + n - 1} on {getattr(clean, 'name', 'the clean model')}")
        variants = {}
        if controls.kind == "rewrite":
            for p in suite:
                if p.prepare is not None:
                    docs, _ = p.prepare(docs, all_docs, data_dir, cfg.seed)
            variants = build_variants(task, docs, suite, cfg)
        ctl = choose(task, docs, all_docs, data_dir, controls.kind, cfg.seed, variants, suite)
        _, tests = slice_tests(clean, ref, task, docs, ctl, cfg, cache, log, signals, for_plot=False)
        vs = decide(tests, cfg.alpha)
        ov = overall(vs, cfg.alpha)
        for v in vs:
            per_signal[v.signal] += v.state == FLAGGED
        slices.append(SliceCheck(start=b, n=n, states={v.signal: v.state for v in vs}, overall=ov.state))
    flagged = sum(s.overall == FLAGGED for s in slices)
    if not slices:
        note = note or "no slice left"
    return Calibration(model=getattr(clean, "name", "clean model"), alpha=cfg.alpha, slices=slices, flagged=flagged,
                       rate=flagged / len(slices) if slices else float("nan"), per_signal=per_signal, note=note)


# -- pieces ---------------------------------------------------------------------------------------
class _Log:
    def __init__(self, on: bool):
        self.on, self.t0 = on, time.time()

    def __call__(self, msg: str) -> None:
        if self.on:
            import sys  # noqa: PLC0415

            print(f"[audit {time.time() - self.t0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def build_variants(task, docs: list[dict], suite: list[P.Perturbation], cfg: AuditConfig) -> dict[str, list[list[dict]]]:
    """perturbation name -> per item, its variants (empty where it does not apply)."""
    out: dict[str, list[list[dict]]] = {}
    for p in suite:
        per_item = []
        for d in docs:
            rng = random.Random(zlib.crc32(f"{cfg.seed}:{p.name}:{d['_index']}".encode()))
            if task.kind == "multiple_choice":
                d = {**d, "_n_choices": len(task.doc_to_choice(d))}
            vs, seen = [], set()
            for _ in range(cfg.variants if p.randomised else 1):
                v = p.apply(d, rng)
                if v is None:
                    break
                key = repr(sorted((kk, str(vv)) for kk, vv in v.items() if not kk.startswith("_t")))
                if key not in seen:
                    seen.add(key)
                    vs.append(v)
            per_item.append(vs)
        out[p.name] = per_item
    return out


def _primary(task, cfg: AuditConfig) -> str:
    if cfg.metric:
        return cfg.metric
    if "exact_match,flexible-extract" in task.metrics:
        return "exact_match,flexible-extract"
    return task.metrics[0]


def per_item_scores(lm, task, docs: list[dict], *, shots: int, pool, cfg: AuditConfig, cache, metric: str,
                    prompt_fn=None, progress: bool = False, label: str = "") -> list[float]:
    """Per-document `metric` under the task's prompt (optionally rewritten by `prompt_fn`).

    Few-shot examples are drawn per item with a seed of its own, so an item and its variants see
    the same examples; answering and scoring is eval's loop (`score_docs`), cached as it goes, so
    a killed audit resumes where it stopped."""
    from primer.eval.runner import EvalConfig, build_requests, score_docs  # noqa: PLC0415

    ecfg = EvalConfig(tasks=[task.name], shots=shots, seed=cfg.seed, temperature=0.0, samples=1, chat=cfg.chat)
    if cfg.max_tokens is not None and task.kind == "generate":
        task = dataclasses.replace(task, max_tokens=cfg.max_tokens)
    built = []
    for d in docs:
        rnd = random.Random(cfg.seed * 1_000_003 + d["_index"])
        prefix = task.fewshot_prefix(d, shots, pool, rnd) if (shots > 0 or task.description) else ""
        kind, reqs = build_requests(task, d, prefix, ecfg, lm)
        if prompt_fn is not None:
            reqs = [_rewrite(kind, r, prompt_fn) for r in reqs]
        built.append((kind, reqs))
    scores, _, _ = score_docs(lm, task, docs, built, cache, progress=progress, label=label, unsafe_code=cfg.unsafe_code)
    if scores and metric not in scores[0]:
        raise PrimerError(f"metric '{metric}' is not reported by task {task.name}; it reports {sorted(scores[0])}")
    return [float(s[metric]) for s in scores]


def _rewrite(kind: str, req: list, fn) -> list:
    req = list(req)
    req[0] = fn(req[0])
    if kind == "generate":
        req[1] = [s.replace("Question:", "Q:") for s in req[1]]
    return req


def robustness(lm, task, docs, suite, variants, cfg: AuditConfig, data_dir, log) -> Robustness:
    from primer.eval.runner import Cache  # noqa: PLC0415

    cache = Cache.open(cfg.cache)
    shots = task.default_shots if cfg.shots is None else cfg.shots
    pool = None
    if shots > 0:
        pool = task.fewshot_pool(data_dir) or task.docs(data_dir)
    metric = _primary(task, cfg)
    log(f"  original ({metric}, {shots}-shot)")
    base_scores = {"original": per_item_scores(lm, task, docs, shots=shots, pool=pool, cfg=cfg, cache=cache,
                                               metric=metric, progress=log.on, label="original")}
    conditions: list[Condition] = []
    per_item: dict[str, dict[int, list[float]]] = {}  # condition -> item -> its variants' scores
    for p in suite:
        t = P.mc_task(task, p)
        if p.is_baseline:  # a format the later conditions are compared with (e.g. the lettered list)
            log(f"  {p.name}")
            base_scores[p.name] = per_item_scores(lm, t, docs, shots=shots, pool=pool, cfg=cfg, cache=cache,
                                                  metric=t.metrics[0], progress=log.on, label=p.name)
            continue
        flat, owner = [], []
        for i, (d, vlist) in enumerate(zip(docs, variants[p.name])):
            if p.apply is not None and not vlist:
                continue
            for v in (vlist or [d]):
                flat.append(v)
                owner.append(i)
        if not flat:
            conditions.append(Condition(p.name, p.description, p.baseline, p.content, n=0,
                                        skipped="applies to no audited item"))
            continue
        log(f"  {p.name}: {len(flat)} variants of {len(set(owner))} items")
        sc = per_item_scores(lm, t, flat, shots=shots if p.shots is None else p.shots, pool=pool, cfg=cfg,
                             cache=cache, prompt_fn=p.prompt, metric=t.metrics[0] if t is not task else metric,
                             progress=log.on, label=p.name)
        mine = per_item[p.name] = {}
        for i, s in zip(owner, sc):
            mine.setdefault(i, []).append(s)
        items = sorted(mine)
        base = base_scores[p.baseline]
        pr = S.paired_bootstrap([base[i] for i in items], [sum(mine[i]) / len(mine[i]) for i in items],
                                iters=cfg.bootstrap, seed=cfg.seed)
        conditions.append(Condition(p.name, p.description, p.baseline, p.content, **pr.to_dict(), variants=len(flat)))
    chance = None
    if task.kind == "multiple_choice":  # accuracy of guessing, the floor a baseline must clear
        chance = sum(1 / len(task.doc_to_choice(d)) for d in docs) / len(docs)
    baselines = {}
    for name, sc in base_scores.items():
        lo, hi = _ci(sc, cfg)
        baselines[name] = Baseline(len(sc), sum(sc) / len(sc), (lo, hi), chance is not None and lo <= chance)
    for c in conditions:
        # A model that cannot beat guessing in this format (e.g. lettered options for a 135M model)
        # loses or gains points under a shuffle through its position bias alone: no evidence either way.
        c.baseline_at_chance = baselines[c.baseline].at_chance
    return Robustness(metric=metric, shots=shots, baselines=baselines, conditions=conditions, chance=chance,
                      memorisation=_signature(docs, base_scores, suite, per_item, variants))


def _ci(sc: list[float], cfg: AuditConfig) -> tuple[float, float]:
    r = S.paired_bootstrap(sc, sc, iters=cfg.bootstrap, seed=cfg.seed)
    return r.ci_orig


def _signature(docs, base_scores, suite, per_item, variants) -> dict[str, Any]:
    """Per baseline: the memorisation signature over the conditions that change the items (a
    perturbation that changes the setting, e.g. the number of shots, is left out)."""
    out = {}
    for base in base_scores:
        pooled: list[list[float]] = [[] for _ in docs]
        used = []
        for p in suite:
            if p.baseline != base or p.shots is not None or p.name not in per_item:
                continue
            used.append(p.name)
            for i, ss in per_item[p.name].items():
                pooled[i].extend(ss)
        if not used:
            continue
        sig = S.memorisation_signature(base_scores[base], pooled)
        examples = []
        for i in sig.memorised[:5]:
            d = docs[i]
            ex = {"item": d["_index"], "question": str(d.get(P.question_field(d) or "question", ""))[:400],
                  "right_on_original": True, "variants_right": f"{int(sum(pooled[i]))}/{len(pooled[i])}"}
            for p in suite:  # the first perturbation that rewrote this item's question, to show beside it
                vs = variants.get(p.name, [])
                if p.content and i < len(vs) and vs[i] and vs[i][0].get("question") != d.get("question"):
                    ex[f"{p.name}_variant"] = str(vs[i][0].get("question", ""))[:400]
                    break
            examples.append(ex)
        out[base] = {**to_dict(sig), "pooled": used, "examples": examples}
    return out
