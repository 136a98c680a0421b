"""The `primer` command: one verb per stage, each a thin leaf over a library function.

Each leaf module `primer.cli.<verb>` defines `register(subparsers)`, which adds its parser and
sets `func` to a function taking the parsed namespace. Leaves import heavy libraries (torch...)
inside that function so `primer --help` stays fast, and never import each other.
Expected errors print one line and exit 2: `PrimerError`, an OS error a user causes and fixes (a
path not found, a file where a directory belongs, no permission, a read-only or full disk: the line
names the path), and a file that is not UTF-8 text. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from primer.common.files import OS_HINTS, os_problem
from primer.errors import PrimerError

# Order is the order shown in `primer --help`: the flow of the pipeline.
LEAVES = [
    "generate",
    "chat",
    "topics",
    "synth",
    "curate",
    "data",
    "eval",
    "tokenize",
    "train",
    "tune",
    "audit",
    "export",
    "index",
    "serve",
    "run",
    "report",
    "compare",
    "publish",
]


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The whole command, or (`verb`, one of LEAVES) only that verb's parser: each leaf brings its verb's
    config and its library's modules, and a run of one verb need not import the other seventeen
    (`primer generate` held ~11 MB more for them)."""
    parser = argparse.ArgumentParser(
        prog="primer",
        description="Build small language models the phi way: synthetic textbooks, curation, "
        "training, honest evaluation, on-device export.",
    )
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name in [verb] if verb in LEAVES else LEAVES:
        importlib.import_module(f"primer.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # a known verb first builds only its own parser; anything else (--help, a typo) the whole one, to list the verbs
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except PrimerError as e:
        return _fail(args.verb, str(e))
    except OSError as e:
        if e.errno not in OS_HINTS:
            raise
        return _fail(args.verb, os_problem(e))
    except UnicodeDecodeError as e:
        # readers name the file and line themselves; this is the net under one that does not
        return _fail(args.verb, f"an input is not UTF-8 text ({e.reason} at byte {e.start}); convert it to UTF-8 "
                     "(e.g. iconv -f latin1 -t utf-8) or remove it from the inputs")
    except KeyboardInterrupt:
        print(f"primer {args.verb}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return int(result or 0)


def _fail(verb: str, message: str) -> int:
    print(f"primer {verb}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
