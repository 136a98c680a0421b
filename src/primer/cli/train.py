"""`primer train [--recipe R] [flags]`: pretrain on token shards; the same command under torchrun.

    primer train --recipe recipes/cpu-tiny.toml
    torchrun --nproc_per_node 8 -m primer train --recipe recipes/phi-1.5.toml --parallel fsdp
"""

from __future__ import annotations


def register(sub) -> None:
    from primer.config import add_arguments
    from primer.train.config import TrainConfig

    p = sub.add_parser(
        "train",
        help="pretrain a model on token shards (CPU, one GPU, or torchrun with DDP/FSDP)",
        description="Train a model from the shape registry on `primer tokenize` shards. Flags override the "
        "[train] section of --recipe. Rerunning the same command resumes from the last checkpoint.",
    )
    p.add_argument("--recipe", default=None, help="recipe file whose [train] section gives the fields")
    add_arguments(p, TrainConfig)
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    import os

    from primer.config import from_args, load_section
    from primer.train import TrainConfig, train
    from primer.train.config import parse_overrides

    base = load_section(args.recipe, "train", TrainConfig) if args.recipe else None
    if hasattr(args, "model_overrides"):
        # NAME=VALUE,...; it adds to (and wins over) a recipe's table instead of replacing it.
        args.model_overrides = {**(base.model_overrides if base else {}), **parse_overrides(args.model_overrides)}
    cfg = from_args(TrainConfig, args, base)
    summary = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        brief = {k: getattr(summary, k) for k in ("steps", "tokens", "params", "final_loss", "val_loss", "tokens_per_s",
                                                  "mfu", "checkpoint", "out_dir")}
        print(json.dumps(brief, indent=2))
    return 0
