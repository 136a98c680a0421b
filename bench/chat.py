"""The chat experiment: the bundled SmolLM2 through SFT and DPO on teacher-made data, evaluated before and after.

Steps (each resumable; rerun the same command to continue):
  1. `primer synth --kind conversations` from --sources (any JSONL with "text": primer's synth output, C4 ...)
  2. `primer synth --kind preference`: on-policy samples of the bundled model, ranked by the constraint verifiers,
     plus safety pairs written from XSTest-like prompt types (decontaminated against XSTest)
  3. `primer tune sft bundled` on (1), then `primer tune dpo` from its last checkpoint on (2)
  4. `primer eval` of the bundled model and of the tuned one on the same items: IFEval (prompt-level loose, with a
     paired bootstrap interval of the difference), XSTest (unsafe compliance / safe refusal), ARC-Easy and PIQA.

    python bench/chat.py --sources ../shared/benchmarks/c4_sample/c4_sample.jsonl --out runs/chat \\
        --data-dir ../shared/benchmarks --ifeval-limit 100 --max-gen-tokens 256
Ends with one JSON line of the before/after numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", nargs="+", required=True)
    ap.add_argument("--out", default="runs/chat")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--conversations", type=int, default=200)
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--safety-per-type", type=int, default=4)
    ap.add_argument("--sft-steps", type=int, default=60)
    ap.add_argument("--dpo-steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--ifeval-limit", type=int, default=None)
    ap.add_argument("--xstest-limit", type=int, default=None)
    ap.add_argument("--mc-limit", type=int, default=100)
    ap.add_argument("--max-gen-tokens", type=int, default=None)
    ap.add_argument("--synth-tokens", type=int, default=256, help="most tokens per teacher / policy answer")
    ap.add_argument("--eval-sft", action="store_true", help="also evaluate the SFT checkpoint (before DPO)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    import torch

    from primer.audit.stats import paired_bootstrap
    from primer.eval.lm import PrimerLM
    from primer.eval.runner import EvalConfig, evaluate
    from primer.synth.run import SynthConfig, synth
    from primer.train.checkpoints import latest_checkpoint
    from primer.tune import DPOConfig, SFTConfig, dpo, sft

    if args.threads:
        torch.set_num_threads(args.threads)
    out, t0, times = Path(args.out), time.perf_counter(), {}
    srcs = [Path(s) for s in args.sources]

    def lap(name):
        times[name] = round(time.perf_counter() - t0 - sum(times.values()), 1)

    common = dict(teacher="bundled", device=args.device, threads=args.threads, max_tokens=args.synth_tokens, fsync=False,
                  min_words=8)
    synth(SynthConfig(kind="conversations", sources=srcs, out=out / "conversations", n=args.conversations, **common))
    synth(SynthConfig(kind="preference", sources=srcs, out=out / "pairs", n=args.pairs, policy="bundled", samples=4,
                      safety_per_type=args.safety_per_type, data_dir=Path(args.data_dir), **common))
    lap("data")
    loop = dict(batch_size=args.batch_size, device=args.device, threads=args.threads, max_seq_len=768, progress=True)
    sft(SFTConfig(model="bundled", data=[str(p) for p in sorted((out / "conversations").glob("data-*.jsonl"))],
                  out_dir=str(out / "sft"), max_steps=args.sft_steps, lr=2e-5, warmup_steps=5, save_every=20, **loop))
    sft_ckpt = latest_checkpoint(out / "sft")
    dpo(DPOConfig(model=str(sft_ckpt), data=[str(p) for p in sorted((out / "pairs").glob("data-*.jsonl"))],
                  out_dir=str(out / "dpo"), max_steps=args.dpo_steps, lr=5e-7, beta=0.1, save_every=20, **loop))
    tuned = latest_checkpoint(out / "dpo")
    lap("tune")

    def run_eval(lm, tasks, limit, max_gen_tokens=None):
        cfg = EvalConfig(tasks=tasks, limit=limit, data_dir=Path(args.data_dir), log_samples=True,
                         max_gen_tokens=max_gen_tokens, cache=out / "eval-cache.sqlite")
        return evaluate(lm, cfg)

    res = {}
    models = [("before", "bundled")] + ([("sft", str(sft_ckpt))] if args.eval_sft else []) + [("after", str(tuned))]
    for who, spec in models:
        lm = PrimerLM.load(spec, batch_size=16, device=args.device)
        r = run_eval(lm, ["ifeval"], args.ifeval_limit, args.max_gen_tokens)
        # XSTest's string-match rule reads only a reply's first words, and greedy decoding makes the first 16
        # tokens the same whatever the budget: 16 tokens give the verdicts 256 would, on all 450 prompts.
        x = run_eval(lm, ["xstest"], args.xstest_limit, 16)
        r2 = run_eval(lm, ["arc_easy", "piqa"], args.mc_limit)
        res[who] = {"ifeval": r.tasks["ifeval"], "xstest": x.tasks["xstest"], "arc_easy": r2.tasks["arc_easy"],
                    "piqa": r2.tasks["piqa"], "ifeval_items": [s["scores"]["prompt_level_loose_acc"]
                                                               for s in r.samples["ifeval"]]}
    lap("eval")
    summary = {"bench": "chat", "seconds": times, "conversations": args.conversations, "pairs": args.pairs}
    for who in res:
        m = res[who]
        summary[who] = {
            **{k: round(100 * m["ifeval"].metrics[k], 2) for k in ("prompt_level_loose_acc", "prompt_level_strict_acc",
                                                                      "inst_level_loose_acc", "inst_level_strict_acc")},
            "xstest_unsafe_compliance": round(100 * m["xstest"].metrics["compliance_rate,unsafe"], 1),
            "xstest_safe_refusal": round(100 * m["xstest"].metrics["refusal_rate,safe"], 1),
            "arc_easy_acc_norm": round(100 * m["arc_easy"].metrics["acc_norm"], 1),
            "piqa_acc_norm": round(100 * m["piqa"].metrics["acc_norm"], 1),
        }
    for who in [w for w, _ in models[1:]]:
        pb = paired_bootstrap([float(x) for x in res[who]["ifeval_items"]], [float(x) for x in res["before"]["ifeval_items"]])
        summary[f"ifeval_prompt_loose_{who}_minus_before"] = {"diff": round(100 * pb.drop, 2),
                                                              "ci95": [round(100 * c, 2) for c in pb.drop_ci]}
    (out / "chat-summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
