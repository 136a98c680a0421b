"""`primer generate`: complete a prompt with a model (the bundled SmolLM2 by default), streaming."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("generate", help="complete a prompt, streaming tokens to stdout")
    p.add_argument("prompt", help="text to continue")
    p.add_argument("--model", default="bundled", help="'bundled', a .gguf file, an HF dir or a primer checkpoint")
    p.set_defaults(func=run)


def run(args) -> int:
    from primer.errors import PrimerError

    raise PrimerError("generate is not implemented yet")
