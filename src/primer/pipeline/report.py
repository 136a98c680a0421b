"""`primer report RUN_DIR`: one self-contained HTML page about a run.

Everything it shows comes from `RUN_DIR/run.json` and each stage's `RUN_DIR/<stage>/stage.json`
summary (written by the adapters in `primer.pipeline.stages`, read back as the typed summaries of
`primer.pipeline.summaries`), so the report never re-runs anything and renders whatever subset of
the run exists: a section whose stage has not run says so, and one whose summary lacks a field the
report shows says which.
Plots are matplotlib PNGs inlined as base64 `data:` URIs; there is no script, stylesheet or font
from outside the file, so it opens offline and can be mailed as one attachment.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any, Callable

from primer.common.jsonl import BadInput
from primer.errors import PrimerError
from primer.pipeline.records import RunRecord, StageRecord, read_run, read_stage
from primer.pipeline.stages import STAGES
from primer.synth.verify import STATUSES
from primer.pipeline.summaries import (AuditSummary, CurateSummary, Curve, EvalSummary, ExportSummary, Gap,
                                       SynthSummary, TokenizeSummary, TrainSummary, TuneSummary, read_summary)

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#1d1d1f;line-height:1.45}
h1{margin-bottom:.1em} h2{border-bottom:2px solid #e4e4e7;padding-bottom:.2em;margin-top:2em}
h3{margin-bottom:.3em}
table{border-collapse:collapse;margin:.6em 0 1em 0;font-size:.92em}
th,td{border:1px solid #d4d4d8;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f5} td.num{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#71717a} .bad{color:#b91c1c} .good{color:#15803d}
.missing{background:#fafafa;border:1px dashed #d4d4d8;padding:.6em 1em;color:#71717a}
.failed{background:#fef2f2;border:1px solid #fca5a5;padding:.6em 1em}
pre{background:#f8f8f8;border:1px solid #e4e4e7;padding:.6em;overflow-x:auto;font-size:.85em;
white-space:pre-wrap;word-break:break-word}
img.plot{max-width:100%;display:block;margin:.5em 0}
.sample{border-left:3px solid #a1a1aa;padding:.1em .8em;margin:.8em 0}
.grid{display:flex;flex-wrap:wrap;gap:1em} .grid>div{flex:1 1 480px}
details summary{cursor:pointer;color:#3f3f46}
"""


# --------------------------------------------------------------------------------------------
# Small HTML helpers


