"""`primer tune sft|dpo MODEL --data FILE...`: post-train a chat model on the training loop (CPU, GPU, torchrun).

    primer tune sft bundled --data chats.jsonl --out-dir runs/sft --max-steps 200
    primer tune dpo runs/sft/checkpoints/step_0000200 --data pairs.jsonl --beta 0.1 --out-dir runs/dpo
    torchrun --nproc_per_node 8 -m primer tune sft MODEL --data ... --parallel fsdp
"""

from __future__ import annotations


def register(sub) -> None:
    from primer.config import add_arguments
    from primer.tune.config import DPOConfig, SFTConfig

    p = sub.add_parser("tune", help="post-train a chat model: SFT on conversations, DPO/IPO on preference pairs",
                       description="Fine-tune a model ('bundled', a .gguf, an HF dir, a primer checkpoint) with its chat "
                       "template. Flags override the [tune.sft] / [tune.dpo] section of --recipe. Rerunning the same "
                       "command resumes from the last checkpoint.")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    for name, cls, what in (("sft", SFTConfig, "supervised fine-tuning, loss on assistant tokens only"),
                            ("dpo", DPOConfig, "DPO (sigmoid) or IPO on {prompt, chosen, rejected} pairs")):
        q = kinds.add_parser(name, help=what, description=cls.__doc__)
        q.add_argument("model_spec", nargs="?", default=None, metavar="MODEL",
                       help="model to tune: 'bundled', a .gguf, an HF dir or a primer checkpoint (default: the recipe's)")
        q.add_argument("--recipe", default=None, help=f"recipe file whose [tune.{name}] section gives the fields")
        add_arguments(q, cls, skip=("model",))
        q.set_defaults(func=run, config_class=cls)


def run(args) -> int:
    import json
    import os

    from primer.config import from_args, from_dict, read_recipe_file
    from primer.errors import PrimerError
    from primer.tune import dpo, sft

    cls = args.config_class
    base = None
    if args.recipe:
        table = read_recipe_file(args.recipe).get("tune", {}).get(args.kind)
        if not isinstance(table, dict):
            raise PrimerError(f"{args.recipe}: no [tune.{args.kind}] section")
        base = from_dict(cls, table, where=f"tune.{args.kind}")
    if args.model_spec is not None:
        args.model = args.model_spec
    cfg = from_args(cls, args, base)
    summary = (sft if args.kind == "sft" else dpo)(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        brief = {k: getattr(summary, k) for k in ("steps", "tokens", "final_loss", "tokens_per_s", "checkpoint", "out_dir",
                                                   "data")}
        print(json.dumps(brief, indent=2))
    return 0
