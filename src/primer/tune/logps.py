"""Log-probs of the target tokens from the final hidden states, the vocabulary a chunk of rows at a time.

DPO's sequence log-probs (and its cached reference ones) need log p(y_i) at the trained tokens only, but the plain way
builds their (N, vocab) logits, keeps the log-softmax for backward and builds the same-size gradient at
the start of backward, on top of every layer's activations. `token_logps` is the fused linear
cross-entropy idea (Liger-Kernel's): the head's matmul is done CHUNK rows at a time in forward and done
again in backward (the upstream gradient is per token here, unlike pretraining's scalar loss in
`primer.model.loss`, whose block size this shares), so at most one (rows, vocab) block is alive. Same numbers as
`log_softmax(h @ W.T + b)[y]` (tests/test_tune.py), for one more head matmul over the trained tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from primer.model.loss import chunk_rows, compute_dtype
from primer.weights.checkpoint import unwrap

def _logits(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    dt = compute_dtype(h)
    # Under autocast the matmul runs in its dtype (bf16 logits, as the plain head gives); the log-softmax
    # must not: autocast leaves z and logsumexp in bf16 (~0.06 at a logsumexp of 10), which summed over a
    # reply moved DPO's sequence log-probs by nats. So z is fp32 from here on, as `logits.float()` is.
    z = (h.to(dt) @ weight.to(dt).t()).to(dt)
    return z if bias is None else z + bias.to(dt)


class _TokenLogps(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, y):
        n, rows = h.shape[0], chunk_rows(h.shape[0], weight.shape[0], h.shape[1], h.device)
        out = torch.empty(n, dtype=compute_dtype(h), device=h.device)
        for i in range(0, n, rows):
            z = _logits(h[i: i + rows], weight, bias)
            out[i: i + rows] = z.gather(1, y[i: i + rows, None]).squeeze(1) - torch.logsumexp(z, dim=-1)
        ctx.save_for_backward(h, weight, bias, y)
        # backward runs outside the caller's autocast: it redoes the head under the same one (bf16 matmuls
        # where the forward had them, instead of three fp32 matmuls of the head's size)
        kind = h.device.type
        ctx.autocast = (torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind))
        return out

    @staticmethod
    def backward(ctx, g):
        on, dtype = ctx.autocast
        with torch.autocast(g.device.type, dtype=dtype, enabled=on):
            return _TokenLogps._backward(ctx, g)

    @staticmethod
    def _backward(ctx, g):
        h, weight, bias, y = ctx.saved_tensors
        n, rows = h.shape[0], chunk_rows(h.shape[0], weight.shape[0], h.shape[1], h.device)
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        gh = torch.empty_like(h) if need_h else None
        dt = compute_dtype(h)
        gw = torch.zeros(weight.shape, dtype=dt, device=weight.device) if need_w else None
        gb = torch.zeros(weight.shape[0], dtype=dt, device=weight.device) if need_b else None
        for i in range(0, n, rows):
            hc, gc = h[i: i + rows].to(dt), g[i: i + rows].to(dt)
            # d logp(y) / dz = onehot(y) - softmax(z), times the upstream gradient of each row
            dz = torch.softmax(_logits(hc, weight, bias), dim=-1).mul_(-gc[:, None])
            dz[torch.arange(len(gc), device=dz.device), y[i: i + rows]] += gc
            if need_h:
                gh[i: i + rows] = (dz @ weight.to(dt)).to(h.dtype)
            if need_w:
                if torch.is_autocast_enabled(h.device.type):
                    gw += dz.t() @ hc  # a bf16 matmul: addmm_, in place, would stay outside autocast
                else:
                    gw.addmm_(dz.t(), hc)  # no (vocab, dim) temporary
            if need_b:
                gb += dz.sum(0)
        return (gh, None if gw is None else gw.to(weight.dtype), None if gb is None else gb.to(bias.dtype), None)


def target_logps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, fused: bool = True,
                 **kw) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p of each trained target (N,), the (B, T) mask of trained positions) for inputs x and targets y
    (-100 = not trained); `kw` goes to the model (pos, attn_mask).

    fused=False builds the trained positions' logits in one piece: FSDP gathers the head's sharded weight
    only inside the model's forward, so under FSDP the head must be applied there."""
    sel = y != -100
    if not fused:
        logits = model(x, select=sel, **kw)
        return -F.cross_entropy(logits.to(compute_dtype(logits)), y[sel], reduction="none"), sel
    head = unwrap(model).lm_head
    return _TokenLogps.apply(model(x, select=sel, head=False, **kw), head.weight, head.bias, y[sel]), sel
