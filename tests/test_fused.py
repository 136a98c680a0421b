"""Training's native RMSNorm, rotary and SwiGLU (primer.model.fused): the gradients autograd gives for
torch's ops, in fp32 against an fp64 reference; used only where the model trains, so a forward without
gradients keeps torch's bits."""

import pytest
import torch
import torch.nn.functional as F

from primer.model import fused, kernels
from primer.model.transformer import ModelConfig, Transformer, apply_rope, rope_cache

ext = kernels.load()
pytestmark = pytest.mark.skipif(ext is None, reason=f"primer's CPU kernel is unavailable: {kernels.why_not()}")


def close(a: torch.Tensor, ref: torch.Tensor) -> bool:
    return (a.double() - ref).abs().max().item() <= 1e-5 * ref.abs().max().item()


def test_rms_norm_and_its_gradients():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 70, 48, generator=g, dtype=torch.float64) * 3  # 210 rows: several tasks of 64 rows
    w, up = torch.randn(48, generator=g, dtype=torch.float64), torch.randn(3, 70, 48, generator=g, dtype=torch.float64)
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    (xr * torch.rsqrt(xr.pow(2).mean(-1, keepdim=True) + 1e-5) * wr).backward(up)
    xf, wf = x.float().requires_grad_(), w.float().requires_grad_()
    y = fused.rms_norm(xf, wf, 1e-5)
    y.backward(up.float())
    assert close(y.detach(), (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w))
    assert close(xf.grad, xr.grad) and close(wf.grad, wr.grad)


@pytest.mark.parametrize("heads,hd,rd,per_row", [(4, 16, 16, False), (2, 32, 16, True)])  # full and partial rotary
def test_rope_and_its_gradient(heads, hd, rd, per_row):
    B, T = 2, 9
    cos, sin = rope_cache(ModelConfig(n_head=heads, n_embd=heads * hd, rotary_dim=rd))
    pos = torch.randint(0, 100, (B, T)) if per_row else torch.arange(T)[None]  # left-padded rows bring their own
    c, s = cos[pos].unsqueeze(1), sin[pos].unsqueeze(1)
    x = torch.randn(B, T, heads * hd, dtype=torch.float64)
    up = torch.randn(B, heads, T, hd, dtype=torch.float64)
    xr = x.clone().requires_grad_()
    ref = apply_rope(xr.view(B, T, heads, hd).transpose(1, 2), c.double(), s.double(), rd)
    ref.backward(up)
    xf = x.float().requires_grad_()
    y = fused.rope(xf, c, s, heads, hd).view(B, T, heads, hd).transpose(1, 2)
    y.backward(up.float())
    assert close(y.detach(), ref.detach()) and close(xf.grad, xr.grad)


def test_swiglu_and_its_gradients():
    a, b = torch.randn(50, 96, dtype=torch.float64) * 6, torch.randn(50, 96, dtype=torch.float64)  # sigmoid's tails
    up = torch.randn(50, 96, dtype=torch.float64)
    ar, br = a.clone().requires_grad_(), b.clone().requires_grad_()
    ref = F.silu(ar) * br
    ref.backward(up)
    af, bf = a.float().requires_grad_(), b.float().requires_grad_()
    y = fused.swiglu(af, bf)
    y.backward(up.float())
    assert close(y.detach(), ref.detach()) and close(af.grad, ar.grad) and close(bf.grad, br.grad)


def test_a_training_step_uses_them_and_a_forward_without_gradients_does_not():
    cfg = ModelConfig(n_head=4, n_kv_head=2, n_embd=64, intermediate_size=96, rotary_dim=8)  # GQA, partial rotary
    torch.manual_seed(0)
    model = Transformer(cfg)
    ref = Transformer(cfg).double()
    ref.load_state_dict(model.state_dict())
    idx = torch.randint(0, cfg.vocab_size, (2, 12))
    loss = model(idx, idx)
    loss.backward()
    ref_loss = ref(idx, idx)  # fp64: torch's ops
    ref_loss.backward()
    assert abs(loss.item() - ref_loss.item()) < 1e-5
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        assert close(p.grad, q.grad), name
    h = model.blocks[0].attn_norm(torch.randn(2, 3, 64, requires_grad=True))
    assert type(h.grad_fn).__name__ == "_RMSNormBackward"  # the kernel ran
    with torch.no_grad():
        x = torch.randn(2, 3, 64)
        norm = model.blocks[0].attn_norm
        assert torch.equal(norm(x), norm.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps)))
