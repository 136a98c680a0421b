"""Where primer finds benchmark data and keeps its caches: one lookup for every verb.

Benchmark data, in this order: the folder the user named (--data-dir / a recipe field), then
$PRIMER_DATA, then the folder `primer data pull` fills in primer's cache (`cache_dir()/benchmarks`),
then `../shared/benchmarks` beside a source checkout. None when nothing is found; callers then say
how to get it (`pull_hint`). The package also ships a small embedded slice (`embedded_dir()`:
HellaSwag, PIQA, ARC-Easy, a few hundred items each, with their licences) that `primer run` falls
back on, and that any verb reads when given `--data-dir embedded` (or PRIMER_DATA=embedded).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

DATA_ENV = "PRIMER_DATA"
CACHE_ENV = "PRIMER_CACHE"
EMBEDDED = "embedded"
"""The --data-dir value that names the embedded slice."""


def cache_dir() -> Path:
    """primer's cache: $PRIMER_CACHE, else ~/.cache/primer (eval answers, pulled benchmark data)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "primer"


def pulled_dir() -> Path:
    """Where `primer data pull` writes by default, and where the lookup looks second."""
    return cache_dir() / "benchmarks"


def embedded_dir() -> Path:
    """The evaluation slice shipped inside the package (laid out like shared/benchmarks)."""
    return Path(__file__).resolve().parents[1] / "data" / "benchmarks"


def benchmark_dir(explicit: str | Path | None = None) -> Path | None:
    if explicit:
        return embedded_dir() if str(explicit) == EMBEDDED else Path(explicit).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return embedded_dir() if env == EMBEDDED else Path(env).expanduser()
    pulled = pulled_dir()
    if pulled.is_dir() and any(pulled.glob("*/MANIFEST.md")):
        return pulled
    beside = Path(__file__).resolve().parents[4] / "shared" / "benchmarks"  # src/primer/common/paths.py
    return beside if beside.is_dir() else None


def is_embedded(path: str | Path | None) -> bool:
    return path is not None and Path(path).resolve() == embedded_dir()


def pull_hint(tasks: Iterable[str] = ()) -> str:
    """The exact command that fetches the data (and where the lookup then finds it)."""
    names = ",".join(dict.fromkeys(tasks))
    return f"primer data pull {names + ' ' if names else ''}--out {pulled_dir()}".replace(str(Path.home()), "~", 1)


def no_data_message(tasks: Iterable[str] = ()) -> str:
    return (f"no benchmark data found (looked in --data-dir, ${DATA_ENV}, {pulled_dir()} and ../shared/benchmarks); "
            f"fetch it with: {pull_hint(tasks)} (needs network), or point --data-dir/${DATA_ENV} at a folder laid "
            f"out like shared/benchmarks, or use --data-dir {EMBEDDED} for the small slice shipped with primer")
