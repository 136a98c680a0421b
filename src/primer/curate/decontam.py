"""Benchmark decontamination: an n-gram index over every eval item, and the filter that uses it.

Normalization is the one dedup uses: lowercase, words = runs of letters/digits (punctuation,
spacing, case and GSM8K's <<calculator>> brackets do not matter).

What is indexed: each item *whole*, as its task defines it (`Task.decontam_parts`): the solved item
(context, question and the correct answer, in reading order) first, then every other choice and any
part worth finding alone. An item's grams are every window of n words inside one part (never
spanning two parts); a part with fewer than n words but at least `min_words` is one gram of its full
length, so a document holding a short question + answer is still found.

The n-gram size (GPT-3's rule, Brown et al. 2020, appendix C): per benchmark (a task, or a group such
as mmlu), n = the 5th percentile of its solved items' lengths in words (numpy's linear percentile,
rounded down), at least 8 (shorter grams collide by chance) and at most 13 (lm-eval's size). So
95% of a benchmark's items have at least n words in their solved form. A fixed n (`--ngram 13`)
overrides the rule. An item whose solved form has fewer than `min_words` (8) words cannot be found
reliably when only its question + answer is copied: it is *unchecked*, counted and named per task
(its other parts, if long enough, are still indexed), never passed silently.

A document is contaminated when it contains at least `min_matches` of one item's grams. The
optional Cosmopedia mode (n = 10, `similarity` = 0.5) also requires the document region around
the matches to be similar to the item, as difflib's SequenceMatcher ratio measures it.

`NgramIndex.overlap(text)` lists (task, item_id, grams matched, grams in item, and on request the
matched span) and is what `primer audit` and `primer publish`'s overlap certificate reuse; the
index saves to and loads from one .npz file.
"""

from __future__ import annotations

import difflib
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from primer.curate.dedup import _Batch, _is_word_char, _segment_hash, _windows
from primer.curate.document import Document
from primer.curate.steps import Context, Step
from primer.errors import PrimerError

_U64 = np.uint64
FORMAT = "primer-ngram-index/2"
MIN_N, MAX_N = 8, 13
"""GPT-3's bounds on the adaptive n-gram size."""


def adaptive_n(lengths: Sequence[int], lo: int = MIN_N, hi: int = MAX_N) -> int:
    """GPT-3's n for a benchmark: the 5th percentile of its items' lengths in words, within [lo, hi]."""
    if len(lengths) == 0:
        return hi
    return int(min(hi, max(lo, math.floor(float(np.percentile(np.asarray(lengths), 5))))))


def _norm_words(text: str) -> tuple[np.ndarray, list[str] | None, str]:
    """(word hashes, -, lowercased text) with the dedup normalization."""
    low = text.lower()
    cp = np.frombuffer(low.encode("utf-32-le"), dtype=np.uint32)
    if cp.size == 0:
        return np.zeros(0, _U64), None, low
    w = _is_word_char(cp)
    edges = np.diff(w.astype(np.int8), prepend=0, append=0)
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return _segment_hash(cp.astype(_U64) + _U64(1), starts, ends), [low[s:e] for s, e in zip(starts, ends)], low


def normalize(text: str) -> str:
    """The normalized form n-grams are taken from: lowercase words joined by single spaces."""
    return " ".join(_norm_words(text)[1] or [])


@dataclass
class Match:
    task: str
    item_id: str
    matched: int  # distinct grams of the item found in the text
    grams: int  # grams the item has
    similarity: float | None = None
    span: str | None = None  # the longest run of matched words in the text, normalized (overlap(spans=True))

    @property
    def name(self) -> str:
        return f"{self.task}/{self.item_id}"

    def to_dict(self) -> dict[str, Any]:
        d = {"task": self.task, "item_id": self.item_id, "matched": self.matched, "grams": self.grams}
        if self.similarity is not None:
            d["similarity"] = round(self.similarity, 3)
        if self.span is not None:
            d["span"] = self.span
        return d


def _as_item(it: tuple) -> tuple[str, str, str | None, tuple[str, ...]]:
    """(task, benchmark or None, item_id or None, parts) from the tuples `build` accepts."""
    if len(it) == 4:  # eval.tasks.DecontamItem
        task, bench, item_id, parts = it
    elif len(it) == 3:
        (task, item_id, parts), bench = it, None
    else:
        (task, parts), bench, item_id = it, None, None
    parts = (parts,) if isinstance(parts, str) else tuple(parts)
    return str(task), bench, None if item_id is None else str(item_id), parts


