"""The `primer` command: one verb per stage, each a thin leaf over a library function.

Each leaf module `primer.cli.<verb>` defines `register(subparsers)`, which adds its parser and
sets `func` to a function taking the parsed namespace. Leaves import heavy libraries (torch...)
inside that function so `primer --help` stays fast, and never import each other.
Expected errors (`PrimerError`) print one line and exit 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from primer.errors import PrimerError

# Order is the order shown in `primer --help`: the flow of the pipeline.
LEAVES = [
    "generate",
    "chat",
    "topics",
    "synth",
    "curate",
    "eval",
    "tokenize",
    "train",
    "tune",
    "audit",
    "export",
    "index",
    "run",
    "report",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="primer",
        description="Build small language models the phi way: synthetic textbooks, curation, "
        "training, honest evaluation, on-device export.",
    )
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name in LEAVES:
        importlib.import_module(f"primer.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except PrimerError as e:
        print(f"primer {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"primer {args.verb}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