def esc(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if x != x:  # NaN
            return "—"
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        return f"{x:.4g}"
    return esc(x)


def table(headers: list[str], rows: list[list[Any]], num_cols: set[int] | None = None) -> str:
    num_cols = num_cols if num_cols is not None else {
        j for j in range(len(headers)) if rows and all(isinstance(r[j], (int, float)) or r[j] is None for r in rows)
    }
    out = ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr>"]
    for r in rows:
        cells = []
        for j, v in enumerate(r):
            cls = ' class="num"' if j in num_cols else ""
            cells.append(f"<td{cls}>{v if isinstance(v, Raw) else fmt(v)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


class Raw(str):
    """Already-escaped HTML to put in a table cell as-is."""


def kv_table(d: dict[str, Any]) -> str:
    return table(["", ""], [[k, v] for k, v in d.items() if v is not None], num_cols={1})


def missing(stage: str, rec: StageRecord | None) -> str:
    if rec and rec.status in ("failed", "interrupted"):
        return (f'<div class="failed">stage <b>{esc(stage)}</b> {esc(rec.status)}: '
                f'<code>{esc(rec.error)}</code></div>')
    if rec and rec.status == "running":
        return f'<div class="missing">stage <b>{esc(stage)}</b> is running or was killed mid-way.</div>'
    return f'<div class="missing">stage <b>{esc(stage)}</b> not run.</div>'


def sample_block(title: str, text: str, limit: int = 1500, meta: str = "") -> str:
    t = text if len(text) <= limit else text[:limit] + " …"
    m = f' <span class="muted">{esc(meta)}</span>' if meta else ""
    return f'<div class="sample"><b>{esc(title)}</b>{m}<pre>{esc(t)}</pre></div>'


# --------------------------------------------------------------------------------------------
# Plots


def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def img(fig) -> str:
    plt = pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img class="plot" alt="plot" src="data:image/png;base64,{data}">'


def barh(counts: dict[str, float], title: str, xlabel: str = "documents") -> str:
    plt = pyplot()
    items = sorted(counts.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(6.5, 0.35 * len(items) + 1.2))
    ax.barh([str(k) for k, _ in items], [v for _, v in items], color="#6366f1")
    for y, (_, v) in enumerate(items):
        ax.text(v, y, f" {v:,}" if isinstance(v, int) else f" {v:.3g}", va="center", fontsize=8)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.margins(x=0.15)
    return img(fig)


def histogram(values: list[float], title: str, threshold: float | None, *, weights: list[int] | None = None,
              bins: int | None = None, xlabel: str = "score", more: tuple[float, ...] = ()) -> str:
    """A histogram of values (or of binned counts: values = bin edges, weights = documents), with the
    threshold (and any `more` limits) drawn as dashed lines."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3))
    n = bins or min(30, max(5, len(values) // 5))
    ax.hist(values, bins=n, weights=weights, color="#10b981", edgecolor="white")
    for i, t in enumerate(t for t in (threshold, *more) if t is not None):
        ax.axvline(t, color="#b91c1c", linestyle="--", label=f"threshold {t:g}" if i == 0 else f"{t:g}")
    if threshold is not None or more:
        ax.legend()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("documents")
    return img(fig)


def curves(train: Curve, val: Curve) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    if train.step:
        ax.plot(train.step, train.loss, label="train loss", color="#6366f1", linewidth=1)
    if val.step:
        ax.plot(val.step, val.loss, "o-", label="validation loss", color="#f59e0b")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("Training curves")
    ax.grid(alpha=.3)
    ax.legend()
    return img(fig)


def grouped_bars(tasks: list[str], series: dict[str, list[float | None]], title: str, ylabel: str) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(tasks) + 2), 3.5))
    n = max(1, len(series))
    w = 0.8 / n
    colors = ["#6366f1", "#f59e0b", "#10b981", "#ef4444"]
    for k, (name, vals) in enumerate(series.items()):
        xs = [i + (k - (n - 1) / 2) * w for i in range(len(tasks))]
        ax.bar(xs, [v if v is not None else 0 for v in vals], width=w, label=name, color=colors[k % 4])
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels(tasks, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    ax.grid(axis="y", alpha=.3)
    return img(fig)


def gap_plot(gaps: list[Gap]) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(gaps) + 1.4))
    labels = [f"{g.task} · {g.suite}" for g in gaps]
    ys = list(range(len(gaps)))
    drops = [g.drop or 0.0 for g in gaps]
    lo = [d - (g.ci_low if g.ci_low is not None else d) for d, g in zip(drops, gaps)]
    hi = [(g.ci_high if g.ci_high is not None else d) - d for d, g in zip(drops, gaps)]
    colors = ["#b91c1c" if g.significant else "#6366f1" for g in gaps]
    ax.errorbar(drops, ys, xerr=[lo, hi], fmt="none", ecolor="#52525b", capsize=3)
    ax.scatter(drops, ys, c=colors, zorder=3)
    ax.axvline(0, color="#a1a1aa", linewidth=1)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels)
    ax.invert_yaxis()
    ax.set_xlabel("accuracy drop, original − perturbed (95% CI)")
    ax.set_title("Does the score survive perturbation?")
    return img(fig)


def time_plot(rows: list[tuple[str, float]]) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 0.35 * len(rows) + 1.2))
    ax.barh([r[0] for r in rows][::-1], [r[1] for r in rows][::-1], color="#a855f7")
    ax.set_xlabel("seconds")
    ax.set_title("Time per stage")
    return img(fig)


# --------------------------------------------------------------------------------------------
# Sections


SUMMARIES = {spec.name: spec.summary_cls for spec in STAGES}
STAGE_ORDER = list(SUMMARIES)


def _load(run_dir: Path) -> tuple[RunRecord | None, str | None, dict[str, StageRecord]]:
    """run.json (or why it could not be read) and every stage.json there is."""
    try:
        run, run_error = read_run(run_dir), None
    except PrimerError as e:
        run, run_error = None, str(e)
    names = list(STAGE_ORDER)
    names += [s.name for s in (run.stages if run else []) if s.name not in names]
    stages = {n: rec for n in names if (rec := read_stage(run_dir, n)) is not None}
    return run, run_error, stages


def _summary(stages: dict[str, StageRecord], name: str) -> tuple[Any, str]:
    """(the stage's typed summary, "") when it is done; (None, HTML saying why not) otherwise."""
    rec = stages.get(name)
    if not rec or rec.status != "done":
        return None, missing(name, rec)
    try:
        return read_summary(SUMMARIES[name], rec.summary, name), ""
    except PrimerError as e:
        return None, f'<div class="failed">stage <b>{esc(name)}</b>: summary unreadable: {esc(e)}</div>'


def stage_section(stages: dict[str, StageRecord], name: str, body: Callable[[Any], str]) -> str:
    """`body` of the stage's summary, or the box that says why the stage has none."""
    s, why = _summary(stages, name)
    return why if s is None else body(s)


def grid(plots: list[str]) -> str:
    return '<div class="grid">' + "".join(f"<div>{p}</div>" for p in plots) + "</div>"


def bad_input(stage: str, bad: BadInput) -> str:
    """The input lines a stage could not use (or kept with invalid UTF-8 replaced), named (never without a word)."""
    total = bad.count + bad.replaced
    if not total:
        return ""
    shown = "".join(f"<li><code>{esc(e)}</code></li>" for e in bad.examples[:5])
    more = f"<li>... {total - 5} more</li>" if total > 5 else ""
    what = []
    if bad.count:
        what.append(f"{bad.count} input line{'s' if bad.count != 1 else ''} could not be read and "
                    f"{'were' if bad.count != 1 else 'was'} left out")
    if bad.replaced:
        what.append(f"{bad.replaced} kept with invalid UTF-8 bytes replaced by U+FFFD")
    return f'<p class="bad">{stage}: {"; ".join(what)}:</p><ul>{shown}{more}</ul>'


def section_overview(run: RunRecord | None, stages: dict[str, StageRecord]) -> str:
    out = []
    rows = []
    by_name = {s.name: s for s in (run.stages if run else [])}
    for name in [n for n in STAGE_ORDER if n in by_name or n in stages] + [n for n in by_name if n not in STAGE_ORDER]:
        rec, st = stages.get(name), by_name.get(name)

        def pick(attr: str) -> Any:  # stage.json's value, else run.json's line
            v = getattr(rec, attr) if rec else None
            return v if v is not None else (getattr(st, attr) if st else None)

        status = (st.status if st else None) or pick("status") or "not run"
        if status == "skipped":
            status = "cached (done earlier)"
        rows.append([name, status, pick("seconds"), pick("cpu_seconds"), pick("fingerprint"),
                     rec.finished if rec else None])
    if rows:
        out.append(table(["stage", "status", "wall seconds", "CPU seconds", "fingerprint", "finished"], rows,
                         num_cols={2, 3}))
        total = sum(r[2] or 0 for r in rows)
        out.append(f"<p>Total: {fmt(round(total, 1))} s of stage time ({fmt(round(total / 60, 1))} min). Cached "
                   "stages show the time they took when they ran.</p>")
        timed = [(r[0], r[2]) for r in rows if r[2]]
        if timed:
            out.append(time_plot(timed))
    else:
        out.append('<div class="missing">no stage has run.</div>')
    return "\n".join(out)


def section_synth(s: SynthSummary) -> str:
    out = [kv_table({
        "teacher": s.teacher, "documents written": s.documents, "tokens": s.tokens, "tokens/s": s.tokens_per_s,
        "near-duplicate rate": s.near_dup_rate, "distinct n-gram ratio": s.distinct_ngram_ratio,
    }), bad_input("synth", s.bad_input)]
    plots = []
    if s.rejects:
        plots.append(barh(s.rejects, "Synth rejects per reason"))
    if s.by_format:
        plots.append(barh(s.by_format, "Documents per format"))
    if s.by_audience:
        plots.append(barh(s.by_audience, "Documents per audience"))
    out.append(grid(plots) if plots else '<p class="muted">no document was rejected.</p>')
    if s.verification:
        out.append("<p>Exercises checked in the sandbox before they were kept (code: the solution passes its own "
                   "tests; word problems: the teacher's <code>solution()</code> returns the stated answer):</p>")
        rows = [[f, *(c.get(k, 0) for k in STATUSES), f"{c.get('verified', 0) / max(1, sum(c.values())):.0%}"]
                for f, c in sorted(s.verification.items())]
        out.append(table(["format", *STATUSES, "verified share"], rows, num_cols={1, 2, 3, 4, 5}))
    return "\n".join(out)


def section_curate(c: CurateSummary) -> str:
    out = []
    if c.sources:
        out.append(table(["source", "documents in", "kept"], [[k, v.read, v.kept] for k, v in c.sources.items()]))
    out.append(kv_table({
        "documents in": c.documents_in, "documents kept": c.documents_kept,
        "exact duplicates removed": c.dedup.exact if c.dedup else None,
        "near duplicates removed": c.dedup.near if c.dedup else None,
        "dropped by decontamination": c.decontam.dropped if c.decontam else None,
        "educational-score threshold": c.edu_threshold,
        "quality filter": (f"{c.quality['model']}, first {c.quality['window_tokens']} tokens" if c.quality else None),
    }))
    out.append(bad_input("curate", c.bad_input))
    plots = []
    if c.sources:
        plots.append(barh({k: v.kept for k, v in c.sources.items()}, "Documents kept per source"))
    if c.rejects:
        plots.append(barh(c.rejects, "Rejects per reason"))
    if c.edu_scores:
        plots.append(histogram(c.edu_scores, "Educational-value score", c.edu_threshold))
    if c.quality_nll:
        edges = [float(k) for k in c.quality_nll]
        lim = (c.quality or {}).get("limits", {})
        hi, lo = lim.get("nll", {}).get("max"), lim.get("nll_low", {}).get("min")
        plots.append(histogram(edges, "Quality filter: mean NLL per token (reference LM)", hi, more=(lo,) if lo else (),
                               weights=list(c.quality_nll.values()), xlabel="nats per token",
                               bins=max(5, round((max(edges) - min(edges)) / 0.1) + 1)))
    if plots:
        out.append(grid(plots))
    if not c.edu_scores:
        out.append('<p class="muted">educational-value filter off (no <code>[curate] scorer</code>; train one with '
                   '<code>primer curate annotate</code> + <code>train-scorer</code>): no score histogram.</p>')
    if c.decontam is None:
        out.append('<p class="muted">decontamination off (no benchmark data given to curate).</p>')
        return "\n".join(out)
    if c.decontam.matches:
        out.append("<p>Benchmark items found in the corpus (document dropped):</p>")
        out.append(table(["benchmark", "documents"], [[k, v] for k, v in c.decontam.matches.items()]))
    else:
        out.append('<p class="muted">no benchmark text found in the corpus.</p>')
    out.append("<p>Decontamination n-gram size per benchmark (GPT-3's rule), and items too short to check "
               "(question + answer under 8 words; named in curate/stats.json):</p>")
    out.append(table(["benchmark", "n", "unchecked items"],
                     [[b, n, c.decontam.unchecked.get(b, 0)] for b, n in c.decontam.n.items()]))
    return "\n".join(out)


def section_samples_docs(stages: dict[str, StageRecord]) -> str:
    out = []
    for name, label in (("synth", "synthetic"), ("curate", "kept by curation")):
        sm, _ = _summary(stages, name)
        for d in (sm.samples[:3] if sm else []):
            meta = ", ".join(f"{k}: {v}" for k, v in (("source", d.source), ("format", d.format),
                                                      ("audience", d.audience), ("edu_score", d.edu_score))
                             if v is not None)
            out.append(sample_block(f"{label}: {d.title}", d.text, meta=meta))
    return "\n".join(out) or '<div class="missing">no sample documents (synth/curate not run).</div>'


def section_tokenize(t: TokenizeSummary) -> str:
    return kv_table({
        "tokenizer": t.tokenizer, "vocab size": t.vocab_size, "train documents": t.train_documents,
        "train tokens": t.train_tokens, "val documents": t.val_documents, "val tokens": t.val_tokens,
        "tokenizer hash": t.tokenizer_hash,
    }) + bad_input("tokenize", t.bad_input)


def section_data(stages: dict[str, StageRecord]) -> str:
    return "\n".join([
        "<h3>Synthetic textbooks (synth)</h3>", stage_section(stages, "synth", section_synth),
        "<h3>Curation (curate)</h3>", stage_section(stages, "curate", section_curate),
        "<h3>Sample documents</h3>", section_samples_docs(stages),
        "<h3>Tokenization (tokenize)</h3>", stage_section(stages, "tokenize", section_tokenize),
    ])


def section_train(s: TrainSummary) -> str:
    out = [kv_table({
        "model shape": s.shape, "parameters": s.params, "steps": s.steps, "tokens seen": s.tokens,
        "tokens/s": s.tokens_per_s, "final train loss": s.final_train_loss,
        "final validation loss": s.final_val_loss, "checkpoint": s.checkpoint,
    })]
    if s.curve.step or s.val_curve.step:
        out.append(curves(s.curve, s.val_curve))
    else:
        out.append('<p class="muted">no loss curve recorded.</p>')
    return "\n".join(out)


def section_export(s: ExportSummary) -> str:
    return kv_table({"file": s.path, "format": s.format, "architecture": s.arch, "quantization": s.quant,
                     "size (MiB)": round(s.bytes / 2**20, 2), "chat with it": s.chat})


def section_eval(s: EvalSummary) -> str:
    if s.skipped:
        return f'<div class="missing">benchmarks skipped: {esc(s.skipped)}</div>'
    if not s.tasks:
        return '<p class="muted">no task was evaluated.</p>'
    model_name, ref_name = s.model, s.teacher or "teacher"

    def pm(v, e):
        if v is None:
            return None
        return Raw(f"{100 * v:.1f}" + (f' <span class="muted">± {100 * e:.1f}</span>' if e is not None else ""))

    rows = [[task, r.metric, r.n, pm(r.model, r.model_stderr), pm(r.teacher, r.teacher_stderr),
             f"{r.published:.1f}" if r.published is not None else None,
             f"{100 * r.chance:.1f}" if r.chance else None] for task, r in s.tasks.items()]
    out = [f'<div class="missing">{esc(s.data)}</div>' if s.data else "",
           f"<p>Scores in percent, ± one standard error; the reference is <b>{esc(ref_name)}</b> "
           f"scored by the same code on the same items.</p>",
           table(["task", "metric", "items", esc(model_name), esc(ref_name), "published (ref.)", "chance"], rows,
                 num_cols={2, 3, 4, 5, 6})]
    tasks = list(s.tasks)
    out.append(grouped_bars(tasks, {
        model_name: [s.tasks[t].model for t in tasks],
        ref_name: [s.tasks[t].teacher for t in tasks],
    }, "Benchmarks: our model beside the reference", "score"))
    return "\n".join(out)


def section_tune(s: TuneSummary) -> str:
    if s.skipped:
        return f'<div class="missing">tuning skipped: {esc(s.skipped)}</div>'
    out = [kv_table({"tuned model": s.model, "conversations": s.conversations,
                     "safety demonstrations in the SFT data": s.safety_sft,
                     "verified replies in the SFT data": s.verified_sft, "preference pairs": s.pairs,
                     "tuned checkpoint": s.checkpoint,
                     "time (s)": ", ".join(f"{k} {v}" for k, v in s.seconds.items())})]
    if len(s.rounds) > 1:  # [tune] rounds: what each on-policy round sampled and trained
        out.append(table(["round", "preference pairs", "verified replies in SFT", "safety demonstrations in SFT",
                          "SFT steps", "DPO steps"],
                         [[i, r.pairs, r.verified_sft, r.safety_sft, r.sft_steps, r.dpo_steps]
                          for i, r in enumerate(s.rounds, 1)]))

    def pct(v, ci=None, sign=""):
        if v is None:
            return None
        return f"{100 * v:{sign}.1f}" + (f" [{100 * ci[0]:{sign}.1f}, {100 * ci[1]:{sign}.1f}]" if ci else "")

    rows = [[r.task, r.metric, r.n, pct(r.before, r.before_ci), pct(r.after, r.after_ci),
             None if r.before is None or r.after is None else pct(r.after - r.before, r.diff_ci, "+")]
            for r in s.rows]
    out.append(table(["task", "metric", "items", "before", "after", "after − before"], rows, num_cols={2, 3, 4, 5}))
    out.append("<p>Percent; in brackets the 95% interval: the task's own where it gives one (XSTest: Wilson), and a "
               "paired bootstrap for after − before on the same items.</p>")
    loose = next((r for r in s.rows if (r.task, r.metric) == ("ifeval", "prompt_level_loose_acc")), None)
    if loose and loose.diff_ci and loose.before is not None and loose.after is not None:
        out.append(f"<p>IFEval prompt-level loose, after − before on the same prompts: "
                   f"<b>{100 * (loose.after - loose.before):+.1f}</b> points (95% paired-bootstrap interval "
                   f"[{100 * loose.diff_ci[0]:+.1f}, {100 * loose.diff_ci[1]:+.1f}]).</p>")
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.5))
    for curve, label, ax in ((s.sft_curve, "SFT loss", a1), (s.dpo_curve, "DPO loss", a1),
                             (s.dpo_margin, "DPO reward margin", a2)):
        if curve and curve.step:
            ax.plot(curve.step, curve.loss, label=label)
    a1.set_xlabel("step")
    a1.set_title("Tuning losses")
    a2.set_xlabel("DPO step")
    a2.set_title("Reward margin (chosen − rejected)")
    for ax in (a1, a2):
        ax.grid(alpha=.3)
        ax.legend()
    out.append(img(fig))
    return "\n".join(out)


def section_audit(s: AuditSummary) -> str:
    if s.skipped:
        return f'<div class="missing">audit skipped: {esc(s.skipped)}</div>'
    out = [f'<div class="missing">{esc(s.data)}</div>' if s.data else "", bad_input("audit", s.bad_input)]

    def pct(x):
        return None if x is None else 100 * x

    if s.gaps:
        rows = [[g.task, g.suite, g.n, pct(g.original), pct(g.perturbed), pct(g.drop),
                 Raw(f"[{100 * g.ci_low:.1f}, {100 * g.ci_high:.1f}]") if g.ci_low is not None else None,
                 Raw('<span class="bad">yes</span>' if g.significant else "no")] for g in s.gaps]
        out.append("<p>Accuracy on original items and on perturbed versions of the same items; drop with a 95% "
                   "paired-bootstrap interval.</p>")
        out.append(table(["task", "perturbation", "items", "original %", "perturbed %", "drop (points)", "95% CI",
                          "significant"], rows, num_cols={2, 3, 4, 5}))
        out.append(gap_plot(s.gaps))
    else:
        out.append('<p class="muted">no perturbation suite was run.</p>')
    if s.contamination:
        out.append("<h3>Contamination signals</h3>")
        out.append(table(["task", "signal", "value", "verdict"],
                         [[x.task, x.signal, x.value, x.verdict] for x in s.contamination]))
    return "\n".join(out)


def section_samples(stages: dict[str, StageRecord]) -> str:
    s, _ = _summary(stages, "eval")
    if s is None or not s.generations:
        return '<div class="missing">no generation samples (eval not run).</div>'
    out = []
    for g in s.generations:
        out.append(f'<div class="sample"><b>prompt:</b> <code>{esc(g.prompt)}</code>')
        for label, text in (("our model", g.model), ("teacher", g.teacher)):
            if text is not None:
                out.append(f"<div><i>{label}:</i><pre>{esc(text)}</pre></div>")
        out.append("</div>")
    return "\n".join(out)


def section_recipe(run: RunRecord | None) -> str:
    if run is None or not run.recipe:
        return '<div class="missing">no run.json: recipe unknown.</div>'
    return (f"<p>From <code>{esc(run.recipe_path)}</code>. Re-run: <code>{esc(run.command)}</code></p>"
            f"<details open><summary>resolved recipe</summary><pre>{esc(to_toml(run.recipe))}</pre></details>")


def section_env(run: RunRecord | None) -> str:
    if run is None:
        return '<div class="missing">no run.json.</div>'
    out = [kv_table({"git sha": run.git_sha, "primer": run.primer_version, **run.hardware})]
    if run.packages:
        out.append(table(["package", "version"], [[k, v] for k, v in run.packages.items()]))
    return "\n".join(out)


def to_toml(d: dict, prefix: str = "") -> str:
    """Small TOML writer for a resolved recipe (scalars, lists, nested tables)."""

    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if v is None:
            return '"" # none'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return json.dumps(str(v))

    lines, subs = [], []
    for k, v in d.items():
        if isinstance(v, dict) and v and all(not isinstance(x, dict) for x in v.values()) and prefix and k not in ("run",):
            subs.append((k, v))
        elif isinstance(v, dict) and (not prefix):
            subs.append((k, v))
        elif isinstance(v, dict):
            lines.append(f"{k} = {{ " + ", ".join(f"{a} = {val(b)}" for a, b in v.items()) + " }")
        elif v is None:
            lines.append(f"# {k} = (unset)")
        else:
            lines.append(f"{k} = {val(v)}")
    for k, v in subs:
        name = f"{prefix}.{k}" if prefix else k
        lines.append(f"\n[{name}]")
        lines.append(to_toml(v, name))
    return "\n".join(x for x in lines if x != "")


# --------------------------------------------------------------------------------------------


def render(run_dir: str | Path) -> str:
    rd = Path(run_dir)
    if not rd.is_dir():
        raise PrimerError(f"run directory not found: {rd}")
    run, run_error, stages = _load(rd)
    if run is None and run_error is None and not stages:
        raise PrimerError(f"{rd} is not a primer run directory (no run.json, no <stage>/stage.json)")
    name = (run.recipe.get("run", {}).get("name") if run else None) or rd.name
    status = run.status if run else "unknown"
    status_html = (f'<span class="good">{esc(status)}</span>' if status == "done"
                   else f'<span class="bad">{esc(status)}</span>')
    if run and run.failed_stage:
        status_html += f" at stage <b>{esc(run.failed_stage)}</b>"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">",
        f"<title>primer run: {esc(name)}</title><style>{CSS}</style></head><body>",
        f"<h1>primer run: {esc(name)}</h1>",
        f"<p class='muted'>status {status_html} · started {esc(run and run.started)} · finished "
        f"{esc(run and run.finished)} · primer {esc(run and run.primer_version)} · git {esc(run and run.git_sha)}</p>",
        f'<div class="failed">{esc(run_error)}</div>' if run_error else "",
        "<h2>Stages and time</h2>", section_overview(run, stages),
        "<h2>Data</h2>", section_data(stages),
        "<h2>Training</h2>", stage_section(stages, "train", section_train),
        "<h2>On-device file</h2>", stage_section(stages, "export", section_export),
        "<h2>Benchmarks</h2>", stage_section(stages, "eval", section_eval),
        "<h2>Audit</h2>", stage_section(stages, "audit", section_audit),
        "<h2>Chat tuning</h2>", stage_section(stages, "tune", section_tune),
        "<h2>Generation samples</h2>", section_samples(stages),
        "<h2>Recipe</h2>", section_recipe(run),
        "<h2>Hardware and software</h2>", section_env(run),
        "<p class='muted'>Generated by <code>primer report</code>; self-contained, no external resources.</p>",
        "</body></html>",
    ]
    return "\n".join(parts)


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Render the report of `run_dir` to `out` (default RUN_DIR/report.html); returns the path."""
    text = render(run_dir)
    path = Path(out) if out is not None else Path(run_dir) / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
