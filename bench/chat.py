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
               "before": {}, "after": {}, "after_minus_before_ci95": {}}
    for r in s.rows:
        key = f"{r.task}:{r.metric}"
        for who, ci in (("before", r.before_ci), ("after", r.after_ci)):
            v = getattr(r, who)
            summary[who][key] = None if v is None else round(100 * v, 2)
            if ci:
                summary[who][key + ":ci95"] = [round(100 * c, 2) for c in ci]
        if r.diff_ci:
            summary["after_minus_before_ci95"][key] = [round(100 * c, 2) for c in r.diff_ci]
    (Path(args.out) / "chat-summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