class NgramIndex:
    """Word n-gram hashes of benchmark items -> which items contain them."""

    def __init__(self, n: int | None = MAX_N, min_words: int = MIN_N, keep_texts: bool = False):
        self.n, self.min_words, self.keep_texts = n, min_words, keep_texts  # n None: per benchmark (task_n)
        self.tasks: list[str] = []  # per item
        self.item_ids: list[str] = []
        self.item_grams: list[int] = []
        self.texts: list[str] = []  # normalized item texts, only with keep_texts (similarity mode)
        self.task_n: dict[str, int] = {}  # task -> its n-gram size
        self.benchmark: dict[str, str] = {}  # task -> the benchmark its n was chosen for
        self.unchecked: dict[str, list[str]] = defaultdict(list)  # task -> items whose solved form is too short
        self._keys: dict[int, np.ndarray] = {}  # gram length -> sorted gram hashes
        self._items: dict[int, np.ndarray] = {}  # same order -> item index

    # ------------------------------------------------------------------ building

    @classmethod
    def build(cls, items: Iterable[tuple], n: int | None = MAX_N, min_words: int = MIN_N, keep_texts: bool = False,
              ) -> "NgramIndex":
        """From (task, benchmark, item_id, parts), (task, item_id, text or parts) or (task, text) tuples (item
        ids then count within each task). `n`: one size for every task, or None for GPT-3's rule per benchmark."""
        if n is not None and min_words > n:
            raise PrimerError(f"min_words ({min_words}) must be <= n ({n})")
        idx = cls(n, min_words, keep_texts)
        counters: dict[str, int] = defaultdict(int)
        seg_item: list[int] = []
        seg_text: list[str] = []
        first: list[int] = []  # segment of each item's solved part
        for it in items:
            task, bench, item_id, parts = _as_item(it)
            if item_id is None:
                item_id = str(counters[task])
            counters[task] += 1
            idx.benchmark.setdefault(task, bench or task)
            i = len(idx.tasks)
            idx.tasks.append(task)
            idx.item_ids.append(item_id)
            if keep_texts:
                idx.texts.append(normalize(" ".join(parts)))
            first.append(len(seg_text))
            for part in parts or ("",):
                seg_item.append(i)
                seg_text.append(part)
        chunks = [_Batch(seg_text[a : a + 8192]) for a in range(0, len(seg_text), 8192)]
        counts = np.concatenate([b.words_per_doc for b in chunks]) if chunks else np.zeros(0, np.int64)
        solved = counts[np.asarray(first, dtype=np.int64)] if first else np.zeros(0, np.int64)
        tasks = np.asarray(idx.tasks, dtype=object)
        for bench in sorted(set(idx.benchmark.values())):
            members = [t for t, b in idx.benchmark.items() if b == bench]
            size = n if n is not None else adaptive_n(solved[np.isin(tasks, members)].tolist(), min_words)
            idx.task_n.update({t: size for t in members})
        for i in np.flatnonzero(solved < min_words).tolist():
            idx.unchecked[idx.tasks[i]].append(idx.item_ids[i])
        seg_item_a = np.asarray(seg_item, dtype=np.int64)
        seg_n = np.asarray([idx.task_n[idx.tasks[i]] for i in seg_item], dtype=np.int64)
        parts: dict[int, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
        at = 0
        for b in chunks:
            idx._add_chunk(b, seg_item_a[at : at + b.n_docs], seg_n[at : at + b.n_docs], parts)
            at += b.n_docs
        grams = np.zeros(len(idx.tasks), dtype=np.int64)
        for length, lst in parts.items():
            keys = np.concatenate([g for g, _ in lst])
            its = np.concatenate([i for _, i in lst])
            o = np.lexsort((its, keys))  # by gram, then item: drop an item's repeated grams (across its parts)
            keys, its = keys[o], its[o]
            keep = np.concatenate([[True], (keys[1:] != keys[:-1]) | (its[1:] != its[:-1])])
            idx._keys[length], idx._items[length] = keys[keep], its[keep]
            grams += np.bincount(its[keep], minlength=len(idx.tasks))
        idx.item_grams = grams.tolist()
        if not grams.any():
            raise PrimerError("decontamination index is empty: no benchmark item had enough words")
        return idx

    def _add_chunk(self, b: _Batch, seg_item: np.ndarray, seg_n: np.ndarray, parts: dict) -> None:
        """Grams of a chunk of parts: windows of the part's n words inside the part, or the whole part when
        it is shorter than n but has at least min_words."""
        words, wdoc, counts, bounds = b.words, b.word_doc, b.words_per_doc, b.word_bounds
        for length in np.unique(seg_n).tolist():
            if words.size < length:
                continue
            win = _windows(words, length)
            d = wdoc[: win.size]
            ok = (wdoc[length - 1 : length - 1 + win.size] == d) & (seg_n[d] == length)
            parts[length].append((win[ok], seg_item[d[ok]].astype(np.int32)))
        short = np.flatnonzero((counts >= self.min_words) & (counts < seg_n))
        for length in np.unique(counts[short]).tolist():
            js = short[counts[short] == length]
            g = _windows(words, length)[bounds[js]]  # the one window starting at the part's first word
            parts[length].append((g, seg_item[js].astype(np.int32)))

    @classmethod
    def from_benchmarks(cls, data_dir: str | Path, tasks: Iterable[str] | None = None, **kw: Any) -> "NgramIndex":
        """Every eval task primer knows (whole items), from a benchmark directory like ../shared/benchmarks;
        n defaults to GPT-3's rule per benchmark (`n=None`)."""
        from primer.eval.tasks import iter_decontam_items

        if not Path(data_dir).is_dir():
            raise PrimerError(f"benchmark directory not found: {data_dir} (point --benchmarks at ../shared/benchmarks)")
        kw.setdefault("n", None)
        items = list(iter_decontam_items(data_dir, tasks) if tasks else iter_decontam_items(data_dir))
        if not items:
            raise PrimerError(f"no benchmark files found under {data_dir}")
        return cls.build(items, **kw)

    # ------------------------------------------------------------------ querying

    @property
    def lengths(self) -> list[int]:
        return sorted(self._keys)

    def __len__(self) -> int:
        return len(self.tasks)

    def summary(self) -> dict[str, Any]:
        """What the index covers: n per benchmark, items per task, and the unchecked items, named."""
        per_task: dict[str, int] = defaultdict(int)
        for t in self.tasks:
            per_task[t] += 1
        n_per: dict[str, int] = {}
        unchecked_per: dict[str, int] = defaultdict(int)
        for t, b in sorted(self.benchmark.items()):
            n_per[b] = self.task_n[t]
            unchecked_per[b] += len(self.unchecked.get(t, ()))
        return {"n": self.n, "min_words": self.min_words, "items": len(self.tasks),
                "grams": int(sum(k.size for k in self._keys.values())), "items_per_task": dict(per_task),
                "n_per_benchmark": n_per, "unchecked_per_benchmark": dict(unchecked_per),
                "unchecked": {t: list(v) for t, v in sorted(self.unchecked.items()) if v}}

    def describe(self, max_names: int = 5) -> str:
        """The chosen n per benchmark and the unchecked items, for the curate and publish output."""
        s = self.summary()
        lines = [f"decontamination: {s['items']} benchmark items, {s['grams']} grams; n per benchmark "
                 f"(GPT-3's rule: 5th percentile of solved-item words, {self.min_words}..{MAX_N}): "
                 + ", ".join(f"{b} {n}" for b, n in s["n_per_benchmark"].items())]
        short = {b: c for b, c in s["unchecked_per_benchmark"].items() if c}
        if short:
            lines.append(f"unchecked items (question + answer under {self.min_words} words, a copy of them alone "
                         f"is not found): {sum(short.values())} - " + ", ".join(f"{b} {c}" for b, c in short.items()))
            named: dict[str, list[str]] = defaultdict(list)
            for t, ids in s["unchecked"].items():
                named[self.benchmark[t]] += [f"{t}/{i}" for i in ids]
            for b, names in named.items():
                more = f" ... {len(names) - max_names} more in stats.json" if len(names) > max_names else ""
                lines.append(f"    {b}: " + ", ".join(names[:max_names]) + more)
        return "\n".join(lines)

    def _hits(self, words: np.ndarray) -> dict[int, tuple[int, list[tuple[int, int]]]]:
        """item index -> (distinct matched grams, (word position, length) of each match)."""
        out: dict[int, tuple[int, list[tuple[int, int]]]] = {}
        for length, keys in self._keys.items():
            if words.size < length:
                continue
            win = _windows(words, length)
            pos = np.searchsorted(keys, win)
            pos[pos >= keys.size] = 0
            hit = np.flatnonzero(keys[pos] == win)
            if hit.size == 0:
                continue
            items_ = self._items[length]
            seen: dict[int, set[int]] = defaultdict(set)
            where: dict[int, list[tuple[int, int]]] = defaultdict(list)
            for w in hit.tolist():
                h = win[w]
                lo = int(pos[w])
                hi = int(np.searchsorted(keys, h, side="right"))
                for it in items_[lo:hi].tolist():
                    seen[it].add(int(h))
                    where[it].append((w, length))
            for it, s in seen.items():
                m, wl = out.get(it, (0, []))
                out[it] = (m + len(s), wl + where[it])
        return out

    def overlap(self, text: str, spans: bool = False) -> list[Match]:
        """Every item sharing at least one gram with `text`, most matched first (with `spans`, each match
        carries the longest run of matched words, normalized)."""
        words, toks, _ = _norm_words(text)
        if words.size == 0:
            return []
        hits = self._hits(words)
        res = [Match(self.tasks[i], self.item_ids[i], m, self.item_grams[i]) for i, (m, _) in hits.items()]
        for r, (i, (_, where)) in zip(res, hits.items()):
            if self.keep_texts:
                r.similarity = self._similarity(toks or [], where, i)
            if spans:
                r.span = _longest_run(toks or [], where)
        return sorted(res, key=lambda r: (-r.matched, r.task, r.item_id))

    def _similarity(self, toks: list[str], where: list[tuple[int, int]], item: int) -> float:
        """difflib ratio between the item and the document's words around the matches (Cosmopedia)."""
        ref = self.texts[item]
        n_item = ref.count(" ") + 1
        lo = max(min(w for w, _ in where) - n_item, 0)
        hi = min(max(w + k for w, k in where) + n_item, len(toks))
        best = 0.0
        # slide an item-sized window over the matched region; keep the best ratio
        step = max(n_item // 4, 1)
        for s in range(lo, max(hi - n_item, lo) + 1, step):
            cand = " ".join(toks[s : s + n_item])
            sm = difflib.SequenceMatcher(None, cand, ref, autojunk=False)
            if sm.real_quick_ratio() <= best or sm.quick_ratio() <= best:
                continue
            best = max(best, sm.ratio())
        return best

    def contaminated(self, text: str, min_matches: int = 1, similarity: float | None = None) -> list[Match]:
        """Items that `text` contains: >= min_matches grams (and, if set, similarity >= `similarity`)."""
        out = []
        for m in self.overlap(text):
            if m.matched < min(min_matches, m.grams):
                continue
            if similarity is not None and (m.similarity is None or m.similarity < similarity):
                continue
            out.append(m)
        return out

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "n": self.n, "min_words": self.min_words, "keep_texts": self.keep_texts,
                "tasks": self.tasks, "item_ids": self.item_ids, "item_grams": self.item_grams,
                "texts": self.texts, "task_n": self.task_n, "benchmark": self.benchmark,
                "unchecked": dict(self.unchecked)}
        arrays = {f"keys_{k}": v for k, v in self._keys.items()}
        arrays.update({f"items_{k}": v for k, v in self._items.items()})
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "NgramIndex":
        path = Path(path)
        if not path.is_file():
            raise PrimerError(f"decontamination index not found: {path} (build it with `primer curate run --benchmarks DIR`)")
        with np.load(path) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            if meta.get("format") != FORMAT:
                raise PrimerError(f"{path}: not a primer n-gram index of this version (format {meta.get('format')!r}, "
                                  f"expected {FORMAT}); rebuild it with `primer curate run --benchmarks DIR`")
            idx = cls(meta["n"], meta["min_words"], meta["keep_texts"])
            idx.tasks, idx.item_ids, idx.item_grams = meta["tasks"], meta["item_ids"], meta["item_grams"]
            idx.texts = meta["texts"]
            idx.task_n, idx.benchmark = meta["task_n"], meta["benchmark"]
            idx.unchecked.update(meta["unchecked"])
            for k in z.files:
                if k.startswith("keys_"):
                    length = int(k[5:])
                    idx._keys[length], idx._items[length] = z[k], z[f"items_{length}"]
        return idx


def _longest_run(toks: list[str], where: list[tuple[int, int]]) -> str:
    """The longest stretch of the text's words covered by overlapping matched grams."""
    best = cur = (0, 0)
    for w, k in sorted(where):
        cur = (cur[0], max(cur[1], w + k)) if cur[1] > cur[0] and w <= cur[1] else (w, w + k)
        if cur[1] - cur[0] > best[1] - best[0]:
            best = cur
    return " ".join(toks[best[0] : best[1]])


class DecontamFilter(Step):
    """Drops documents that contain benchmark material; counts the matched items by name."""

    name = "decontam"

    def __init__(self, index: NgramIndex, min_matches: int = 1, similarity: float | None = None):
        self.index, self.min_matches, self.similarity = index, min_matches, similarity

    def run(self, docs: Iterable[Document], ctx: Context) -> Iterator[Document]:
        for doc in docs:
            ctx.stats.seen(self.name)
            hits = self.index.contaminated(doc.text, self.min_matches, self.similarity)
            if not hits:
                ctx.stats.kept(self.name)
                yield doc
                continue
            tasks = sorted({m.task for m in hits})
            for m in hits:
                ctx.stats.matches[m.name] += 1
            ctx.drop(self.name, "benchmark:" + ",".join(tasks), doc, {"matched": [m.to_dict() for m in hits[:20]]})
