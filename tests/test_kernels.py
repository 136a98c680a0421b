"""primer's block-quantized CPU matmul (primer.model.kernels): the fp32 product of the file's blocks,
bit-identical rows whatever the batch, and the layouts of Q4 (with mins) and Q8 blocks."""

import pytest
import torch

from primer.model import kernels

ext = kernels.load()
pytestmark = pytest.mark.skipif(ext is None, reason=f"primer's CPU kernel is unavailable: {kernels.why_not()}")


def q4_weights(N, K, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (N, K), generator=g, dtype=torch.uint8)
    d = (torch.rand(N, K // 32, generator=g) * 0.02).half()  # GGUF keeps block scales in fp16
    m = (-torch.rand(N, K // 32, generator=g) * 0.1).half()
    w = (q.float().view(N, K // 32, 32) * d.float()[..., None] + m.float()[..., None]).view(N, K)
    return (q, d, m), w


@pytest.mark.parametrize("N,K", [(96, 64), (40, 128), (3072, 576)])  # 40: rows padded to a multiple of 32
def test_q4_and_q8_match_the_dequantized_product(N, K):
    (q, d, m), w = q4_weights(N, K)
    packed = kernels.pack_q4(q, d, m)
    q8, d8 = kernels.quantize_q8(torch.randn(N, K))
    w8 = (q8.float().view(N, K // 32, 32) * d8.float()[..., None]).view(N, K)
    p8 = kernels.pack_q8(q8, d8)
    for M in (1, 3, 9, 40, 70, 500):  # register tiles, their remainders, the panel path, blocks of its rows
        x = torch.randn(M, K)
        y = ext.q4_mm(x, *packed)[:, :N]
        ref = x.double() @ w.double().t()
        assert (y.double() - ref).abs().max() <= 1e-5 * ref.abs().max()
        y8 = ext.q8_mm(x, *p8)[:, :N]
        ref8 = x.double() @ w8.double().t()
        assert (y8.double() - ref8).abs().max() <= 1e-5 * ref8.abs().max()


@pytest.mark.parametrize("act8", [False, True])
def test_a_row_has_the_same_bits_in_any_batch(act8):
    (q, d, m), _ = q4_weights(256, 576, seed=1)
    packed = kernels.pack_q4(q, d, m)
    p8 = kernels.pack_q8(*kernels.quantize_q8(torch.randn(256, 576)))
    x = torch.randn(600, 576)
    alone, alone8 = ext.q4_mm(x[5:6], *packed, act8=act8)[0], ext.q8_mm(x[5:6], *p8, act8=act8)[0]
    for M in (6, 8, 13, 32, 33, 100):  # decode tiles and the panel path (M > 32) multiply in one order
        assert torch.equal(ext.q4_mm(x[:M], *packed, act8=act8)[5], alone)
        assert torch.equal(ext.q8_mm(x[:M], *p8, act8=act8)[5], alone8)
    # the panel path takes rows in blocks (222 rows of 576): a row in the third block, alone and among 600
    assert torch.equal(ext.q4_mm(x, *packed, act8=act8)[500], ext.q4_mm(x[500:501], *packed, act8=act8)[0])


def int8_rows(x: torch.Tensor) -> torch.Tensor:
    """x with each block of 32 rounded to int8 codes of scale max|x|/127 (llama.cpp's Q8_1 rule)."""
    M, K = x.shape
    b = x.view(M, K // 32, 32)
    dx = b.abs().amax(-1, keepdim=True) / 127
    return ((b / dx).round() * dx).view(M, K)


@pytest.mark.skipif(ext is None or not ext.act8_available(), reason="this CPU has no AVX-512 VNNI")
@pytest.mark.parametrize("N,K", [(96, 64), (3072, 576)])
def test_act8_multiplies_the_blocks_by_int8_rows(N, K):
    """act8: each row quantized to int8 per block of 32, then the exact product of those codes with
    the file's blocks (int32 inside a block): the float reference of the rounded rows, up to fp32
    summation, and within int8 rounding of the fp32 product."""
    (q, d, m), w = q4_weights(N, K, seed=2)
    q8, d8 = kernels.quantize_q8(torch.randn(N, K))
    w8 = (q8.float().view(N, K // 32, 32) * d8.float()[..., None]).view(N, K)
    for M in (1, 3, 4, 9, 70):
        x = torch.randn(M, K)
        for y, wd in ((ext.q4_mm(x, *kernels.pack_q4(q, d, m), act8=True), w),
                      (ext.q8_mm(x, *kernels.pack_q8(q8, d8), act8=True), w8)):
            ref = int8_rows(x).double() @ wd.double().t()
            assert (y[:, :N].double() - ref).abs().max() <= 1e-5 * ref.abs().max()
            exact = x.double() @ wd.double().t()
            assert (y[:, :N].double() - exact).abs().max() <= 2e-2 * exact.abs().max()


def test_quantize_q8_is_the_q8_0_rule():
    w = torch.randn(8, 64)
    q, d = kernels.quantize_q8(w)
    assert q.dtype == torch.int8 and d.dtype == torch.float16 and d.shape == (8, 2)
    assert torch.equal(d, (w.view(8, 2, 32).abs().amax(-1) / 127).half())
    err = q.float().view(8, 2, 32) * d.float()[..., None] - w.view(8, 2, 32)
    assert err.abs().max() <= d.float().max() / 2 * 1.01


@pytest.mark.parametrize("shape", ["debug", "debug-phi"])  # RMSNorm/SwiGLU/GQA and LayerNorm/partial rotary/parallel
def test_native_decode_step_equals_the_python_step(shape):
    """FastDecoder.step (native norm, rotary, per-row attention) against FastDecoder's torch forward on
    the same packed weights, with rows at different positions in the cache."""
    from primer.model.engine import Runner
    from primer.model.transformer import ModelConfig, Transformer

    torch.manual_seed(0)
    model = Transformer(ModelConfig.from_name(shape, n_kv_head=2)).eval()
    prompts = [[5, 17, 99, 3, 250, 7, 8], [42], [300, 301, 302, 1, 2, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 11]]
    native, python = Runner(model, True, 3, 64), Runner(model, True, 3, 64)
    assert native.step is not None
    python.step = None  # the torch path: masked SDPA over the padded cache
    for r in (native, python):
        for slot, p in enumerate(prompts):
            r.prefill([(slot, p)])
    pos = [len(p) for p in prompts]
    for t in range(5):
        tokens = [11 + t, 23 + t, 7 * t]
        a, b = native.decode(tokens, pos), python.decode(tokens, pos)
        assert (a - b).abs().max() <= 1e-4 * b.abs().max()
        pos = [p + 1 for p in pos]


@pytest.mark.parametrize("shape", ["debug", "debug-phi"])
def test_prompts_prefilled_together_get_their_bits_alone(shape, monkeypatch):
    """Runner.prefill of several prompts in one packed forward (FastDecoder.prefill) against each prompt
    prefilled alone: the same logits and cache positions, bit for bit, so a text never depends on the
    prompts it was admitted with. One-token prompts take the folded attention, as they do alone."""
    from primer.model.engine import Runner
    from primer.model.transformer import ModelConfig, Transformer

    torch.manual_seed(0)
    model = Transformer(ModelConfig.from_name(shape, n_kv_head=2)).eval()
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 500, (n,), generator=g).tolist() for n in (7, 1, 40, 2, 1, 23)]
    together, alone = Runner(model, True, len(prompts), 64), Runner(model, True, len(prompts), 64)
    packed = []
    real = together.forward.prefill
    monkeypatch.setattr(together.forward, "prefill", lambda ps, *a: packed.append(len(ps)) or real(ps, *a))
    got = together.prefill(list(enumerate(prompts)))
    want = [alone.prefill([(slot, p)])[0] for slot, p in enumerate(prompts)]
    assert packed == [len(prompts)]  # one packed forward; alone, a group of one runs the plain forward
    for slot, p in enumerate(prompts):
        assert torch.equal(got[slot], want[slot])
        for layer in range(model.cfg.n_layer):
            for a, b in ((together.cache.k, alone.cache.k), (together.cache.v, alone.cache.v)):
                assert torch.equal(a[layer][slot, :, : len(p)], b[layer][slot, :, : len(p)])


def test_each_checkout_and_environment_has_its_own_build(tmp_path, monkeypatch):
    # torch's builder writes absolute source and header paths into its ninja file: a build shared by two
    # checkouts was rebuilt (~35 s) each time the other had loaded it, so the place is part of the name.
    name = kernels.build_name()
    assert name == kernels.build_name()
    copies = []
    for p in kernels.SOURCES:
        (tmp_path / p.name).write_bytes(p.read_bytes())
        copies.append(tmp_path / p.name)
    monkeypatch.setattr(kernels, "SOURCES", copies)
    elsewhere = kernels.build_name()
    assert elsewhere != name
    copies[0].write_bytes(copies[0].read_bytes() + b"\n")
    assert kernels.build_name() not in (name, elsewhere)
    monkeypatch.setattr(torch, "__version__", "0.0.0")
    assert kernels.build_name() not in (name, elsewhere)
