"""What quantization costs: a model re-exported by `primer export` as f16 / q8_0 / q4_0 / q4_1, each file's
WikiText-2 perplexity measured by llama.cpp (llama-cpp-python) and by primer on the same file, with sizes.

Perplexity is llama.cpp's `llama-perplexity` method, reproduced: the whole text tokenized once (BOS first
when the vocabulary adds one), cut into windows of --ctx tokens, each window evaluated alone and only
its second half scored (every scored token sees at least ctx/2 tokens of context); ppl = exp(mean NLL).
llama.cpp's side tokenizes with llama.cpp and must give primer's ids (checked). Both engines score
the same windows of the same file; they differ only in arithmetic (llama.cpp multiplies 4/8-bit
weights with 8-bit-quantized activations, primer dequantizes to fp32). The ± is the standard error
of the mean NLL carried to ppl, as llama-perplexity prints it. llama.cpp runs on its plain CPU path
(`primer.weights.llamacpp.open_llama`: the AMX path of llama-cpp-python 0.3.16 is wrong for 4-bit weights).

    python bench/export.py --model bundled --chunks 100          # CPU, ~30 min on 2 cores
    python bench/export.py --model bundled --chunks 0            # every window (~580), e.g. on a GPU box

Ends with one JSON line: {"ours": primer's ppl of the q4_0 file, "ref": llama.cpp's, "ratio", "rows": [...]}.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

QUANTS = ("f16", "q8_0", "q4_0", "q4_1")


def windows(ids: list[int], ctx: int, chunks: int, bos: int | None) -> list[list[int]]:
    n = len(ids) // ctx
    n = min(n, chunks) if chunks else n
    out = []
    for i in range(n):
        w = ids[i * ctx: (i + 1) * ctx]
        if bos is not None:
            w = [bos] + w[1:]  # llama-perplexity puts BOS first in every window when the vocab adds one
        out.append(w)
    return out


def nll_second_half(logits: torch.Tensor, w: list[int]) -> np.ndarray:
    """NLL of tokens ctx/2+1 .. ctx-1 given everything before them."""
    first = len(w) // 2
    logp = F.log_softmax(logits[first:-1].float(), dim=-1)
    target = torch.tensor(w[first + 1:])
    return -logp.gather(-1, target[:, None])[:, 0].numpy()


def ppl(nlls: np.ndarray) -> tuple[float, float]:
    m, se = float(nlls.mean()), float(nlls.std(ddof=1) / math.sqrt(len(nlls)))
    return math.exp(m), math.exp(m) * se


def primer_nlls(path: Path, wins: list[list[int]], batch: int, device: str) -> np.ndarray:
    from primer.weights.load import load_model

    model = load_model(path, device=device).model
    out = []
    with torch.inference_mode():
        for b in range(0, len(wins), batch):
            x = torch.tensor(wins[b: b + batch], device=device)
            logits = model(x).cpu()
            out += [nll_second_half(logits[i], w) for i, w in enumerate(wins[b: b + batch])]
    return np.concatenate(out)


def llama_nlls(path: Path, text: str, want: list[int], wins: list[list[int]], ctx: int, threads: int) -> np.ndarray:
    from primer.weights.llamacpp import open_llama

    llm = open_llama(path, n_ctx=ctx, n_batch=ctx, logits_all=True, n_threads=threads, verbose=False)
    try:
        theirs = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        if theirs != want:
            first = next((i for i, (a, b) in enumerate(zip(theirs, want)) if a != b), min(len(theirs), len(want)))
            raise SystemExit(f"{path}: llama.cpp tokenizes the text differently from primer (first difference at {first})")
        out = []
        for w in wins:
            llm.reset()
            llm.eval(w)
            out.append(nll_second_half(torch.from_numpy(np.array(llm.scores[: len(w)], dtype=np.float32)), w))
        return np.concatenate(out)
    finally:
        llm.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bundled", help="any model primer loads ('bundled', .gguf, HF dir, checkpoint)")
    ap.add_argument("--text", default=None, help="text file (default: shared/benchmarks WikiText-2 raw test)")
    ap.add_argument("--ctx", type=int, default=512, help="window length in tokens (llama-perplexity's -c; default 512)")
    ap.add_argument("--chunks", type=int, default=100, help="windows to score (llama-perplexity's --chunks; 0 = all)")
    ap.add_argument("--quants", default=",".join(QUANTS))
    ap.add_argument("--out-dir", default=None, help="where the exported files go (default: a temporary directory)")
    ap.add_argument("--batch", type=int, default=4, help="primer windows per forward")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)

    from primer.common.paths import benchmark_dir
    from primer.weights.export import ExportConfig, export_model
    from primer.weights.load import load_model, resolve_spec

    torch.set_num_threads(args.threads)
    text_path = Path(args.text) if args.text else Path(benchmark_dir() or "../shared/benchmarks") / "wikitext2" / "wikitext-2-raw-test.txt"
    text = text_path.read_text(encoding="utf-8")
    tok = load_model(args.model).tokenizer
    ids = tok.encode(text, add_special_tokens=False)
    wins = windows(ids, args.ctx, args.chunks, tok.bos_id if tok.add_bos else None)
    print(f"{text_path.name}: {len(ids):,} tokens, {len(wins)} windows of {args.ctx}, "
          f"{len(wins) * (args.ctx // 2 - 1):,} scored tokens", flush=True)
    out_dir = Path(args.out_dir or tempfile.mkdtemp(prefix="primer-export-bench-"))
    files = []
    kind, src = resolve_spec(args.model)
    if kind == "gguf":
        files.append(("source file", src))
    for q in args.quants.split(","):
        files.append((q, export_model(args.model, out_dir / f"model-{q}.gguf", ExportConfig(quant=q)).path))
    rows = []
    for name, path in files:
        t0 = time.perf_counter()
        ours = ppl(primer_nlls(path, wins, args.batch, args.device))
        t1 = time.perf_counter()
        ref = ppl(llama_nlls(path, text, ids, wins, args.ctx, args.threads))
        t2 = time.perf_counter()
        rows.append({"file": name, "bytes": path.stat().st_size, "ppl_llama_cpp": ref[0], "ppl_llama_cpp_se": ref[1],
                     "ppl_primer": ours[0], "ppl_primer_se": ours[1], "seconds_primer": round(t1 - t0, 1),
                     "seconds_llama_cpp": round(t2 - t1, 1)})
        print(f"  {name:12s} {path.stat().st_size / 2**20:7.1f} MiB  llama.cpp {ref[0]:.3f} ± {ref[1]:.3f}  "
              f"primer {ours[0]:.3f} ± {ours[1]:.3f}  ({t1 - t0:.0f} s / {t2 - t1:.0f} s)", flush=True)
    base = next((r for r in rows if r["file"] == "f16"), rows[0])
    print("\n| file | size (MiB) | ppl, llama.cpp | vs f16 | ppl, primer | vs f16 |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        d_ref = 100 * (r["ppl_llama_cpp"] / base["ppl_llama_cpp"] - 1)
        d_ours = 100 * (r["ppl_primer"] / base["ppl_primer"] - 1)
        print(f"| {r['file']} | {r['bytes'] / 2**20:.1f} | {r['ppl_llama_cpp']:.3f} ± {r['ppl_llama_cpp_se']:.3f} | "
              f"{d_ref:+.2f}% | {r['ppl_primer']:.3f} ± {r['ppl_primer_se']:.3f} | {d_ours:+.2f}% |")
    q4 = next((r for r in rows if r["file"] == "q4_0"), rows[-1])
    print(json.dumps({"ours": round(q4["ppl_primer"], 4), "ref": round(q4["ppl_llama_cpp"], 4),
                      "ratio": round(q4["ppl_primer"] / q4["ppl_llama_cpp"], 4), "windows": len(wins), "ctx": args.ctx,
                      "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
