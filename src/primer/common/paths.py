"""Where primer finds benchmark data: one lookup for every verb.

Order: the folder the user named (--data-dir / a recipe field), then $PRIMER_DATA, then
`../shared/benchmarks` beside a source checkout. None when nothing is found; callers say how to
point at data.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "PRIMER_DATA"
NO_DATA_HINT = ("set PRIMER_DATA (or --data-dir) to a folder laid out like shared/benchmarks")


def benchmark_dir(explicit: str | Path | None = None) -> Path | None:
    if explicit:
        return Path(explicit)
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    beside = Path(__file__).resolve().parents[4] / "shared" / "benchmarks"  # src/primer/common/paths.py
    return beside if beside.is_dir() else None
