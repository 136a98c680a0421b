"""A labelled set for the quality filter, built from the shared corpora (never copied into the repo).

clean: WikiText-2 paragraphs, TinyStories stories, C4 pages that pass the heuristic filters;
bad:   the same texts word-shuffled, character-noised, repetition-looped and mixed-script.
`part` picks a disjoint slice: "test" (the first `per_source` texts of each corpus: what
tests/test_curate_quality.py measures) or "calibration" (texts per_source..199 of each: what the shipped
default limits were chosen on). Real degenerate teacher output is in
tests/data/teacher_degenerate.jsonl (see its test).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from primer.curate.document import Document
from primer.curate.filters import default_filters

MAX_WORDS = 160  # short documents keep the test fast; the model sees ~200 tokens of each


def _cut(text: str, n: int = MAX_WORDS) -> str:
    words = text.split(" ")
    return " ".join(words[:n]) if len(words) > n else text


def wikitext(data: Path) -> list[str]:
    lines = (data / "wikitext2" / "wikitext-2-raw-test.txt").read_text(encoding="utf-8").split("\n")
    return [_cut(ln.strip()) for ln in lines if len(ln.split()) >= 60 and not ln.strip().startswith("=")]


def tinystories(data: Path) -> list[str]:
    raw = (data / "tinystories" / "TinyStories-train_prefix.txt").read_text(encoding="utf-8")
    return [_cut(s.strip()) for s in raw.split("<|endoftext|>") if len(s.split()) >= 60]


def c4(data: Path) -> list[str]:
    filters = default_filters()
    out = []
    with open(data / "c4_sample" / "c4_en_train_first1000.jsonl", encoding="utf-8") as f:
        for i, line in enumerate(f):
            doc = Document(str(i), json.loads(line)["text"])
            if all(flt.check(doc) is True for flt in filters):
                out.append(_cut(doc.text))
    return out


def shuffled(text: str, rng: random.Random) -> str:
    words = text.split()
    rng.shuffle(words)
    return " ".join(words)


def noised(text: str, rng: random.Random, rate: float = 0.15) -> str:
    """Each letter, with probability `rate`: replaced, dropped, or doubled with a random letter."""
    out = []
    for c in text:
        r = rng.random()
        if c.isalpha() and r < rate:
            k = rng.randrange(3)
            if k == 0:
                out.append(rng.choice("abcdefghijklmnopqrstuvwxyz"))
            elif k == 2:
                out.append(c + rng.choice("abcdefghijklmnopqrstuvwxyz"))
        else:
            out.append(c)
    return "".join(out)


def looped(text: str, rng: random.Random) -> str:
    """The first 8-20 words over and over, to the original length (a teacher stuck in a loop)."""
    words = text.split()
    k = rng.randint(8, 20)
    return " ".join((words[:k] * (len(words) // k + 1))[: len(words)])


_CYR = str.maketrans("abcdefghiklmnoprstuvxyz", "абцдефгхиклмнопрстувкыз")
_GRK = str.maketrans("abdeghiklmnoprstuxyz", "αβδεγηικλμνοπρστυξψζ")


def mixed_script(text: str, rng: random.Random) -> str:
    """Half the words in Cyrillic or Greek letters, with runs of CJK characters between them."""
    out = []
    for w in text.split():
        r = rng.random()
        if r < 0.25:
            out.append(w.lower().translate(_CYR))
        elif r < 0.45:
            out.append(w.lower().translate(_GRK))
        elif r < 0.55:
            out.append("".join(chr(rng.randint(0x4E00, 0x62FF)) for _ in range(rng.randint(1, 3))))
        else:
            out.append(w)
    return " ".join(out)


CORRUPTIONS = {"shuffled": shuffled, "noised": noised, "looped": looped, "mixed_script": mixed_script}


def labelled_set(data: Path, per_source: int = 40, per_corruption: int = 30, part: str = "test",
                 seed: int = 0) -> list[tuple[str, str, int]]:
    """[(kind, text, label)], label 1 = bad. Clean: per_source of each corpus; bad: per_corruption of each
    corruption, applied to clean texts of every source in turn."""
    lo, hi = (0, per_source) if part == "test" else (per_source, 200)
    clean = []
    for name, fn in (("wikitext", wikitext), ("tinystories", tinystories), ("c4", c4)):
        texts = fn(data)[lo:hi]
        clean.extend((name, t) for t in texts)
    rng = random.Random(seed if part == "test" else seed + 1)
    out = [(k, t, 0) for k, t in clean]
    for name, fn in CORRUPTIONS.items():
        for j in range(per_corruption):
            src = clean[(j * 7 + len(name)) % len(clean)][1]
            out.append((name, fn(src, rng), 1))
    return out
