"""Synth throughput: the bundled teacher in-process vs the same GGUF behind llama.cpp's server.

    python bench/synth.py                       # 8 docs x 64 tokens each way, concurrency 1,2,4
    python bench/synth.py --n 16 --max-tokens 128 --concurrency 1,4,1 --threads 2
    python bench/synth.py --slots-only --slots 1,8,64,256 --latency 0.5

Run it on a quiet machine: with other work on the cores, llama.cpp's threads wait on each other
and one measurement can be several times another (repeat a setting, as "1,4,1" does, to see it).

Both sides run `primer synth` (the library function) over the same prompts with quality
rejection off, so the figure is generated tokens per second of the whole pipeline (prompting,
quality check, fsync'd JSONL), not of the model alone. The server side is `python -m
llama_cpp.server` on loopback with the bundled GGUF; it is measured at each concurrency
(requests in flight) and its best is used. Prints tokens/s, docs/h and tokens/h for each, the
scaling with concurrency, and ours / theirs.

llama-cpp-python's server runs one request at a time (it has no --parallel slots), so its
"concurrency" only queues. What the same client code reaches against a many-slot server (vLLM,
SGLang, llama.cpp's own llama-server --parallel N) is measured with `--slots`: a loopback stub
that answers every request after a fixed latency with a fixed 200-token text, like a server with
unlimited slots; docs/s at each concurrency vs the ideal concurrency / latency shows where the
client side (HTTP, quality checks, fsync'd writes) stops scaling.
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


def run_synth(out: Path, teacher_spec: str, args, concurrency: int = 1, model: str | None = None):
    from primer.synth.run import SynthConfig, synth

    cfg = SynthConfig(out=out, n=args.n, teacher=teacher_spec, model=model, max_tokens=args.max_tokens,
                      min_words=1, max_repeat_frac=1.0, concurrency=concurrency, batch_size=args.batch_size,
                      progress=False, seed=args.seed, formats=["textbook"], threads=args.threads)
    return synth(cfg)


STUB = r"""
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
latency = float(sys.argv[1])
text = " ".join(f"word{i % 97} fact{i % 89}" for i in range(100))  # 200 words, not repetitive
body = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 60, "completion_tokens": 200}}).encode()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else headers and body in two writes meet delayed ACKs (+40 ms)
    def log_message(self, *a): pass
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"{}")
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(latency)
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
ThreadingHTTPServer.request_queue_size = 1024
ThreadingHTTPServer.daemon_threads = True
srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"""


def slots_scaling(concurrencies: list[int], latency: float, fsync_interval: float) -> list[dict]:
    """synth against a stub with unlimited slots and fixed latency (its own process): docs/s per concurrency."""
    import subprocess

    from primer.synth.run import SynthConfig, synth

    proc = subprocess.Popen([sys.executable, "-c", STUB, str(latency)], stdout=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{int(proc.stdout.readline())}/v1"
    out = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for c in concurrencies:
                n = max(32, 4 * c)
                cpu0 = time.process_time()
                s = synth(SynthConfig(out=Path(tmp) / f"c{c}", n=n, teacher=url, model="stub", concurrency=c,
                                      progress=False, min_words=1, max_repeat_frac=1.0, stats_sample=0,
                                      fsync_interval=fsync_interval))
                cpu = time.process_time() - cpu0
                r = s.this_run
                docs_s = s.documents_this_run / r.seconds
                out.append({"concurrency": c, "docs": s.documents_this_run, "seconds": r.seconds,
                            "client_cpu_ms_per_doc": round(1000 * cpu / max(1, s.documents_this_run), 2),
                            "docs_s": round(docs_s, 1), "ideal_docs_s": round(c / latency, 1),
                            "efficiency": round(docs_s / (c / latency), 3), "tok_s": r.tokens_per_s})
    finally:
        proc.kill()
        proc.wait()
    return out


def row(name: str, s) -> dict:
    r = s.this_run
    return {"name": name, "docs": s.documents_this_run, "tokens": r.completion_tokens, "seconds": r.seconds,
            "tok_s": r.tokens_per_s, "docs_h": r.docs_per_hour, "tok_h": round((r.tokens_per_s or 0) * 3600)}


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
    ap.add_argument("--slots", default="", metavar="C1,C2,..",
                    help="also measure client scaling against a many-slot stub at these concurrencies (e.g. 1,8,64,256)")
    ap.add_argument("--slots-only", action="store_true", help="only the many-slot stub measurement")
    ap.add_argument("--latency", type=float, default=1.0, help="stub seconds per request")
    ap.add_argument("--fsync-interval", type=float, default=1.0, help="synth --fsync-interval for the stub runs")
    args = ap.parse_args()

    scaling = []
    if args.slots or args.slots_only:
        cs = [int(x) for x in (args.slots or "1,8,64,256").split(",")]
        print(f"many-slot stub server ({args.latency} s per request, 200 tokens each):", flush=True)
        scaling = slots_scaling(cs, args.latency, args.fsync_interval)
        for r in scaling:
            print(f"  c={r['concurrency']:4d}: {r['docs_s']:8.1f} docs/s  (ideal {r['ideal_docs_s']:8.1f}, "
                  f"efficiency {r['efficiency']:.2f}), {r['tok_s']:9.1f} tok/s, {r['docs_s'] * 3600:10.0f} docs/h, "
                  f"client CPU {r['client_cpu_ms_per_doc']:.1f} ms/doc")
        if args.slots_only:
            if args.json:
                Path(args.json).write_text(json.dumps({"slots": scaling, "args": vars(args)}, indent=2))
            return 0

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from synth_helpers import LlamaServer

    from primer.weights.bundled import bundled_gguf_path

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"bundled teacher in-process ({args.n} docs x <= {args.max_tokens} tokens, {args.threads} threads) ...",
              flush=True)
        summary = run_synth(tmp / "ours", "bundled", args)
        teacher_name = summary.teacher
        ours = row("in-process bundled", summary)
        results.append(ours)
        server = LlamaServer(bundled_gguf_path(), n_threads=args.threads, log=tmp / "server.log")
        with server:
            for k, c in enumerate(int(x) for x in args.concurrency.split(",")):  # "1,4,1" repeats c=1
                print(f"llama.cpp server, {c} request(s) in flight ...", flush=True)
                results.append(row(f"llama.cpp server c={c}",
                                   run_synth(tmp / f"srv{k}-c{c}", server.base_url, args, c, "smollm2")))
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
    print(json.dumps({"bench": "synth", "n": args.n, "max_tokens": args.max_tokens, "threads": args.threads,
                      "ours": ours["tok_s"], "ref": theirs["tok_s"], "ref_setting": theirs["name"],
                      "ratio": round(ratio, 3), "unit": "generated tokens/s"}))
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "ratio": ratio, "teacher": teacher_name,
                                               "slots": scaling,
                                               "args": vars(args), "time": time.time()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
