"""Where one decode step's time goes, on the fast CPU path: matmuls, attention, the rest (Python
dispatch, norms, rotary, residual adds), and the engine around the forward (sampling, detokenizing).

    python bench/decode_profile.py                      # bundled SmolLM2-135M Q4_1, batches 1 and 32
    python bench/decode_profile.py --batch 1 16 64 --context 96 --threads 2

Two forwards of the same step, on the same packed weights and cache:
  * native: `FastDecoder.step` (primer's kernels for the matmuls, RMSNorm, rotary and per-row attention);
  * torch:  `FastDecoder.__call__` (primer's matmul kernel, the rest as torch ops; attention is SDPA
    over the cache padded to the longest row, with a mask), the decode step before the native one.
Parts are timed alone with the step's own shapes (each layer's matmuls; each layer's attention);
"rest" is the step minus them. "engine" is one `Engine.step()` minus its forward. Medians of --repeats.
The matmuls run as the step runs them (int8 activation rows, VNNI); the same matmuls with fp32
activations (the path scores use, and decode before int8 activations) are timed beside them.
Ends with one JSON line: per batch, milliseconds per step of each part on each forward.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def median_ms(fn, repeats: int) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return 1000 * statistics.median(ts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bundled")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--context", type=int, default=64, help="positions already in each row's cache (default: 64)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    from primer.model import kernels
    from primer.model.engine import Engine
    from primer.model.sampling import SamplingParams
    from primer.weights.load import load_model

    lm = load_model(args.model)
    out = {"model": args.model, "threads": args.threads, "context": args.context, "batches": {}}
    print(f"{'batch':>5} {'forward':>8} {'step ms':>8} {'matmul':>8} {'attention':>10} {'rest':>8} {'engine':>8}")
    for B in args.batch:
        eng = Engine(lm, max_batch=B, fast=True)
        if eng.runner.step is None:
            raise SystemExit(f"bench: primer's kernels are unavailable here ({kernels.why_not()})")
        g = torch.Generator().manual_seed(0)
        for _ in range(B):
            eng.submit(torch.randint(0, 40000, (args.context,), generator=g).tolist(),
                       SamplingParams(max_new_tokens=10_000, ignore_eos=True))
        eng.step()  # prefills every row
        runner, dec = eng.runner, eng.runner.forward
        cfg = dec.cfg
        tokens, pos = [11] * B, [args.context] * B
        C, nh, nkv, hs = cfg.n_embd, cfg.n_head, cfg.n_kv_head, cfg.head_dim
        h, y = torch.randn(B, C), torch.randn(B, nh * hs)
        u = torch.randn(B, cfg.intermediate_size)

        def matmuls(act8=True):  # as the decode step runs them: int8 activation rows (act8)
            for L in dec.layers:
                L["qkv"](h, act8=act8), L["o"](y, act8=act8), L["up"](h, act8=act8), L["down"](u, act8=act8)
            dec.head(h, act8=act8)

        qkv = torch.randn(B, (nh + 2 * nkv) * hs)
        pt = torch.tensor(pos)
        S = args.context + 1
        mask = (torch.arange(S) <= pt[:, None]).view(B, 1, 1, S)

        def attend_native():
            for li in range(cfg.n_layer):
                dec.ext.attend(qkv, runner.cache.k[li], runner.cache.v[li], pt, nh, nkv)

        q = torch.randn(B, nkv, nh // nkv, hs)

        def attend_torch():
            for li in range(cfg.n_layer):
                k, v = runner.cache.k[li][:B, :, :S], runner.cache.v[li][:B, :, :S]
                F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

        step = runner.step
        with torch.inference_mode():
            mm = median_ms(matmuls, args.repeats)
            mm_fp32 = median_ms(lambda: matmuls(False), args.repeats)  # fp32 activations (what scoring runs)
            native = median_ms(lambda: runner.decode(tokens, pos), args.repeats)
            runner.step = None
            torched = median_ms(lambda: runner.decode(tokens, pos), args.repeats)
            runner.step = step
            att_n, att_t = median_ms(attend_native, args.repeats), median_ms(attend_torch, args.repeats)
        whole = median_ms(eng.step, args.repeats)  # decodes one token for every row (positions advance)
        row = {}
        for name, total, att in (("native", native, att_n), ("torch", torched, att_t)):
            row[name] = {"step_ms": round(total, 2), "matmul_ms": round(mm, 2), "attention_ms": round(att, 2),
                         "rest_ms": round(total - mm - att, 2)}
            print(f"{B:>5} {name:>8} {total:>8.2f} {mm:>8.2f} {att:>10.2f} {total - mm - att:>8.2f}"
                  + (f" {whole - native:>8.2f}" if name == "native" else ""))
        row["native"]["engine_ms"] = round(whole - native, 2)
        row["matmul_fp32_activations_ms"] = round(mm_fp32, 2)
        print(f"{B:>5} matmuls with fp32 activations instead of int8: {mm_fp32:.2f} ms")
        row["native_tok_s"] = round(B * 1000 / whole, 1)
        out["batches"][str(B)] = row
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
