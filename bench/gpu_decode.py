"""GPU decode speed: primer's generate (the decode engine) vs transformers' generate, same weights.

    PYTHONPATH=src python bench/gpu_decode.py                    # CUDA, smollm2-135m and phi-1.5 shapes, bf16
    PYTHONPATH=src python bench/gpu_decode.py --device cpu --tiny  # a seconds-long check of the script itself

Needs torch and transformers only (no GGUF file, no network): each shape is built with random
weights (seed 0) by primer, cast to bf16, written with `primer.weights.hf.save_hf_dir` and loaded by
`transformers.AutoModelForCausalLM`, so both sides multiply the same bf16 tensors. Measured, greedy,
every row generating exactly --new tokens (no EOS: the random models have none):
  * batch B (1 and 64): B different 32-token random prompts; tokens/s = B * new / wall time of the
    whole call (prefill included), as bench/generate.py measures on CPU;
  * prefill: one 512-token prompt, one new token; tokens/s = 512 / wall time.
The two sides alternate repeat by repeat after one warm-up call each; medians of --repeats.
primer runs its exact (`fast=False`) engine path, the one it uses on a GPU; transformers runs its
default `generate` (dynamic cache, SDPA attention). Both are checked to have made exactly the tokens counted.
Ends with one JSON line per shape and a last line with every case: {"ours", "ref", "ratio"}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

SHAPES = {False: ["smollm2-135m", "phi-1.5"], True: ["debug", "debug-phi"]}


def build(shape: str, device: str, dtype: torch.dtype, tmp: Path):
    """(primer Transformer, transformers model) holding the same random `dtype` weights on `device`."""
    from transformers import AutoModelForCausalLM

    from primer.model.transformer import ModelConfig, Transformer
    from primer.weights.hf import save_hf_dir

    torch.manual_seed(0)
    with torch.device(device):  # initialise where it runs: a 1.4B-parameter init is slow on a few CPU cores
        ours = Transformer(ModelConfig.from_name(shape))
    ours = ours.to(dtype).eval()
    d = save_hf_dir(ours, None, tmp / shape)
    # loaded in the default dtype and cast, which is exact for bf16 weights on every transformers version
    theirs = AutoModelForCausalLM.from_pretrained(str(d)).to(device=device, dtype=dtype).eval()
    return ours, theirs


def timed(fn, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--tiny", action="store_true", help="the debug shapes and a few tokens: checks the script runs")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 64], help="batch sizes (default: 1 64)")
    ap.add_argument("--new", type=int, default=None, help="new tokens per row (default: 128; --tiny: 8)")
    ap.add_argument("--prefill", type=int, default=512, help="prompt length of the prefill case (default: 512)")
    ap.add_argument("--repeats", type=int, default=3, help="measured repeats per side (default: 3)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from primer.model.generate import generate

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("bench: no CUDA device here; pass --device cpu (with --tiny for a quick check)")
    new = args.new or (8 if args.tiny else 128)
    prefill = min(args.prefill, 64) if args.tiny else args.prefill
    dtype = torch.bfloat16
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    import transformers

    env = {"device": gpu, "dtype": "bf16", "torch": torch.__version__, "transformers": transformers.__version__,
           "new_tokens": new, "repeats": args.repeats}
    print(f"{env}", flush=True)
    every = {}
    with tempfile.TemporaryDirectory() as tmp:
        for shape in SHAPES[args.tiny]:
            t0 = time.perf_counter()
            ours, theirs = build(shape, args.device, dtype, Path(tmp))
            V = ours.cfg.vocab_size
            print(f"{shape}: built in {time.perf_counter() - t0:.1f} s "
                  f"({sum(p.numel() for p in ours.parameters()) / 1e6:.0f}M parameters)", flush=True)
            g = torch.Generator().manual_seed(1)
            cases = [(f"batch{B}", B, 32, new) for B in args.batch] + [(f"prefill{prefill}", 1, prefill, 1)]
            result = {}
            for case, B, T, n in cases:
                ids = torch.randint(0, V, (B, T), generator=g)
                out: dict[str, list] = {"ours": [], "ref": []}

                def run_ours():
                    out["ours_ids"] = generate(ours, ids.tolist(), max_new_tokens=n, ignore_eos=True,
                                               batch_size=B, fast=False)

                def run_ref():
                    x = ids.to(args.device)
                    with torch.inference_mode():
                        out["ref_ids"] = theirs.generate(input_ids=x, attention_mask=torch.ones_like(x),
                                                         max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                                         pad_token_id=0)
                sides = {"ours": run_ours, "ref": run_ref}
                for fn in sides.values():  # warm-up: allocator, kernels, lazy inits
                    fn()
                for rep in range(args.repeats):
                    for side in (["ours", "ref"] if rep % 2 == 0 else ["ref", "ours"]):
                        out[side].append(timed(sides[side], args.device))
                toks = B * (T if case.startswith("prefill") else n)
                o, r = toks / statistics.median(out["ours"]), toks / statistics.median(out["ref"])
                result[case] = {"ours": round(o, 1), "ref": round(r, 1), "ratio": round(o / r, 3)}
                assert all(r.completion_tokens == n for r in out["ours_ids"]) and out["ref_ids"].shape == (B, T + n)
                print(f"  {case:<11} primer {o:>10.1f} tok/s   transformers {r:>10.1f} tok/s   "
                      f"primer/transformers {o / r:.2f}", flush=True)
            print(json.dumps({"shape": shape, **env, "cases": result}), flush=True)
            every[shape] = result
            ours = theirs = None  # free this shape before building the next
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
    flat = {f"{s}/{c}": v for s, cs in every.items() for c, v in cs.items()}
    print(json.dumps({"bench": "gpu_decode", **env,
                      "ours": {k: v["ours"] for k, v in flat.items()},
                      "ref": {k: v["ref"] for k, v in flat.items()},
                      "ratio": {k: v["ratio"] for k, v in flat.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
