"""`primer run [RECIPE] [--run-dir DIR]`: run every stage of a recipe, skipping finished ones."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "run",
        help="run a whole recipe (synth, curate, tokenize, train, eval, audit, report); reruns skip finished stages",
        description="Run every stage of a recipe into a run directory. Each stage is fingerprinted by its config "
        "and inputs: rerunning the same command skips finished stages, and changing one stage's section re-runs "
        "only it and the stages after it. With no RECIPE, the built-in default runs offline on a CPU.",
    )
    p.add_argument("recipe", nargs="?", default=None,
                   help="recipe file (.toml/.yaml) with [synth] [curate] [tokenize] [train] [eval] [audit] sections; "
                   "default: the built-in default recipe")
    p.add_argument("--run-dir", default=None, help="where stage outputs go (default: [run] run_dir, else runs/<name>)")
    p.add_argument("--stages", default=None,
                   help="comma-separated stages to run, even when they look up to date (the others must already be "
                   "done); e.g. after moving a run directory or losing a stage's files")
    p.add_argument("--no-report", action="store_true", help="do not write RUN_DIR/report.html at the end")
    p.add_argument("--print-recipe", action="store_true", help="print the resolved recipe as TOML and exit")
    p.set_defaults(func=run)


def run(args) -> int:
    from primer.pipeline.report import to_toml
    from primer.pipeline.runner import default_stages, load_recipe, recipe_record, run_recipe

    recipe = load_recipe(args.recipe)
    force: tuple[str, ...] = ()
    if args.stages:
        recipe.run.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
        force = tuple(recipe.run.stages)
    if args.print_recipe:
        print(to_toml(recipe_record(recipe, default_stages())))
        return 0
    hint = ["primer", "run"] + ([args.recipe] if args.recipe else []) + (
        ["--run-dir", args.run_dir] if args.run_dir else []) + (["--stages", args.stages] if args.stages else [])
    run_recipe(recipe, args.run_dir, recipe_path=args.recipe, write_report=False if args.no_report else None,
               resume_hint=" ".join(hint), force=force)
    return 0
