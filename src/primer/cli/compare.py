"""`primer compare RUN_DIR RUN_DIR... --out compare.html`: runs side by side (the phi-1.5 vs web-only experiment);
`primer compare before.json after.json`: two `primer eval --log-samples --output` results, paired item by item."""

from __future__ import annotations


def register(sub) -> None:
    from primer.compare.run import CompareConfig
    from primer.config import add_arguments

    p = sub.add_parser("compare", help="runs side by side: data, curves, held-out bits per byte, paired benchmark "
                       "differences, audit verdicts, samples; one HTML page (+ JSON)")
    p.add_argument("runs", nargs="+", help="run directories (primer run --run-dir), or results files of `primer eval "
                   "--log-samples --output`; the first is the baseline")
    p.add_argument("--out", default="compare.html", help="the HTML page to write (compare.json beside it)")
    add_arguments(p, CompareConfig, skip=("runs",))
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from primer.compare.page import write
    from primer.compare.run import CompareConfig, compare
    from primer.config import from_args

    cfg = from_args(CompareConfig, args)
    c = compare(cfg, progress=not args.quiet)
    html, js = write(c, Path(args.out))
    for d in c.differences:
        print(f"{d.task} {d.metric}: {d.run} {100 * d.run_score:.1f} vs {d.baseline} {100 * d.baseline_score:.1f}, "
              f"{100 * d.diff:+.1f} [{100 * d.ci[0]:+.1f}, {100 * d.ci[1]:+.1f}] (paired bootstrap 95%, {d.n} items, "
              f"p {d.p:.3f})")
    print(f"written: {html}, {js}")
    return 0
