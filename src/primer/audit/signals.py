"""The corpus-free contamination signals on one slice of items: measure the audited model on the items
and their controls, and build each signal's test (`evidence.SignalTest`) with its reference check.

Per signal:
  mink, loss, zlib  the item's membership score (`contamination.membership_scores`) against the
                    controls' (Mann-Whitney; rewritten controls: Wilcoxon on the difference in
                    differences with the reference model);
  verbatim          ROUGE-L of the greedy completion of the item's second half against the controls'
                    (relative, never an absolute threshold);
  permutation       Oren et al.'s sharded test: per shard, canonical minus mean shuffled
                    log-likelihood; one-sided t-test across shards.

The reference model is loaded and asked only when needed: for the per-item plot of the likelihood
scores (the main audit), for rewritten controls, and to check a rejection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from primer.audit import contamination as C
from primer.audit.controls import Controls
from primer.audit.evidence import SignalTest
from primer.audit.result import NOT_MEASURED
from primer.audit.stats import (
    Comparison,
    paired_greater,
    t_test_greater,
    two_sample_greater,
)
from primer.eval.served import NeedsPromptLogprobs

CORPUS_FREE = ("mink", "loss", "zlib", "verbatim", "permutation")
UNITS = {"mink": "Min-K%++ z", "loss": "nats/byte", "zlib": "nats/zlib bit", "verbatim": "ROUGE-L"}


def load_lm(spec: Any, like: Any = None):
    """An LM object as is, else `PrimerLM.load(spec)` with the device, batch size and context of `like`."""
    if hasattr(spec, "loglikelihood"):
        return spec
    from primer.eval.lm import load_lm as load  # noqa: PLC0415

    kw = {k: getattr(like, k) for k in ("batch_size", "max_length") if hasattr(like, k)}
    if hasattr(like, "device"):
        kw["device"] = str(like.device)
    return load(str(spec), **kw)


class Reference:
    """The reference model, loaded on first use. `lm` is None with `reason` when there is none."""

    def __init__(self, spec_or_lm: Any, audited: Any, log: Callable[[str], None] = lambda m: None,
                 reason: str | None = None):
        self._spec, self._audited, self._log = spec_or_lm, audited, log
        self._lm: Any = None
        self.reason: str | None = reason
        self.name: str | None = None
        if reason is not None:
            return
        if spec_or_lm is None or str(spec_or_lm).lower() == "none":
            self.reason = "no reference model (--reference none)"
        elif hasattr(spec_or_lm, "loglikelihood"):
            self._settle(spec_or_lm)

    def _settle(self, lm) -> None:
        self.name = getattr(lm, "name", str(self._spec))
        if getattr(lm, "fingerprint", None) is not None and lm.fingerprint == getattr(self._audited, "fingerprint", ""):
            self.reason = "the reference model is the audited model"
        else:
            self._lm = lm

    @property
    def lm(self):
        if self._lm is None and self.reason is None:
            self._log(f"reference: loading {self._spec}")
            self._settle(load_lm(self._spec, like=self._audited))
        return self._lm

    def describe(self) -> str:
        if self.lm is None:
            return str(self.reason)
        return str(self.name)


class Lazy:
    """A value computed on first call (the reference model's numbers: asked only when needed)."""

    def __init__(self, fn: Callable[[], Any]):
        self.fn, self.done, self.value = fn, False, None

    def __call__(self):
        if not self.done:
            self.value, self.done = self.fn(), True
        return self.value


def slice_tests(lm, ref: Reference, task, docs: list[dict], controls: Controls, cfg, cache, log,
                signals: list[str], for_plot: bool = True) -> tuple[dict[str, Any], list[SignalTest]]:
    """Measure `signals` (of CORPUS_FREE) on `docs` and `controls`; (measurements, tests)."""
    measured: dict[str, Any] = {}
    tests: list[SignalTest] = []
    texts = [task.example_text(d) for d in docs]
    ctexts = [task.example_text(d) for d in controls.docs]
    pairs = controls.pairs
    vs = f"{controls.kind} controls"

    def with_ref(fn) -> Lazy:
        """fn(reference lm), lazily; the reason (a string) when there is no reference."""
        return Lazy(lambda: fn(ref.lm) if ref.lm is not None else ref.reason)

    like = [s for s in C.SCORES if s in signals]
    if like and getattr(lm, "tok", None) is None:  # a served model (its .model is a name): at most top-N log-probs
        for s in like:
            tests.append(SignalTest(s, s, UNITS[s], state_if_not_run=NOT_MEASURED, why_not=(
                "needs the next-token distribution over the whole vocabulary, which only a model primer loads gives "
                "(a server returns at most top-N log-probs)")))
        like = []
    if like:
        log(f"likelihood: {len(texts)} items, {len(ctexts)} controls")
        a_t = C.membership_scores(lm, texts, k=cfg.mink_k, cache=cache)
        a_c = C.membership_scores(lm, ctexts, k=cfg.mink_k, cache=cache)
        r_both = with_ref(lambda r: (C.membership_scores(r, texts, k=cfg.mink_k, cache=cache),
                                     C.membership_scores(r, ctexts, k=cfg.mink_k, cache=cache)))
        r_now = r_both() if (for_plot or controls.paired) else None
        measured["likelihood"] = {"k": cfg.mink_k, "audited": {"items": a_t, "controls": a_c}, "reference": r_both}
        for s in like:
            what = {"mink": f"Min-K%++ (k={cfg.mink_k:.0%}) of the items vs {vs}",
                    "loss": f"log-likelihood per byte of the items vs {vs}",
                    "zlib": f"log-likelihood per zlib bit of the items vs {vs}"}[s]
            if controls.paired:
                tests.append(_paired(s, what, [x[s] for x in a_t], [x[s] for x in a_c], pairs, r_now,
                                     lambda rr, s=s: ([x[s] for x in rr[0]], [x[s] for x in rr[1]]), cfg))
                continue
            cmp = two_sample_greater([x[s] for x in a_t], [x[s] for x in a_c], iters=cfg.bootstrap, seed=cfg.seed)

            def check(s=s):
                rr = r_both()
                if isinstance(rr, str):
                    return rr
                return two_sample_greater([x[s] for x in rr[0]], [x[s] for x in rr[1]], iters=cfg.bootstrap,
                                          seed=cfg.seed)

            tests.append(SignalTest(s, what, UNITS[s], cmp=cmp, reference=check))
    if "verbatim" in signals:
        log(f"verbatim: {len(texts)} items, {len(ctexts)} controls")
        w = cfg.verbatim_words
        v_t = C.verbatim_scores(lm, texts, words=w, cache=cache)
        v_c = C.verbatim_scores(lm, ctexts, words=w, cache=cache)
        r_v = with_ref(lambda r: (C.verbatim_scores(r, texts, words=w, cache=cache),
                                  C.verbatim_scores(r, ctexts, words=w, cache=cache)))
        measured["verbatim"] = {"words": w, "audited": {"items": v_t, "controls": v_c}, "reference": r_v}
        what = f"ROUGE-L of greedy completions of the items' second halves (first {cfg.verbatim_words} words) vs {vs}"
        if sum(x is not None for x in v_t) == 0:
            tests.append(SignalTest("verbatim", what, UNITS["verbatim"], why_not=(
                "no audited item is long enough to complete (second half under 8 words)")))
        elif controls.paired:
            rv = r_v()
            tests.append(_paired("verbatim", what, _rouge(v_t), _rouge(v_c), pairs, rv,
                                 lambda rr: (_rouge(rr[0]), _rouge(rr[1])), cfg))
        else:
            cmp = two_sample_greater(_finite(_rouge(v_t)), _finite(_rouge(v_c)), iters=cfg.bootstrap, seed=cfg.seed)

            def vcheck():
                rr = r_v()
                if isinstance(rr, str):
                    return rr
                return two_sample_greater(_finite(_rouge(rr[0])), _finite(_rouge(rr[1])), iters=cfg.bootstrap,
                                          seed=cfg.seed)

            tests.append(SignalTest("verbatim", what, UNITS["verbatim"], cmp=cmp, reference=vcheck))
    if "permutation" in signals:
        tests.append(_permutation(lm, ref, texts, cfg, cache, log, measured))
    return measured, tests  # the reference entries stay Lazy until the tests are decided: `finish`


def finish(measured: dict[str, Any]) -> dict[str, Any]:
    """Replace the lazy reference entries by what they computed, or say why there is nothing."""
    for m in measured.values():
        lazy = m.get("reference")
        if not isinstance(lazy, Lazy):
            continue
        val = lazy.value
        if not lazy.done:
            m["reference"] = {"skipped": "not asked: no rejection to check"}
        elif isinstance(val, str):
            m["reference"] = {"skipped": val}
        elif isinstance(val, tuple):
            m["reference"] = {"items": val[0], "controls": val[1]}
        else:
            m["reference"] = {"shards": val}
    return measured


def _rouge(rows: list[dict | None]) -> list[float]:
    return [r["rouge_l"] if r is not None else float("nan") for r in rows]


def _finite(xs: list[float]) -> list[float]:
    return [x for x in xs if np.isfinite(x)]


def _paired(signal: str, what: str, a_t: list[float], a_c: list[float], pairs: list[int], r_now, split,
            cfg) -> SignalTest:
    """Rewritten controls: Wilcoxon on (audited item - its rewrite) - (reference item - its rewrite)."""
    what = what + ", minus the reference model's same gap (difference in differences)"
    if isinstance(r_now, str) or r_now is None:
        return SignalTest(signal, what, UNITS[signal], why_not=f"rewritten controls need a reference model ({r_now})",
                    state_if_not_run=NOT_MEASURED)
    r_t, r_c = split(r_now)
    d = [(a_t[i] - a_c[j]) - (r_t[i] - r_c[j]) for j, i in enumerate(pairs)]
    cmp = paired_greater(d, iters=cfg.bootstrap, seed=cfg.seed)
    return SignalTest(signal, what, UNITS[signal], cmp=cmp, relative=True)


def shards_for(n: int, cfg) -> int:
    """Oren et al.'s shards: the configured count, else one per 5 items (at least 2 items a shard)."""
    want = cfg.permutation_shards if cfg.permutation_shards else n // 5
    return max(1, min(want, n // 2))


def _permutation(lm, ref: Reference, texts: list[str], cfg, cache, log, measured) -> SignalTest:
    n = len(texts)
    shards = shards_for(n, cfg)
    what = f"canonical minus mean shuffled log-likelihood of the items, {shards} shard(s) x {cfg.permutations} orders"
    if n < 4:
        return SignalTest("permutation", what, "nats", why_not=f"needs at least 4 items ({n} audited)")
    if shards < 2 and 1 / (cfg.permutations + 1) >= cfg.alpha:
        return SignalTest("permutation", what, "nats", why_not=(
            f"one shard with {cfg.permutations} shuffles cannot give p below {cfg.alpha} (smallest attainable "
            f"p = 1/{cfg.permutations + 1}); use more items or --permutations"))
    log(f"permutation: {n} items, {shards} shard(s) x {cfg.permutations} orders")
    kw = {"shards": shards, "permutations": cfg.permutations, "seed": cfg.seed, "cache": cache}
    try:
        a = C.permutation_shards(lm, texts, **kw)
    except NeedsPromptLogprobs as e:  # a served model that does not echo prompt log-probs
        return SignalTest("permutation", what, "nats", state_if_not_run=NOT_MEASURED,
                          why_not=f"the permutation test needs prompt log-probs: {e}")
    measured["permutation"] = {"shards": shards, "permutations": cfg.permutations, "audited": a}

    def compare(rows: list[dict]) -> Comparison:
        diffs = np.array([r["diff"] for r in rows])
        if len(rows) == 1:
            p, test = rows[0]["p_rank"], f"rank among {cfg.permutations} shuffles"
        else:
            p, test = t_test_greater(diffs), f"one-sided t-test across {len(rows)} shards"
        boot = np.random.default_rng(cfg.seed).choice(diffs, (cfg.bootstrap, len(diffs))).mean(1)
        return Comparison(test, n, len(rows), float(diffs.mean()),
                          (float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))), float(p))

    r_rows = Lazy(lambda: C.permutation_shards(ref.lm, texts, **kw) if ref.lm is not None else ref.reason)
    measured["permutation"]["reference"] = r_rows

    def check():
        rr = r_rows()
        return rr if isinstance(rr, str) else compare(rr)

    return SignalTest("permutation", what, "nats", cmp=compare(a), reference=check, reference_required=True)
