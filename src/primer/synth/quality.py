"""Degenerate-output rejection and the diversity figures of a synthetic corpus.

A teacher, small ones especially, sometimes loops ("the cell is the cell is..."), refuses, stops
after a line, or runs out of tokens mid-sentence. `check()` names the first such problem (a reject
reason) or returns None; rejected outputs are counted and written to the rejects file, never used
as data. The corpus-level figures: `near_dup_rate` (share of documents that have an earlier
MinHash near-duplicate, Jaccard >= 0.8 on word 5-gram shingles, as Cosmopedia reports) and
`distinct_ngram_ratio` (distinct n-grams / all n-grams).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_WORD = re.compile(r"\w+(?:'\w+)?", re.UNICODE)

REFUSAL = re.compile(
    r"\b(i(?:'m| am) sorry,? but|i (?:cannot|can't|can not|am unable to|won't|will not) "
    r"(?:help|assist|provide|write|create|do that|fulfil|comply)|as an ai(?: language model)?\b|"
    r"i(?:'m| am) not able to (?:help|assist|provide|write))",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class QualityRules:
    """Thresholds for rejecting a completion (all have flags in `primer synth`)."""

    min_words: int = 50
    """fewer words than this -> 'too_short'"""
    reject_truncated: bool = False
    """reject completions that hit max_tokens (finish_reason 'length') as 'truncated'"""
    max_repeat_frac: float = 0.3
    """share of words inside repeated word 5-grams above this -> 'repetitive'"""
    max_dup_line_frac: float = 0.3
    """share of non-empty lines that repeat an earlier line above this -> 'repetitive'"""


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def repeated_ngram_frac(ws: Sequence[str], n: int = 5) -> float:
    """Share of words covered by word n-grams that occur more than once (Gopher's repetition test)."""
    if len(ws) < n + 1:
        return 0.0
    grams = [tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)]
    counts = Counter(grams)
    covered = bytearray(len(ws))
    for i, g in enumerate(grams):
        if counts[g] > 1:
            covered[i : i + n] = b"\x01" * n
    return sum(covered) / len(ws)


def dup_line_frac(text: str) -> float:
    lines = [ln.strip() for ln in text.splitlines() if len(ln.strip()) > 10]
    if len(lines) < 3:
        return 0.0
    seen: set[str] = set()
    dups = 0
    for ln in lines:
        if ln in seen:
            dups += 1
        seen.add(ln)
    return dups / len(lines)


def check(text: str, finish_reason: str, rules: QualityRules = QualityRules(), error: str | None = None) -> str | None:
    """The reject reason for one completion, or None when it is fit to keep."""
    if finish_reason == "error" or error:
        return "teacher_error"
    if not text.strip():
        return "empty"
    if rules.reject_truncated and finish_reason == "length":
        return "truncated"
    if REFUSAL.search(text[:400]):
        return "refusal"
    ws = words(text)
    if len(ws) < rules.min_words:
        return "too_short"
    if repeated_ngram_frac(ws) > rules.max_repeat_frac or dup_line_frac(text) > rules.max_dup_line_frac:
        return "repetitive"
    return None


def distinct_ngram_ratio(texts: Iterable[str], n: int = 3) -> float:
    """Distinct word n-grams / all word n-grams over the corpus (1.0 = nothing repeats)."""
    seen: set[int] = set()
    total = 0
    for t in texts:
        ws = words(t)
        for i in range(len(ws) - n + 1):
            seen.add(hash(tuple(ws[i : i + n])))
            total += 1
    return len(seen) / total if total else 0.0


def _shingles(text: str, n: int = 5) -> set[bytes]:
    ws = words(text)
    if len(ws) < n:
        return {" ".join(ws).encode()}
    return {" ".join(ws[i : i + n]).encode() for i in range(len(ws) - n + 1)}


def near_dup_rate(texts: Sequence[str], threshold: float = 0.8, num_perm: int = 128) -> tuple[float | None, int]:
    """(share, count) of documents whose MinHash Jaccard with an earlier one is >= threshold.

    Uses datasketch's MinHash + LSH; a candidate pair from LSH is confirmed on the MinHash
    estimate, so the figure is the one a MinHash dedup step at this threshold would remove.
    (None, 0) when datasketch is not installed (pip install datasketch): it is a report figure.
    """
    if not texts:
        return 0.0, 0
    try:
        from datasketch import MinHash, MinHashLSH
    except ImportError:
        return None, 0
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    kept: dict[str, MinHash] = {}
    dups = 0
    for i, t in enumerate(texts):
        m = MinHash(num_perm=num_perm, seed=1)
        m.update_batch(list(_shingles(t)))
        if any(m.jaccard(kept[k]) >= threshold for k in lsh.query(m)):
            dups += 1
        kept[str(i)] = m
        lsh.insert(str(i), m)
    return dups / len(texts), dups
