"""`primer tokenize INPUTS... --out DIR`: train (or load) a BPE tokenizer and write token shards."""

from __future__ import annotations


def register(sub) -> None:
    from primer.config import add_arguments
    from primer.tokens.shards import TokenizeConfig

    p = sub.add_parser(
        "tokenize",
        help="train a byte-level BPE (or use an existing tokenizer) and pack documents into token shards",
        description="Read documents (.jsonl with a text field, .txt split on <|endoftext|>, .parquet), train a "
        "byte-level BPE tokenizer on them (or load one with --tokenizer), and write OUT/tokenizer.json, "
        "OUT/tokens.json and train/val .bin shards. Flags override the [tokenize] section of --recipe.",
    )
    p.add_argument("inputs_pos", nargs="*", metavar="INPUT", help="document files or directories")
    p.add_argument("--recipe", default=None, help="recipe file whose [tokenize] section (or top level) gives the fields")
    add_arguments(p, TokenizeConfig, skip=("inputs",))
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from primer.config import from_args, load_section, to_dict
    from primer.tokens.shards import TokenizeConfig, tokenize_corpus

    base = load_section(args.recipe, "tokenize", TokenizeConfig) if args.recipe else None
    cfg = from_args(TokenizeConfig, args, base)
    if args.inputs_pos:
        cfg.inputs = list(args.inputs_pos)
    meta = tokenize_corpus(cfg, progress=args.progress)
    show = {k: v for k, v in to_dict(meta).items() if k not in ("config", "inputs")}
    print(json.dumps({"out": cfg.out, **show}, indent=2))
    return 0

