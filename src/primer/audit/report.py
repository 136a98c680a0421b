"""The audit's outputs: the verdicts of robustness, memorisation and n-gram overlap, a terminal table of
every verdict, audit.json, and audit.png (accuracy per condition with CIs; per-item Min-K%++ of the
audited and reference models, items vs controls; verbatim ROUGE-L; the permutation test per shard).

A verdict is never a bare yes/no: each has a state (`result.STATES`), says what was measured, on how
many items, the effect with its interval or p-value, and the rule that decided the state.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from primer.audit.evidence import fmt_p
from primer.audit.result import (
    FLAGGED,
    NO_EVIDENCE,
    NOT_FLAGGED,
    NOT_MEASURED,
    AuditResult,
    Verdict,
)
from primer.config import to_dict


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _pts(x: float) -> str:
    v = 100 * x
    return "0.0" if abs(v) < 0.05 else f"{v:+.1f}"


def verdicts(result: AuditResult) -> list[Verdict]:
    """Robustness, the memorisation signature and n-gram overlap; the corpus-free signals' verdicts come
    from `evidence.decide`."""
    out: list[Verdict] = []
    rob = result.robustness
    if rob:
        ran = [c for c in rob.conditions if c.n]
        # Only a perturbation that changes what the item says counts (a drop under a format change says
        # "fragile prompt", not "memorised"), and not against a baseline that does not beat chance.
        counted = [c for c in ran if c.content and not c.baseline_at_chance]
        content = [c for c in counted if c.significant and c.drop > 0]
        parts = []
        for c in ran:
            note = ", significant" if c.significant else ""
            if c.baseline_at_chance:
                note += f", not counted: its baseline ({c.baseline}) does not beat chance"
            parts.append(f"{c.name} {_pct(c.acc_orig)}->{_pct(c.acc_pert)} "
                         f"({_pts(-c.drop)} pts, CI [{_pts(-c.drop_ci[1])}, {_pts(-c.drop_ci[0])}], n={c.n}{note})")
        chance = f" ({_pct(rob.chance)})" if rob.chance else ""
        text = (f"{len(content)} of {len(counted)} content perturbations drop the score significantly (paired "
                f"bootstrap 95% CI of the drop excludes 0; a condition whose baseline does not beat chance{chance} is "
                f"not counted): " + "; ".join(parts))
        state = FLAGGED if content else NOT_FLAGGED if counted else NO_EVIDENCE
        if not ran:
            state, text = NOT_MEASURED, "not measured: no perturbation applies to the audited items"
        out.append(Verdict("robustness", state, text, n=max((c.n for c in ran), default=0)))
        mem = rob.memorisation.get("original")
        if mem and mem["n_items"]:
            n_mem, n_mir = len(mem["memorised"]), len(mem["mirror"])
            n_wrong = mem["n_items"] - mem["n_right_orig"]
            flag = n_mem >= 2 and mem["p_excess"] < 0.05
            # With no item right on the original there is nothing a perturbation could reveal as memorised.
            state = NO_EVIDENCE if not mem["n_right_orig"] else FLAGGED if flag else NOT_FLAGGED
            out.append(Verdict("memorisation", state, (
                ("no evidence: no audited item is right on the original; " if state == NO_EVIDENCE else "") +
                f"{n_mem} of {mem['n_right_orig']} items right on the original are wrong on most of their variants "
                f"({_pct(mem['rate'])}), against {n_mir} of {n_wrong} the other way round ({_pct(mem['mirror_rate'])}); "
                f"one-sided sign test of the excess p={fmt_p(mem['p_excess'])} (variants pooled: {', '.join(mem['pooled'])})"),
                n=mem["n_items"], p=mem["p_excess"]))
    out += [Verdict(name, NOT_MEASURED, f"not measured: {why}") for name, why in result.skipped.items()]
    ng = result.contamination.get("ngram")
    if ng is not None:
        out.append(_ngram_verdict(ng))
    return out


def _ngram_verdict(ng: dict[str, Any]) -> Verdict:
    if "skipped" in ng:
        return Verdict("ngram", NOT_MEASURED, f"not measured: {ng['skipped']}")
    if not ng["corpus_docs"] or not ng["indexed"]:
        why = ("0 corpus documents were read" if not ng["corpus_docs"] else
               f"none of the {ng['items']} items is long enough to have a {ng['n']}-gram")
        return Verdict("ngram", NO_EVIDENCE, f"no evidence: {why}", n=ng["indexed"], n_control=ng["corpus_docs"])
    top = max((p["overlap"] for p in ng["per_item"]), default=0.0)
    text = (f"{len(ng['contaminated'])}/{ng['items']} items ({_pct(ng['contaminated_fraction'])}) have >= "
            f"{ng['threshold']:.0%} of their {ng['n']}-grams in one of {ng['corpus_docs']} corpus documents; "
            f"{ng['any_overlap']} share at least one {ng['n']}-gram; largest overlap {_pct(top)} "
            f"({ng['indexed']} items long enough to look up; flag: {ng['rule']})")
    return Verdict("ngram", FLAGGED if ng["contaminated"] else NOT_FLAGGED, text, n=ng["indexed"],
                   n_control=ng["corpus_docs"], effect=ng["contaminated_fraction"])


def _state(s: str) -> str:
    return s.upper() if s == FLAGGED else s


def _num(x: float | None, fmt: str = "+.3g") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def signal_table(result: AuditResult) -> list[str]:
    """The verdicts as one table: state, data seen, effect, p, Holm p, the reference check."""
    rows = [("signal", "state", "items", "vs", "effect [95% CI]", "p", "Holm p", "reference")]
    for v in result.verdicts + ([result.overall] if result.overall else []):
        ref = "-"
        if v.reference:
            ref = f"p={fmt_p(v.reference['p'])}" if "p" in v.reference else "not run"
        eff = "-" if v.effect is None else (f"{_num(v.effect)} [{_num(v.ci[0])}, {_num(v.ci[1])}]" if v.ci
                                            else _num(v.effect, ".3g"))
        rows.append((v.signal, _state(v.state), str(v.n) if v.state != NOT_MEASURED else "-",
                     str(v.n_control) if v.n_control else "-", eff, fmt_p(v.p), fmt_p(v.p_holm), ref))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, r in enumerate(rows):
        lines.append("  " + "  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip())
        if j == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return lines


def table(result: AuditResult) -> str:
    """Terminal report: robustness table, the verdict table, one line per verdict, the false-positive check."""
    lines = [f"primer audit: {result.model['name']} on {result.task} ({result.n_items} items from item "
             f"{result.config.get('start', 0)})"]
    rob = result.robustness
    if rob:
        lines += _robustness_lines(rob)
    if result.bad_input.count:
        lines.append(f"corpus: {result.bad_input.describe()}")
    lines.append("")
    alpha = result.config.get("alpha", 0.01)
    lines.append(f"verdicts (contamination: flagged = Holm-adjusted p < {alpha} across the corpus-free signals, "
                 "each rejection checked against the reference model; no evidence / not measured = the signal "
                 "could not speak):")
    if result.controls:
        lines.append(f"  controls: {result.controls['description']} -- {result.controls['limits']}")
    if result.reference:
        lines.append(f"  reference: {result.reference}")
    lines += signal_table(result)
    lines.append("")
    for v in result.verdicts + ([result.overall] if result.overall else []):
        lines.append(f"  [{_state(v.state)}] {v.signal}: {v.verdict}")
    cal = result.calibration
    if cal:
        per = ", ".join(f"{k} {v}/{len(cal.slices)}" for k, v in cal.per_signal.items())
        lines.append("")
        lines.append(f"false-positive check on {cal.model} (known clean), {len(cal.slices)} slices of {result.n_items} "
                     f"items: {cal.flagged}/{len(cal.slices)} flagged -- observed rate {_pct(cal.rate)} at alpha "
                     f"{cal.alpha}; per signal: {per}" + (f" ({cal.note})" if cal.note else ""))
    return "\n".join(lines)


def _robustness_lines(rob) -> list[str]:
    lines = [f"metric {rob.metric}, {rob.shots}-shot; paired bootstrap 95% CIs"]
    rows = [("condition", "vs", "n", "baseline", "perturbed", "change (pts)", "p", "sig")]
    for name, b in rob.baselines.items():
        rows.append((name, "-", str(b.n), f"{_pct(b.acc)} [{_pct(b.ci[0])}, {_pct(b.ci[1])}]", "-", "-", "-",
                     "chance" if b.at_chance else ""))
    for c in rob.conditions:
        if not c.n:
            rows.append((c.name, c.baseline, "0", "-", "-", "-", "-", c.skipped or ""))
            continue
        rows.append((c.name, c.baseline, str(c.n),
                     f"{_pct(c.acc_orig)} [{_pct(c.ci_orig[0])}, {_pct(c.ci_orig[1])}]",
                     f"{_pct(c.acc_pert)} [{_pct(c.ci_pert[0])}, {_pct(c.ci_pert[1])}]",
                     f"{_pts(-c.drop)} [{_pts(-c.drop_ci[1])}, {_pts(-c.drop_ci[0])}]",
                     fmt_p(c.p_mcnemar if c.p_mcnemar is not None else c.p_bootstrap),
                     ("*" if c.significant else "") + (" (chance)" if c.baseline_at_chance else "")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for j, r in enumerate(rows):
        lines.append("  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    if rob.chance is not None:
        lines.append(f"chance (guessing) {_pct(rob.chance)}; a baseline marked 'chance' does not beat it, so a change "
                     "against it is position bias, not evidence")
    cov = rob.coverage
    if "numbers_coverage" in cov:
        nc = cov["numbers_coverage"]
        lines.append(f"numbers: rebuilt {nc['rebuilt']}/{nc['total']}, new numbers for {nc['substituted']} "
                     f"({_pct(nc['coverage'])}); skipped {nc['skipped']}")
    if "symbolic_templates" in cov:
        st = cov["symbolic_templates"]
        lines.append(f"symbolic: {st['usable']}/{st['templates']} templates usable, {st['items_with_template']} audited items have one")
    mem = rob.memorisation.get("original")
    if mem:
        for ex in mem.get("examples", [])[:3]:
            lines.append(f"  memorised? item {ex['item']}: {ex['question'][:110]!r} (variants right {ex['variants_right']})")
    return lines


def plot(result: AuditResult, path: Path) -> Path | None:
    """Robustness bars; per-item likelihood scores of the audited and reference models (items vs controls);
    verbatim ROUGE-L of items vs controls; the permutation test's per-shard differences."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rob, cont = result.robustness, result.contamination
    panels = [k for k, ok in (("rob", bool(rob and any(c.n for c in rob.conditions))), ("like", "likelihood" in cont),
                              ("verb", "verbatim" in cont), ("perm", "permutation" in cont)) if ok]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.3), squeeze=False)
    for ax, kind in zip(axes[0], panels):
        {"rob": _plot_robustness, "like": _plot_likelihood, "verb": _plot_verbatim, "perm": _plot_permutation}[kind](
            ax, result)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _verdict(result: AuditResult, signal: str) -> Verdict | None:
    return next((v for v in result.verdicts if v.signal == signal), None)


