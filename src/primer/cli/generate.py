"""`primer generate`: continue a prompt with a model (the bundled SmolLM2 by default), streaming to stdout."""

from __future__ import annotations

from primer.cli.sampling import add_sampling_args, finish_note


def register(sub) -> None:
    p = sub.add_parser("generate", help="continue a prompt, streaming tokens to stdout",
                       description="Continue PROMPT with a model, streaming the text to stdout. Offline by default.")
    p.add_argument("prompt", help="text to continue")
    p.add_argument("--chat", action="store_true",
                   help="send PROMPT as a user message through the model's chat template")
    add_sampling_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from primer.model.generate import check_sampling, generate
    from primer.weights.load import load_model

    check_sampling(args.max_tokens, args.temperature, args.top_k, args.top_p, 1.0)  # before the model loads
    lm = load_model(args.model, decode_only=not args.exact)  # --exact runs the fp32 forward
    prompt = [{"role": "user", "content": args.prompt}] if args.chat else args.prompt

    def show(_row: int, piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    [r] = generate(lm, [prompt], max_new_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k,
                   top_p=args.top_p, seed=args.seed, stop=args.stop, on_token=show,
                   fast=False if args.exact else "auto")
    sys.stdout.write("\n")
    sys.stdout.flush()
    if (note := finish_note(r, lm.model.cfg.block_size)) is not None:
        print(note, file=sys.stderr)
    return 0
