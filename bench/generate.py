"""Generation speed: primer vs llama-cpp-python on the same GGUF, same machine, same run.

    python bench/generate.py                       # bundled SmolLM2-135M-Instruct Q4_1
    python bench/generate.py --batch 16 64 --new 64 --repeats 3 --threads 2

Each side runs in its own worker process (so peak RSS is its own) and the two are driven in
turns, repeat by repeat, so a busy machine slows both alike. Measured, greedy, EOS ignored,
every row generating exactly --new tokens:
  * single stream: one prompt, tokens/s = new tokens / wall time of the whole call (prefill included);
  * batched: B different prompts at once, tokens/s = B * new / wall time;
  * prefill: one --prefill-token prompt and one new token, tokens/s = prompt tokens / wall time.
llama.cpp's batched peer is its own multi-sequence decoding (the `batched` example's method):
one context with n_seq_max = B, all prompts prefilled in one llama_batch (a seq id per prompt),
then one llama_batch of B tokens per step, greedy argmax on each sequence's logits.
Prints medians, ours / theirs, peak RSS of each worker, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

PROMPTS = [
    "The history of the printing press begins",
    "Photosynthesis is the process by which",
    "Write a short story about a robot who learns to paint.",
    "In mathematics, a prime number is",
    "The water cycle describes how water moves",
    "Explain how a bicycle stays upright while moving.",
    "The French Revolution started in 1789 when",
    "A healthy breakfast usually includes",
]


def prompts_for(n: int) -> list[str]:
    return [PROMPTS[i % len(PROMPTS)] + ("" if i < len(PROMPTS) else f" (variation {i // len(PROMPTS)})")
            for i in range(n)]


# ----------------------------------------------------------------------------------- workers


def _serve(conn, run, encode) -> None:
    """A worker's loop, the same for both engines: warm up, then time each (texts, new tokens)
    request the driver sends until None, then report peak RSS (MB)."""
    run([encode("Hello")], 4)
    conn.send(("ready", None))
    while True:
        msg = conn.recv()
        if msg is None:
            break
        texts, new, limit = msg
        conn.send(("time", run([encode(t)[:limit] for t in texts], new)))
    conn.send(("rss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def _ours(conn, model: str, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    from primer.model.generate import generate
    from primer.weights.load import load_model

    lm = load_model(model, decode_only=True)  # as `primer generate` loads it: the packed decoder alone
    tok = lm.tokenizer

    def run(prompts: list[list[int]], new: int) -> float:
        t0 = time.perf_counter()
        rs = generate(lm, prompts, max_new_tokens=new, ignore_eos=True, batch_size=len(prompts))
        dt = time.perf_counter() - t0
        assert all(r.completion_tokens == new for r in rs)
        return dt

    _serve(conn, run, tok.encode)


def _llama(conn, model: str, threads: int, max_batch: int, ctx_per_seq: int, prefill: int) -> None:
    import ctypes

    import llama_cpp
    import numpy as np

    # keep llama.cpp's loader chatter off the report
    _quiet = llama_cpp.llama_log_callback(lambda level, text, user: None)
    llama_cpp.llama_log_set(_quiet, ctypes.c_void_p())
    llama_cpp.llama_backend_init()
    mp_ = llama_cpp.llama_model_default_params()
    mp_.use_extra_bufts = False  # AMX/repack buffers give wrong logits on this CPU: see primer.weights.llamacpp
    lmodel = llama_cpp.llama_model_load_from_file(model.encode(), mp_)
    vocab = llama_cpp.llama_model_get_vocab(lmodel)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    contexts: dict[int, object] = {}

    def context(n_seq: int):
        if n_seq not in contexts:
            cp = llama_cpp.llama_context_default_params()
            # one sequence also runs the prefill case; many short ones need no long context each
            cp.n_ctx = n_seq * ctx_per_seq if n_seq > 1 else max(ctx_per_seq, prefill + 8)
            cp.n_batch = max(512, cp.n_ctx)
            cp.n_ubatch = 512
            cp.n_seq_max = n_seq
            cp.n_threads = threads
            cp.n_threads_batch = threads
            contexts[n_seq] = llama_cpp.llama_init_from_model(lmodel, cp)
        return contexts[n_seq]

    def tokenize(text: str) -> list[int]:
        cap = len(text.encode()) + 8
        buf = (llama_cpp.llama_token * cap)()
        n = llama_cpp.llama_tokenize(vocab, text.encode(), len(text.encode()), buf, cap, False, True)
        return list(buf[:n])

    def run(prompts: list[list[int]], new: int) -> float:
        B = len(prompts)
        ctx = context(B)
        t0 = time.perf_counter()
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        total = sum(len(p) for p in prompts)
        batch = llama_cpp.llama_batch_init(max(total, B), 0, B)
        try:
            # prefill: every prompt in one batch, logits only at each prompt's last token
            n, last = 0, []
            for s, p in enumerate(prompts):
                for j, t in enumerate(p):
                    batch.token[n], batch.pos[n], batch.n_seq_id[n] = t, j, 1
                    batch.seq_id[n][0] = s
                    batch.logits[n] = j == len(p) - 1
                    n += 1
                last.append(n - 1)
            batch.n_tokens = n
            if llama_cpp.llama_decode(ctx, batch) != 0:
                raise RuntimeError("llama_decode failed in prefill")
            pos = [len(p) for p in prompts]
            for step in range(new):
                nxt = []
                for s in range(B):
                    ptr = llama_cpp.llama_get_logits_ith(ctx, last[s])
                    logits = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(n_vocab,))
                    nxt.append(int(logits.argmax()))
                if step == new - 1:
                    break
                for s in range(B):
                    batch.token[s], batch.pos[s], batch.n_seq_id[s] = nxt[s], pos[s], 1
                    batch.seq_id[s][0] = s
                    batch.logits[s] = True
                    pos[s] += 1
                batch.n_tokens = B
                last = list(range(B))
                if llama_cpp.llama_decode(ctx, batch) != 0:
                    raise RuntimeError("llama_decode failed")
        finally:
            llama_cpp.llama_batch_free(batch)
        return time.perf_counter() - t0

    _serve(conn, run, tokenize)


# ----------------------------------------------------------------------------------- driver


def _recv(side: str, proc, conn):
    """The worker's next message; an error (not a hang) if it died."""
    while not conn.poll(1.0):
        if not proc.is_alive():
            raise SystemExit(f"bench: the {side} worker exited with code {proc.exitcode}; see its traceback above")
    return conn.recv()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bundled", help="'bundled' or a .gguf path (default: bundled)")
    ap.add_argument("--batch", type=int, nargs="+", default=[32], help="batch sizes to measure (default: 32)")
    ap.add_argument("--new", type=int, default=64, help="new tokens per row (default: 64)")
    ap.add_argument("--repeats", type=int, default=3, help="measured repeats per side (default: 3)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both sides (default: all cores)")
    ap.add_argument("--prefill", type=int, default=512, help="prompt tokens of the prefill case; 0 = skip (default: 512)")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    if args.model == "bundled":
        from primer.weights.bundled import bundled_gguf_path

        path = str(bundled_gguf_path())
    else:
        path = args.model

    ctx = mp.get_context("spawn")
    workers = {}
    for side, target, extra in [("ours", _ours, ()), ("llama.cpp", _llama, (max(args.batch), 32 + args.new + 8, args.prefill))]:
        a, b = ctx.Pipe()
        proc = ctx.Process(target=target, args=(b, path if side == "llama.cpp" else args.model, args.threads) + extra)
        proc.start()
        workers[side] = (proc, a)
    for side, (proc, conn) in workers.items():
        kind, _ = _recv(side, proc, conn)
        assert kind == "ready", side

    # (case, rows, new tokens per row, tokens counted per row)
    cases = [("single", 1, args.new, args.new)] + [(f"batch{B}", B, args.new, args.new) for B in args.batch]
    if args.prefill:
        cases.append((f"prefill{args.prefill}", 1, 1, args.prefill))
    times: dict[str, dict[str, list[float]]] = {c[0]: {s: [] for s in workers} for c in cases}
    for rep in range(args.repeats):
        for case, B, new, _ in cases:
            # the prefill prompt: the sample prompts run on until the tokenizer gives --prefill tokens
            texts = prompts_for(B) if not case.startswith("prefill") else [" ".join(PROMPTS * 40)]
            limit = args.prefill if case.startswith("prefill") else None
            order = list(workers) if rep % 2 == 0 else list(reversed(workers))
            for side in order:
                proc, conn = workers[side]
                conn.send((texts, new, limit))
                kind, dt = _recv(side, proc, conn)
                times[case][side].append(dt)
    rss = {}
    for side, (proc, conn) in workers.items():
        conn.send(None)
        rss[side] = _recv(side, proc, conn)[1]
        proc.join()

    result = {"model": Path(path).name, "threads": args.threads, "new_tokens": args.new, "repeats": args.repeats,
              "machine": f"{platform.machine()} {os.cpu_count()} cores", "cases": {}, "peak_rss_mb": rss}
    print(f"{'case':<10} {'ours tok/s':>11} {'llama.cpp tok/s':>16} {'ours/theirs':>12}")
    for case, B, _, counted in cases:
        ours = B * counted / statistics.median(times[case]["ours"])
        theirs = B * counted / statistics.median(times[case]["llama.cpp"])
        result["cases"][case] = {"batch": B, "ours_tok_s": round(ours, 1), "llama_cpp_tok_s": round(theirs, 1),
                                 "ratio": round(ours / theirs, 3)}
        print(f"{case:<10} {ours:>11.1f} {theirs:>16.1f} {ours / theirs:>12.2f}")
    print(f"peak RSS: ours {rss['ours']:.0f} MB, llama.cpp {rss['llama.cpp']:.0f} MB")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
