"""primer eval of a served model vs the same model in-process: the bundled SmolLM2 behind llama-cpp-python's server.

Starts llama-cpp-python's OpenAI server on loopback with the bundled GGUF (`primer.weights.llamacpp.SERVER_MAIN`:
plain CPU buffers, aligned echo log-probs), then scores the same items of each task twice: `openai:` (the
server's prompt log-probs through /v1/completions with echo) and `bundled` (primer's decoder on the same
GGUF, dequantized). llama.cpp multiplies with 8-bit-quantized activations (the parity tests allow 4% top-1
disagreement), so choices at near-ties may part. Prints, per task, both accuracies, the items whose chosen
answer differs, and the mean |difference| of the choices' log-likelihoods; then runs a GSM8K robustness audit of
the served model end to end, and checks that a server started without prompt log-probs (`--logits_all False`)
gets the one-line message. Ends with one JSON line ("ours"/"ref": seconds served / in-process; "ratio" their
quotient; "max_abs_acc_diff": the largest accuracy difference in points).

    python bench/served.py --data-dir ../shared/benchmarks --limit 100
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


@contextlib.contextmanager
def server(threads: int, *extra: str):
    """llama-cpp-python's OpenAI server on the bundled GGUF, on loopback; yields (model spec, process)."""
    import httpx

    from primer.weights.bundled import bundled_gguf_path
    from primer.weights.llamacpp import SERVER_MAIN

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", SERVER_MAIN, "--model", str(bundled_gguf_path()), "--host",
                             "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", str(threads),
                             "--model_alias", "smollm2", *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(240):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        yield f"openai:{url}/smollm2", proc
    finally:
        proc.kill()
        proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--tasks", default="piqa,arc_easy")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gsm8k-limit", type=int, default=8)
    args = ap.parse_args()
    import torch

    from primer.audit.run import AuditConfig, audit
    from primer.errors import PrimerError
    from primer.eval.lm import load_lm
    from primer.eval.runner import EvalConfig, evaluate
    from primer.teachers.http import HttpOptions

    torch.set_num_threads(args.threads)
    tasks = args.tasks.split(",")
    cfg = EvalConfig(tasks=tasks, limit=args.limit, data_dir=Path(args.data_dir), log_samples=True, cache="none")
    out: dict = {"bench": "served", "limit": args.limit, "tasks": {}}
    with server(args.threads) as (spec, _):
        t0 = time.perf_counter()
        served = evaluate(load_lm(spec, http=HttpOptions(concurrency=2)), cfg, progress=False)
        t_served = time.perf_counter() - t0
        t0 = time.perf_counter()
        local = evaluate(load_lm("bundled"), cfg, progress=False)
        t_local = time.perf_counter() - t0
        for task in tasks:
            a, b = served.samples[task], local.samples[task]
            lls_a = [[r[0] for r in s["responses"]] for s in a]
            lls_b = [[r[0] for r in s["responses"]] for s in b]
            pick = [(max(range(len(x)), key=x.__getitem__), max(range(len(y)), key=y.__getitem__))
                    for x, y in zip(lls_a, lls_b)]
            diffs = [abs(x - y) for xs, ys in zip(lls_a, lls_b) for x, y in zip(xs, ys)]
            row = {m: {"served": round(100 * served.tasks[task].metrics[m], 1),
                       "bundled": round(100 * local.tasks[task].metrics[m], 1)} for m in ("acc", "acc_norm")}
            row.update(items=len(a), acc_choice_differs=sum(p != q for p, q in pick),
                       mean_abs_ll_diff=round(sum(diffs) / len(diffs), 4), max_abs_ll_diff=round(max(diffs), 4))
            out["tasks"][task] = row
            print(f"{task}: acc served {row['acc']['served']} / bundled {row['acc']['bundled']}, acc_norm "
                  f"{row['acc_norm']['served']} / {row['acc_norm']['bundled']}; chosen answer (acc) differs on "
                  f"{row['acc_choice_differs']}/{row['items']} items; mean |d loglik| {row['mean_abs_ll_diff']}")
        out["seconds"] = {"served": round(t_served, 1), "bundled": round(t_local, 1)}
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            r = audit(load_lm(spec, http=HttpOptions(concurrency=2)),
                      AuditConfig(task="gsm8k", data_dir=Path(args.data_dir), limit=args.gsm8k_limit,
                                  perturbations=["numbers"], signals=["robustness", "verbatim", "permutation"],
                                  max_tokens=128, bootstrap=500, cache=Path(tmp) / "c.sqlite"), progress=False)
        out["gsm8k_audit"] = {"seconds": round(time.perf_counter() - t0, 1),
                              "verdicts": {v.signal: v.verdict[:160] for v in r.verdicts}}
        print("gsm8k audit:", json.dumps(out["gsm8k_audit"], indent=1))
    with server(args.threads, "--logits_all", "False") as (spec, _):
        try:
            evaluate(load_lm(spec), EvalConfig(tasks=["piqa"], limit=2, data_dir=Path(args.data_dir), cache="none"),
                     progress=False)
            out["no_logprobs_server"] = "no error (unexpected)"
        except PrimerError as e:
            out["no_logprobs_server"] = str(e)
        print("server without prompt log-probs:", out["no_logprobs_server"])
    diff = max(abs(r[m]["served"] - r[m]["bundled"]) for r in out["tasks"].values() for m in ("acc", "acc_norm"))
    # ours / ref: seconds to score the items through the server / in-process (the agreement is max_abs_acc_diff)
    out.update(max_abs_acc_diff=round(diff, 1), ours=out["seconds"]["served"], ref=out["seconds"]["bundled"],
               ratio=round(t_served / t_local, 3))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
