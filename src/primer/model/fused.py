"""Training's RMSNorm, rotary embedding and SwiGLU as one native pass each way (`primer.model.kernels`).

Why: on a CPU, a small model's training step spends most of what its matmuls leave on these three.
torch runs RMSNorm as ~5 ops forward and ~9 backward, the rotary as ~6 and ~6 and silu(gate) * up as 3
and 5, each a pass over the activations (small-30m, 8 x 256 tokens: ~4.3, ~3 and ~5.3 ms per forward +
backward, 17, 16 and 8 of them a step); the kernels make each one pass forward and one backward.

Only where it is training (gradients wanted) on fp32 CPU tensors: a forward without gradients --
evaluation, generation, the parity tests -- keeps torch's ops, so its scores stay bit for bit those of
the reference implementations (the kernels sum in another order: the difference is rounding, ~1e-7).
`rms_norm`, `rope` and `swiglu` return None where the kernels cannot take the call (no kernels, another
dtype or device, a width that is not a multiple of 16, under torch.compile); the model then runs torch's ops.
"""

from __future__ import annotations

import torch

from primer.model import kernels


def _ext(x: torch.Tensor, width: int):
    """The kernel module when this call is training on tensors the kernels take, else None."""
    # under torch.compile the graph keeps torch's ops, which the compiler fuses itself
    if not (torch.is_grad_enabled() and x.requires_grad and x.device.type == "cpu" and x.dtype == torch.float32
            and width % 16 == 0) or torch.compiler.is_compiling():
        return None
    return kernels.load()


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor | None:
    ext = _ext(x, x.shape[-1])
    if ext is None or weight.dtype != torch.float32:
        return None
    return _RMSNorm.apply(x, weight, eps, ext)


def swiglu(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor | None:
    """silu(a) * b, for the gate and up projections' outputs."""
    ext = _ext(a, a.shape[-1])
    if ext is None or a.shape != b.shape or not (a.is_contiguous() and b.is_contiguous()):
        return None
    return _SwiGLU.apply(a, b, ext)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, heads: int, head_dim: int) -> torch.Tensor | None:
    """Rotate the first cos.shape[-1] dims of each of the `heads` heads in x (B, T, heads * head_dim), a
    projection's output before it is split into heads; cos/sin (B or 1, 1, T, rd) as the model gathers them."""
    ext = _ext(x, head_dim)
    if ext is None:
        return None
    B, T, _ = x.shape
    rd = cos.shape[-1]
    cos, sin = cos.reshape(-1, rd).contiguous(), sin.reshape(-1, rd).contiguous()
    pos = torch.arange(B * T) % cos.shape[0]  # row b*T + t reads table row t, or b*T + t for per-row tables
    return _Rope.apply(x, cos, sin, pos, heads, head_dim, ext)


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps, ext):
        ctx.save_for_backward(x, weight)
        ctx.eps, ctx.ext = eps, ext
        return ext.rms_norm(x, weight, eps)

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        dx, dw = ctx.ext.rms_norm_backward(g, x, weight, ctx.eps)
        return dx, dw, None, None


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, ext):
        ctx.save_for_backward(a, b)
        ctx.ext = ext
        return ext.swiglu(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        da, db = ctx.ext.swiglu_backward(g, a, b)
        return da, db, None


class _Rope(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cos, sin, pos, heads, head_dim, ext):
        y = x.clone(memory_format=torch.contiguous_format)
        ext.rope_(y.view(-1, y.shape[-1]), pos, cos, sin, heads, head_dim)
        ctx.save_for_backward(cos, sin, pos)
        ctx.heads, ctx.head_dim, ctx.ext = heads, head_dim, ext
        return y

    @staticmethod
    def backward(ctx, g):
        # the rotation by -angle undoes it, and a rotation's transpose is its inverse: the same kernel on -sin
        cos, sin, pos = ctx.saved_tensors
        dx = g.clone(memory_format=torch.contiguous_format)
        ctx.ext.rope_(dx.view(-1, dx.shape[-1]), pos, cos, -sin, ctx.heads, ctx.head_dim)
        return dx, None, None, None, None, None, None
