"""The language-model head and its cross-entropy, a block of rows at a time (no (tokens, vocab) logits).

At a small model's shapes the vocabulary is most of the activations: the plain `F.cross_entropy(lm_head(h))`
of a pretraining step builds the (tokens, vocab) logits, keeps their log-softmax for backward and builds a
gradient of the same size (phi-1.5's 8 x 2,048 tokens x 51,200 vocab: 3.4 GB each in fp32). This is the
fused linear cross-entropy of Liger-Kernel (its kernels are Triton, so GPU only): `cross_entropy` does the
head's matmul CHUNK rows at a time and, because the loss is a scalar whose upstream gradient is one number,
works out the gradients of the hidden states and of the head in the same pass, so backward only scales them.
The same FLOPs as the plain loss (three head matmuls) with at most one (rows, vocab) block alive. What it buys is
memory: the peak of a forward + backward on 2 CPU cores went from ~2.1 to 1.5 GB (small-30m, 8 x 256 tokens),
~9 to ~6 GB (gpt2-124m, 4 x 1,024) and ~14 to ~10.4 GB (smollm2-135m, 4 x 1,024). Speed: the same within noise
at vocabularies of 8-16k (`primer train` already reuses freed memory, which took the plain loss's page faults away),
~10% faster `primer train` steps at gpt2-124m's 50k (bench/train.py).
`chunk_rows` is also the block size of `primer.tune.logps`.
"""

from __future__ import annotations

import math

import torch

CPU_CHUNK_ELEMS = 1 << 22
"""floats in one block of logits on a CPU (16 MB in fp32): of 1M-8M the fastest at the small shapes' vocabularies
(8k-16k), where a larger block leaves the cache between the passes over it..."""
CPU_MIN_ROWS = 256
"""...but never fewer rows than this: at a 50k vocabulary 4M floats are 83 rows, whose matmuls are thin enough to
cost a gpt2-124m step (4 x 1,024 tokens) 11.5 s against 10.3 s at 333 rows."""


def chunk_rows(n: int, vocab: int, dim: int, device: torch.device) -> int:
    """Rows of hidden states per head block. On a GPU, Liger-Kernel's rule: the block of logits about the
    size of all n hidden states (vocab / dim times fewer rows), so the matmuls stay wide."""
    if device.type == "cpu":
        return max(CPU_MIN_ROWS, CPU_CHUNK_ELEMS // vocab)
    return max(1, 1 << math.ceil(math.log2(max(1, math.ceil(n / math.ceil(vocab / dim))))))


def compute_dtype(h: torch.Tensor) -> torch.dtype:
    """The log-softmax's dtype: fp32 (bf16/fp16 activations included), fp64 stays fp64."""
    return torch.promote_types(h.dtype, torch.float32)


def cross_entropy(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  targets: torch.Tensor) -> torch.Tensor:
    """mean over targets != -100 of -log softmax(h @ weight.T + bias)[target]: `F.cross_entropy` of the
    head's fp32 logits, as `lm_head(h).float()` gives them (under autocast the matmul runs in its dtype).
    h (N, C), targets (N,)."""
    need = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (h, weight, bias))
    return _CrossEntropy.apply(h, weight, bias, targets, need)


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, targets, need):
        kind = h.device.type
        # the matmuls' dtype: autocast's where it is on (bf16 on AMX CPUs and GPUs), else the weight's
        # (bf16 under FSDP's mixed precision); everything else below is explicit, so autocast is off
        md = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else weight.dtype
        dt = compute_dtype(h)
        with torch.autocast(kind, enabled=False):
            n, V = h.shape[0], weight.shape[0]
            rows = chunk_rows(n, V, h.shape[1], h.device)
            w = weight.to(md)  # one cast for every block
            b = None if bias is None else bias.to(dt)
            valid = targets != -100
            # no trained target (a fine-tuning micro-batch of prompts only): 0 and no gradient, where
            # F.cross_entropy would give nan
            count = valid.sum().clamp_min(1)
            total = torch.zeros((), dtype=dt, device=h.device)
            # gh stays fp32 until backward scales it: 1/tokens-sized fp16 values would underflow before a loss
            # scaler's factor reaches them, as it does in the plain backward
            gh = torch.empty(h.shape, dtype=dt, device=h.device) if need else None
            gw = torch.zeros(weight.shape, dtype=dt, device=h.device) if need else None
            gb = torch.zeros(V, dtype=dt, device=h.device) if need and bias is not None else None
            for i in range(0, n, rows):
                hc, v, y = h[i: i + rows].to(md), valid[i: i + rows], targets[i: i + rows].clamp_min(0)
                z = (hc @ w.t()).to(dt)
                if b is not None:
                    z += b
                logp = torch.log_softmax(z, dim=-1)
                at = torch.arange(len(y), device=h.device)
                total -= logp[at, y].mul_(v).sum()
                if not need:
                    continue
                # d(-log p_y)/dz = softmax - onehot(y); an ignored row's gradient is masked out through
                # its (rows, C) pieces below, never through another pass over the (rows, vocab) block
                dz = logp.exp_()
                dz[at, y] -= 1
                vm = v.to(dt)[:, None]
                dzm = dz.to(md)
                gh[i: i + rows] = (dzm @ w).to(dt).mul_(vm)
                if md == dt:
                    gw.addmm_(dzm.t(), hc * vm.to(md))  # no (vocab, C) temporary
                else:
                    gw += dzm.t() @ (hc * vm.to(md))
                if gb is not None:
                    gb += dz.t() @ vm[:, 0]
            if need:
                scale = 1.0 / count.to(dt)
                gh.mul_(scale)
                gw.mul_(scale)
                if gb is not None:
                    gb.mul_(scale)
        ctx.save_for_backward(gh, gw, gb)
        ctx.dtypes = (h.dtype, weight.dtype, None if bias is None else bias.dtype)
        return total / count

    @staticmethod
    def backward(ctx, g):
        gh, gw, gb = ctx.saved_tensors
        hdt, wdt, bdt = ctx.dtypes
        return (gh * g).to(hdt), (gw * g).to(wdt), None if gb is None else (gb * g).to(bdt), None, None
