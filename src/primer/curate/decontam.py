"""Benchmark decontamination: an n-gram index over every eval item, and the filter that uses it.

Normalization is the one dedup uses: lowercase, words = runs of letters/digits (punctuation,
spacing, case and GSM8K's <<calculator>> brackets do not matter). The index holds, for every
benchmark item, the 64-bit hashes of its word n-grams (default n = 13, as GPT-3 and lm-eval's
decontamination do). An item with fewer than n words but at least `min_words` is indexed as one
gram of its full length (so short HellaSwag contexts or TriviaQA questions are still checked);
items shorter than `min_words` are too short to match reliably and are counted, not indexed.

A document is contaminated when it contains at least `min_matches` of one item's grams. The
optional Cosmopedia mode (n = 10, `similarity` = 0.5) also requires the document region around
the matches to be similar to the item, as difflib's SequenceMatcher ratio measures it.

`NgramIndex.overlap(text)` lists (task, item_id, grams matched, grams in item) and is what
`primer audit` reuses to measure per-item overlap; the index saves to and loads from one .npz file.
"""

from __future__ import annotations

import difflib
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from primer.curate.dedup import _Batch, _is_word_char, _segment_hash, _windows
from primer.curate.document import Document
from primer.curate.steps import Context, Step
from primer.errors import PrimerError

_U64 = np.uint64
FORMAT = "primer-ngram-index/1"


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

    @property
    def name(self) -> str:
        return f"{self.task}/{self.item_id}"

    def to_dict(self) -> dict[str, Any]:
        d = {"task": self.task, "item_id": self.item_id, "matched": self.matched, "grams": self.grams}
        if self.similarity is not None:
            d["similarity"] = round(self.similarity, 3)
        return d


