"""Does retrieval help a small model? SQuAD v1.1 dev closed-book, open-book (BM25 over all 2,067 dev
paragraphs, no gold paragraph given) and oracle (gold paragraph given), on the same questions.

For each condition: EM and F1 (official SQuAD v1.1) with 95% bootstrap intervals (2,000 resamples of
the questions), paired differences (open - closed, oracle - open) with their paired-bootstrap
intervals, and the retrieval's recall@1/5/20 (gold paragraph among the top k chunks). Prompts:
closed `Question: q\\n\\nAnswer:`, open the same after `Background:` + the top --passages chunks
(`primer.index.prompt.with_passages`), oracle lm-eval's squadv2 prompt. Greedy, 32 tokens, stop at
a newline. Answers are cached (sqlite), so a rerun or another --passages value reuses them.

    python bench/openbook.py --sample 500 --passages 1,3            # CPU: a fixed seeded 500-question sample
    python bench/openbook.py --sample 0 --device cuda --batch-size 64   # GPU: all 10,570 questions

Ends with one JSON line: {"ours": open-book EM (largest --passages), "ref": closed-book EM, "ratio", "conditions": ...}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bundled")
    ap.add_argument("--data-dir", default="../shared/benchmarks")
    ap.add_argument("--index", default=None, help="an index over the SQuAD dev paragraphs (default: build one)")
    ap.add_argument("--sample", type=int, default=500, help="seeded random questions (0 = all 10,570)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--passages", default="1,3", help="comma-separated passage counts for the open-book prompt")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default=None)
    ap.add_argument("--cache", default=None, help="answer cache (default: ~/.cache/primer/eval-cache.sqlite)")
    ap.add_argument("--output", default=None, help="write the full results JSON here")
    args = ap.parse_args(argv)

    import torch

    from primer.audit.stats import paired_bootstrap
    from primer.eval.lm import PrimerLM
    from primer.eval.runner import EvalConfig, evaluate
    from primer.index.bm25 import build_index

    torch.set_num_threads(args.threads)
    data = Path(args.data_dir)
    index = Path(args.index) if args.index else Path(tempfile.mkdtemp(prefix="squad-index-")) / "idx"
    if not args.index:
        s = build_index([data / "squad" / "dev-v1.1.json"], index)
        print(f"index: {s.documents:,} paragraphs -> {s.chunks:,} chunks in {s.seconds['total']:.2f} s")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    lm = PrimerLM.load(args.model, batch_size=args.batch_size, device=device)
    runs, scores = {}, {}
    for p in [int(x) for x in args.passages.split(",")]:
        cfg = EvalConfig(tasks=["squad_closedbook", "squad_openbook", "squad"], data_dir=data, index=index, passages=p,
                         sample=args.sample or None, seed=args.seed, log_samples=True,
                         cache=Path(args.cache) if args.cache else None)
        t0 = time.time()
        res = evaluate(lm, cfg)
        runs[p] = {name: {"n": t.n, "metrics": t.metrics, "seconds": t.seconds} for name, t in res.tasks.items()}
        print(f"passages={p}: {time.time() - t0:.0f} s", flush=True)
        for name, recs in res.samples.items():
            key = f"open-book, top {p}" if name == "squad_openbook" else {"squad": "oracle (gold paragraph)",
                                                                          "squad_closedbook": "closed-book"}[name]
            scores[key] = {m: [r["scores"][m] for r in recs] for m in recs[0]["scores"]}
    names = ["closed-book"] + [k for k in scores if k.startswith("open")] + ["oracle (gold paragraph)"]
    n = len(scores["closed-book"]["f1"])

    def pct(x):
        return f"{100 * x:.1f}"

    table, out = [], {}
    for name in names:
        row = {}
        for m in ("exact_match", "f1"):
            r = paired_bootstrap(scores[name][m], scores["closed-book"][m], seed=0)
            row[m] = {"value": r.acc_orig, "ci": r.ci_orig, "vs_closed": r.drop, "vs_closed_ci": r.drop_ci}
        out[name] = row
        diff = "—" if name == "closed-book" else (f"{pct(row['f1']['vs_closed'])} [{pct(row['f1']['vs_closed_ci'][0])}, "
                                                  f"{pct(row['f1']['vs_closed_ci'][1])}]")
        table.append(f"| {name} | {pct(row['exact_match']['value'])} [{pct(row['exact_match']['ci'][0])}, "
                     f"{pct(row['exact_match']['ci'][1])}] | {pct(row['f1']['value'])} [{pct(row['f1']['ci'][0])}, "
                     f"{pct(row['f1']['ci'][1])}] | {diff} |")
    print(f"\nSQuAD v1.1 dev, {n} questions, model {args.model}; 95% bootstrap intervals\n")
    print("| condition | EM | F1 | F1 - closed-book (paired) |\n|---|---:|---:|---:|")
    print("\n".join(table))
    best = [k for k in names if k.startswith("open")][-1]
    for m in ("exact_match", "f1"):
        r = paired_bootstrap(scores["oracle (gold paragraph)"][m], scores[best][m], seed=0)
        out.setdefault("oracle - " + best, {})[m] = {"diff": r.drop, "ci": r.drop_ci}
        print(f"oracle - {best}, {m}: {pct(r.drop)} [{pct(r.drop_ci[0])}, {pct(r.drop_ci[1])}]")
    rec = scores[best]
    recall = {}
    for k in (1, 5, 20):
        r = paired_bootstrap(rec[f"recall@{k}"], rec[f"recall@{k}"], seed=0)
        recall[k] = {"value": r.acc_orig, "ci": r.ci_orig}
    print("BM25 recall of the gold paragraph: " + ", ".join(
        f"@{k} {pct(v['value'])} [{pct(v['ci'][0])}, {pct(v['ci'][1])}]" for k, v in recall.items()))
    full = {"model": args.model, "questions": n, "sample": args.sample, "seed": args.seed, "conditions": out,
            "recall": recall, "tasks": runs}
    if args.output:
        Path(args.output).write_text(json.dumps(full, indent=2, default=str))
    print(json.dumps({"ours": out[best]["exact_match"]["value"], "ref": out["closed-book"]["exact_match"]["value"],
                      "ratio": (out[best]["exact_match"]["value"] / out["closed-book"]["exact_match"]["value"]
                                if out["closed-book"]["exact_match"]["value"] else None), **full}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
