"""`primer chat`: multi-turn chat with a model using its chat template (bundled SmolLM2 by default)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("chat", help="multi-turn chat REPL (reads stdin; /exit to leave)")
    p.add_argument("--model", default="bundled", help="'bundled', a .gguf file, an HF dir or a primer checkpoint")
    p.set_defaults(func=run)


def run(args) -> int:
    from primer.errors import PrimerError

    raise PrimerError("chat is not implemented yet")
