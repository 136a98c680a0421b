"""`primer data pull [TASKS] --out DIR` and `primer data check DIR`: benchmark data on any machine."""

from __future__ import annotations


def register(sub) -> None:
    from primer.common.paths import pulled_dir

    p = sub.add_parser("data", help="benchmark data: pull the standard sets from the Hugging Face Hub, check a folder",
                       description="Benchmark data in the layout primer reads (that of shared/benchmarks). eval, audit "
                       "and run look in --data-dir, $PRIMER_DATA, the pulled folder, ../shared/benchmarks, in that "
                       "order; `--data-dir embedded` is the small slice shipped with primer.")
    kinds = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = kinds.add_parser("pull", help="fetch tasks' datasets (lm-eval's HF ids) and convert them, with a MANIFEST")
    q.add_argument("tasks", nargs="?", default="",
                   help="comma-separated tasks, groups or folders (default: every set primer evaluates)")
    q.add_argument("--out", default=str(pulled_dir()), help=f"data folder to write (default {pulled_dir()})")
    q.add_argument("--from", dest="source_dir", default=None,
                   help="read datasets.save_to_disk copies under DIR/<dataset id>/<config>/<split> instead of the Hub")
    q.set_defaults(func=run_pull)
    c = kinds.add_parser("check", help="validate a data folder: MANIFEST checksums, counts, fields; every task loads")
    c.add_argument("dir", help="a folder laid out like shared/benchmarks ('embedded': the shipped slice)")
    c.set_defaults(func=run_check)


def _report(res) -> int:
    import sys

    from primer.errors import PrimerError

    for problem in res.problems:
        print(problem, file=sys.stderr)
    if res.problems:
        raise PrimerError(f"{len(res.problems)} problem(s) in {res.root} (listed above)")
    print(f"{res.root}: ok -- {res.folders} folders, {res.files} files, {res.records:,} records; "
          f"{len(res.tasks)} tasks load")
    return 0


def run_pull(args) -> int:
    from primer.benchmarks import pull

    res = pull(args.tasks.split(","), args.out, source_dir=args.source_dir)
    return _report(res.check)


def run_check(args) -> int:
    from primer.benchmarks import check
    from primer.common.paths import benchmark_dir

    return _report(check(benchmark_dir(args.dir)))
