"""Heuristic quality filters, with the thresholds a pretraining engineer expects.

Thresholds follow published pipelines, and each field says which:
  * Gopher (Rae et al. 2021, "Scaling Language Models", appendix A): word count, mean word length,
    symbol-to-word ratio, bullet / ellipsis lines, words with a letter, stop words, and the
    repetition rules (duplicate lines/paragraphs and their characters, top n-gram and duplicated
    n-gram character fractions).
  * C4 (Raffel et al. 2020): "lorem ipsum" drops a document; lines mentioning javascript, cookies,
    terms of use / privacy policy are boilerplate (C4 deletes those lines; `strip_boilerplate`
    does that, and `BoilerplateFilter` drops documents that are mostly such lines).
  * FineWeb (Penedo et al. 2024): fraction of lines ending in terminal punctuation, fraction of
    short lines.
  * primer's own: digit fraction (tables of numbers, price lists), documented as such.

Each filter is a `Filter` whose `check` returns True or a reason like "gopher:mean_word_length";
reasons are stable strings so counts can be compared across runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from primer.curate.document import Document
from primer.curate.steps import Context, Filter, Step

STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})  # Gopher's list
BULLETS = ("•", "●", "○", "▪", "◦", "*", "-", "–", "‣", "⁃")
TERMINAL_PUNCT = (".", "!", "?", '"', "'", "”", "’", ":", ";", ")")
BOILERPLATE_PATTERNS = (
    "javascript", "cookie", "terms of use", "terms of service", "privacy policy", "all rights reserved",
    "click here", "sign up for our newsletter", "subscribe to our newsletter", "log in to comment",
    "powered by wordpress", "skip to content", "share this:", "you must be logged in",
)
_BOILER_RE = re.compile("|".join(re.escape(p) for p in BOILERPLATE_PATTERNS))  # on lowercased text
_ALPHA_WORD_RE = re.compile(r"\S*[^\W\d_]\S*")  # a whitespace word with at least one letter
_DIGIT_RE = re.compile(r"\d")
_PARA_RE = re.compile(r"\n{2,}")


@dataclass
class HeuristicConfig:
    """Thresholds of the heuristic filters (defaults: Gopher / C4 / FineWeb values)."""

    min_words: int = 50
    """Gopher: fewer words than this is too short to be useful."""
    max_words: int = 100_000
    """Gopher: more words than this is usually a dump, not a document."""
    min_mean_word_length: float = 3.0
    """Gopher: mean word length (characters) below this is gibberish or lists of tokens."""
    max_mean_word_length: float = 10.0
    """Gopher: mean word length above this is URLs, hashes, or run-together text."""
    max_symbol_word_ratio: float = 0.1
    """Gopher: ('#' + '...' + '…') occurrences per word."""
    max_bullet_lines: float = 0.9
    """Gopher: fraction of lines starting with a bullet."""
    max_ellipsis_lines: float = 0.3
    """Gopher: fraction of lines ending with an ellipsis (truncated snippets)."""
    min_alpha_words: float = 0.8
    """Gopher: fraction of words containing at least one letter."""
    min_stop_words: int = 2
    """Gopher: at least this many of the, be, to, of, and, that, have, with."""
    max_digit_fraction: float = 0.2
    """primer: fraction of non-space characters that are digits (tables, price lists, scores)."""
    max_dup_line_fraction: float = 0.3
    """Gopher: fraction of lines that duplicate an earlier line."""
    max_dup_para_fraction: float = 0.3
    """Gopher: fraction of paragraphs that duplicate an earlier paragraph."""
    max_dup_line_char_fraction: float = 0.2
    """Gopher: fraction of characters in duplicated lines."""
    max_dup_para_char_fraction: float = 0.2
    """Gopher: fraction of characters in duplicated paragraphs."""
    top_ngram_char_fraction: tuple[float, ...] = (0.2, 0.18, 0.16)
    """Gopher: for n = 2, 3, 4, max fraction of characters covered by the most frequent n-gram."""
    dup_ngram_char_fraction: tuple[float, ...] = (0.15, 0.14, 0.13, 0.12, 0.11, 0.10)
    """Gopher: for n = 5..10, max fraction of characters in n-grams that occur more than once."""
    max_boilerplate_lines: float = 0.3
    """C4-style: fraction of lines that are boilerplate (javascript, cookies, terms of use...)."""
    min_line_punct: float = 0.12
    """FineWeb: min fraction of lines ending in terminal punctuation."""
    max_short_lines: float = 0.67
    """FineWeb: max fraction of lines shorter than 30 characters."""


def _lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.split("\n") if ln.strip()]


class HeuristicFilter(Filter):
    """A filter whose thresholds are a `HeuristicConfig` (the defaults unless one is given)."""

    def __init__(self, cfg: HeuristicConfig | None = None):
        self.cfg = cfg or HeuristicConfig()


class GopherQualityFilter(HeuristicFilter):
    """Gopher's quality rules plus primer's digit fraction."""

    name = "gopher_quality"

    def check(self, doc: Document) -> bool | str:
        c = self.cfg
        text = doc.text
        words = text.split()
        n = len(words)
        if n < c.min_words:
            return "gopher:too_few_words"
        if n > c.max_words:
            return "gopher:too_many_words"
        mwl = sum(len(w) for w in words) / n
        if mwl < c.min_mean_word_length:
            return "gopher:mean_word_length_low"
        if mwl > c.max_mean_word_length:
            return "gopher:mean_word_length_high"
        symbols = text.count("#") + text.count("...") + text.count("…")
        if symbols / n > c.max_symbol_word_ratio:
            return "gopher:symbol_word_ratio"
        lines = _lines(text)
        if lines:
            if sum(ln.startswith(BULLETS) for ln in lines) / len(lines) > c.max_bullet_lines:
                return "gopher:bullet_lines"
            if sum(ln.endswith(("...", "…")) for ln in lines) / len(lines) > c.max_ellipsis_lines:
                return "gopher:ellipsis_lines"
        if len(_ALPHA_WORD_RE.findall(text)) / n < c.min_alpha_words:
            return "gopher:alpha_words"
        if sum(w.lower() in STOP_WORDS for w in words) < c.min_stop_words:
            return "gopher:stop_words"
        nonspace = sum(len(w) for w in words)
        if nonspace and len(_DIGIT_RE.findall(text)) / nonspace > c.max_digit_fraction:
            return "primer:digit_fraction"
        return True


def _dup_stats(items: list[str]) -> tuple[int, int]:
    """(number of items repeating an earlier one, characters in those repeats)."""
    seen: set[str] = set()
    dup_n = dup_chars = 0
    for x in items:
        if x in seen:
            dup_n += 1
            dup_chars += len(x)
        else:
            seen.add(x)
    return dup_n, dup_chars


_MIX = np.uint64(0x9E3779B97F4A7C15)


def _window_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """A 64-bit hash of every window of n word ids (polynomial, wrapping; collisions ~2^-64)."""
    m = len(ids) - n + 1
    h = np.zeros(m, dtype=np.uint64)
    for j in range(n):
        h = h * _MIX + ids[j : j + m]
    return h


def _ngram_char_counts(ids: np.ndarray, lens: np.ndarray, n: int) -> tuple[int, int]:
    """(chars covered by the most frequent n-gram, chars in repeated n-grams, non-overlapping).

    Characters of an n-gram are its words joined by single spaces, as in Gopher / datatrove.
    """
    if len(ids) < n:
        return 0, 0
    h = _window_hashes(ids, n)
    csum = np.concatenate([[0], np.cumsum(lens)])
    gram_chars = csum[n:] - csum[:-n]  # letters in each window
    _, first, inverse, counts = np.unique(h, return_index=True, return_inverse=True, return_counts=True)
    top = 0
    if counts.max() > 1:
        k = int(np.argmax(counts))
        top = int((gram_chars[first[k]] + n - 1) * counts[k])
    repeat = first[inverse] < np.arange(len(h))
    if not repeat.any():
        return top, 0
    # greedy, non-overlapping: after a repeated n-gram, jump past it
    dup = 0
    i, m = 0, len(h)
    rep = repeat.tolist()
    gc = gram_chars.tolist()
    while i < m:
        if rep[i]:
            dup += gc[i]
            i += n
        else:
            i += 1
    return top, dup


class RepetitionFilter(HeuristicFilter):
    """Gopher's repetition rules: duplicate lines/paragraphs and repeated n-grams."""

    name = "gopher_repetition"

    def check(self, doc: Document) -> bool | str:
        c = self.cfg
        text = doc.text.strip()
        if not text:
            return "gopher:empty"
        size = len(text)  # fractions are of all characters, as in Gopher / datatrove
        paras = _PARA_RE.split(text)
        n, chars = _dup_stats(paras)
        if n / len(paras) > c.max_dup_para_fraction:
            return "gopher:dup_para_fraction"
        if chars / size > c.max_dup_para_char_fraction:
            return "gopher:dup_para_char_fraction"
        lines = [ln for ln in text.split("\n") if ln]
        n, chars = _dup_stats(lines)
        if n / len(lines) > c.max_dup_line_fraction:
            return "gopher:dup_line_fraction"
        if chars / size > c.max_dup_line_char_fraction:
            return "gopher:dup_line_char_fraction"
        words = text.lower().split()
        vocab: dict[str, int] = {}
        ids = np.fromiter((vocab.setdefault(w, len(vocab)) for w in words), dtype=np.uint64, count=len(words))
        lens = np.fromiter((len(w) for w in words), dtype=np.int64, count=len(words))
        for n, limit in zip((2, 3, 4), c.top_ngram_char_fraction):
            if _ngram_char_counts(ids, lens, n)[0] / size > limit:
                return f"gopher:top_{n}gram"
        for n, limit in zip(range(5, 11), c.dup_ngram_char_fraction):
            if _ngram_char_counts(ids, lens, n)[1] / size > limit:
                return f"gopher:dup_{n}gram"
        return True


