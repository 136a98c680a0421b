"""Shared fixtures: where the benchmark data is, and the bundled real model file."""

import os
from pathlib import Path

import pytest

DATA_DIR = Path(os.environ.get("PRIMER_DATA", Path(__file__).resolve().parents[2] / "shared" / "benchmarks"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """../shared/benchmarks (or $PRIMER_DATA); tests that need it skip on a user's fresh clone."""
    if not DATA_DIR.is_dir():
        pytest.skip(f"benchmark data not found at {DATA_DIR} (set PRIMER_DATA; CI provides ../shared/benchmarks)")
    return DATA_DIR
