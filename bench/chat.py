"""The chat experiment: the bundled SmolLM2 through SFT and DPO on teacher-made data, evaluated before and after.

The steps are the `[tune]` stage's (`primer.pipeline.chat.run_chat_tune`; recipes/chat.toml runs them inside
`primer run`): conversations from --sources, on-policy preference pairs plus safety pairs, SFT then DPO, and
IFEval / XSTest / ARC-Easy / PIQA before and after on the same items. Each step resumes when rerun.

    python bench/chat.py --sources ../shared/benchmarks/c4_sample/c4_en_train_first1000.jsonl --out runs/chat \\
        --data-dir ../shared/benchmarks --ifeval-limit 100
Ends with one JSON line of the before/after numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from primer.config import add_arguments, from_args
    from primer.pipeline.chat import ChatTuneConfig, run_chat_tune

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", nargs="+", required=True, help="JSONL files with 'text' (synth/curate output, C4...)")
    ap.add_argument("--out", default="runs/chat")
    ap.add_argument("--device", default="cpu")
    add_arguments(ap, ChatTuneConfig, skip=("enabled",))
    args = ap.parse_args(argv)
    cfg = from_args(ChatTuneConfig, args)
    if cfg.data_dir is None:
        from dataclasses import replace

        from primer.common.paths import benchmark_dir

        cfg = replace(cfg, data_dir=benchmark_dir())
    s = run_chat_tune(cfg, args.sources, Path(args.out), print, device=args.device)
    summary = {"bench": "chat", "seconds": s.seconds, "conversations": s.conversations, "pairs": s.pairs,
               "before": {}, "after": {},
               "ifeval_prompt_loose_after_minus_before": {"diff": round(100 * s.ifeval_diff, 2),
                                                          "ci95": [round(100 * c, 2) for c in s.ifeval_ci]}}
    for r in s.rows:
        for who in ("before", "after"):
            v = getattr(r, who)
            summary[who][f"{r.task}:{r.metric}"] = None if v is None else round(100 * v, 2)
    (Path(args.out) / "chat-summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
