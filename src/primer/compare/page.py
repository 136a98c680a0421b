"""The compare page and its JSON twin: one self-contained HTML file (inline PNG plots, no external resources), like `primer report`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from primer.common.files import atomic_write_bytes
from primer.compare.run import Comparison, RunView
from primer.config import to_dict
from primer.pipeline.report import CSS, Raw, esc, img, pyplot, table

COLORS = ("#6366f1", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#0ea5e9")


def _pct(x: float | None) -> str | None:
    return None if x is None else f"{100 * x:.1f}"


def data_table(runs: list[RunView]) -> str:
    def get(v: RunView, stage: str, attr: str):
        s = v.summaries.get(stage)
        return getattr(s, attr, None) if s is not None else None

    rows = []
    for v in runs:
        cur = v.summaries.get("curate")
        web = (cur.sources.get("web") if cur else None)
        syn = (cur.sources.get("synth") if cur else None)
        rows.append([v.name, get(v, "synth", "documents"), getattr(syn, "kept", None), getattr(web, "kept", None),
                     get(v, "tokenize", "vocab_size"), get(v, "tokenize", "train_tokens"), get(v, "train", "shape"),
                     get(v, "train", "params"), get(v, "train", "steps"), get(v, "train", "tokens")])
    return table(["run", "synthetic docs written", "synthetic docs kept", "web docs kept", "vocab",
                  "training tokens (corpus)", "shape", "parameters", "steps", "tokens seen"], rows,
                 num_cols={1, 2, 3, 4, 5, 7, 8, 9})


def curves_plot(runs: list[RunView]) -> str:
    """Every run's training and validation loss on one plot, against tokens seen (runs may differ in batch)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    for v, color in zip(runs, COLORS * 4):
        t = v.summaries.get("train")
        if t is None or not t.steps:
            continue
        per_step = t.tokens / t.steps
        ax.plot([s * per_step for s in t.curve.step], t.curve.loss, color=color, linewidth=1,
                label=f"{v.name}: train")
        if t.val_curve.step:
            ax.plot([s * per_step for s in t.val_curve.step], t.val_curve.loss, "o--", color=color,
                    label=f"{v.name}: validation (its own held-out split)")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("loss (nats/token, each run's tokenizer)")
    ax.set_title("Training curves")
    ax.grid(alpha=.3)
    ax.legend(fontsize=8)
    return img(fig)


def bpb_plot(runs: list[RunView]) -> str:
    plt = pyplot()
    vals = [(v.name, v.heldout_bpb) for v in runs if v.heldout_bpb is not None]
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(vals) + 1.2))
    ax.barh([n for n, _ in vals], [b for _, b in vals], color=COLORS[: len(vals)])
    ax.set_xlabel("bits per byte (lower is better)")
    ax.set_title("Common held-out set")
    ax.invert_yaxis()
    return img(fig)


def _metrics(c: Comparison) -> list[tuple[str, str]]:
    return list(dict.fromkeys((t, m) for v in c.runs for t, ms in v.metrics.items() for m in ms))


def benchmarks(c: Comparison) -> str:
    pairs = _metrics(c)
    if not pairs:
        return '<p class="muted">no run has benchmark scores (no finished eval stage, or --no-benchmarks).</p>'
    rows = []
    for t, m in pairs:
        row: list = [t, m]
        for v in c.runs:
            s = v.score(t, m)
            row.append(f"{100 * s[0]:.1f} (n={s[1]})" if s else None)
        rows.append(row)
    out = [table(["task", "metric"] + [esc(v.name) for v in c.runs], rows)]
    if c.differences:
        drows = [[d.task, d.metric, d.run, d.baseline, d.n, _pct(d.diff),
                  f"[{100 * d.ci[0]:+.1f}, {100 * d.ci[1]:+.1f}]", f"{d.p:.3f}",
                  Raw('<span class="good">yes</span>' if d.significant else '<span class="muted">no</span>')]
                 for d in c.differences]
        out += ["<p>Paired differences on the same items (run − baseline, points; 95% paired-bootstrap interval):</p>",
                table(["task", "metric", "run", "baseline", "items", "difference", "95% CI", "p", "interval excludes 0"],
                      drows, num_cols={4, 5, 7})]
    return "\n".join(out)


def audits(runs: list[RunView]) -> str:
    rows = []
    for v in runs:
        a = v.summaries.get("audit")
        if a is None or a.skipped:
            rows.append([v.name, None, "", a.skipped if a else "no finished audit stage"])
            continue
        for s in a.contamination:
            rows.append([v.name, s.task, s.signal, s.verdict])
    return table(["run", "task", "signal", "verdict"], rows) if rows else '<p class="muted">no audits.</p>'


def samples(runs: list[RunView]) -> str:
    out = []
    for v in runs:
        e = v.summaries.get("eval")
        for g in (e.generations if e else []):
            out.append(f'<div class="sample"><b>{esc(v.name)}</b> · <i>{esc(g.prompt)}</i><pre>{esc(g.model)}</pre></div>')
    return "\n".join(out) or '<p class="muted">no generation samples.</p>'


def render(c: Comparison) -> str:
    names = " vs ".join(v.name for v in c.runs)
    bpb_rows = [[v.name, f"{v.heldout_bpb:.4f}" if v.heldout_bpb is not None else None] for v in c.runs]
    head = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">",
        f"<title>primer compare: {esc(names)}</title><style>{CSS}</style></head><body>",
        f"<h1>primer compare: {esc(names)}</h1>",
        "<p class='muted'>The first " + ("results file" if c.heldout is None else "run") + " is the baseline. "
        + " ".join(esc(n) for n in c.notes) + "</p>",
    ]
    tail = ["<p class='muted'>Generated by <code>primer compare</code>; self-contained, no external resources.</p>",
            "</body></html>"]
    if c.heldout is None:  # eval results files: scores only
        return "\n".join(head + ["<h2>Benchmarks</h2>", benchmarks(c)] + tail)
    parts = head + [
        "<h2>Data</h2>", data_table(c.runs),
        "<h2>Training</h2>", curves_plot(c.runs),
        "<h2>Held-out loss</h2>",
        f"<p>Every model scores the same {c.heldout_docs} documents ({c.heldout_bytes:,} bytes of "
        f"<code>{esc(c.heldout)}</code>) with its own tokenizer; loss in bits per UTF-8 byte, so runs with "
        "different tokenizers compare.</p>",
        table(["run", "bits per byte"], bpb_rows, num_cols={1}), bpb_plot(c.runs),
        "<h2>Benchmarks</h2>", benchmarks(c),
        "<h2>Audit</h2>", audits(c.runs),
        "<h2>Generation samples</h2>", samples(c.runs),
    ] + tail
    return "\n".join(parts)


def to_json(c: Comparison) -> dict[str, Any]:
    return {"heldout": c.heldout, "heldout_docs": c.heldout_docs, "heldout_bytes": c.heldout_bytes,
            "runs": [{"name": v.name, "path": v.path, "heldout_bpb": v.heldout_bpb,
                      "scores": {t: {m: s[0] for m in ms if (s := v.score(t, m))} for t, ms in v.metrics.items()}}
                     for v in c.runs],
            "differences": [to_dict(d) for d in c.differences], "notes": c.notes}


def write(c: Comparison, out: Path) -> tuple[Path, Path]:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, render(c).encode("utf-8"))
    js = out.with_suffix(".json")
    atomic_write_bytes(js, (json.dumps(to_json(c), indent=1) + "\n").encode("utf-8"))
    return out, js
