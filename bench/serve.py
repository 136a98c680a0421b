"""Serving under load: `primer serve` vs llama-cpp-python's OpenAI server, same GGUF, same machine, same run.

    python bench/serve.py                                   # bundled SmolLM2-135M-Instruct Q4_1
    python bench/serve.py --clients 1 4 16 64 --new 64 --repeats 3

Both servers run on loopback at once (each idle while the other is measured), driven in turns,
level by level and repeat by repeat, so a busy machine slows both alike. At each level C, C clients
each send one streaming /v1/completions request at the same moment (greedy, `max_tokens` --new,
a different prompt each) and read the server-sent events. Per level:
  * TTFT: request sent -> first chunk with text, p50 / p99 over every request of every repeat;
  * inter-token latency: the gaps between a request's consecutive text chunks, p50 / p99;
  * output tokens/s: the tokens of all replies (each reply re-tokenized with the model's tokenizer,
    so both servers count alike) / wall time from the first send to the last reply, median of repeats;
  * failed: requests that got no 200, no `[DONE]`, or an error.
llama-cpp-python's server (0.3.16, the version primer pins) decodes one request at a time; its best
settings here: all cores (`--n_threads`), `--n_batch 512`, and `--interrupt_requests False` (its default
True cuts a running stream short whenever a new request arrives, which fails requests under load).
It is started as primer starts it (`primer.weights.llamacpp.SERVER_MAIN`: AMX/repack buffers off).
primer serve runs with `--max-batch` = the largest level (continuous batching on its fast CPU decoder).
Prints a table, then one JSON line: ours / ref are output tokens/s at --headline clients (default 16).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

PROMPTS = [
    "The history of the printing press begins",
    "Photosynthesis is the process by which",
    "In mathematics, a prime number is",
    "The water cycle describes how water moves",
    "The French Revolution started in 1789 when",
    "A healthy breakfast usually includes",
    "The first computers were built to",
    "Volcanoes form when",
]


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


async def one_request(c: httpx.AsyncClient, url: str, model: str, prompt: str, new: int) -> dict:
    sent = time.perf_counter()
    stamps, text, done = [], [], False
    try:
        async with c.stream("POST", url, json={"model": model, "prompt": prompt, "max_tokens": new,
                                               "temperature": 0, "stream": True}) as r:
            if r.status_code != 200:
                await r.aread()
                return {"ok": False, "why": f"HTTP {r.status_code}: {r.text[:200]}"}
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    done = True
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    return {"ok": False, "why": str(chunk["error"])[:200]}
                piece = "".join(ch.get("text") or "" for ch in chunk.get("choices", []))
                if piece:
                    stamps.append(time.perf_counter())
                    text.append(piece)
    except httpx.HTTPError as e:
        return {"ok": False, "why": f"{type(e).__name__}: {e}"}
    if not done:
        return {"ok": False, "why": "stream ended without [DONE]"}
    return {"ok": True, "ttft": stamps[0] - sent if stamps else float("nan"),
            "gaps": [b - a for a, b in zip(stamps, stamps[1:])], "text": "".join(text), "end": time.perf_counter()}


async def level(url: str, model: str, clients: int, new: int) -> tuple[list[dict], float]:
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=httpx.Timeout(1800, connect=60), limits=limits) as c:
        t0 = time.perf_counter()
        rs = await asyncio.gather(*(one_request(c, url, model, PROMPTS[i % len(PROMPTS)] + f" (client {i})", new)
                                    for i in range(clients)))
    return list(rs), time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bundled", help="'bundled' or a .gguf path (default: bundled)")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64], help="concurrency levels")
    ap.add_argument("--new", type=int, default=64, help="max_tokens per request (default: 64)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats per level and server (default: 3)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both servers (default: all)")
    ap.add_argument("--headline", type=int, default=16, help="the level the JSON line reports (default: 16)")
    ap.add_argument("--log-dir", default=None, help="keep both servers' logs here")
    args = ap.parse_args(argv)

    from serve_helpers import PrimerServer
    from synth_helpers import LlamaServer

    from primer.weights.load import load_model

    if args.model == "bundled":
        from primer.weights.bundled import bundled_gguf_path

        path = str(bundled_gguf_path())
    else:
        path = args.model
    tok = load_model(path).tokenizer
    logs = Path(args.log_dir) if args.log_dir else None
    if logs:
        logs.mkdir(parents=True, exist_ok=True)

    ours = PrimerServer(path, "--max-batch", str(max(args.clients)), "--max-queue", str(max(args.clients)),
                        "--model-name", "smollm2", log=logs / "primer.log" if logs else None, threads=args.threads)
    ref = LlamaServer(Path(path), n_threads=args.threads, log=logs / "llama.log" if logs else None,
                      extra=("--n_batch", "512", "--interrupt_requests", "False"))
    sides = {"primer": ours, "llama.cpp": ref}
    results: dict[str, dict[int, dict]] = {s: {} for s in sides}
    try:
        for s in sides.values():
            s.start()
        for name, s in sides.items():  # warm-up: first-use kernel builds, caches
            rs, _ = asyncio.run(level(f"{s.base_url}/completions", "smollm2", 2, 8))
            assert all(r["ok"] for r in rs), (name, rs)
        for clients in args.clients:
            per = {name: {"ttft": [], "gaps": [], "tps": [], "failed": 0, "tokens": []} for name in sides}
            for rep in range(args.repeats):
                order = list(sides.items()) if rep % 2 == 0 else list(sides.items())[::-1]
                for name, s in order:
                    rs, wall = asyncio.run(level(f"{s.base_url}/completions", "smollm2", clients, args.new))
                    ok = [r for r in rs if r["ok"]]
                    p = per[name]
                    p["failed"] += len(rs) - len(ok)
                    for r in rs:
                        if not r["ok"]:
                            print(f"  {name} c={clients}: failed: {r['why']}", file=sys.stderr)
                    ntok = [len(tok.encode(r["text"], add_special_tokens=False)) for r in ok]
                    p["tokens"] += ntok
                    p["ttft"] += [r["ttft"] for r in ok]
                    p["gaps"] += [g for r in ok for g in r["gaps"]]
                    p["tps"].append(sum(ntok) / wall)
                    print(f"  c={clients:>3} rep {rep + 1} {name:<9} {sum(ntok) / wall:8.1f} tok/s  wall {wall:6.1f} s "
                          f"failed {len(rs) - len(ok)}", flush=True)
            for name, p in per.items():
                results[name][clients] = {
                    "tokens_per_s": statistics.median(p["tps"]), "ttft_p50": percentile(p["ttft"], 50),
                    "ttft_p99": percentile(p["ttft"], 99), "itl_p50": percentile(p["gaps"], 50),
                    "itl_p99": percentile(p["gaps"], 99), "failed": p["failed"],
                    "mean_tokens": statistics.mean(p["tokens"]) if p["tokens"] else 0}
    finally:
        for s in sides.values():
            s.stop()

    print(f"\n{'clients':>7} {'server':<10} {'tok/s':>8} {'TTFT p50':>9} {'TTFT p99':>9} {'ITL p50':>8} "
          f"{'ITL p99':>8} {'failed':>6} {'tok/req':>7}")
    for clients in args.clients:
        for name in sides:
            r = results[name][clients]
            print(f"{clients:>7} {name:<10} {r['tokens_per_s']:8.1f} {r['ttft_p50']:8.2f}s {r['ttft_p99']:8.2f}s "
                  f"{1000 * r['itl_p50']:6.0f}ms {1000 * r['itl_p99']:6.0f}ms {r['failed']:>6} {r['mean_tokens']:7.1f}")
        a, b = results["primer"][clients], results["llama.cpp"][clients]
        print(f"{'':>7} ratio      {a['tokens_per_s'] / b['tokens_per_s']:8.2f}x tok/s, "
              f"TTFT p99 {a['ttft_p99'] / b['ttft_p99']:.2f}x")
    h = args.headline if args.headline in args.clients else args.clients[-1]
    a, b = results["primer"][h], results["llama.cpp"][h]
    print(json.dumps({"ours": round(a["tokens_per_s"], 2), "ref": round(b["tokens_per_s"], 2),
                      "ratio": round(a["tokens_per_s"] / b["tokens_per_s"], 3), "unit": f"output tokens/s at {h} clients",
                      "ttft_p99_ours": round(a["ttft_p99"], 3), "ttft_p99_ref": round(b["ttft_p99"], 3),
                      "failed_ours": sum(r["failed"] for r in results["primer"].values()),
                      "failed_ref": sum(r["failed"] for r in results["llama.cpp"].values()),
                      "levels": {n: {str(c): {k: round(v, 4) for k, v in r.items()} for c, r in results[n].items()}
                                 for n in results},
                      "new_tokens": args.new, "repeats": args.repeats, "threads": args.threads}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
