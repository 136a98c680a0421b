"""`audit(...)`: robustness under perturbations and contamination evidence for one model and task.

Flow: load the task's documents (first `limit`), build each perturbation's variants (seeded),
score originals and variants with the task's own prompts and metric through the eval runner's
request builder and scorer (answers cached in eval's sqlite cache, so an interrupted audit resumes),
compare each perturbation with its baseline on the same items (paired bootstrap), find the
memorisation signature, then run the contamination signals on the items' text:
"Question: ...\\nAnswer: <gold>" (the task's own solved-example text).

Few-shot examples are drawn per item with a seed of its own, so an item and its variants see the
same examples and only the perturbation differs.
"""

from __future__ import annotations

import dataclasses
import random
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from primer.audit import contamination as C
from primer.audit import perturb as P
from primer.audit import stats as S
from primer.audit.suites import suite_for
from primer.common.paths import benchmark_dir
from primer.errors import PrimerError

SIGNALS = ("robustness", "ngram", "mink", "verbatim", "permutation")


@dataclass
class AuditConfig:
    task: str = "gsm8k"
    """Task to audit (a `primer eval` task name: gsm8k, arc_easy, arc_challenge, hellaswag, ...)."""
    data_dir: Path | None = None
    """Folder laid out like shared/benchmarks; None = $PRIMER_DATA."""
    limit: int | None = 50
    """Audit only the first N items of the task (None: all)."""
    perturbations: list[str] = field(default_factory=list)
    """Perturbations to run (empty: every one that applies to the task)."""
    variants: int = 1
    """Variants per item for the randomised perturbations (numbers, symbolic, names, noop, shuffle)."""
    shots: int | None = None
    """Few-shot examples (default: the task's own; gsm8k 5)."""
    metric: str | None = None
    """Per-item metric compared (default: the task's primary; GSM8K: flexible-extract exact match)."""
    max_tokens: int | None = None
    """Generation budget in tokens for generative tasks (default: the task's own)."""
    corpus: list[str] = field(default_factory=list)
    """Training corpus files or folders (.jsonl/.txt/.parquet) for the n-gram overlap signal."""
    text_field: str = "text"
    """Field holding the text in JSONL/Parquet corpus files."""
    signals: list[str] = field(default_factory=lambda: list(SIGNALS))
    """Which signals to compute: robustness, ngram, mink, verbatim, permutation."""
    ngram_n: int = 13
    """Word n-gram length for overlap (13 as GPT-3 / lm-eval decontamination)."""
    ngram_threshold: float = 0.5
    """An item counts as in the corpus when this fraction of its n-grams occur in one document."""
    mink_k: float = 0.2
    """Min-K%++: fraction of lowest-scoring tokens averaged."""
    permutation_shards: int = 1
    """Shards for the permutation test (Oren et al.'s sharded test when > 1)."""
    permutations: int = 50
    """Shuffled orders compared with the canonical one, per shard."""
    contamination_limit: int | None = None
    """Items used by the likelihood/verbatim signals (default: all audited items)."""
    bootstrap: int = 2000
    """Paired bootstrap resamples."""
    seed: int = 0
    """Seed of perturbations, few-shot draws and resampling."""
    cache: Path | None = None
    """sqlite cache of model answers (default: eval's, ~/.cache/primer/eval-cache.sqlite); 'none' disables."""
    out: Path | None = None
    """Write audit.json and audit.png into this directory."""


