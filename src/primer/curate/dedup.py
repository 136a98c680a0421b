"""Near-duplicate removal (MinHash LSH over word n-gram shingles) and exact-duplicate removal.

Method (Broder 1997; as in datatrove / FineWeb / Cosmopedia):
  * text -> lowercase words (runs of letters/digits) -> shingles of `shingle` consecutive words;
  * each shingle is hashed to 64 bits, and `bands * rows` hash functions h_k(x) = (a_k*x + b_k) >> 32
    (multiply-add-shift over 64 bits, a_k odd) give the signature: the minimum of h_k over shingles;
  * the signature is cut into `bands` bands of `rows` values; two documents that agree on a whole
    band land in the same bucket and are candidates. Candidates are joined into clusters
    (union-find), and each cluster keeps ONE document: the earliest in input order (sorted input
    files, then position in file) -- deterministic whatever the number of workers.

The probability that two documents with Jaccard similarity J (over shingle sets) are caught is
P(J) = 1 - (1 - J^rows)^bands; the implied threshold, where the S-curve is steepest, is
t = (1/bands)^(1/rows). Defaults: 5-word shingles, 25 bands x 4 rows = 100 hashes, so
t = (1/25)^(1/4) = 0.447; P(0.6) = 0.969, P(0.7) = 0.999, P(0.5) = 0.80, P(0.3) = 0.18, P(0.2) = 0.04.
Chosen for recall on edited copies (a few words changed, a sentence dropped, a header added give
Jaccard 0.5-0.9 over 5-word shingles): FineWeb's 14 x 8 (t = 0.72) finds ~70% of those, 20 x 5
(t = 0.55) ~96%, 25 x 4 ~100% (tests/test_curate_dedup.py); unrelated web pages sit near J = 0.
`MinHashConfig.describe()` prints these for any setting.

Exact duplicates are found first, by a hash of the normalized text (lowercase words joined by
single spaces), so "exact_duplicate" and "near_duplicate" are counted separately.

Why not datasketch directly: it hashes each shingle with SHA-1 in Python and updates 100 hash
values per shingle call; here a whole document is hashed in a few NumPy operations (word hashes
from the code points, shingles as rolling hashes, the signature as one (shingles x hashes)
matrix minimum). bench/curate.py measures both on the same input and parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from primer.curate.document import Document
from primer.curate.steps import Context, Step

_U64 = np.uint64
_P = _U64(0x100000001B3)  # odd multiplier: invertible mod 2^64
_P_INV = _U64(pow(0x100000001B3, -1, 1 << 64))
_MIX = _U64(0x9E3779B97F4A7C15)


@dataclass
class MinHashConfig:
    """MinHash LSH settings."""

    shingle: int = 5
    """words per shingle."""
    bands: int = 25
    """LSH bands; more bands = lower threshold (more recall, more false candidates)."""
    rows: int = 4
    """hash values per band; more rows = steeper S-curve, higher threshold."""
    seed: int = 1
    """seed of the hash functions (all workers must share it)."""

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows

    @property
    def threshold(self) -> float:
        """Jaccard similarity at which the detection S-curve is steepest: (1/bands)^(1/rows)."""
        return (1.0 / self.bands) ** (1.0 / self.rows)

    def p_detect(self, jaccard: float) -> float:
        """Probability that a pair with this Jaccard similarity shares at least one band."""
        return 1.0 - (1.0 - jaccard**self.rows) ** self.bands

    def describe(self) -> str:
        pts = ", ".join(f"P({j})={self.p_detect(j):.3f}" for j in (0.2, 0.3, 0.5, 0.6, 0.7, 0.8))
        return (f"MinHash LSH: {self.shingle}-word shingles, {self.bands} bands x {self.rows} rows "
                f"= {self.num_perm} hashes; implied Jaccard threshold (1/b)^(1/r) = {self.threshold:.3f}; {pts}")


# ---------------------------------------------------------------- hashing, vectorised with NumPy

_ASCII_WORD = np.zeros(128, dtype=bool)
for _c in range(128):
    _ASCII_WORD[_c] = chr(_c).isalnum()


def _is_word_char(cp: np.ndarray) -> np.ndarray:
    """Letters/digits. ASCII by table; above ASCII everything is a letter except spaces and punctuation
    blocks (U+00A0-U+00BF, U+2000-U+206F, U+3000-U+303F, U+FF00-U+FF0F) -- an approximation of
    str.isalnum that needs no per-character Python."""
    out = np.zeros(cp.shape, dtype=bool)
    ascii_ = cp < 128
    out[ascii_] = _ASCII_WORD[cp[ascii_]]
    hi = ~ascii_
    if hi.any():
        c = cp[hi]
        punct = ((c >= 0xA0) & (c <= 0xBF)) | ((c >= 0x2000) & (c <= 0x206F)) | \
                ((c >= 0x3000) & (c <= 0x303F)) | ((c >= 0xFF00) & (c <= 0xFF0F))
        out[hi] = ~punct
    return out


class _Powers:
    """P^k and P^-k mod 2^64, grown on demand (cached per process)."""

    def __init__(self) -> None:
        self.pw = np.ones(1, dtype=_U64)
        self.inv = np.ones(1, dtype=_U64)

    def get(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.pw) < n:
            m = max(n, 2 * len(self.pw))
            with np.errstate(over="ignore"):
                for name, base in (("pw", _P), ("inv", _P_INV)):
                    f = np.full(m, base, dtype=_U64)
                    f[0] = 1
                    setattr(self, name, np.cumprod(f, dtype=_U64))
        return self.pw[:n], self.inv[:n]


_POW = _Powers()


def _splitmix(x: np.ndarray) -> np.ndarray:
    """A 64-bit finaliser: spreads every input bit over the output (splitmix64)."""
    with np.errstate(over="ignore"):
        x = x + _MIX
        x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
        return x ^ (x >> _U64(31))


def _segment_hash(vals: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Polynomial hash of each segment vals[start:end], independent of where the segment sits."""
    pw, inv = _POW.get(vals.size + 1)
    with np.errstate(over="ignore"):
        g = vals * pw[: vals.size]
        csum = np.concatenate([np.zeros(1, _U64), np.cumsum(g, dtype=_U64)])
        h = (csum[ends] - csum[starts]) * inv[starts]
        return _splitmix(h + (ends - starts).astype(_U64))


