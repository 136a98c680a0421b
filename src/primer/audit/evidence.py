"""From measurements to verdicts: one-sided tests against controls, the reference model as a check,
Holm's correction across the signals, and four states a verdict can be in.

  flagged       the signal's test rejects "no contamination" at the family-wise level `alpha`
                (Holm-adjusted p < alpha) and the reference check, where there is one, passed.
  not flagged   the signal ran on data and its test does not reject.
  no evidence   it ran but cannot speak: it saw no data (0 corpus documents, no item long enough),
                its resolution cannot reach `alpha`, or the reference model shows the same effect
                (the items and their controls, or the canonical order and its shuffles, are not
                exchangeable -- or the reference saw the items too).
  not measured  it did not run (what it needs is missing).

The reference check: with exchangeable controls (another split, the neighbouring block) and for the
permutation test, the audited model is tested alone; when its test rejects, the reference model runs
the same test on the same items, and if the reference also rejects at `VETO_P` (a looser level, so
the check errs towards "no evidence") the signal reports "no evidence". A pure check, never a
subtraction: a stronger model separates non-exchangeable sets more than a weaker reference does,
and a difference of the two would flag capability. With rewritten controls (never exchangeable: a
rewrite is less natural than the original) the statistic itself is the difference in differences
with the reference, and the verdict says so.

The overall verdict combines the corpus-free signals (mink, loss, zlib, verbatim, permutation) by
Holm's step-down method, so the chance that a clean model is flagged on any of them is at most
`alpha` whatever their correlation; the n-gram signal is a direct look-up (no error rate to
control) and flags on its own. Robustness and the memorisation signature are reported beside it,
not combined: a drop under rewrites says the score does not carry over, whatever the cause.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from primer.audit.result import FLAGGED, NO_EVIDENCE, NOT_FLAGGED, NOT_MEASURED, Verdict
from primer.audit.stats import Comparison, holm

VETO_P = 0.05
"""The reference model's own p below which a rejection by the audited model is 'no evidence'."""


@dataclass
class SignalTest:
    """One signal's test of the audited model, before the family-wise correction."""

    signal: str
    what: str
    """what was compared, in words"""
    unit: str
    """the unit of the effect"""
    cmp: Comparison | None = None
    """None: the test could not run (`why_not`)"""
    why_not: str | None = None
    state_if_not_run: str = NO_EVIDENCE
    reference: Callable[[], Comparison | str] | None = None
    """the reference model's same test, run only when this one rejects; a string says why it cannot run"""
    reference_required: bool = False
    """a rejection counts only once the reference has checked it (the permutation test)"""
    relative: bool = False
    """the statistic already subtracts the reference (rewritten controls)"""


def fmt_p(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.2g}" if x >= 1e-4 else f"{x:.1e}"


def _effect(c: Comparison, unit: str) -> str:
    auc = f", AUC {c.auc:.2f}" if c.auc is not None else ""
    return f"{c.effect:+.3g} {unit} [{c.ci[0]:+.3g}, {c.ci[1]:+.3g}]{auc}"


def decide(tests: list[SignalTest], alpha: float) -> list[Verdict]:
    """Holm across the tests that ran, then the reference check of each rejection, then the words."""
    adjusted = holm({t.signal: t.cmp.p for t in tests if t.cmp is not None})
    out = []
    for t in tests:
        if t.cmp is None:
            out.append(Verdict(t.signal, t.state_if_not_run, f"{t.state_if_not_run}: {t.why_not}", combined=True))
            continue
        c, p_h = t.cmp, adjusted[t.signal]
        state, ref_note, ref = NOT_FLAGGED, "", None
        if p_h < alpha:
            r = t.reference() if t.reference is not None else ("" if t.relative else "no reference model")
            if isinstance(r, Comparison):
                ref = r.to_dict()
                if r.p < VETO_P:
                    state = NO_EVIDENCE
                    ref_note = (f"; not exchangeable -- no evidence: the reference model shows the same effect "
                                f"({_effect(r, t.unit)}, p={fmt_p(r.p)} < {VETO_P})")
                else:
                    state = FLAGGED
                    ref_note = f"; the reference model does not ({_effect(r, t.unit)}, p={fmt_p(r.p)})"
            else:
                ref = {"skipped": r} if r else None
                state = NO_EVIDENCE if t.reference_required else FLAGGED
                if r:
                    ref_note = (f"; no evidence: {r}, so nothing checks that the order is exchangeable"
                                if t.reference_required else f"; not checked against a reference ({r})")
        elif t.reference is not None:
            ref_note = "; reference check not needed (no rejection)"
        if min(c.n, c.n_control) < 2:
            state, ref_note = NO_EVIDENCE, f"; no evidence: too little data ({c.n} items, {c.n_control} controls)"
        text = (f"{t.what}: {_effect(c, t.unit)}; n={c.n} vs {c.n_control}; {c.test} p={fmt_p(c.p)}, "
                f"Holm-adjusted p={fmt_p(p_h)} (flag: < {alpha}){ref_note}")
        out.append(Verdict(t.signal, state, text, n=c.n, n_control=c.n_control, effect=c.effect, ci=c.ci, p=c.p,
                           p_holm=p_h, test=c.test, reference=ref, combined=True))
    return out


def overall(verdicts: list[Verdict], alpha: float) -> Verdict:
    """One line: flagged by which signals, or not flagged on how many, or no evidence at all."""
    fam = [v for v in verdicts if v.combined]
    ngram = [v for v in verdicts if v.signal == "ngram"]
    carried = [v.signal for v in fam + ngram if v.state == FLAGGED]
    spoke = [v.signal for v in fam + ngram if v.state == NOT_FLAGGED]
    silent = [v.signal for v in fam + ngram if v.state in (NO_EVIDENCE, NOT_MEASURED)]
    rule = (f"the {len(fam)} corpus-free signals combined by Holm's method at family-wise alpha={alpha}"
            + ("; n-gram overlap is a direct look-up and flags on its own" if ngram else ""))
    quiet = f"; no evidence from {', '.join(silent)}" if silent else ""
    if carried:
        return Verdict("overall", FLAGGED, f"contamination evidence from {', '.join(carried)} ({rule}){quiet}",
                       n=max((v.n for v in fam + ngram), default=0))
    if spoke:
        return Verdict("overall", NOT_FLAGGED, f"no signal flags ({', '.join(spoke)} measured; {rule}){quiet}",
                       n=max((v.n for v in fam + ngram), default=0))
    return Verdict("overall", NO_EVIDENCE, f"no signal could speak ({', '.join(silent) or 'none ran'}); {rule}")
