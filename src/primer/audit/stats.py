"""Statistics for the audit: paired bootstrap CIs, significance, the memorisation signature, and the
one-sided tests and family-wise correction the contamination signals use (scipy's tests).

Everything compares the *same items* under two conditions (original vs perturbed), so the
resampling is paired: one bootstrap draw picks item indices once and scores both conditions on
them. That removes the between-item variance that dominates a small benchmark and is why a 3-point
drop on 300 items can be significant paired when two independent CIs would overlap.

An item with several variants (k new-number copies) scores the mean of its variants, so the unit
of resampling stays the item.

Significance is reported two ways: the percentile CI of the drop excludes 0, and an exact McNemar
test on discordant pairs (items whose 0/1 outcome differs) when scores are 0/1. The memorisation
signature (right on the original, wrong on most variants) is compared with its mirror image
(wrong on the original, right on most variants): without memorisation the two counts are about
equal for perturbations that keep difficulty the same; a large excess is what a memorised item
set looks like.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from primer.eval.metrics import wilson_ci  # noqa: F401  (one home: eval's metrics)


@dataclass
class PairedResult:
    n: int
    acc_orig: float
    acc_pert: float
    ci_orig: tuple[float, float]
    ci_pert: tuple[float, float]
    drop: float
    drop_ci: tuple[float, float]
    p_bootstrap: float
    p_mcnemar: float | None
    significant: bool

    def to_dict(self) -> dict:
        return asdict(self)


def paired_bootstrap(orig, pert, *, iters: int = 2000, alpha: float = 0.05, seed: int = 0) -> PairedResult:
    """Accuracy on originals vs perturbed on the same items, with paired bootstrap CIs.

    `orig`, `pert`: per-item scores in [0, 1] (aligned). drop = acc_orig - acc_pert.
    p_bootstrap: two-sided, from how often the resampled drop falls on the other side of 0.
    """
    a = np.asarray(orig, dtype=np.float64)
    b = np.asarray(pert, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("orig and pert must be aligned 1-d score arrays")
    n = len(a)
    if n == 0:
        nan = float("nan")
        return PairedResult(0, nan, nan, (nan, nan), (nan, nan), nan, (nan, nan), nan, None, False)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(iters, n))
    ma, mb = a[idx].mean(1), b[idx].mean(1)
    d = ma - mb
    lo, hi = 100 * alpha / 2, 100 * (1 - alpha / 2)

    def ci(x):
        return (float(np.percentile(x, lo)), float(np.percentile(x, hi)))

    drop = float(a.mean() - b.mean())
    if drop == 0 and np.all(d == 0):
        p_boot = 1.0
    else:
        # Fraction of draws on the far side of zero, doubled; +1 smoothing keeps it above 0.
        side = (d <= 0).sum() if drop > 0 else (d >= 0).sum()
        p_boot = min(1.0, 2 * (side + 1) / (iters + 1))
    p_mc = mcnemar_exact(a, b) if _binary(a) and _binary(b) else None
    dci = ci(d)
    significant = bool(dci[0] > 0 or dci[1] < 0)
    return PairedResult(n, float(a.mean()), float(b.mean()), ci(ma), ci(mb), drop, dci, float(p_boot), p_mc, significant)


def _binary(x: np.ndarray) -> bool:
    return bool(np.all((x == 0) | (x == 1)))


def mcnemar_exact(a, b) -> float:
    """Exact two-sided McNemar p-value: binomial test of the discordant pairs at 1/2."""
    a = np.asarray(a) > 0.5
    b = np.asarray(b) > 0.5
    n01 = int((a & ~b).sum())
    n10 = int((~a & b).sum())
    return binom_two_sided(min(n01, n10), n01 + n10)


def binom_two_sided(k: int, n: int, p: float = 0.5) -> float:
    """P(X <= k or X >= n-k) for X ~ Bin(n, 1/2), k <= n/2 (the symmetric case McNemar needs)."""
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(0, k + 1)) * (p**n)
    return float(min(1.0, 2 * tail))


@dataclass
class Signature:
    n_items: int
    n_right_orig: int
    memorised: list[int]  # item indices right on the original, wrong on most variants
    mirror: list[int]  # wrong on the original, right on most variants
    rate: float  # memorised / n_right_orig
    mirror_rate: float  # mirror / n_wrong_orig
    p_excess: float  # exact binomial: memorised vs mirror counts, one-sided excess of memorised

    def to_dict(self) -> dict:
        return asdict(self)


def memorisation_signature(orig, variants: list[list[float]], *, most: float = 0.5) -> Signature:
    """Items right on the original but wrong on more than `most` of their variants.

    `orig[i]` is 0/1; `variants[i]` the 0/1 scores of item i's variants (any perturbations pooled;
    items without variants are skipped). The mirror set counts the opposite flip, and p_excess is
    a one-sided sign test of memorised vs mirror counts.
    """
    mem, mir = [], []
    right = wrong = n = 0
    for i, (o, vs) in enumerate(zip(orig, variants)):
        if not vs:
            continue
        n += 1
        frac_wrong = 1 - float(np.mean(vs))
        if o >= 0.5:
            right += 1
            if frac_wrong > most:
                mem.append(i)
        else:
            wrong += 1
            if 1 - frac_wrong > most:
                mir.append(i)
    m, r = len(mem), len(mir)
    # One-sided: P(X >= m) for X ~ Bin(m + r, 1/2).
    tot = m + r
    p = sum(math.comb(tot, j) for j in range(m, tot + 1)) / 2**tot if tot else 1.0
    return Signature(n, right, mem, mir, m / right if right else 0.0, r / wrong if wrong else 0.0, float(p))


# -- one-sided tests of "more familiar than the controls" (contamination signals) -----------------
@dataclass
class Comparison:
    """Audited items against their controls for one per-item score (higher = more familiar)."""

    test: str
    """the test that gave `p` (one-sided: the items score higher)"""
    n: int
    """audited items with a score"""
    n_control: int
    """control items (or pairs) with a score"""
    effect: float
    """mean score of the items minus mean of the controls (paired: mean difference)"""
    ci: tuple[float, float]
    """95% bootstrap interval of `effect`"""
    p: float
    auc: float | None = None
    """two-sample: P(item score > control score), 0.5 = no difference"""

    def to_dict(self) -> dict:
        return asdict(self)


def _boot_ci(draws: np.ndarray) -> tuple[float, float]:
    return float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def two_sample_greater(items, controls, *, iters: int = 2000, seed: int = 0) -> Comparison:
    """Mann-Whitney U, one-sided (items > controls), with the difference of means and its bootstrap CI.

    Rank-based, so one extreme item cannot carry it, and exact in its size whatever the scores'
    distribution when items and controls are exchangeable (the null it tests)."""
    a, b = np.asarray(items, dtype=float), np.asarray(controls, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        nan = float("nan")
        return Comparison("Mann-Whitney U, one-sided", len(a), len(b), nan, (nan, nan), 1.0)
    if np.all(a == a[0]) and np.all(b == a[0]):
        p = 1.0  # every score equal (e.g. no completion matched anything): no difference to rank
    else:
        from scipy import stats as sps  # here, not at import: every CLI verb imports this module (~60 MB)

        p = float(sps.mannwhitneyu(a, b, alternative="greater").pvalue)
    rng = np.random.default_rng(seed)
    draws = a[rng.integers(0, len(a), (iters, len(a)))].mean(1) - b[rng.integers(0, len(b), (iters, len(b)))].mean(1)
    auc = float((a[:, None] > b[None, :]).mean() + 0.5 * (a[:, None] == b[None, :]).mean())
    return Comparison("Mann-Whitney U, one-sided", len(a), len(b), float(a.mean() - b.mean()), _boot_ci(draws), p, auc)


def paired_greater(diffs, *, iters: int = 2000, seed: int = 0) -> Comparison:
    """Wilcoxon signed-rank, one-sided (differences > 0), with the mean difference and its bootstrap CI."""
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
    if len(d) < 2:
        nan = float("nan")
        return Comparison("Wilcoxon signed-rank, one-sided", len(d), len(d), nan, (nan, nan), 1.0)
    from scipy import stats as sps

    p = 1.0 if np.all(d == 0) else float(sps.wilcoxon(d, alternative="greater").pvalue)
    rng = np.random.default_rng(seed)
    draws = d[rng.integers(0, len(d), (iters, len(d)))].mean(1)
    return Comparison("Wilcoxon signed-rank, one-sided", len(d), len(d), float(d.mean()), _boot_ci(draws), p)


def t_test_greater(x) -> float:
    """One-sided one-sample t-test of mean(x) > 0 (Oren et al.'s test across shards)."""
    x = np.asarray(x, dtype=float)
    if len(x) < 2:
        return 1.0
    if float(np.std(x)) == 0:
        return 0.0 if float(np.mean(x)) > 0 else 1.0
    from scipy import stats as sps

    return float(sps.ttest_1samp(x, 0.0, alternative="greater").pvalue)


def holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjusted p-values (family-wise error control without assuming independence)."""
    order = sorted(pvalues, key=pvalues.get)
    m, out, running = len(order), {}, 0.0
    for i, name in enumerate(order):
        running = max(running, min(1.0, (m - i) * pvalues[name]))
        out[name] = running
    return out
