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


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_blockwise_cross_entropy_is_the_plain_loss_and_its_gradients(monkeypatch, bias, bf16):
    """primer.model.loss: loss and gradients of h, the head's weight and bias as F.cross_entropy of the head's
    fp32 logits gives them, over several blocks of rows (a small block forced), with ignored targets; and
    under bf16 autocast as the plain autocast head gives them."""
    import torch.nn.functional as F

    from primer.model import loss as L

    monkeypatch.setattr(L, "CPU_CHUNK_ELEMS", 7 * 50)  # 7 rows a block: 3 blocks of 20 rows, the last short
    monkeypatch.setattr(L, "CPU_MIN_ROWS", 1)
    torch.manual_seed(0)
    h0, w0 = torch.randn(20, 16), torch.randn(50, 16) * 0.3
    b0 = torch.randn(50) if bias else None
    y = torch.randint(0, 50, (20,))
    y[[3, 11]] = -100

    def run(fused: bool):
        h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
        b = None if b0 is None else b0.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if fused:
                loss = L.cross_entropy(h, w, b, y)
            else:
                loss = F.cross_entropy(F.linear(h, w, b).float(), y, ignore_index=-100)
        (loss * 3).backward()  # an upstream gradient other than 1
        return [loss.detach()] + [t.grad for t in (h, w, b) if t is not None]

    tol = 5e-3 if bf16 else 1e-5  # bf16: the gradients' matmuls round to bf16 (measured max 0.003 on ~0.5)
    plain = run(False)
    for got, want in zip(run(True), plain):
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, atol=tol, rtol=tol)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # no gradients worked out
        assert float(L.cross_entropy(h0, w0, b0, y)) == pytest.approx(float(plain[0]), abs=tol)


def test_blockwise_cross_entropy_of_no_trained_token_is_zero():
    """A fine-tuning micro-batch whose targets are all ignored adds 0 and no gradient (not F.cross_entropy's nan)."""
    from primer.model.loss import cross_entropy

    h, w = torch.randn(5, 8, requires_grad=True), torch.randn(30, 8, requires_grad=True)
    loss = cross_entropy(h, w, None, torch.full((5,), -100))
    loss.backward()
    assert float(loss.detach()) == 0.0 and not h.grad.any() and not w.grad.any()


def test_training_loss_is_the_plain_head_loss():
    """Transformer(x, targets) is the blockwise loss; the same number as cross-entropy of its logits."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    m = Transformer(ModelConfig.from_name("debug"))
    x = torch.randint(0, m.cfg.vocab_size, (2, 12))
    y = torch.randint(0, m.cfg.vocab_size, (2, 12))
    with torch.no_grad():
        want = F.cross_entropy(m(x).flatten(0, 1), y.flatten())
    assert float(m(x, targets=y).detach()) == pytest.approx(float(want), abs=1e-5)


def test_head_blocks_are_wide_enough():
    """primer.model.loss.chunk_rows: a CPU block holds ~4M floats but never fewer than 256 rows; a GPU block
    follows Liger-Kernel's rule (phi-1.5, a micro-batch of 8 x 2,048: 1,024 rows of its 51,200-token vocabulary)."""
    from primer.model.loss import chunk_rows

    cpu, gpu = torch.device("cpu"), torch.device("cuda")  # only the device's type is read: no GPU needed
    assert chunk_rows(2048, 16384, 384, cpu) == 256 and chunk_rows(2048, 8192, 256, cpu) == 512
    assert chunk_rows(4096, 50304, 768, cpu) == 256
    assert chunk_rows(16384, 51200, 2048, gpu) == 1024 and chunk_rows(3, 51200, 2048, gpu) == 1