def _plot_robustness(ax, result: AuditResult) -> None:
    rob = result.robustness
    names, acc, lo, hi, colors = [], [], [], [], []
    for n, b in rob.baselines.items():
        names.append(n)
        acc.append(b.acc)
        lo.append(b.acc - b.ci[0])
        hi.append(b.ci[1] - b.acc)
        colors.append("0.5")
    for c in rob.conditions:
        if not c.n:
            continue
        names.append(c.name)
        acc.append(c.acc_pert)
        lo.append(c.acc_pert - c.ci_pert[0])
        hi.append(c.ci_pert[1] - c.acc_pert)
        colors.append("tab:red" if c.significant and c.drop > 0 else "tab:blue")
    x = range(len(names))
    ax.bar(x, [100 * a for a in acc], yerr=[[100 * v for v in lo], [100 * v for v in hi]], color=colors, capsize=3)
    ax.set_xticks(list(x), names, rotation=40, ha="right")
    ax.set_ylabel(f"{rob.metric} (%)")
    ax.set_ylim(0, max(10.0, 100 * max(a + h for a, h in zip(acc, hi)) * 1.1))
    ax.set_title(f"{result.task}: originals vs perturbations\n(red: significant drop, 95% paired CI)", fontsize=9)


def _plot_likelihood(ax, result: AuditResult) -> None:
    """Min-K%++ per item: audited model (y) against the reference model (x) when there is one."""
    lk = result.contamination["likelihood"]
    a, r = lk["audited"], lk.get("reference", {})
    v = _verdict(result, "mink")
    score = "mink" if a["items"] and "mink" in a["items"][0] else "loss"
    for part, color, label in (("controls", "0.55", "controls"), ("items", "tab:red", "audited items")):
        ys = [x[score] for x in a[part]]
        if r.get(part):
            xs = [x[score] for x in r[part]]
        else:
            xs = list(range(len(ys)))
        ax.scatter(xs, ys, s=12, color=color, alpha=0.75, label=label)
    ax.set_xlabel(f"reference model ({score})" if r.get("items") else "item")
    ax.set_ylabel(f"audited model ({score})")
    ax.legend(fontsize=8)
    state = f"{v.state}, p={fmt_p(v.p)}" if v else ""
    ax.set_title(f"per-item {'Min-K%++' if score == 'mink' else 'log-lik/byte'} (higher = more familiar)\n{state}",
                 fontsize=9)


