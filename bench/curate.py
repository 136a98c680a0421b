"""Curate speed: MinHash LSH near-duplicate detection, ours vs datasketch, and the edu scorers;
with `--quality`, the quality filter's reference-LM scoring, ours vs llama.cpp.

Same machine, same run, same input (the C4 sample plus edited copies of some of its pages), same
parameters (5-word shingles over the same lowercase words, 100 hash functions, 25 bands x 4 rows):
  ours: primer.curate.dedup (NumPy-vectorised hashing, batched signatures, union-find clusters);
  ref:  datasketch MinHash(num_perm=100).update_batch + MinHashLSH(params=(25, 4)) insert/query.
Both run in this one process (one core); each is timed best-of-`--repeats`, interleaved, from raw
text to the set of documents to drop. Recall on the injected copies is printed for both, so speed
is not bought with misses. Then the scorers' throughput (docs/s, one process): the hashed n-gram
scorer and the all-MiniLM-L6-v2 embedding scorer (when installed).

    python bench/curate.py [--data-dir ../shared/benchmarks] [--copies 300] [--repeats 3]

Ends with one JSON line: {"ours", "ref", "ratio", ...} (docs/s per core; ratio = ours / ref).

    python bench/curate.py --quality [--docs 64] [--window 256] [--repeats 3]

The quality filter's model pass on the same C4 pages (those that pass the heuristic filters), the same
token rows (the prefix token, then each page's first `window` tokens), 2 threads each:
  ours: primer.curate.quality.LMScorer (fast CPU path: the GGUF's 4-bit blocks, pages batched);
  ref:  llama-cpp-python on the same GGUF (`open_llama`, logits_all), one page per eval, NLL from its logits.
Both give each page's mean NLL per token; their agreement (mean |difference|, max, Pearson) is printed
so speed is not bought with other numbers. Then the whole filter (cheap signals + model) in docs/s.
Ends with one JSON line (docs/s on 2 threads; medians of `--repeats`, interleaved).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from primer.curate.dedup import MinHashConfig, MinHasher, _UnionFind, find_duplicates  # noqa: E402
from primer.curate.document import read_documents  # noqa: E402

WORD = re.compile(r"[^\W_]+")  # letters/digits, as ours (ours decides on code points in NumPy)


def edit_copy(text: str, rng: random.Random) -> str:
    toks = re.split(r"(\s+)", text)
    words = [i for i, t in enumerate(toks) if t and not t.isspace()]
    for i in rng.sample(words, max(1, len(words) // 33)):
        toks[i] = rng.choice(["great", "the", "new", "best", "2019"])
    return "Posted by admin\n" + "".join(toks)


def ours(texts: list[str], cfg: MinHashConfig) -> set[int]:
    h = MinHasher(cfg)
    sigs, exact = [], []
    for i in range(0, len(texts), 256):
        s, e = h.signatures_and_exact(texts[i : i + 256])
        sigs.append(s)
        exact.append(e)
    drop = find_duplicates(np.arange(len(texts)), h.band_keys(np.concatenate(sigs)), np.concatenate(exact))
    return set(drop)


def datasketch_run(texts: list[str], cfg: MinHashConfig) -> set[int]:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(num_perm=cfg.num_perm, params=(cfg.bands, cfg.rows))
    mhs = []
    for i, t in enumerate(texts):
        w = WORD.findall(t.lower())
        n = min(cfg.shingle, max(len(w), 1))
        sh = {" ".join(w[j : j + n]).encode() for j in range(max(len(w) - n + 1, 1))}
        m = MinHash(num_perm=cfg.num_perm, seed=cfg.seed)
        m.update_batch(list(sh))
        lsh.insert(i, m)
        mhs.append(m)
    uf = _UnionFind()
    for i, m in enumerate(mhs):
        for j in lsh.query(m):
            if j != i:
                uf.union(i, j)
    return {x for x in uf.parent if uf.find(x) != x}


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def quality_bench(args) -> int:
    import statistics

    import torch

    from primer.curate.document import Document
    from primer.curate.filters import default_filters
    from primer.curate.pipeline import CurateConfig
    from primer.curate.quality import LMScorer, QualityScorer, QualitySettings
    from primer.weights.llamacpp import open_llama
    from primer.weights.load import resolve_spec

    torch.set_num_threads(2)
    filters = default_filters()
    texts = [d.text for d in read_documents(Path(args.data_dir) / "c4_sample")
             if all(f.check(Document("x", d.text)) is True for f in filters)][: args.docs]
    lm = LMScorer("bundled", window=args.window)
    rows = lm.encode(texts)
    ntok = sum(len(r) - 1 for r in rows)
    print(f"{len(texts)} C4 pages, {ntok} scored tokens (window {args.window}); ours fast path: {lm.fast}")
    llm = open_llama(resolve_spec("bundled")[1], n_ctx=args.window + 1, n_batch=args.window + 1, logits_all=True,
                     verbose=False, n_threads=2)

    def ours():
        return [float(v.mean()) for v in lm.token_nll(rows)]

    def ref():
        out = []
        for r in rows:
            llm.reset()
            llm.eval(r)
            logits = np.asarray(llm.scores[: len(r) - 1], dtype=np.float64)
            m = logits.max(-1, keepdims=True)
            lse = (m[:, 0] + np.log(np.exp(logits - m).sum(-1)))
            out.append(float((lse - logits[np.arange(len(r) - 1), r[1:]]).mean()))
        return out

    ours(), ref()  # warm-up (kernels, caches)
    t_o, t_r = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        a = ours()
        t_o.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        b = ref()
        t_r.append(time.perf_counter() - t0)
    d = np.abs(np.array(a) - np.array(b))
    corr = float(np.corrcoef(a, b)[0, 1])
    ours_dps, ref_dps = len(texts) / statistics.median(t_o), len(texts) / statistics.median(t_r)
    print(f"reference-LM NLL  ours {ours_dps:7.2f} docs/s ({ntok / statistics.median(t_o):6.0f} tok/s)   "
          f"llama.cpp {ref_dps:7.2f} docs/s ({ntok / statistics.median(t_r):6.0f} tok/s)   ours / llama.cpp = "
          f"{ours_dps / ref_dps:.2f}x")
    print(f"agreement of the mean NLL per page: mean |diff| {d.mean():.4f} nats, max {d.max():.4f}, Pearson {corr:.5f}")
    full = QualityScorer(QualitySettings.from_curate(CurateConfig(), window=args.window), lm=lm)
    t0 = time.perf_counter()
    full.signals(texts, lazy=False)
    full_dps = len(texts) / (time.perf_counter() - t0)
    print(f"whole quality filter (cheap signals + model): {full_dps:.2f} docs/s")
    print(json.dumps({"ours": round(ours_dps, 3), "ref": round(ref_dps, 3), "ratio": round(ours_dps / ref_dps, 3),
                      "unit": f"docs/s on 2 threads (C4 pages, first {args.window} tokens, mean NLL per page)",
                      "ref_name": "llama-cpp-python (same GGUF)", "docs": len(texts), "tokens": ntok,
                      "nll_mean_abs_diff": round(float(d.mean()), 5), "nll_max_abs_diff": round(float(d.max()), 5),
                      "nll_pearson": round(corr, 5), "filter_docs_s": round(full_dps, 3),
                      "repeats": args.repeats}))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("PRIMER_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "benchmarks")))
    ap.add_argument("--copies", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-embed", action="store_true", help="skip the embedding scorer")
    ap.add_argument("--quality", action="store_true", help="bench the quality filter's model pass instead")
    ap.add_argument("--docs", type=int, default=64, help="--quality: C4 pages scored")
    ap.add_argument("--window", type=int, default=256, help="--quality: tokens per page")
    args = ap.parse_args()
    if args.quality:
        return quality_bench(args)
    c4 = Path(args.data_dir) / "c4_sample"
    if not c4.is_dir():
        print(f"C4 sample not found under {args.data_dir} (set --data-dir or PRIMER_DATA)", file=sys.stderr)
        return 2
    base = [d.text for d in read_documents(c4)]
    rng = random.Random(0)
    src = rng.sample([i for i, t in enumerate(base) if len(t.split()) >= 100], args.copies)
    texts = base + [edit_copy(base[i], rng) for i in src]
    copies = set(range(len(base), len(texts)))
    cfg = MinHashConfig()
    print(f"{len(texts)} documents ({args.copies} edited copies), {sum(len(t) for t in texts) / 1e6:.1f} MB; "
          f"{cfg.describe()}")

    t_ours = t_ref = float("inf")
    for _ in range(args.repeats):  # interleaved, so both see the same machine load
        t, got_ours = best_of(lambda: ours(texts, cfg), 1)
        t_ours = min(t_ours, t)
        t, got_ref = best_of(lambda: datasketch_run(texts, cfg), 1)
        t_ref = min(t_ref, t)
    r_ours = len(got_ours & copies) / len(copies)
    r_ref = len(got_ref & copies) / len(copies)
    fp_ours, fp_ref = len(got_ours - copies), len(got_ref - copies)
    ours_dps, ref_dps = len(texts) / t_ours, len(texts) / t_ref
    print(f"MinHash LSH  ours {ours_dps:9.0f} docs/s  recall {r_ours:.3f}  other drops {fp_ours}")
    print(f"             datasketch {ref_dps:9.0f} docs/s  recall {r_ref:.3f}  other drops {fp_ref}")
    print(f"             ours / datasketch = {ours_dps / ref_dps:.1f}x")

    result = {"ours": round(ours_dps, 1), "ref": round(ref_dps, 1), "ratio": round(ours_dps / ref_dps, 2),
              "unit": "docs/s per core (MinHash LSH dedup, raw text to drop set)", "ref_name": "datasketch",
              "docs": len(texts), "recall_ours": round(r_ours, 4), "recall_ref": round(r_ref, 4),
              "params": {"shingle": cfg.shingle, "bands": cfg.bands, "rows": cfg.rows, "num_perm": cfg.num_perm}}

    # scorer throughput (the head is a dot product; the features are the cost)
    from primer.curate.edu import EduScorer

    sample = base[:500]
    hash_scorer = EduScorer("hash", np.zeros(2**18, np.float32), 2.5)
    hash_scorer.score(sample[:10])
    t, _ = best_of(lambda: hash_scorer.score(sample), args.repeats)
    result["scorer_hash_docs_s"] = round(len(sample) / t, 1)
    print(f"edu scorer   hashed 1-2-grams + ridge: {len(sample) / t:9.0f} docs/s")
    if not args.no_embed:
        try:
            emb = EduScorer("embed", np.zeros(384, np.float32), 2.5)
            emb.score(sample[:8])  # loads the model
            sub = sample[:200]
            t, _ = best_of(lambda: emb.score(sub), 1)
            result["scorer_embed_docs_s"] = round(len(sub) / t, 1)
            result["scorer_hash_over_embed"] = round(result["scorer_hash_docs_s"] / result["scorer_embed_docs_s"], 1)
            print(f"             all-MiniLM-L6-v2 (256 tokens) + ridge: {len(sub) / t:9.1f} docs/s "
                  f"(hash / embed = {result['scorer_hash_over_embed']}x)")
        except Exception as e:  # noqa: BLE001 - the embedding model is optional
            print(f"             embedding scorer skipped: {e}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
