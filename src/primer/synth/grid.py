"""The prompt grid, as data: formats x audiences x style knobs over topics (or web extracts).

phi-1.5 wrote textbooks over ~20K topics; Cosmopedia crossed seed topics (and web extracts) with
audiences and styles to keep 25B tokens diverse. Here each axis is a plain dict, a prompt is a
`PromptSpec`, and `plan()` walks the grid in a fixed, seeded order:

  round r, topics in a seeded shuffle, each topic taking its r-th (format, audience, style)
  combination in its own seeded order of the allowed ones (a stride permutation, O(1) a prompt),

so the first N prompts cover N different topics before any topic repeats, and a rerun with the
same arguments yields the same sequence. `PromptSpec.id` is a hash of everything that goes into
the prompt, so a rerun knows what is done. Prompts are short and direct: the bundled 135M teacher
must be able to follow them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from primer.common.jsonl import BadInput, read_jsonl_lines
from primer.errors import PrimerError

QUANTITATIVE = {"mathematics", "programming", "physics", "chemistry", "astronomy", "economics", "statistics",
                "computer science", "engineering", "everyday reasoning"}
"""subjects whose exercises have a numeric answer (and suit code exercises)"""

# format -> its prompt, the subjects and audiences it suits (absent: all), and the check its documents
# must pass before they are kept ("check", see verify.py; absent: none). {topic} is the topic text,
# {audience} the audience phrase, {extra} the style knobs, one short sentence each.
FORMATS: dict[str, dict] = {
    "textbook": {
        "prompt": "Write a textbook section about {topic} for {audience}. Explain the key ideas clearly "
        "and give concrete examples.{extra}",
    },
    "exercises": {  # a math word problem whose answer a program of the teacher's must reproduce (verify.py)
        "prompt": "Write a word problem about {topic} for {audience}, then a worked solution that explains every "
        "step.{extra} End the solution with a line \"Answer: <number>\". Then write a Python function solution() "
        "that computes the answer and returns it, in a ```python code block.",
        "check": "answer",
        "subjects": QUANTITATIVE,
    },
    "story": {
        "prompt": "Write a short story for {audience} in which the characters learn about {topic}. "
        "The story should explain the idea correctly.{extra}",
    },
    "dialogue": {
        "prompt": "Write a conversation between a curious student and a teacher about {topic}, for "
        "{audience}. The teacher explains the idea with examples and the student asks questions.{extra}",
    },
    "code": {  # a code exercise whose reference solution must pass its own tests (verify.py)
        "prompt": "Write a Python exercise about {topic} for {audience}. State the task, then explain the "
        "solution step by step.{extra} Give the solution as a Python function in a ```python code block, then "
        "tests for it as assert statements in a second ```python code block.",
        "check": "tests",
        "subjects": QUANTITATIVE | {"biology", "earth science"},
        "audiences": {"middle_school", "high_school", "college", "researchers"},
    },
}

AUDIENCES: dict[str, str] = {
    "young_children": "young children, using simple words and short sentences",
    "middle_school": "middle school students",
    "high_school": "high school students",
    "college": "college students",
    "researchers": "researchers and experts, with precise and technical language",
}

# Style knobs: each knob contributes one short sentence (or nothing) to the prompt.
STYLES: dict[str, dict[str, str]] = {
    "tone": {
        "plain": "",
        "friendly": " Use a warm, friendly tone.",
        "formal": " Use a formal, academic tone.",
        "lively": " Make it engaging and lively.",
    },
    "angle": {
        "basic": "",
        "application": " Show how it is used in real life.",
        "history": " Mention how the idea was discovered or developed.",
        "misconception": " Point out a common mistake and correct it.",
        "analogy": " Use an analogy to make it clear.",
    },
}

SEEDED_PREFIX = 'Here is an extract from a web page:\n"{extract}"\n\n'
SEEDED_TOPIC = "the main subject of this extract"
TEMPLATE_VERSION = 1
"""bump when the wording changes: ids (and so resume) follow the rendered text anyway"""


@dataclass(frozen=True)
class Topic:
    name: str
    """the leaf, as it goes into the prompt ("photosynthesis")"""
    subject: str = ""
    """top-level subject ("biology"); selects which formats fit"""
    area: str = ""
    """the middle level ("plant biology")"""

    @property
    def text(self) -> str:
        return f"{self.name} ({self.area})" if self.area and self.area.lower() not in self.name.lower() else self.name


@dataclass(frozen=True)
class Extract:
    """A passage from a web corpus that seeds a prompt (Cosmopedia-style)."""

    text: str
    source: str = ""
    """file:line it came from"""

    @property
    def id(self) -> str:
        return hashlib.sha1(self.text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class PromptSpec:
    topic: Topic | None
    format: str
    audience: str
    style: tuple[tuple[str, str], ...]
    extract: Extract | None = None
    text: str = field(default="", compare=False)

    @property
    def id(self) -> str:
        key = {
            "v": TEMPLATE_VERSION,
            "topic": self.topic.text if self.topic else None,
            "format": self.format,
            "audience": self.audience,
            "style": dict(self.style),
            "extract": self.extract.id if self.extract else None,
            "prompt": self.text,
        }
        return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    def seed(self, base: int = 0) -> int:
        """per-prompt sampling seed: reproducible, different for each prompt"""
        return (int(self.id[:8], 16) + base) & 0x7FFFFFFF


def render(topic: Topic | None, fmt: str, audience: str, style: dict[str, str],
           extract: Extract | None = None) -> str:
    spec = FORMATS[fmt]
    extra = "".join(STYLES[k][v] for k, v in sorted(style.items()))
    topic_text = SEEDED_TOPIC if extract is not None else topic.text  # type: ignore[union-attr]
    body = spec["prompt"].format(topic=topic_text, audience=AUDIENCES[audience], extra=extra)
    if extract is not None:
        return SEEDED_PREFIX.format(extract=extract.text) + body
    return body


def make(topic: Topic | None, fmt: str, audience: str, style: dict[str, str],
         extract: Extract | None = None) -> PromptSpec:
    return PromptSpec(topic, fmt, audience, tuple(sorted(style.items())), extract,
                      render(topic, fmt, audience, style, extract))


def allowed(fmt: str, audience: str, subject: str | None) -> bool:
    spec = FORMATS[fmt]
    if "audiences" in spec and audience not in spec["audiences"]:
        return False
    if subject is not None and "subjects" in spec and subject not in spec["subjects"]:
        return False
    return True


def _check(names: Sequence[str], known: dict, what: str) -> list[str]:
    bad = [n for n in names if n not in known]
    if bad:
        raise PrimerError(f"unknown {what} {bad}; known: {', '.join(known)}")
    return list(names)


def combos(formats: Sequence[str], audiences: Sequence[str], subject: str | None) -> list[tuple[str, str, dict]]:
    """All allowed (format, audience, style) for one subject, in a fixed order."""
    knobs = sorted(STYLES)
    styles = [dict(zip(knobs, vals)) for vals in itertools.product(*(list(STYLES[k]) for k in knobs))]
    return [(f, a, s) for f in formats for a in audiences for s in styles if allowed(f, a, subject)]


def _rng(*parts: object) -> random.Random:
    return random.Random(hashlib.sha1(repr(parts).encode()).hexdigest())


def _stride(n: int, *key: object) -> tuple[int, int]:
    """(a, b) with gcd(a, n) = 1, from `key`: r -> (a*r + b) % n walks all n combinations once, in
    an order of the unit's own, without materializing a shuffled list per unit."""
    import math

    h = int(hashlib.sha1(repr(key).encode()).hexdigest(), 16)
    b = h % n
    a = (h // n) % n or 1
    while math.gcd(a, n) != 1:
        a = a % n + 1
    return a, b


def plan(
    topics: Sequence[Topic] = (),
    extracts: Sequence[Extract] = (),
    formats: Sequence[str] | None = None,
    audiences: Sequence[str] | None = None,
    seed: int = 0,
) -> Iterator[PromptSpec]:
    """The grid in its fixed order (see module doc); finite: every combination once.

    With `extracts`, each prompt is seeded by one extract (the topic comes from the extract) and
    `topics` are ignored.
    """
    formats = _check(formats or list(FORMATS), FORMATS, "format(s)")
    audiences = _check(audiences or list(AUDIENCES), AUDIENCES, "audience(s)")
    units: list = list(extracts) if extracts else list(topics)
    if not units:
        raise PrimerError("nothing to generate from: no topics and no seed extracts")
    order = list(range(len(units)))
    _rng("order", seed).shuffle(order)
    by_subject: dict[str | None, list] = {}
    per_unit: dict[int, tuple[int, int]] = {}
    rnd = 0
    while True:
        emitted = False
        for i in order:
            unit = units[i]
            subject = None if extracts else unit.subject or None
            if subject not in by_subject:
                by_subject[subject] = combos(formats, audiences, subject)
            cs = by_subject[subject]
            if rnd >= len(cs):
                continue
            if i not in per_unit:
                per_unit[i] = _stride(len(cs), "combos", seed, unit.id if extracts else unit.text)
            a, b = per_unit[i]
            f, a_, s = cs[(a * rnd + b) % len(cs)]
            emitted = True
            if extracts:
                yield make(None, f, a_, s, extract=unit)
            else:
                yield make(unit, f, a_, s)
        if not emitted:
            return
        rnd += 1


def passage(text: str, max_chars: int) -> str:
    """`text` with whitespace collapsed, cut to max_chars at a sentence end where one is near."""
    text = " ".join(text.split())
    if len(text) > max_chars:
        cut = text[:max_chars]
        end = cut.rfind(". ")
        text = cut[: end + 1] if end > max_chars // 2 else cut
    return text


def read_extracts(path: str | Path, max_chars: int = 1000, min_chars: int = 200, bad: BadInput | None = None,
                  strict: bool = False) -> list[Extract]:
    """Web extracts from a JSONL file (a "text" field per line) or plain text (blank-line separated).

    Each extract is the document's first `max_chars` characters, cut at a sentence end where one
    is near; documents shorter than `min_chars` are skipped. A malformed JSONL line goes to `bad`
    (`primer.common.jsonl`'s policy; `strict` stops at it with its file and line).
    """
    p = Path(path)
    if not p.is_file():
        raise PrimerError(f"seed corpus not found: {p}")
    raw: list[tuple[str, str]] = []
    if p.suffix in (".jsonl", ".json"):
        for n, obj in read_jsonl_lines(p, bad, strict=strict):
            text = obj.get("text")
            if isinstance(text, str):
                raw.append((text, f"{p.name}:{n}"))
    else:
        for n, block in enumerate(p.read_text().split("\n\n"), 1):
            raw.append((block, f"{p.name}:#{n}"))
    out = []
    for text, src in raw:
        if len(" ".join(text.split())) >= min_chars:
            out.append(Extract(passage(text, max_chars), src))
    if not out:
        raise PrimerError(f"{p}: no documents of at least {min_chars} characters found")
    return out
