"""Pipeline steps and the counts they keep (the datatrove shape, without its machinery).

A step turns an iterator of `Document`s into another. A `Filter` is the common case: its `check`
returns True to keep a document or a short reason string to drop it. Running steps is separate
from the steps: `run_steps` chains them over a stream and records, per step, how many documents
came in, how many went out, and how many were dropped for each reason; dropped documents can be
written out with their step and reason.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from primer.curate.document import Document


class DropSink(Protocol):
    def write(self, doc: Document, extra: dict[str, Any] | None = None) -> None: ...


@dataclass
class Stats:
    """Per step: documents in, documents out, drops by reason. Mergeable across shards."""

    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    matches: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # e.g. benchmark items hit
    scores: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # step -> score bin -> docs

    def _step(self, name: str) -> dict[str, Any]:
        if name not in self.steps:
            self.steps[name] = {"in": 0, "out": 0, "dropped": Counter()}
        return self.steps[name]

    def seen(self, step: str, n: int = 1) -> None:
        self._step(step)["in"] += n

    def kept(self, step: str, n: int = 1) -> None:
        self._step(step)["out"] += n

    def dropped(self, step: str, reason: str, n: int = 1) -> None:
        self._step(step)["dropped"][reason] += n

    def observe(self, step: str, score_bin: float) -> None:
        """Count one document in a step's score histogram (`score_bin`: the lower edge of its bin)."""
        self.scores[step][f"{score_bin:g}"] += 1

    def merge(self, other: "Stats") -> "Stats":
        for name, s in other.steps.items():
            mine = self._step(name)
            mine["in"] += s["in"]
            mine["out"] += s["out"]
            mine["dropped"].update(s["dropped"])
        for k, v in other.matches.items():
            self.matches[k] += v
        for k, v in other.scores.items():
            self.scores[k].update(v)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": {k: {"in": v["in"], "out": v["out"], "dropped": dict(v["dropped"].most_common())}
                      for k, v in self.steps.items()},
            "matches": dict(sorted(self.matches.items())),
            "scores": {k: dict(sorted(v.items(), key=lambda kv: float(kv[0]))) for k, v in self.scores.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Stats":
        st = cls()
        for k, v in d.get("steps", {}).items():
            st.steps[k] = {"in": v["in"], "out": v["out"], "dropped": Counter(v["dropped"])}
        for k, v in d.get("matches", {}).items():
            st.matches[k] += v
        for k, v in d.get("scores", {}).items():
            st.scores[k].update(v)
        return st

    def table(self) -> str:
        """Human-readable counts: one line per step, then its reasons."""
        lines = [f"{'step':<28}{'in':>10}{'out':>10}{'dropped':>10}"]
        for name, s in self.steps.items():
            lines.append(f"{name:<28}{s['in']:>10}{s['out']:>10}{s['in'] - s['out']:>10}")
            for reason, n in s["dropped"].most_common():
                lines.append(f"    {reason:<44}{n:>10}")
        return "\n".join(lines)


@dataclass
class Context:
    """What a running step may touch: the counts and, optionally, a sink for dropped documents."""

    stats: Stats = field(default_factory=Stats)
    dropped: DropSink | None = None

    def drop(self, step: str, reason: str, doc: Document, extra: dict[str, Any] | None = None) -> None:
        self.stats.dropped(step, reason)
        if self.dropped is not None:
            self.dropped.write(doc, {"dropped_by": step, "reason": reason, **(extra or {})})


class Step:
    """Base step: override `run` (a generator over documents)."""

    name: str = "step"

    def run(self, docs: Iterable[Document], ctx: Context) -> Iterator[Document]:
        raise NotImplementedError


class Filter(Step):
    """Keep-or-reason: override `check(doc) -> True | reason`."""

    def check(self, doc: Document) -> bool | str:
        raise NotImplementedError

    def run(self, docs: Iterable[Document], ctx: Context) -> Iterator[Document]:
        name = self.name
        for doc in docs:
            ctx.stats.seen(name)
            verdict = self.check(doc)
            if verdict is True:
                ctx.stats.kept(name)
                yield doc
            else:
                ctx.drop(name, verdict if isinstance(verdict, str) else "dropped", doc)


class FunctionStep(Step):
    """Wrap a plain generator function `f(docs) -> docs`; documents it does not yield count as dropped."""

    def __init__(self, fn: Callable[[Iterable[Document]], Iterable[Document]], name: str | None = None):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "function")

    def run(self, docs: Iterable[Document], ctx: Context) -> Iterator[Document]:
        def counted(it: Iterable[Document]) -> Iterator[Document]:
            for d in it:
                ctx.stats.seen(self.name)
                yield d

        for d in self.fn(counted(docs)):
            ctx.stats.kept(self.name)
            yield d


def as_step(s: Step | Callable) -> Step:
    return s if isinstance(s, Step) else FunctionStep(s)


def run_steps(docs: Iterable[Document], steps: Iterable[Step | Callable], ctx: Context) -> Iterator[Document]:
    """Chain steps lazily over a stream of documents."""
    stream: Iterable[Document] = docs
    for s in steps:
        stream = as_step(s).run(stream, ctx)
    yield from stream
