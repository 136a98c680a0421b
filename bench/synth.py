"""Synth throughput: the bundled teacher in-process vs the same GGUF behind llama.cpp's server.

    python bench/synth.py                       # 8 docs x 64 tokens each way, concurrency 1,2,4
    python bench/synth.py --n 16 --max-tokens 128 --concurrency 1,2,4,8 --threads 2

Both sides run `primer synth` (the library function) over the same prompts with quality
rejection off, so the figure is generated tokens per second of the whole pipeline (prompting,
quality check, fsync'd JSONL), not of the model alone. The server side is `python -m
llama_cpp.server` on loopback with the bundled GGUF; it is measured at each concurrency
(requests in flight) and its best is used. Prints tokens/s, docs/h and tokens/h for each, the
scaling with concurrency, and ours / theirs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def run_synth(out: Path, teacher_spec: str, args, concurrency: int = 1, model: str | None = None) -> dict:
    from primer.synth.run import SynthConfig, synth

    cfg = SynthConfig(out=out, n=args.n, teacher=teacher_spec, model=model, max_tokens=args.max_tokens,
                      min_words=1, max_repeat_frac=1.0, concurrency=concurrency, batch_size=args.batch_size,
                      progress=False, seed=args.seed, formats=["textbook"], threads=args.threads)
    return synth(cfg)


def row(name: str, s: dict) -> dict:
    r = s["this_run"]
    return {"name": name, "docs": s["documents_this_run"], "tokens": r["completion_tokens"], "seconds": r["seconds"],
            "tok_s": r["tokens_per_s"], "docs_h": r["docs_per_hour"],
            "tok_h": round((r["tokens_per_s"] or 0) * 3600)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8, help="documents per measurement")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--concurrency", default="1,2,4", help="server-side requests in flight to try")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads for both sides (1 by default: on a busy 2-core box two threads stall each other)")
    ap.add_argument("--batch-size", type=int, default=8, help="in-process batch size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="FILE", help="also write the results here")
    args = ap.parse_args()

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from synth_helpers import LlamaServer

    from primer.teachers import bundled_gguf_path

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"bundled teacher in-process ({args.n} docs x <= {args.max_tokens} tokens, {args.threads} threads) ...",
              flush=True)
        summary = run_synth(tmp / "ours", "bundled", args)
        teacher_name = summary["teacher"]
        ours = row("in-process bundled", summary)
        results.append(ours)
        server = LlamaServer(bundled_gguf_path(), n_threads=args.threads, log=tmp / "server.log")
        with server:
            for c in [int(x) for x in args.concurrency.split(",")]:
                print(f"llama.cpp server, {c} request(s) in flight ...", flush=True)
                results.append(row(f"llama.cpp server c={c}", run_synth(tmp / f"srv{c}", server.base_url, args, c, "smollm2")))
    theirs = max(results[1:], key=lambda r: r["tok_s"] or 0)
    print(f"\nteacher: {teacher_name}; machine: {os.cpu_count()} CPUs, {args.threads} threads used")
    print(f"{'':28s} {'docs':>5s} {'tokens':>7s} {'sec':>8s} {'tok/s':>8s} {'docs/h':>9s} {'tokens/h':>10s}")
    for r in results:
        print(f"{r['name']:28s} {r['docs']:5d} {r['tokens']:7d} {r['seconds']:8.1f} {r['tok_s']:8.2f} "
              f"{r['docs_h']:9.0f} {r['tok_h']:10d}")
    base = results[1]["tok_s"] or 1
    print("server scaling with concurrency (tok/s relative to c=1): "
          + ", ".join(f"{r['name'].split('=')[1]}: {r['tok_s'] / base:.2f}x" for r in results[1:]))
    ratio = (ours["tok_s"] or 0) / (theirs["tok_s"] or 1)
    print(f"ours / theirs (in-process tok/s / best server tok/s, {theirs['name']}): {ratio:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "ratio": ratio, "teacher": teacher_name,
                                               "args": vars(args), "time": time.time()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
