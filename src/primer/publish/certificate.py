"""The overlap certificate: every benchmark item primer knows, looked up in the published documents.

The index is curate's (`NgramIndex.from_benchmarks`: whole items, n per benchmark by GPT-3's rule), and
an item *overlaps* when a published document shares at least one of its grams — the rule curate's
decontamination drops documents by. Per benchmark the certificate gives n, the items checked and
unchecked (question + answer too short for any gram; named), the items that overlap, and for each of
those the documents (ids) and the matched span (normalized words). A benchmark whose data is not in
the folder is listed as not checked, never left out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from primer.common.paths import is_embedded
from primer.curate.decontam import NgramIndex
from primer.eval.tasks import decontam_tasks

FORMAT = "primer-overlap-certificate/1"
MAX_DOCS = 20  # documents named per overlapping item (the count is always complete)


def certify(docs: Iterable[tuple[str, str]], data_dir: Path, ngram: int | None = None,
            log=lambda s: None) -> dict[str, Any]:
    """(doc id, text) pairs -> the certificate (a JSON-able dict)."""
    idx = NgramIndex.from_benchmarks(data_dir, n=ngram)
    log(idx.describe())
    hits: dict[tuple[str, str], dict[str, Any]] = {}
    n_docs = 0
    for doc_id, text in docs:
        n_docs += 1
        for m in idx.overlap(text, spans=True):
            h = hits.setdefault((m.task, m.item_id), {"task": m.task, "item_id": m.item_id, "grams": m.grams,
                                                      "documents": 0, "doc_ids": [], "matched": 0, "span": ""})
            h["documents"] += 1
            if len(h["doc_ids"]) < MAX_DOCS:
                h["doc_ids"].append(doc_id)
            if m.matched > h["matched"]:  # the document sharing most of the item gives the span shown
                h["matched"], h["span"] = m.matched, m.span or ""
    items: dict[str, int] = defaultdict(int)
    for t in idx.tasks:
        items[t] += 1
    benches: dict[str, dict[str, Any]] = {}
    for task in decontam_tasks():
        bench = task.group or task.name
        b = benches.setdefault(bench, {"benchmark": bench, "checked": task.name in idx.task_n})
        if task.name not in idx.task_n:
            b.setdefault("why_not", f"no data for {task.name} under {data_dir}")
            continue
        b.update(n=idx.task_n[task.name], checked=True)
        b.pop("why_not", None)
        b["items"] = b.get("items", 0) + items[task.name]
        b.setdefault("unchecked_items", []).extend(f"{task.name}/{i}" for i in idx.unchecked.get(task.name, ()))
        b.setdefault("overlapping_items", []).extend(
            h for (t, _), h in sorted(hits.items(), key=lambda kv: (kv[0][0], int(kv[0][1]) if kv[0][1].isdigit() else 0))
            if t == task.name)
    for b in benches.values():
        if b["checked"]:
            b["unchecked"] = len(b["unchecked_items"])
            b["overlapping"] = len(b["overlapping_items"])
    checked = [b for b in benches.values() if b["checked"]]
    return {
        "format": FORMAT,
        "benchmarks_dir": "embedded slice" if is_embedded(data_dir) else str(data_dir),
        "scope": ("the small slice shipped with primer, not the full test sets" if is_embedded(data_dir)
                  else "every item of each benchmark's evaluated split found in the folder"),
        "documents": n_docs,
        "rule": ("an item overlaps when a published document contains at least one of its word n-grams "
                 "(lowercase, punctuation ignored; the whole item: question, context, correct answer and every "
                 "choice; n per benchmark = 5th percentile of solved-item words within 8..13, GPT-3's rule); items "
                 f"whose question + answer has fewer than {idx.min_words} words are unchecked"),
        "items_checked": sum(b["items"] - b["unchecked"] for b in checked),
        "items_unchecked": sum(b["unchecked"] for b in checked),
        "items_overlapping": sum(b["overlapping"] for b in checked),
        "benchmarks": list(benches.values()),
    }


def markdown(cert: dict[str, Any], max_items: int = 30) -> str:
    """The certificate as the dataset card's section."""
    lines = [
        "## Overlap certificate",
        "",
        (f"Every benchmark item primer knows was looked up in the {cert['documents']} published documents "
         f"(`overlap_certificate.json` holds all of it; benchmark data: {cert['benchmarks_dir']}, {cert['scope']}). "
         f"Rule: {cert['rule']}."),
        "",
        (f"**{cert['items_overlapping']} item(s) overlap a published document; {cert['items_checked']} checked, "
         f"{cert['items_unchecked']} unchecked.**"),
        "",
        "| benchmark | n | items | unchecked | overlapping |",
        "|---|---:|---:|---:|---:|",
    ]
    for b in cert["benchmarks"]:
        if b["checked"]:
            lines.append(f"| {b['benchmark']} | {b['n']} | {b['items']} | {b['unchecked']} | {b['overlapping']} |")
        else:
            lines.append(f"| {b['benchmark']} | - | not checked: {b['why_not']} | | |")
    over = [h for b in cert["benchmarks"] if b["checked"] for h in b["overlapping_items"]]
    if over:
        lines += ["", "Overlapping items (item id: documents, the matched span):", ""]
        for h in over[:max_items]:
            lines.append(f"- `{h['task']}/{h['item_id']}`: {h['documents']} document(s) ({', '.join(map(str, h['doc_ids'][:5]))})"
                         f" - \"{h['span']}\"")
        if len(over) > max_items:
            lines.append(f"- ... {len(over) - max_items} more in overlap_certificate.json")
    return "\n".join(lines) + "\n"