def audit(model: Any, cfg: AuditConfig, progress: bool = True) -> dict[str, Any]:
    """Run the audit. `model` is a model spec for `PrimerLM.load` or an LM object."""
    from primer.eval.tasks import get_task  # noqa: PLC0415

    t0 = time.time()
    unknown = sorted(set(cfg.signals) - set(SIGNALS))
    if unknown:
        raise PrimerError(f"unknown signal(s) {unknown}; choose from {', '.join(SIGNALS)}")
    lm = _load_lm(model)
    task = get_task(cfg.task)
    data_dir = benchmark_dir(cfg.data_dir)
    docs = task.docs(data_dir)
    all_docs = docs
    if cfg.limit is not None:
        docs = docs[: cfg.limit]
    if not docs:
        raise PrimerError(f"task {task.name} has no documents")
    docs = [{**d, "_index": i} for i, d in enumerate(docs)]
    log = _Log(progress)
    result: dict[str, Any] = {
        "model": {"name": getattr(lm, "name", str(model)), "fingerprint": getattr(lm, "fingerprint", None)},
        "task": task.name, "n_items": len(docs),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()},
    }
    suite = suite_for(task, cfg.perturbations or None) if "robustness" in cfg.signals or "mink" in cfg.signals else []
    extras: dict[str, Any] = {}
    if task.name.startswith("gsm"):
        from primer.audit.gsm_numbers import number_variants  # noqa: PLC0415
        from primer.audit.symbolic import load_templates  # noqa: PLC0415

        _, cov = number_variants([{"question": d["question"], "answer": d["answer"]} for d in docs], 1, cfg.seed)
        extras["numbers_coverage"] = cov.to_dict()
        if any(p.name == "symbolic" for p in suite):
            templates, tstats = load_templates(data_dir, all_docs)
            extras["symbolic_templates"] = tstats | {"items_with_template": sum(d["_index"] in templates for d in docs)}
            docs = [{**d, "_templates": templates} for d in docs]
    variants = build_variants(task, docs, suite, cfg)
    if "robustness" in cfg.signals:
        log(f"robustness: {len(suite)} conditions on {len(docs)} items")
        result["robustness"] = robustness(lm, task, docs, suite, variants, cfg, data_dir, log)
        result["robustness"]["coverage"] = extras
    contamination: dict[str, Any] = {}
    n_c = cfg.contamination_limit or len(docs)
    texts = [item_text(task, d) for d in docs[:n_c]]
    if "ngram" in cfg.signals:
        if cfg.corpus:
            from primer.tokens.shards import iter_documents  # noqa: PLC0415

            log(f"ngram: {len(docs)} items against {', '.join(cfg.corpus)}")
            q = [task.decontam_text(d) for d in docs]
            contamination["ngram"] = C.ngram_overlap(q, iter_documents(cfg.corpus, cfg.text_field), n=cfg.ngram_n,
                                                     threshold=cfg.ngram_threshold)
        else:
            contamination["ngram"] = {"skipped": "no --corpus given (the training data to look the items up in)"}
    pairs = matched_pairs(task, docs[:n_c], variants)
    if "mink" in cfg.signals:
        log(f"min-k%++: {len(pairs)} matched pairs")
        if hasattr(lm, "model") and pairs:
            contamination["mink"] = C.mink_test(lm, [p[1] for p in pairs], [p[2] for p in pairs], k=cfg.mink_k,
                                                seed=cfg.seed)
            contamination["mink"]["perturbation"] = sorted({p[3] for p in pairs})
        else:
            contamination["mink"] = {"skipped": "needs a primer model (next-token distributions)" if pairs else
                                     "no item has a matched perturbed copy"}
    if "verbatim" in cfg.signals:
        log(f"verbatim: {len(texts)} items")
        contamination["verbatim"] = C.verbatim_completion(lm, texts)
        if pairs:
            vp = C.verbatim_completion(lm, [p[2] for p in pairs])
            idx = [p[0] for p in pairs]
            vp["per_item"] = [{**r, "item": idx[r["item"]]} for r in vp.get("per_item", [])]
            contamination["verbatim"]["perturbed"] = {k: v for k, v in vp.items() if k not in ("per_item", "flag", "rule")}
            contamination["verbatim"]["vs_perturbed"] = C.compare_verbatim(contamination["verbatim"], vp)
    if "permutation" in cfg.signals:
        log(f"permutation: {len(texts)} items, {cfg.permutation_shards} shard(s) x {cfg.permutations} orders")
        contamination["permutation"] = C.permutation_test(lm, texts, shards=cfg.permutation_shards,
                                                          permutations=cfg.permutations, seed=cfg.seed)
    result["contamination"] = contamination
    from primer.audit.report import verdicts  # noqa: PLC0415

    result["verdicts"] = verdicts(result)
    result["seconds"] = round(time.time() - t0, 2)
    if cfg.out is not None:
        from primer.audit.report import write  # noqa: PLC0415

        result["files"] = write(result, Path(cfg.out))
    return result


