"""The model file: shapes from the registry, parameter totals, KV-cache decoding."""

import pytest
import torch

from primer.errors import PrimerError
from primer.model.transformer import SHAPES, KVCache, ModelConfig, Transformer


@pytest.mark.parametrize(
    "name,published",
    [("smollm2-135m", 134.5e6), ("phi-1.5", 1.42e9), ("phi-3-mini", 3.82e9)],
)
def test_parameter_count_matches_published_total(name, published):
    with torch.device("meta"):
        model = Transformer(ModelConfig.from_name(name))
    assert abs(model.num_params() - published) / published < 0.005


@pytest.mark.parametrize("name", ["debug", "debug-phi"])
def test_kv_cache_decode_equals_full_forward(name):
    torch.manual_seed(0)
    model = Transformer(ModelConfig.from_name(name)).eval()
    x = torch.randint(0, model.cfg.vocab_size, (2, 20))
    cache = KVCache(model.cfg, batch=2, max_len=20)
    parts = [model(x[:, :12], cache=cache)] + [model(x[:, i : i + 1], cache=cache) for i in range(12, 20)]
    assert torch.allclose(torch.cat(parts, 1), model(x), atol=1e-5)


def test_phi_shape_is_parallel_with_partial_rotary():
    cfg = ModelConfig.from_name("phi-1.5")
    assert (cfg.parallel_residual, cfg.rotary_dim, cfg.head_dim, cfg.n_layer) == (True, 32, 64, 24)


def test_unknown_shape_lists_known_ones():
    with pytest.raises(PrimerError, match="known shapes: debug"):
        ModelConfig.from_name("nope")


def test_context_overflow_is_a_clear_error():
    model = Transformer(ModelConfig.from_name("debug"))
    with pytest.raises(PrimerError, match="exceeds the model's context of 128"):
        model(torch.zeros(1, 129, dtype=torch.long))


def test_every_shape_builds_on_meta_device():
    for name in SHAPES:
        with torch.device("meta"):
            Transformer(ModelConfig.from_name(name))
