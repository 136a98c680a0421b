"""Conversation kinds of `primer synth`: the teacher turns textbook documents into chat data for `primer tune sft`.

Each source document (primer's synth / curate output, or any JSONL with a "text" field) is crossed
with four conversation formats, each a short prompt the teacher answers in a fixed layout that is
parsed strictly (an answer that does not parse is rejected as "unparsable", never guessed at):

  * qa           a question about the passage and its answer     -> user: passage + question, assistant: answer
  * exercise     an exercise on the passage with a worked solution -> user: exercise, assistant: solution
  * followup     a student/teacher exchange of two rounds        -> user/assistant/user/assistant
  * constrained  a rewrite of the passage under an explicit, checkable constraint of the kinds IFEval
                 checks (length, case, commas, bullets, ending) -> user: instruction + passage,
                 assistant: the rewrite, kept only when the constraint holds (else "constraint_failed")

A record is the conversation in OpenAI `messages` form, its turns joined as "text" (what `primer curate` reads,
so decontamination against every eval task sees the prompts as well as the replies), plus provenance: the source document
(file:line and a hash), the format, the constraint, the teacher's prompt, teacher and sampling.
The plan is a fixed, seeded walk (documents in a seeded order, each taking its r-th format in
round r), and a prompt's id hashes everything in it, so a rerun resumes like `synth` does.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from primer.common.jsonl import BadInput, read_jsonl_lines
from primer.errors import PrimerError
from primer.synth.grid import passage

TEMPLATE_VERSION = 1

PROMPTS = {
    "qa": ('Read this passage:\n"{passage}"\n\nWrite one question a student could ask about the passage, then answer it '
           "using the passage. Use exactly this layout:\nQuestion: <the question>\nAnswer: <the answer>"),
    "exercise": ('Read this passage:\n"{passage}"\n\nWrite one exercise that practises the idea of the passage, then a '
                 "worked solution that explains every step. Use exactly this layout:\nExercise: <the exercise>\n"
                 "Solution: <the solution>"),
    "followup": ('Read this passage:\n"{passage}"\n\nWrite a short conversation about the passage: a student asks, a '
                 "teacher answers, the student asks a follow-up question, the teacher answers. Use exactly this "
                 "layout:\nStudent: ...\nTeacher: ...\nStudent: ...\nTeacher: ..."),
    "constrained": "{instruction}\n\n{passage}",
}

# constraint -> (instruction to the user, check on the reply). Each is one of IFEval's instruction kinds.
CONSTRAINTS: dict[str, tuple[str, object]] = {
    "lowercase": ("Rewrite the following passage in your own words, using only lowercase letters.",
                  lambda r: r == r.lower() and any(c.isalpha() for c in r)),
    "uppercase": ("Rewrite the following passage in your own words, using only capital letters.",
                  lambda r: r == r.upper() and any(c.isalpha() for c in r)),
    "no_comma": ("Rewrite the following passage in your own words without using any commas.",
                 lambda r: "," not in r),
    "max_50_words": ("Summarize the following passage in fewer than 50 words.",
                     lambda r: 0 < len(re.findall(r"\w+", r)) < 50),
    "three_bullets": ("Summarize the following passage as exactly 3 bullet points in markdown, each starting with '* '.",
                      lambda r: len(re.findall(r"^\s*\* ", r, flags=re.M)) == 3),
    "end_phrase": ("Explain the following passage to a friend. End your answer with the exact phrase \"Is there anything "
                   "else I can help with?\" and nothing after it.",
                   lambda r: r.strip().endswith("Is there anything else I can help with?")),
}
FORMATS = tuple(PROMPTS)


@dataclass(frozen=True)
class Source:
    """A document conversations are made from."""

    text: str
    where: str
    """file:line"""

    @property
    def id(self) -> str:
        return hashlib.sha1(self.text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ChatSpec:
    source: Source
    format: str
    constraint: str | None
    text: str
    """the prompt sent to the teacher"""

    @property
    def id(self) -> str:
        key = {"v": TEMPLATE_VERSION, "kind": "conversation", "format": self.format, "constraint": self.constraint,
               "source": self.source.id, "prompt": self.text}
        return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    def seed(self, base: int = 0) -> int:
        return (int(self.id[:8], 16) + base) & 0x7FFFFFFF


def read_sources(paths: list[Path], max_chars: int = 1200, min_chars: int = 200,
                 bad: BadInput | None = None) -> list[Source]:
    """Documents with a "text" field, cut to max_chars at a sentence end; shorter than min_chars: skipped."""
    out = []
    for p in paths:
        for lineno, rec in read_jsonl_lines(p, bad):
            text = rec.get("text")
            if not isinstance(text, str):
                continue
            if len(" ".join(text.split())) >= min_chars:
                out.append(Source(passage(text, max_chars), f"{p}:{lineno}"))
    if not out:
        raise PrimerError(f"no source documents of at least {min_chars} characters in {', '.join(map(str, paths))}")
    return out


def make(source: Source, fmt: str, constraint: str | None = None) -> ChatSpec:
    passage = source.text.replace('"', "'")
    if fmt == "constrained":
        return ChatSpec(source, fmt, constraint, PROMPTS[fmt].format(instruction=CONSTRAINTS[constraint][0],
                                                                      passage=source.text))
    return ChatSpec(source, fmt, None, PROMPTS[fmt].format(passage=passage))


def plan(sources: list[Source], formats: list[str] | None = None, seed: int = 0):
    """Every (document, format[, constraint]) once: round r gives each document (seeded order) its r-th kind."""
    formats = list(formats or FORMATS)
    bad = [f for f in formats if f not in PROMPTS]
    if bad:
        raise PrimerError(f"unknown conversation format(s) {bad}; known: {', '.join(FORMATS)}")
    kinds = [(f, c) for f in formats for c in (CONSTRAINTS if f == "constrained" else [None])]
    order = list(range(len(sources)))
    random.Random(f"convo-order-{seed}").shuffle(order)
    for r in range(len(kinds)):
        for i in order:
            rot = random.Random(f"convo-{seed}-{sources[i].id}").randrange(len(kinds))
            f, c = kinds[(rot + r) % len(kinds)]
            yield make(sources[i], f, c)


_LAYOUT = {
    "qa": (r"^\s*Question:\s*(?P<a>.+?)\s*\n\s*Answer:\s*(?P<b>.+?)\s*$", "Question/Answer"),
    "exercise": (r"^\s*Exercise:\s*(?P<a>.+?)\s*\n\s*Solution:\s*(?P<b>.+?)\s*$", "Exercise/Solution"),
}


def parse(spec: ChatSpec, reply: str) -> tuple[list[dict] | None, str | None]:
    """(messages, None) or (None, reason) for the teacher's reply to `spec`."""
    reply = reply.strip()
    if spec.format in _LAYOUT:
        pattern, what = _LAYOUT[spec.format]
        m = re.match(pattern, reply, flags=re.S)
        if not m:
            return None, "unparsable"
        q, a = m.group("a").strip(), m.group("b").strip()
        user = f"{spec.source.text}\n\n{q}" if spec.format == "qa" else q
        return [{"role": "user", "content": user}, {"role": "assistant", "content": a}], None
    if spec.format == "followup":
        turns = re.findall(r"^\s*(Student|Teacher):\s*(.+?)(?=^\s*(?:Student|Teacher):|\Z)", reply, flags=re.S | re.M)
        roles = [t for t, _ in turns]
        if len(turns) < 4 or roles[:4] != ["Student", "Teacher", "Student", "Teacher"]:
            return None, "unparsable"
        return [{"role": "user" if r == "Student" else "assistant", "content": c.strip()} for r, c in turns[:4]], None
    check = CONSTRAINTS[spec.constraint][1]
    if not reply:
        return None, "unparsable"
    if not check(reply):  # type: ignore[operator]
        return None, "constraint_failed"
    return [{"role": "user", "content": spec.text}, {"role": "assistant", "content": reply}], None
