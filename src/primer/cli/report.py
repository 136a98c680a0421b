"""`primer report RUN_DIR`: write a self-contained HTML report of a run (plots inline, no network)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("report", help="write a self-contained HTML report of a run directory")
    p.add_argument("run_dir", help="a directory written by `primer run`")
    p.add_argument("-o", "--out", default=None, help="output file (default: RUN_DIR/report.html)")
    p.set_defaults(func=run)


def run(args) -> int:
    from primer.pipeline.report import write_report

    path = write_report(args.run_dir, args.out)
    print(path)
    return 0