def _plot_verbatim(ax, result: AuditResult) -> None:
    vb = result.contamination["verbatim"]
    data = [[x["rouge_l"] for x in vb["audited"][part] if x is not None] for part in ("items", "controls")]
    ax.boxplot(data, tick_labels=["audited items", "controls"], showmeans=True)
    rng = np.random.default_rng(0)
    for k, ys in enumerate(data, start=1):
        ax.scatter(k + rng.uniform(-0.12, 0.12, len(ys)), ys, s=9, alpha=0.6, color="tab:red" if k == 1 else "0.5")
    v = _verdict(result, "verbatim")
    ax.set_ylabel(f"ROUGE-L of the completion (first {vb['words']} words)")
    ax.set_title(f"verbatim completion\n{v.state if v else ''}, p={fmt_p(v.p if v else None)}", fontsize=9)


def _plot_permutation(ax, result: AuditResult) -> None:
    pm = result.contamination["permutation"]
    diffs = [s["diff"] for s in pm["audited"]]
    x = list(range(len(diffs)))
    ax.axhline(0, color="0.4", lw=0.8)
    ax.bar([i - 0.2 for i in x], diffs, width=0.4, color="tab:green", label="audited")
    ref = pm.get("reference", {})
    if ref.get("shards"):
        ax.bar([i + 0.2 for i in x], [s["diff"] for s in ref["shards"]], width=0.4, color="0.6", label="reference")
    ax.set_xlabel("shard")
    ax.set_ylabel("canonical - mean shuffled log-lik")
    ax.legend(fontsize=8)
    v = _verdict(result, "permutation")
    ax.set_title(f"permutation test ({pm['shards']} shards x {pm['permutations']} orders)\n"
                 f"{v.state if v else ''}, p={fmt_p(v.p if v else None)}", fontsize=9)


def write(result: AuditResult, out: Path) -> dict[str, str]:
    """audit.json and audit.png into `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": str(out / "audit.json")}
    png = plot(result, out / "audit.png")
    if png is not None:
        files["plot"] = str(png)
    record = {**to_dict(result), "files": files}
    (out / "audit.json").write_text(json.dumps(record, indent=2, default=_default, allow_nan=True))
    return files


def _default(x):
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, (set, tuple)):
        return list(x)
    return str(x)