class NgramIndex:
    """Word n-gram hashes of benchmark items -> which items contain them."""

    def __init__(self, n: int = 13, min_words: int = 8, keep_texts: bool = False):
        if min_words > n:
            raise PrimerError(f"min_words ({min_words}) must be <= n ({n})")
        self.n, self.min_words, self.keep_texts = n, min_words, keep_texts
        self.tasks: list[str] = []  # per item
        self.item_ids: list[str] = []
        self.item_grams: list[int] = []
        self.texts: list[str] = []  # normalized item texts, only with keep_texts (similarity mode)
        self.too_short: dict[str, int] = defaultdict(int)
        self._keys: dict[int, np.ndarray] = {}  # gram length -> sorted gram hashes
        self._items: dict[int, np.ndarray] = {}  # same order -> item index

    # ------------------------------------------------------------------ building

    @classmethod
    def build(cls, items: Iterable[tuple], n: int = 13, min_words: int = 8, keep_texts: bool = False,
              ) -> "NgramIndex":
        """From (task, item_id, text) or (task, text) tuples (item ids then count within each task)."""
        idx = cls(n, min_words, keep_texts)
        parts: dict[int, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
        counters: dict[str, int] = defaultdict(int)
        batch: list[tuple[str, str, str]] = []

        def flush() -> None:
            if batch:
                idx._add_batch(batch, parts)
                batch.clear()

        for it in items:
            if len(it) == 3:
                task, item_id, text = it
            else:
                task, text = it
                item_id = counters[task]
            counters[task] += 1
            batch.append((str(task), str(item_id), text))
            if len(batch) >= 4096:
                flush()
        flush()
        for length, lst in parts.items():
            keys = np.concatenate([g for g, _ in lst])
            items_ = np.concatenate([i for _, i in lst])
            order = np.argsort(keys, kind="stable")
            idx._keys[length], idx._items[length] = keys[order], items_[order]
        if not idx.tasks:
            raise PrimerError("decontamination index is empty: no benchmark item had enough words")
        return idx

    def _add_batch(self, batch: list[tuple[str, str, str]], parts: dict) -> None:
        """Hash a batch of items at once: windows of n words that stay inside one item."""
        b = _Batch([t for _, _, t in batch])
        words, wdoc, counts, bounds = b.words, b.word_doc, b.words_per_doc, b.word_bounds
        first = len(self.tasks)
        local = np.full(len(batch), -1, dtype=np.int64)  # batch position -> item index
        for j, (task, item_id, text) in enumerate(batch):
            if counts[j] < self.min_words:
                self.too_short[task] += 1
                continue
            local[j] = len(self.tasks)
            self.tasks.append(task)
            self.item_ids.append(item_id)
            self.item_grams.append(0)
            if self.keep_texts:
                self.texts.append(normalize(text))
        grams_per_item = np.zeros(len(batch), dtype=np.int64)
        if words.size >= self.n:  # full-length grams
            win = _windows(words, self.n)
            d = wdoc[: win.size]
            ok = (wdoc[self.n - 1 : self.n - 1 + win.size] == d) & (local[d] >= 0)
            g, d = win[ok], d[ok]
            o = np.lexsort((d, g))  # distinct (item, gram) pairs: sort, drop repeats
            g, d = g[o], d[o]
            keep = np.concatenate([[True], (g[1:] != g[:-1]) | (d[1:] != d[:-1])]) if g.size else np.zeros(0, bool)
            g, d = g[keep], d[keep]
            grams_per_item += np.bincount(d, minlength=len(batch))
            parts[self.n].append((g, local[d].astype(np.int32)))
        short = np.flatnonzero((counts >= self.min_words) & (counts < self.n))
        for length in np.unique(counts[short]).tolist():
            js = short[counts[short] == length]
            g = _windows(words, length)[bounds[js]]  # the one window starting at the item's first word
            grams_per_item[js] += 1
            parts[length].append((g, local[js].astype(np.int32)))
        for j in np.flatnonzero(local >= 0).tolist():
            self.item_grams[int(local[j])] = int(grams_per_item[j])
        assert len(self.tasks) - first == int((local >= 0).sum())

    @classmethod
    def from_benchmarks(cls, data_dir: str | Path, tasks: Iterable[str] | None = None, **kw: Any) -> "NgramIndex":
        """Every eval task primer knows, from a benchmark directory like ../shared/benchmarks."""
        from primer.eval.tasks import iter_decontam_texts

        if not Path(data_dir).is_dir():
            raise PrimerError(f"benchmark directory not found: {data_dir} (point --benchmarks at ../shared/benchmarks)")
        items = list(iter_decontam_texts(data_dir, tasks) if tasks else iter_decontam_texts(data_dir))
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
        per_task: dict[str, int] = defaultdict(int)
        for t in self.tasks:
            per_task[t] += 1
        return {"n": self.n, "min_words": self.min_words, "items": len(self.tasks),
                "grams": int(sum(k.size for k in self._keys.values())), "items_per_task": dict(per_task),
                "too_short_per_task": dict(self.too_short)}

    def _hits(self, words: np.ndarray) -> dict[int, tuple[int, list[int]]]:
        """item index -> (distinct matched grams, word positions of the matches)."""
        out: dict[int, tuple[int, list[int]]] = {}
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
            where: dict[int, list[int]] = defaultdict(list)
            for w in hit.tolist():
                h = win[w]
                lo = int(pos[w])
                hi = int(np.searchsorted(keys, h, side="right"))
                for it in items_[lo:hi].tolist():
                    seen[it].add(int(h))
                    where[it].append(w)
            for it, s in seen.items():
                m, wl = out.get(it, (0, []))
                out[it] = (m + len(s), wl + where[it])
        return out

    def overlap(self, text: str) -> list[Match]:
        """Every item sharing at least one gram with `text`, most matched first."""
        words, toks, _ = _norm_words(text)
        if words.size == 0:
            return []
        hits = self._hits(words)
        res = [Match(self.tasks[i], self.item_ids[i], m, self.item_grams[i]) for i, (m, _) in hits.items()]
        if self.keep_texts:
            for r, (i, (_, where)) in zip(res, hits.items()):
                r.similarity = self._similarity(toks or [], where, i)
        return sorted(res, key=lambda r: (-r.matched, r.task, r.item_id))

    def _similarity(self, toks: list[str], where: list[int], item: int) -> float:
        """difflib ratio between the item and the document's words around the matches (Cosmopedia)."""
        ref = self.texts[item]
        n_item = ref.count(" ") + 1
        lo = max(min(where) - n_item, 0)
        hi = min(max(where) + self.n + n_item, len(toks))
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
                "texts": self.texts, "too_short": dict(self.too_short)}
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
                raise PrimerError(f"{path}: not a primer n-gram index (format {meta.get('format')!r}, expected {FORMAT})")
            idx = cls(meta["n"], meta["min_words"], meta["keep_texts"])
            idx.tasks, idx.item_ids, idx.item_grams = meta["tasks"], meta["item_ids"], meta["item_grams"]
            idx.texts = meta["texts"]
            idx.too_short.update(meta["too_short"])
            for k in z.files:
                if k.startswith("keys_"):
                    length = int(k[5:])
                    idx._keys[length], idx._items[length] = z[k], z[f"items_{length}"]
        return idx


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
