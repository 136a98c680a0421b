"""`primer chat`: multi-turn chat with a model through its chat template (bundled SmolLM2 by default).

Reads one user message per line from stdin (interactive or piped), streams each reply to stdout,
and keeps the conversation as context. `/exit` (or end of input) leaves, `/reset` starts over.
With `--index IDX`, each message is searched in the index together with the message before it (a
follow-up often names its subject only there; `primer.index.prompt.chat_query`), and its top
`--passages` chunks precede it (`with_passages`); the sources are listed under the reply.
"""

from __future__ import annotations


def register(sub) -> None:
    from primer.cli.sampling import add_sampling_args

    p = sub.add_parser("chat", help="multi-turn chat REPL on stdin/stdout (/exit to leave)",
                       description="Chat with a model: one message per line on stdin; /exit leaves, /reset forgets.")
    p.add_argument("--system", default=None, help="system message (default: the template's own)")
    p.add_argument("--index", default=None, help="search index (primer index build): passages go before each message")
    p.add_argument("--passages", type=int, default=3, help="retrieved chunks per message with --index (default: 3)")
    add_sampling_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from primer.cli.sampling import finish_note
    from primer.errors import PrimerError
    from primer.index.prompt import chat_query, with_passages
    from primer.model.generate import check_sampling, generate
    from primer.weights.load import load_model

    check_sampling(args.max_tokens, args.temperature, args.top_k, args.top_p, 1.0)  # before the model loads
    index = None
    if args.index is not None:
        from primer.index.bm25 import Index

        if args.passages < 1:
            raise PrimerError(f"--passages must be at least 1 with --index, got {args.passages}")
        index = Index.load(args.index)
    lm = load_model(args.model, decode_only=not args.exact)  # --exact runs the fp32 forward
    if lm.tokenizer is None or not getattr(lm.tokenizer, "chat_template", None):
        raise PrimerError(f"model '{args.model}' has no chat template; use `primer generate` instead")
    interactive = sys.stdin.isatty()
    history: list[dict] = [{"role": "system", "content": args.system}] if args.system else []
    asked: list[str] = []  # the user's own messages, without passages: what the index is searched with
    ctx = lm.model.cfg.block_size

    def show(_row: int, piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    while True:
        if interactive:
            sys.stdout.write("> ")
            sys.stdout.flush()
        line = sys.stdin.readline()
        if not line:
            break
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            break
        if text == "/reset":
            history = history[:1] if args.system else []
            asked = []
            continue
        asked.append(text)
        hits = index.search(chat_query(asked), k=args.passages) if index is not None else []
        text = with_passages(text, hits)
        history.append({"role": "user", "content": text})
        # drop the oldest turns when the conversation no longer fits the context
        while True:
            n = len(lm.tokenizer.apply_chat_template(history, add_generation_prompt=True, tokenize=True))
            first = 1 if args.system else 0
            if n + min(args.max_tokens, 64) < ctx or len(history) - first <= 1:
                break
            del history[first: first + 2]
        [r] = generate(lm, [history], max_new_tokens=args.max_tokens, temperature=args.temperature,
                       top_k=args.top_k, top_p=args.top_p, seed=args.seed, stop=args.stop, on_token=show,
                       fast=False if args.exact else "auto")
        sys.stdout.write("\n")
        for h in hits:
            sys.stdout.write(f"  source {h.cite()}\n")
        sys.stdout.flush()
        if (note := finish_note(r, ctx)) is not None:
            print(note, file=sys.stderr)
        history.append({"role": "assistant", "content": r.text})
    return 0