# -- pieces ---------------------------------------------------------------------------------------
class _Log:
    def __init__(self, on: bool):
        self.on, self.t0 = on, time.time()

    def __call__(self, msg: str) -> None:
        if self.on:
            import sys  # noqa: PLC0415

            print(f"[audit {time.time() - self.t0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def _load_lm(model):
    if hasattr(model, "loglikelihood"):
        return model
    from primer.eval.lm import PrimerLM  # noqa: PLC0415

    return PrimerLM.load(str(model))


def item_text(task, doc: dict) -> str:
    """The item as it would appear in a data dump: the task's solved-example text."""
    return task.example_text(doc)


def build_variants(task, docs: list[dict], suite: list[P.Perturbation], cfg: AuditConfig) -> dict[str, list[list[dict]]]:
    """perturbation name -> per item, its variants (empty where it does not apply)."""
    out: dict[str, list[list[dict]]] = {}
    for k, p in enumerate(suite):
        per_item = []
        for d in docs:
            rng = random.Random(zlib.crc32(f"{cfg.seed}:{p.name}:{d['_index']}".encode()))
            if task.kind == "multiple_choice":
                d = {**d, "_n_choices": len(task.doc_to_choice(d))}
            n = cfg.variants if p.name in ("numbers", "symbolic", "names", "noop", "shuffle") else 1
            vs, seen = [], set()
            for _ in range(n):
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


def matched_pairs(task, docs: list[dict], variants: dict[str, list[list[dict]]]) -> list[tuple[int, str, str, str]]:
    """(item position, original text, perturbed text, perturbation) for Min-K%++ and verbatim.

    The perturbed copy keeps the item's kind and length: new numbers (GSM8K), else GSM-Symbolic,
    else swapped names/objects. Items with none of these are left out.
    """
    out = []
    for i, d in enumerate(docs):
        for name in ("numbers", "symbolic", "names"):
            vs = variants.get(name, [])
            if i < len(vs) and vs[i]:
                v = vs[i][0]
                pert = item_text(task, v)
                orig = item_text(task, d)
                if pert != orig:
                    out.append((i, orig, pert, name))
                    break
    return out


def _primary(task, cfg: AuditConfig) -> str:
    if cfg.metric:
        return cfg.metric
    if "exact_match,flexible-extract" in task.metrics:
        return "exact_match,flexible-extract"
    return task.metrics[0]


_CHUNK_REQUESTS = 64  # per answer() call: batches stay full, the bar and the cache move often


def score_docs(lm, task, docs: list[dict], *, shots: int, pool, cfg: AuditConfig, cache,
               prompt_fn=None, metric: str, progress: bool = False, label: str = "") -> list[float]:
    """Per-document metric under the task's prompt (optionally rewritten by `prompt_fn`).

    Requests are answered in chunks, each cached as soon as it is done, so a killed audit resumes
    where it stopped; `progress` shows a bar over the requests."""
    from tqdm.auto import tqdm  # noqa: PLC0415

    from primer.eval.runner import Cache, EvalConfig, answer, build_requests, score_doc  # noqa: PLC0415

    ecfg = EvalConfig(tasks=[task.name], shots=shots, seed=cfg.seed, temperature=0.0, samples=1)
    if cfg.max_tokens is not None and task.kind == "generate":
        task = dataclasses.replace(task, max_tokens=cfg.max_tokens)
    built = []
    for d in docs:
        rnd = random.Random(cfg.seed * 1_000_003 + d["_index"])
        prefix = task.fewshot_prefix(d, shots, pool, rnd) if (shots > 0 or task.description) else ""
        kind, reqs = build_requests(task, d, prefix, ecfg)
        if prompt_fn is not None:
            reqs = [_rewrite(kind, r, prompt_fn) for r in reqs]
        built.append((kind, reqs))
    fp = getattr(lm, "fingerprint", None)
    keys = {(i, j): Cache.key(fp, k, r) for i, (k, rs) in enumerate(built) for j, r in enumerate(rs)} if fp else {}
    have = cache.get_many(list(keys.values())) if fp else {}
    todo: dict[str, list[tuple[int, int]]] = {}
    for i, (k, rs) in enumerate(built):
        for j in range(len(rs)):
            if not fp or keys[(i, j)] not in have:
                todo.setdefault(k, []).append((i, j))
    got: dict[tuple[int, int], Any] = {}
    bar = tqdm(total=sum(map(len, todo.values())), desc=label or task.name, unit="req", leave=False,
               disable=not progress or not todo)
    for kind, ij in todo.items():
        # a generation batch takes as long as a chunk of many scoring requests
        step = max(1, getattr(lm, "batch_size", 8)) if kind == "generate" else _CHUNK_REQUESTS
        for c in range(0, len(ij), step):
            part = ij[c: c + step]
            done = dict(zip(part, answer(lm, kind, [built[i][1][j] for i, j in part])))
            if fp:
                cache.put_many({keys[k]: a for k, a in done.items()})
            got.update(done)
            bar.update(len(part))
    bar.close()
    scores = []
    for i, d in enumerate(docs):
        resps = [got[(i, j)] if (i, j) in got else have[keys[(i, j)]] for j in range(len(built[i][1]))]
        s = score_doc(task, d, resps)
        if metric not in s:
            raise PrimerError(f"metric '{metric}' is not reported by task {task.name}; it reports {sorted(s)}")
        scores.append(float(s[metric]))
    return scores


def _rewrite(kind: str, req: list, fn) -> list:
    req = list(req)
    req[0] = fn(req[0])
    if kind == "generate":
        req[1] = [s.replace("Question:", "Q:") for s in req[1]]
    return req


def robustness(lm, task, docs, suite, variants, cfg: AuditConfig, data_dir, log) -> dict[str, Any]:
    from primer.eval.runner import Cache  # noqa: PLC0415

    # cache None = eval's default file; the string "none" turns caching off
    off = cfg.cache is not None and str(cfg.cache).lower() == "none"
    cache = Cache(None if off else Path(cfg.cache or Path.home() / ".cache" / "primer" / "eval-cache.sqlite"))
    shots = task.default_shots if cfg.shots is None else cfg.shots
    pool = None
    if shots > 0:
        pool = task.fewshot_pool(data_dir) or task.docs(data_dir)
    metric = _primary(task, cfg)
    base_tasks = {"original": task}
    if task.kind == "multiple_choice":
        mcf = next((p for p in suite if p.name == "mcf"), None)
        if mcf is not None:
            base_tasks["mcf"] = P.wrap_mc_task(task, lettered=True, labels=mcf.extra["labels"])
    log(f"  original ({metric}, {shots}-shot)")
    base_scores = {"original": score_docs(lm, task, docs, shots=shots, pool=pool, cfg=cfg, cache=cache, metric=metric,
                                           progress=log.on, label="original")}
    conditions = []
    for p in suite:
        if p.name == "mcf":
            t = base_tasks["mcf"]
            log("  mcf")
            base_scores["mcf"] = score_docs(lm, t, docs, shots=shots, pool=pool, cfg=cfg, cache=cache,
                                           metric=_mc_metric(t), progress=log.on, label="mcf")
            continue
        vs = variants[p.name]
        t = task
        if task.kind == "multiple_choice":
            t = P.wrap_mc_task(task, lettered=p.extra.get("lettered", False), labels=p.extra.get("labels", "ABCDEFGHIJ"))
        flat, owner = [], []
        for i, (d, vlist) in enumerate(zip(docs, vs)):
            if p.apply is not None and not vlist:
                continue
            for v in (vlist or [d]):
                flat.append(v)
                owner.append(i)
        if not flat:
            conditions.append({"name": p.name, "description": p.description, "baseline": p.baseline, "n": 0,
                               "skipped": "applies to no audited item"})
            continue
        log(f"  {p.name}: {len(flat)} variants of {len(set(owner))} items")
        m = _mc_metric(t) if t is not task else metric
        sc = score_docs(lm, t, flat, shots=shots if p.shots is None else p.shots, pool=pool, cfg=cfg, cache=cache,
                        prompt_fn=p.prompt, metric=m, progress=log.on, label=p.name)
        per_item: dict[int, list[float]] = {}
        for i, s in zip(owner, sc):
            per_item.setdefault(i, []).append(s)
        items = sorted(per_item)
        base = base_scores[p.baseline]
        pr = S.paired_bootstrap([base[i] for i in items], [sum(per_item[i]) / len(per_item[i]) for i in items],
                                iters=cfg.bootstrap, seed=cfg.seed)
        conditions.append({"name": p.name, "description": p.description, "baseline": p.baseline, **pr.to_dict(),
                           "variants": len(flat), "_per_item": per_item})
    out: dict[str, Any] = {"metric": metric, "shots": shots, "baselines": {}}
    chance = None
    if task.kind == "multiple_choice":  # accuracy of guessing, the floor a baseline must clear
        chance = sum(1 / len(task.doc_to_choice(d)) for d in docs) / len(docs)
        out["chance"] = chance
    for name, sc in base_scores.items():
        lo, hi = _ci(sc, cfg)
        out["baselines"][name] = {"n": len(sc), "acc": sum(sc) / len(sc), "ci": [lo, hi],
                                  "at_chance": chance is not None and lo <= chance}
    for c in conditions:
        # A model that cannot beat guessing in this format (e.g. lettered options for a 135M model)
        # loses or gains points under a shuffle through its position bias alone: no evidence either way.
        c["baseline_at_chance"] = out["baselines"][c["baseline"]]["at_chance"]
    out["conditions"] = [{k: v for k, v in c.items() if k != "_per_item"} for c in conditions]
    out["memorisation"] = _signature(task, docs, base_scores, conditions, variants)
    return out


def _mc_metric(t) -> str:
    return "acc" if t.name.endswith("_mcf") else t.metrics[0]


def _ci(sc: list[float], cfg: AuditConfig) -> tuple[float, float]:
    r = S.paired_bootstrap(sc, sc, iters=cfg.bootstrap, seed=cfg.seed)
    return r.ci_orig


# Conditions pooled into the memorisation signature: those that change content, not the setting.
_SETTING = {"zeroshot"}


def _signature(task, docs, base_scores, conditions, variants) -> dict[str, Any]:
    out = {}
    for base in base_scores:
        pooled: list[list[float]] = [[] for _ in docs]
        used = []
        for c in conditions:
            if c.get("baseline") != base or c["name"] in _SETTING or "_per_item" not in c:
                continue
            used.append(c["name"])
            for i, ss in c["_per_item"].items():
                pooled[i].extend(ss)
        if not used:
            continue
        sig = S.memorisation_signature(base_scores[base], pooled)
        examples = []
        for i in sig.memorised[:5]:
            d = docs[i]
            ex = {"item": d["_index"], "question": str(d.get(P.question_field(d) or "question", ""))[:400],
                  "right_on_original": True, "variants_right": f"{int(sum(pooled[i]))}/{len(pooled[i])}"}
            for name in ("numbers", "symbolic", "names", "noop"):
                vs = variants.get(name, [])
                if i < len(vs) and vs[i]:
                    ex[f"{name}_variant"] = str(vs[i][0].get("question", ""))[:400]
                    break
            examples.append(ex)
        out[base] = {**sig.to_dict(), "pooled": used, "examples": examples}
    return out
