"""`primer publish RUN_DIR --out DIR`: the kept corpus as Parquet + a dataset card + an overlap certificate."""

from __future__ import annotations


def register(sub) -> None:
    from primer.config import add_arguments
    from primer.publish.run import PublishConfig

    p = sub.add_parser("publish", help="a run's curated corpus as a dataset: Parquet shards with provenance, a Hub "
                       "dataset card (README.md) and an overlap certificate against every benchmark")
    p.add_argument("run_dir", help="the run directory (primer run --run-dir) whose curated corpus to publish")
    add_arguments(p, PublishConfig, skip=("run_dir",))
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def run(args) -> int:
    from primer.config import from_args
    from primer.publish.run import PublishConfig, publish

    r = publish(from_args(PublishConfig, args), log=(lambda s: None) if args.quiet else print)
    print(f"written: {r.out}/data ({r.documents} documents, {len(r.shards)} shard(s)), {r.card}, {r.certificate}")
    return 0
