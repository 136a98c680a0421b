"""Per-item scores in eval's logged samples (`--log-samples`), and two evaluations paired item by item.

A paired interval resamples items, so it needs each item's value in both evaluations: the same documents, matched
by `doc_id`. A metric may give a document one value (accuracy, an IFEval prompt-level verdict, pass@k), one value
per part (IFEval's instruction-level metrics list a verdict per instruction: the instructions are the items, as
lm-eval counts them), or none (an XSTest rate covers only its half of the prompts). Only a metric whose reported
score is the mean of those values pairs this way (`is_item_mean`): a perplexity is not, nor is a metric a task
aggregates otherwise.
"""

from __future__ import annotations

from typing import Any

from primer.errors import PrimerError


def _number(x: Any) -> bool:
    return isinstance(x, (bool, int, float))


def item_values(samples: list[dict], metric: str) -> dict[Any, list[float]]:
    """doc id -> the values `metric` gave that document (left out where it gave none)."""
    out: dict[Any, list[float]] = {}
    for i, rec in enumerate(samples):
        v = (rec.get("scores") or {}).get(metric)
        if _number(v):
            out[rec.get("doc_id", i)] = [float(v)]
        elif isinstance(v, list) and v and all(_number(x) for x in v):
            out[rec.get("doc_id", i)] = [float(x) for x in v]
    return out


def is_item_mean(samples: list[dict], metric: str, reported: float | None) -> bool:
    """Whether `reported` (the task's score for `metric`) is the mean of its per-item values in `samples`."""
    xs = [x for vs in item_values(samples, metric).values() for x in vs]
    return reported is not None and bool(xs) and abs(sum(xs) / len(xs) - reported) <= 1e-9 * max(1.0, abs(reported))


def paired_values(base: list[dict], other: list[dict], metric: str) -> tuple[list[float], list[float]]:
    """`metric`'s per-item values in two evaluations' samples, on the documents both scored (in `base`'s order):
    (base values, other values), aligned."""
    b, o = item_values(base, metric), item_values(other, metric)
    xs: list[float] = []
    ys: list[float] = []
    for doc, vb in b.items():
        vo = o.get(doc)
        if vo is None:
            continue
        if len(vo) != len(vb):
            raise PrimerError(f"document {doc!r} has {len(vb)} values of {metric} in one evaluation and {len(vo)} in "
                              "the other: they did not score the same items (another task version?)")
        xs += vb
        ys += vo
    return xs, ys
