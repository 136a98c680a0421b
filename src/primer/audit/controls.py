"""What the audited items are compared with: their controls.

No membership score means anything alone (an easy or frequent text scores high on any model), so
every corpus-free signal compares the audited items with items of the same kind that tell what
"unseen" looks like. Three kinds, each with what it can and cannot show:

  split    items of another split of the same distribution (GSM8K train for GSM8K test), a seeded
           sample as large as the audited set. Exchangeable with the test items when neither
           split was trained on; detects a leak of the audited items or of the whole test split.
           A model trained on the other split (legitimately, e.g. GSM8K train in an SFT mix) makes
           the test conservative, never falsely positive.
  heldout  the next block of the same split (the block before when the split ends): neighbours
           share a benchmark file's ordering (HellaSwag's first 3,000 items are ActivityNet
           captions, the rest WikiHow), so the two blocks are alike in kind. Detects a leak of the
           audited items; a leak of the whole split looks like no difference, and the verdict says so.
  rewrite  each item rewritten with new numbers (GSM8K), a GSM-Symbolic instance or new names: a
           matched pair per item that no model can have trained on, but less natural than the
           original for any model, so the gap is compared with the reference model's gap on the
           same pairs (difference in differences); needs the reference model.

`auto` takes split where the task has another split with enough items, else heldout; rewrite
only on request.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field
from typing import Any

from primer.audit import perturb as P
from primer.errors import PrimerError

KINDS = ("auto", "split", "heldout", "rewrite")


@dataclass
class Controls:
    kind: str
    """split, heldout or rewrite"""
    docs: list[dict]
    """the control documents (rewrite: one per paired item, aligned with `pairs`)"""
    description: str
    """where they come from, in words"""
    limits: str
    """what a comparison against them can and cannot show"""
    pairs: list[int] = field(default_factory=list)
    """rewrite: the audited item (position) each control rewrites"""

    @property
    def paired(self) -> bool:
        return self.kind == "rewrite"

    def summary(self) -> dict[str, Any]:
        return {"kind": self.kind, "n": len(self.docs), "description": self.description, "limits": self.limits,
                "items": [d.get("_index") for d in self.docs] if not self.paired else self.pairs}


def other_split(task) -> str | None:
    """A second split of the task's distribution that its loader reads (its few-shot split)."""
    s = task.fewshot_split
    return s if s and s != task.split and task.fewshot_docs is None else None


def choose(task, docs: list[dict], all_docs: list[dict], data_dir, kind: str, seed: int,
           rewrites: dict[str, list[list[dict]]] | None = None, suite: list[P.Perturbation] | None = None) -> Controls:
    """The controls of `kind` for the audited `docs` (which carry `_index`, their split position)."""
    if kind not in KINDS:
        raise PrimerError(f"unknown controls '{kind}'; choose from {', '.join(KINDS)}")
    n = len(docs)
    if kind == "auto":
        name = other_split(task)
        kind = "split" if name and len(task.docs(data_dir, name)) >= n else "heldout"
    if kind == "split":
        name = other_split(task)
        if name is None:
            raise PrimerError(f"task {task.name} has no other split to draw controls from; use --controls heldout")
        pool = task.docs(data_dir, name)
        rng = random.Random(zlib.crc32(f"{seed}:{docs[0]['_index']}:{name}".encode()))
        pick = sorted(rng.sample(range(len(pool)), min(n, len(pool))))
        return Controls("split", [{**pool[i], "_index": i, "_split": name} for i in pick],
                        f"{len(pick)} items drawn at random from the {name} split",
                        f"detects a leak of the audited items or of the whole {task.split} split; "
                        f"conservative for a model trained on {name}")
    if kind == "heldout":
        lo, hi = docs[0]["_index"], docs[-1]["_index"] + 1
        after = list(range(hi, min(len(all_docs), hi + n)))
        idx = after if len(after) >= n or lo < n else list(range(lo - n, lo))
        if not idx:
            raise PrimerError(f"task {task.name}: no items left beside the audited ones to serve as controls; "
                              "audit fewer items (--limit)")
        return Controls("heldout", [{**all_docs[i], "_index": i} for i in idx],
                        f"the {len(idx)} items {idx[0]}-{idx[-1]} of the same split (the neighbouring block)",
                        "detects a leak of the audited items; a leak of the whole split looks like no difference")
    pairs, out = [], []
    for p in suite or []:
        if not p.matched:
            continue
        for i, vs in enumerate((rewrites or {}).get(p.name, [])):
            if i not in pairs and vs and task.example_text(vs[0]) != task.example_text(docs[i]):
                pairs.append(i)
                out.append({**vs[0], "_index": docs[i]["_index"], "_rewrite": p.name})
    order = sorted(range(len(pairs)), key=pairs.__getitem__)
    used = sorted({d["_rewrite"] for d in out})
    return Controls("rewrite", [out[j] for j in order],
                    f"{len(pairs)} of {n} items rewritten ({', '.join(used) or 'no rewrite applies'})",
                    "detects a leak of the audited items or of the whole split; compared with the reference "
                    "model's gap on the same pairs", pairs=[pairs[j] for j in order])