def _words(text: str) -> tuple[np.ndarray, np.ndarray]:
    """(64-bit hash of every lowercase word -- run of letters/digits -- in order, its start offset)."""
    cp = np.frombuffer(text.lower().encode("utf-32-le"), dtype=np.uint32)
    if cp.size == 0:
        return np.zeros(0, dtype=_U64), np.zeros(0, dtype=np.int64)
    w = _is_word_char(cp)
    edges = np.diff(w.astype(np.int8), prepend=0, append=0)
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)  # exclusive
    return _segment_hash(cp.astype(_U64) + _U64(1), starts, ends), starts


def word_hashes(text: str) -> np.ndarray:
    """64-bit hash of every lowercase word (run of letters/digits) of `text`, in order."""
    return _words(text)[0]


def _windows(words: np.ndarray, n: int) -> np.ndarray:
    m = words.size - n + 1
    h = np.zeros(max(m, 0), dtype=_U64)
    with np.errstate(over="ignore"):
        for j in range(n):
            h = h * _P + words[j : j + m]
    return _splitmix(h)


def shingle_hashes(words: np.ndarray, n: int) -> np.ndarray:
    """Unique 64-bit hashes of every window of `n` word hashes (a document shorter than n is one shingle)."""
    if words.size == 0:
        return np.zeros(0, dtype=_U64)
    return np.unique(_windows(words, min(n, words.size)))


