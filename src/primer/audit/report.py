"""The audit's outputs: a verdict per signal with the numbers behind it, a terminal table,
audit.json, and audit.png (accuracy per condition with CIs, Min-K%++ pairs, permutation null).

A verdict is never a bare yes/no: each says what was measured, on how many items, the effect
with its interval or p-value, and the rule that decided "flagged".
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from primer.audit.result import AuditResult, Verdict
from primer.config import to_dict

def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _pts(x: float) -> str:
    v = 100 * x
    return "0.0" if abs(v) < 0.05 else f"{v:+.1f}"


def _p(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.2g}" if x >= 1e-4 else f"{x:.1e}"


def _not_measured(signal: str, why: Any) -> Verdict:
    return Verdict(signal, False, f"not measured: {why}")


def verdicts(result: AuditResult) -> list[Verdict]:
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
        out.append(Verdict("robustness", bool(content), text))
        mem = rob.memorisation.get("original")
        if mem and mem["n_items"]:
            n_mem, n_mir = len(mem["memorised"]), len(mem["mirror"])
            n_wrong = mem["n_items"] - mem["n_right_orig"]
            flag = n_mem >= 2 and mem["p_excess"] < 0.05
            out.append(Verdict("memorisation", flag, (
                f"{n_mem} of {mem['n_right_orig']} items right on the original are wrong on most of their variants "
                f"({_pct(mem['rate'])}), against {n_mir} of {n_wrong} the other way round ({_pct(mem['mirror_rate'])}); "
                f"one-sided sign test of the excess p={_p(mem['p_excess'])} (variants pooled: {', '.join(mem['pooled'])})")))
    out += [_not_measured(name, why) for name, why in result.skipped.items()]
    for name, measured, text in _SIGNALS:
        r = result.contamination.get(name)
        if r is None:
            continue
        if "skipped" in r or not measured(r):
            out.append(_not_measured(name, r.get("skipped") or r.get("rule")))
        else:
            out.append(Verdict(name, r["flag"], text(r)))
    return out


def _ngram_text(ng: dict[str, Any]) -> str:
    top = max((p["overlap"] for p in ng["per_item"]), default=0.0)
    return (f"{len(ng['contaminated'])}/{ng['items']} items ({_pct(ng['contaminated_fraction'])}) have >= "
            f"{ng['threshold']:.0%} of their {ng['n']}-grams in one of {ng['corpus_docs']} corpus documents; "
            f"{ng['any_overlap']} share at least one {ng['n']}-gram; largest overlap {_pct(top)}")


def _mink_text(mk: dict[str, Any]) -> str:
    return (f"Min-K%++ (k={mk['k']:.0%}) originals {mk['orig_mean']:.3f} vs matched perturbed copies "
            f"({'/'.join(mk.get('perturbation', []))}) {mk['pert_mean']:.3f}: mean paired difference "
            f"{mk['diff_mean']:+.3f} [{mk['diff_ci'][0]:+.3f}, {mk['diff_ci'][1]:+.3f}], originals higher in "
            f"{mk['orig_higher']}/{mk['n']} pairs (sign test p={_p(mk.get('p_sign'))}), paired t-test "
            f"p={_p(mk['p_value'])} (flag: {mk['rule']})")


def _verbatim_text(vb: dict[str, Any]) -> str:
    extra = ""
    if "perturbed" in vb:
        pv = vb["perturbed"]
        extra = (f"; matched perturbed copies: {pv.get('near_exact', 0)}/{pv.get('n', 0)} near-exact, "
                 f"mean ROUGE-L {pv.get('mean_rouge_l', 0):.2f}")
    return (f"greedy completion of the second half from the first: {vb['exact']}/{vb['n']} exact, "
            f"{vb['near_exact']}/{vb['n']} near-exact ({_pct(vb['near_exact_rate'])}), mean ROUGE-L "
            f"{vb['mean_rouge_l']:.2f}, mean edit similarity {vb['mean_edit_sim']:.2f}{extra} (flag: {vb['rule']})")


def _permutation_text(pm: dict[str, Any]) -> str:
    s0 = pm["per_shard"][0]
    detail = (f"canonical log-likelihood {s0['canonical']:.1f} vs shuffled mean {s0['shuffled_mean']:.1f} "
              f"(sd {s0['shuffled_std']:.1f})" if pm["shards"] == 1 else
              f"mean canonical-minus-shuffled log-likelihood {pm['mean_diff']:+.2f} over {pm['shards']} shards")
    return (f"{pm['n']} items in canonical order vs {pm['permutations']} shuffled orders: {detail}; "
            f"p={_p(pm['p_value'])} ({pm['test']}; flag: {pm['rule']})")


# Each contamination signal: whether it saw data to measure (else its verdict is "not measured: <rule>"),
# and the words of its verdict.
_SIGNALS = (
    ("ngram", lambda r: True, _ngram_text),
    ("mink", lambda r: r.get("n"), _mink_text),
    ("verbatim", lambda r: r.get("n"), _verbatim_text),
    ("permutation", lambda r: r.get("per_shard"), _permutation_text),
)


def table(result: AuditResult) -> str:
    """Terminal report: robustness table, then one verdict line per signal."""
    lines = [f"primer audit: {result.model['name']} on {result.task} ({result.n_items} items)"]
    rob = result.robustness
    if rob:
        lines.append(f"metric {rob.metric}, {rob.shots}-shot; paired bootstrap 95% CIs")
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
                         _p(c.p_mcnemar if c.p_mcnemar is not None else c.p_bootstrap),
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
    if result.bad_input.count:
        lines.append(f"corpus: {result.bad_input.describe()}")
    lines.append("")
    lines.append("verdicts (flagged = the signal's rule fired; numbers behind each):")
    for v in result.verdicts:
        lines.append(f"  [{'FLAGGED' if v.flag else 'not flagged'}] {v.signal}: {v.verdict}")
    return "\n".join(lines)


def plot(result: AuditResult, path: Path) -> Path | None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rob = result.robustness
    mk = result.contamination.get("mink")
    pm = result.contamination.get("permutation")
    panels = [k for k, ok in (("rob", bool(rob)), ("mink", bool(mk and mk.get("per_item"))),
                              ("perm", bool(pm and pm.get("per_shard")))) if ok]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, kind in zip(axes[0], panels):
        if kind == "rob":
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
        elif kind == "mink":
            o = [p["orig"] for p in mk["per_item"]]
            q = [p["pert"] for p in mk["per_item"]]
            ax.scatter(q, o, s=14, color="tab:purple")
            lo_, hi_ = min(o + q), max(o + q)
            ax.plot([lo_, hi_], [lo_, hi_], "k--", lw=0.8)
            ax.set_xlabel("Min-K%++ of the perturbed copy")
            ax.set_ylabel("Min-K%++ of the original")
            ax.set_title(f"Min-K%++: above the diagonal = original likelier\np={_p(mk['p_value'])}", fontsize=9)
        else:
            s = pm["per_shard"][0]
            if pm["shards"] == 1 and s.get("shuffled"):
                ax.hist(s["shuffled"], bins=min(20, len(s["shuffled"])), color="tab:green", alpha=0.7,
                        label="shuffled orders")
                ax.axvline(s["canonical"], color="tab:red", lw=2, label="canonical order")
                ax.set_xlabel("log-likelihood of the items concatenated")
                ax.set_ylabel("orders")
                ax.legend(fontsize=8)
            else:
                ax.axvline(0, color="0.4", lw=0.8)
                diffs = [sh["diff"] for sh in pm["per_shard"]]
                ax.bar(range(len(diffs)), diffs, color="tab:green")
                ax.set_xlabel("shard")
                ax.set_ylabel("canonical - mean shuffled log-lik")
            ax.set_title(f"permutation test ({pm['permutations']} orders/shard)\np={_p(pm['p_value'])}; "
                         f"shard 0 shuffled sd {s['shuffled_std']:.1f}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
