"""Peak memory (max RSS) of `primer generate` and `primer eval` beside llama.cpp doing the same work.

    python bench/memory.py --data-dir ../shared/benchmarks          # bundled SmolLM2-135M-Instruct Q4_1
    python bench/memory.py --new 64 --limit 50 --threads 2

Each row is one fresh process, measured by the kernel's high-water mark of its resident set
(`/usr/bin/time -v`'s "Maximum resident set size", VmHWM for the server), so start-up, loading and
the work all count:
  * primer generate: `primer generate PROMPT --max-tokens N` (greedy, the packed decode-only load);
  * llama.cpp generate: llama-cpp-python on the same GGUF (`primer.weights.llamacpp.open_llama`), the same
    prompt tokens prefilled, then primer's N generated tokens fed one decode step at a time (the same
    work; how many of its own greedy picks agree is printed);
  * primer eval: `primer eval bundled --tasks arc_easy --limit L` (the exact fp32 model, as scores need);
  * llama.cpp eval: llama-cpp-python's OpenAI server (`SERVER_MAIN`, prompt log-probs on) serving that same
    eval to `primer eval openai:...`; its own peak, not the client's.
  * runtime: each side's process before any weight (`import torch` and primer's decode modules; `import
    llama_cpp`), and the generate row less it: what the model, its caches and the work add to the runtime.
Prints the table, then one JSON line (ours / llama.cpp per row; `ratio` is the generate row).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

PROMPT = "The history of the printing press begins"
ROOT = Path(__file__).resolve().parents[1]

# llama.cpp's side of the generate row: argv = model path, threads, prompt ids, primer's new ids (JSON)
LLAMA_GEN = """
import json, sys
import llama_cpp
import numpy as np
from primer.weights.llamacpp import open_llama
path, threads, prompt, new = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
llm = open_llama(path, n_ctx=len(prompt) + len(new) + 8, n_threads=threads, n_threads_batch=threads, verbose=False)
llm.eval(prompt)
agree = 0
for t in new:  # the last position's logits (logits_all is off, so Llama.scores is not kept)
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
    agree += int(np.argmax(logits)) == t
    llm.eval([t])
print(json.dumps({"agree": agree, "of": len(new)}))
"""


def max_rss_mb(cmd: list[str]) -> tuple[float, str]:
    """(peak RSS MB, stdout) of `cmd` run under /usr/bin/time -v."""
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd[:4])} ... failed:\n{r.stderr[-2000:]}")
    kb = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    return int(kb.group(1)) / 1024, r.stdout


def vm_hwm_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("PRIMER_DATA"), help="benchmark data (eval rows; default $PRIMER_DATA)")
    ap.add_argument("--new", type=int, default=64, help="new tokens generated (default: 64)")
    ap.add_argument("--limit", type=int, default=50, help="arc_easy items evaluated (default: 50)")
    ap.add_argument("--threads", type=int, default=2, help="threads on both sides (default: 2)")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(ROOT / "src"))
    from primer.weights.bundled import bundled_gguf_path
    from primer.weights.load import load_model

    path = str(bundled_gguf_path())
    # every child (the CLI, llama.cpp's script and server) runs this checkout's primer
    os.environ["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    primer = [sys.executable, "-m", "primer"]
    rows: dict[str, dict] = {}

    ours, _ = max_rss_mb([*primer, "generate", PROMPT, "--max-tokens", str(args.new)])
    # the tokens `primer generate` printed, for llama.cpp to run through the same decode steps
    from primer.model.generate import generate

    lm = load_model("bundled", decode_only=True)
    [r] = generate(lm, [PROMPT], max_new_tokens=args.new)
    prompt_ids = lm.tokenizer.encode(PROMPT)
    theirs, out = max_rss_mb([sys.executable, "-c", LLAMA_GEN, path, str(args.threads), json.dumps(prompt_ids),
                              json.dumps(r.token_ids)])
    agree = json.loads(out.strip().splitlines()[-1])
    rows["generate"] = {"ours_mb": round(ours), "llama_cpp_mb": round(theirs), "ratio": round(ours / theirs, 2),
                        "tokens": len(r.token_ids), "llama_cpp_greedy_agrees": f"{agree['agree']}/{agree['of']}"}

    # the runtime alone: what a process holds before it reads a weight
    ours_rt, _ = max_rss_mb([sys.executable, "-c", "import torch, primer.model.generate, primer.weights.load"])
    theirs_rt, _ = max_rss_mb([sys.executable, "-c", "import llama_cpp, numpy, primer.weights.llamacpp"])
    rows["runtime"] = {"ours_mb": round(ours_rt), "llama_cpp_mb": round(theirs_rt),
                       "ratio": round(ours_rt / theirs_rt, 2)}
    g = rows["generate"]
    above = (g["ours_mb"] - ours_rt, g["llama_cpp_mb"] - theirs_rt)
    rows["generate above runtime"] = {"ours_mb": round(above[0]), "llama_cpp_mb": round(above[1]),
                                      "ratio": round(above[0] / above[1], 2)}

    if args.data_dir:
        eval_args = ["--tasks", "arc_easy", "--limit", str(args.limit), "--data-dir", args.data_dir, "--cache", "none",
                     "--threads", str(args.threads)]
        ours, _ = max_rss_mb([*primer, "eval", "bundled", *eval_args])
        from served import server  # bench/served.py: llama-cpp-python's server on the bundled GGUF

        with server(args.threads) as (spec, proc):
            r2 = subprocess.run([*primer, "eval", spec, *eval_args], capture_output=True, text=True)
            if r2.returncode != 0:
                raise SystemExit(f"bench: primer eval against llama.cpp's server failed:\n{r2.stderr[-2000:]}")
            theirs = vm_hwm_mb(proc.pid)
        rows["eval"] = {"ours_mb": round(ours), "llama_cpp_mb": round(theirs), "ratio": round(ours / theirs, 2),
                        "items": args.limit}

    print(f"{'work':<24} {'primer MB':>10} {'llama.cpp MB':>13} {'ours/theirs':>12}")
    for work, row in rows.items():
        print(f"{work:<24} {row['ours_mb']:>10} {row['llama_cpp_mb']:>13} {row['ratio']:>12.2f}")
    g = rows["generate"]
    print(json.dumps({"bench": "memory", "ours": g["ours_mb"], "ref": g["llama_cpp_mb"], "ratio": g["ratio"],
                      "rows": rows, "threads": args.threads}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