class BoilerplateFilter(HeuristicFilter):
    """C4's lorem-ipsum rule and a cap on the fraction of boilerplate lines."""

    name = "boilerplate"

    def check(self, doc: Document) -> bool | str:
        low = doc.text.lower()
        if "lorem ipsum" in low:
            return "c4:lorem_ipsum"
        if not _BOILER_RE.search(low):
            return True
        lines = _lines(low)
        if lines and sum(bool(_BOILER_RE.search(ln)) for ln in lines) / len(lines) > self.cfg.max_boilerplate_lines:
            return "c4:boilerplate_lines"
        return True


class LineStructureFilter(HeuristicFilter):
    """FineWeb's line rules: enough lines end like sentences; not mostly short lines (menus, lists)."""

    name = "fineweb_lines"

    def check(self, doc: Document) -> bool | str:
        lines = _lines(doc.text)
        if not lines:
            return "fineweb:empty"
        if sum(ln.endswith(TERMINAL_PUNCT) for ln in lines) / len(lines) < self.cfg.min_line_punct:
            return "fineweb:line_punct"
        if sum(len(ln) < 30 for ln in lines) / len(lines) > self.cfg.max_short_lines:
            return "fineweb:short_lines"
        return True


class StripBoilerplate(Step):
    """C4's line edit: delete boilerplate lines (javascript, cookies, terms...). Never drops a document."""

    name = "strip_boilerplate"

    def run(self, docs: Iterable[Document], ctx: Context) -> Iterator[Document]:
        for d in docs:
            ctx.stats.seen(self.name)
            if _BOILER_RE.search(d.text.lower()):
                kept = [ln for ln in d.text.split("\n") if not _BOILER_RE.search(ln.lower())]
                d = Document(d.id, "\n".join(kept), d.metadata)
            ctx.stats.kept(self.name)
            yield d


def default_filters(cfg: HeuristicConfig | None = None) -> list[Filter]:
    """The heuristic filters in the order the pipeline runs them (cheapest first)."""
    cfg = cfg or HeuristicConfig()
    return [GopherQualityFilter(cfg), BoilerplateFilter(cfg), LineStructureFilter(cfg), RepetitionFilter(cfg)]