class _Batch:
    """Word and shingle hashes of many texts at once (NumPy call overhead paid once per batch)."""

    def __init__(self, texts: Sequence[str]):
        self.n_docs = len(texts)
        joined = "\n".join(texts)  # "\n" is not a word character: no word spans two texts
        lens = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
        doc_start = np.concatenate([[0], np.cumsum(lens + 1)[:-1]]) if len(texts) else np.zeros(0, np.int64)
        self.words, wstart = _words(joined)
        self.word_doc = np.searchsorted(doc_start, wstart, side="right") - 1  # doc index of each word
        self.words_per_doc = np.bincount(self.word_doc, minlength=self.n_docs)
        self.word_bounds = np.concatenate([[0], np.cumsum(self.words_per_doc)])

    def shingles(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(shingle hashes, their document), sorted by document: windows of n words inside one
        document; a document shorter than n words is one shingle of all its words."""
        w0, per = self.word_bounds, self.words_per_doc
        sh = _windows(self.words, n) if self.words.size >= n else np.zeros(0, _U64)
        sh_doc = self.word_doc[: sh.size]
        ok = self.word_doc[n - 1 : n - 1 + sh.size] == sh_doc if sh.size else np.zeros(0, bool)
        sh, sh_doc = sh[ok], sh_doc[ok]
        short = np.flatnonzero((per > 0) & (per < n))
        if short.size:
            extra = np.zeros(short.size, dtype=_U64)
            for length in np.unique(per[short]).tolist():
                sel = per[short] == length
                extra[sel] = _windows(self.words, length)[w0[short[sel]]]
            sh = np.concatenate([sh, extra])
            sh_doc = np.concatenate([sh_doc, short])
            o = np.argsort(sh_doc, kind="stable")
            sh, sh_doc = sh[o], sh_doc[o]
        return sh, sh_doc

    def exact_hashes(self) -> np.ndarray:
        """One 64-bit hash per document of its word sequence (exact duplicates after normalization)."""
        b = self.word_bounds
        return _segment_hash(self.words, b[:-1], b[1:])


def normalized_hash(text: str) -> int:
    """Exact-duplicate key: 64-bit hash of the sequence of lowercase words."""
    return int(_Batch([text]).exact_hashes()[0])


class MinHasher:
    """Signatures and LSH band keys for a `MinHashConfig`."""

    def __init__(self, cfg: MinHashConfig | None = None, block: int = 8192):
        self.cfg = cfg or MinHashConfig()
        rng = np.random.default_rng(self.cfg.seed)
        k = self.cfg.num_perm
        self.a = rng.integers(0, 2**63, size=k, dtype=np.uint64) * _U64(2) + _U64(1)  # odd
        self.b = rng.integers(0, 2**63, size=k, dtype=np.uint64)
        self.block = block  # shingles per (shingles x hashes) matrix: bounds memory

    def _sign(self, sh: np.ndarray, sh_doc: np.ndarray, n_docs: int) -> np.ndarray:
        """Signatures from shingle hashes sorted by document: (num_perm x shingles) blocks, min per document."""
        k = self.cfg.num_perm
        sig = np.full((k, n_docs), np.iinfo(np.uint64).max, dtype=_U64)
        a, b = self.a, self.b[:, None]
        with np.errstate(over="ignore"):
            for i in range(0, sh.size, self.block):
                v = np.multiply.outer(a, sh[i : i + self.block])  # (K, block): small enough to stay in cache
                v += b
                d = sh_doc[i : i + self.block]
                cut = np.flatnonzero(np.diff(d, prepend=-1))  # first column of each document in the block
                r = np.minimum.reduceat(v, cut, axis=1)
                u = d[cut]
                np.minimum(sig[:, u], r, out=r)  # a document may straddle two blocks
                sig[:, u] = r
        # >> 32 after the min is the same as before it (monotone): 32-bit values, as datasketch keeps
        return np.ascontiguousarray((sig >> _U64(32)).astype(np.uint32).T)

    def signatures_and_exact(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """((N, num_perm) uint32 signatures, (N,) uint64 exact-duplicate keys) of many texts."""
        b = _Batch(texts)
        sh, sh_doc = b.shingles(self.cfg.shingle)
        return self._sign(sh, sh_doc, b.n_docs), b.exact_hashes()

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        return self.signatures_and_exact(texts)[0]

    def signature(self, text: str) -> np.ndarray:
        """(num_perm,) uint32 MinHash signature of a text."""
        return self.signatures([text])[0]

    def signature_of_shingles(self, sh: np.ndarray) -> np.ndarray:
        return self._sign(sh, np.zeros(sh.size, np.int64), 1)[0]

    def band_keys(self, sig: np.ndarray) -> np.ndarray:
        """(bands,) uint64: one bucket key per band (a hash of that band's rows). Works on (N, K) too."""
        b, r = self.cfg.bands, self.cfg.rows
        s = sig.reshape(sig.shape[:-1] + (b, r)).astype(_U64)
        h = np.zeros(s.shape[:-1], dtype=_U64)
        with np.errstate(over="ignore"):
            for j in range(r):
                h = h * _P + s[..., j]
        return _splitmix(h)


def estimate_jaccard(sig1: np.ndarray, sig2: np.ndarray) -> float:
    return float(np.mean(sig1 == sig2))


def jaccard(text1: str, text2: str, shingle: int = 5) -> float:
    """True Jaccard similarity of two texts' shingle sets (for tests and reports)."""
    a = set(shingle_hashes(word_hashes(text1), shingle).tolist())
    b = set(shingle_hashes(word_hashes(text2), shingle).tolist())
    return len(a & b) / max(len(a | b), 1)


# ---------------------------------------------------------------- clustering


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        p = self.parent
        root = x
        while p.get(root, root) != root:
            root = p[root]
        while p.get(x, x) != root:  # path compression
            p[x], x = root, p[x]
        return root

    def union(self, x: int, y: int) -> None:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:  # the smaller order key is the root: the earliest document represents the cluster
            if rx < ry:
                self.parent[ry] = rx
            else:
                self.parent[rx] = ry


def find_duplicates(order: np.ndarray, band_keys: np.ndarray | None = None,
                    exact: np.ndarray | None = None) -> dict[int, tuple[int, str]]:
    """Which documents to drop: {order key: (order key of the kept document, "exact"|"near")}.

    `order` (N,) int64 is each document's position in input order (unique); `band_keys` (N, bands)
    uint64 the LSH bucket keys; `exact` (N,) uint64 normalized-text hashes. In each exact group and
    each near-duplicate cluster, the document with the smallest order key is kept.
    """
    order = np.asarray(order, dtype=np.int64)
    drop: dict[int, tuple[int, str]] = {}
    alive = np.ones(order.size, dtype=bool)
    if exact is not None and order.size:
        idx = np.lexsort((order, exact))
        ex = exact[idx]
        same = np.concatenate([[False], ex[1:] == ex[:-1]])
        first = idx[np.maximum.accumulate(np.where(~same, np.arange(idx.size), 0))]
        for i, f in zip(idx[same].tolist(), first[same].tolist()):
            drop[int(order[i])] = (int(order[f]), "exact")
            alive[i] = False
    if band_keys is not None and alive.any():
        live = np.flatnonzero(alive)
        keys = band_keys[live]
        uf = _UnionFind()
        for band in range(keys.shape[1]):
            col = keys[:, band]
            idx = np.argsort(col, kind="stable")
            c = col[idx]
            same = np.flatnonzero(c[1:] == c[:-1]) + 1  # positions equal to their predecessor
            for j in same.tolist():
                uf.union(int(order[live[idx[j - 1]]]), int(order[live[idx[j]]]))
        for x in list(uf.parent):
            root = uf.find(x)
            if root != x:
                drop[x] = (root, "near")
    return drop


# ---------------------------------------------------------------- an in-memory step


class Dedup(Step):
    """Exact + near-duplicate removal over a whole stream held in memory (one process).

    For sharded, multi-process runs the pipeline does the same in three passes (signatures per
    shard, one global clustering, a filtering pass per shard); this step is the single-stream form.
    """

    name = "dedup"

    def __init__(self, cfg: MinHashConfig | None = None, exact: bool = True, near: bool = True):
        self.hasher = MinHasher(cfg)
        self.exact, self.near = exact, near

    def run(self, docs: Iterable[Document], ctx: Context) -> Iterator[Document]:
        held = list(docs)
        ctx.stats.seen(self.name, len(held))
        if not held:
            return
        sig, ex = self.hasher.signatures_and_exact([d.text for d in held])
        bands = self.hasher.band_keys(sig) if self.near else None
        exact = ex if self.exact else None
        drop = find_duplicates(np.arange(len(held)), bands, exact)
        for i, d in enumerate(held):
            if i in drop:
                kept, kind = drop[i]
                ctx.drop(self.name, f"{kind}_duplicate", d, {"duplicate_of": held[kept].id})
            else:
                ctx.stats.kept(self.name)
                yield d


def duplicate_clusters(drop: dict[int, tuple[int, str]]) -> dict[int, list[int]]:
    """{kept order key: [dropped order keys]} from `find_duplicates`' answer."""
    out: dict[int, list[int]] = {}
    for x, (root, _) in sorted(drop.items()):
        out.setdefault(root, []).append(x)
    return out


