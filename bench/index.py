"""`primer index` (bm25s) against rank_bm25 (the common pure-Python BM25) on the same chunks, same machine.

Two corpora:
  * SQuAD v1.1 dev: its 2,067 paragraphs, queried with its questions. Also the retrieval quality the
    open-book eval depends on: recall@1/5/20 of the gold paragraph over all 10,570 questions.
  * 100k synthetic chunks: each 3-8 sentences drawn at random (seed 0) from the sentences of the
    offline corpora in shared/benchmarks (TinyStories sample, C4 sample, WikiText-2 test), written as
    JSONL and indexed by `primer index build` end to end (read, chunk, tokenize, index, save).
Both libraries get the same tokens (bm25s's tokenizer: lower case, English stopwords, Snowball stems),
so the comparison is the scoring engine. Build times and per-query latency (one query per call, as
`primer chat` asks) are medians of --repeats runs; rank_bm25 scores every document per query in Python,
so it is timed on fewer queries.

    python bench/index.py --data-dir ../shared/benchmarks
Ends with one JSON line: {"ours": bm25s ms/query on 100k chunks, "ref": rank_bm25's, "ratio": ours / ref, ...}.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def per_query_ms(search, queries: list[str], repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for q in queries:
            search(q)
        runs.append(1000 * (time.perf_counter() - t0) / len(queries))
    return statistics.median(runs)


def rank_bm25_engine(texts: list[str], cfg):
    from rank_bm25 import BM25Okapi

    from primer.index.bm25 import _tokenize

    toks = _tokenize(texts, cfg, ids=False)
    return BM25Okapi([t if t else ["\x00"] for t in toks]), lambda q: _tokenize([q], cfg, ids=False)[0]


def synthetic_corpus(data: Path, n: int, path: Path) -> int:
    """n JSONL chunks of 3-8 random sentences from the offline corpora; returns the word count."""
    texts = [(data / "tinystories" / "TinyStories-train_prefix.txt").read_text(encoding="utf-8"),
             (data / "wikitext2" / "wikitext-2-raw-test.txt").read_text(encoding="utf-8")]
    with open(data / "c4_sample" / "c4_en_train_first1000.jsonl", encoding="utf-8") as f:
        texts += [json.loads(line)["text"] for line in f if line.strip()]
    sentences = [s.strip() for t in texts for s in re.split(r"(?<=[.!?])\s+", t) if len(s.split()) >= 4]
    rng, words = random.Random(0), 0
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            text = " ".join(rng.choice(sentences) for _ in range(rng.randint(3, 8)))
            words += len(text.split())
            f.write(json.dumps({"id": f"syn{i}", "title": f"synthetic {i}", "text": text}) + "\n")
    return words


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/benchmarks")
    ap.add_argument("--chunks", type=int, default=100_000, help="synthetic corpus size in chunks")
    ap.add_argument("--queries", type=int, default=500, help="timed queries for bm25s")
    ap.add_argument("--ref-queries", type=int, default=50, help="timed queries for rank_bm25")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    from primer.eval import metrics as M
    from primer.eval.tasks import get_task
    from primer.index.bm25 import Index, IndexConfig, build_index

    data = Path(args.data_dir)
    work = Path(tempfile.mkdtemp(prefix="primer-index-bench-"))
    cfg = IndexConfig()
    rows, rng = {}, random.Random(1)

    # -- SQuAD dev paragraphs ---------------------------------------------------------------
    squad = data / "squad" / "dev-v1.1.json"
    docs = get_task("squad").docs(data)
    questions = [d["question"] for d in docs]
    t_build, summary = timed(lambda: build_index([squad], work / "squad", cfg), args.repeats)
    idx = Index.load(work / "squad")
    hits = idx.search_many(questions, k=20)
    recall = {k: sum(any(M.passage_hit(h.text, d["context"]) for h in hs[:k]) for d, hs in zip(docs, hits)) / len(docs)
              for k in (1, 5, 20)}
    qs = rng.sample(questions, min(args.queries, len(questions)))
    ours_q = per_query_ms(lambda q: idx.search(q, k=5), qs, args.repeats)
    texts = [c["text"] for c in idx.chunks]
    t_ref_build, (ref, tok) = timed(lambda: rank_bm25_engine(texts, cfg), args.repeats)
    ref_q = per_query_ms(lambda q: ref.get_top_n(tok(q), texts, n=5), qs[: args.ref_queries], args.repeats)
    rows["squad"] = {"documents": summary.documents, "chunks": summary.chunks, "build_s": round(t_build, 3),
                     "ref_build_s": round(t_ref_build, 3), "query_ms": round(ours_q, 3), "ref_query_ms": round(ref_q, 3),
                     "recall": {f"@{k}": round(v, 4) for k, v in recall.items()}, "questions": len(docs)}
    print(f"SQuAD dev: {summary.documents:,} paragraphs -> {summary.chunks:,} chunks; build {t_build:.2f} s "
          f"(rank_bm25 {t_ref_build:.2f} s); query {ours_q:.2f} ms (rank_bm25 {ref_q:.2f} ms); "
          f"recall@1/5/20 over {len(docs):,} questions {recall[1]:.3f} / {recall[5]:.3f} / {recall[20]:.3f}", flush=True)

    # -- 100k synthetic chunks --------------------------------------------------------------
    corpus = work / "synthetic.jsonl"
    words = synthetic_corpus(data, args.chunks, corpus)
    t_build, summary = timed(lambda: build_index([corpus], work / "syn", cfg), args.repeats)
    t_load, idx = timed(lambda: Index.load(work / "syn"), args.repeats)
    ours_q = per_query_ms(lambda q: idx.search(q, k=5), qs, args.repeats)
    texts = [c["text"] for c in idx.chunks]
    t_ref_build, (ref, tok) = timed(lambda: rank_bm25_engine(texts, cfg), 1)
    ref_q = per_query_ms(lambda q: ref.get_top_n(tok(q), texts, n=5), qs[: args.ref_queries], 1)
    rows["synthetic"] = {"documents": summary.documents, "chunks": summary.chunks, "words": words,
                         "index_bytes": sum(f.stat().st_size for f in (work / "syn").rglob("*") if f.is_file()),
                         "build_s": round(t_build, 3), "build_stages_s": summary.seconds, "load_s": round(t_load, 3),
                         "ref_build_s": round(t_ref_build, 3), "query_ms": round(ours_q, 3), "ref_query_ms": round(ref_q, 3)}
    print(f"synthetic: {summary.chunks:,} chunks ({words:,} words); primer index build {t_build:.1f} s "
          f"({summary.seconds}), load {t_load:.2f} s; rank_bm25 build {t_ref_build:.1f} s; query "
          f"{ours_q:.2f} ms (rank_bm25 {ref_q:.1f} ms)", flush=True)
    syn = rows["synthetic"]
    print(json.dumps({"ours": syn["query_ms"], "ref": syn["ref_query_ms"],
                      "ratio": round(syn["query_ms"] / syn["ref_query_ms"], 5), "unit": "ms per query, 100k chunks",
                      **rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
