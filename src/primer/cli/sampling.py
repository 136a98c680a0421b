"""Flags and notes shared by `primer generate` and `primer chat` (leaves never import each other)."""

from __future__ import annotations


def add_sampling_args(p) -> None:
    p.add_argument("--model", default="bundled",
                   help="'bundled' (SmolLM2-135M-Instruct, offline), a .gguf file, an HF model dir or a primer checkpoint dir")
    p.add_argument("--max-tokens", type=int, default=256, help="most tokens to generate (default: 256)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default: 0)")
    p.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens; 0 = off (default: 0)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass; 1 = off (default: 1)")
    p.add_argument("--seed", type=int, default=None, help="seed for sampling (default: random)")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="stop when this text appears (repeatable); it is not printed")
    p.add_argument("--exact", action="store_true",
                   help="decode with the fp32 reference forward instead of the fast int4/int8 CPU path")


def finish_note(result, context: int) -> str | None:
    """One line when a reply was cut (finish reason "length"), with the counts, as servers report it."""
    if result.finish_reason != "length":
        return None
    used = result.prompt_tokens + result.completion_tokens
    if used >= context:
        return (f"[finish_reason=length: the context is full: {result.prompt_tokens} prompt + "
                f"{result.completion_tokens} new tokens = the model's {context}; shorten the prompt for a longer reply]")
    return f"[finish_reason=length: stopped at --max-tokens ({result.completion_tokens} new tokens)]"
