"""`primer synth`: write synthetic textbook documents with a teacher; rerun the same command to resume."""

from __future__ import annotations


def register(sub) -> None:
    from primer.config import add_arguments
    from primer.synth.run import SynthConfig

    p = sub.add_parser(
        "synth",
        help="write textbook-style documents with a teacher over topics x formats x audiences (resumable)",
        description="Generate synthetic documents (textbook sections, word problems, stories, dialogues, code "
        "exercises; word problems and code exercises are kept only when their check passes in the sandbox) over "
        "the topic grid with a teacher: 'bundled' (offline), a .gguf file, or an "
        "OpenAI-compatible server (--teacher http://host:port/v1 --model NAME). Killed runs resume "
        "when rerun with the same arguments.",
    )
    p.add_argument("--recipe", metavar="FILE", help="TOML/YAML file with these fields (flags override it)")
    add_arguments(p, SynthConfig)
    p.set_defaults(func=run)


def run(args) -> int:
    from primer.config import from_args, load_recipe
    from primer.synth.run import SynthConfig, format_summary, synth

    base = load_recipe(args.recipe, SynthConfig) if args.recipe else None
    cfg = from_args(SynthConfig, args, base)
    summary = synth(cfg)
    print(format_summary(summary))
    return 0
