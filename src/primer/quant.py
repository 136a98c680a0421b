"""The fast CPU decode path: weight-only int4/int8 matmuls and a lean per-token forward.

Why: decoding one token reads every weight once, so on a CPU the fp32 loop is bound by memory
traffic (540 MB a token for SmolLM2-135M) and by Python launching ~50 ops per layer. Here:
  * weights are packed for torch's CPU weight-only kernels (`_weight_int4pack_mm_for_cpu`,
    group 32, asymmetric; `_weight_int8pack_mm`, per output channel) with bf16 activations.
    A weight that came from a Q4_0/Q4_1 GGUF block is *exactly* representable in int4/group-32
    (scale d, zero m + 8d), so for the bundled model the int4 path uses the file's own weights,
    not a re-quantization; other weights use int4 only when that is exact, else int8.
  * matrices that read the same input are fused (q|k|v, gate|up), RMSNorm is one op, rotary is
    applied to q and k heads at once, and grouped-query decode attends without expanding k/v.
  * large row counts (prefill, big batches) switch to the dense fp32 weights (MKL sgemm is
    faster there than the weight-only kernels), so prompts are processed at full precision.
`model.Transformer.forward` stays the exact reference; `FastDecoder` mirrors it step for step and
is tested against it (tests/test_generate.py).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from primer.model import KVCache, Transformer

GROUP = 32
# Rows at or below which the weight-only kernels beat dense fp32 sgemm on a 2-core AVX-512 CPU.
INT_MAX_ROWS = int(os.environ.get("PRIMER_INT_MAX_ROWS", "8"))


def has_cpu_int_kernels() -> bool:
    return hasattr(torch, "_weight_int4pack_mm_for_cpu") and hasattr(torch, "_weight_int8pack_mm")


def int4_codes(w: torch.Tensor, group: int = GROUP) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric 4-bit codes per `group` inputs: w ~= q * d + m, q in 0..15 (GGUF Q4_1's rule).

    Exact for weights that came from Q4_1 (min and max of each block are codes 0 and 15) and Q4_0.
    Returns q (N, K) int32, d (N, K/group), m (N, K/group) fp32.
    """
    N, K = w.shape
    g = w.float().view(N, K // group, group)
    lo, hi = g.amin(-1), g.amax(-1)
    d = (hi - lo) / 15
    safe = torch.where(d == 0, torch.ones_like(d), d)
    q = ((g - lo[..., None]) / safe[..., None]).round().clamp(0, 15)
    return q.view(N, K).to(torch.int32), d, lo


def int8_block_codes(w: torch.Tensor, group: int = GROUP) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric 8-bit codes per `group` inputs: w ~= d * q, q in -127..127 (GGUF Q8_0's rule)."""
    N, K = w.shape
    g = w.float().view(N, K // group, group)
    d = g.abs().amax(-1) / 127
    safe = torch.where(d == 0, torch.ones_like(d), d)
    q = (g / safe[..., None]).round().clamp(-127, 127)
    return q.view(N, K).to(torch.int32), d


class PackedLinear:
    """y = x @ W.T + b with W held three ways: int4 or int8 packed (few rows), dense fp32 (many rows)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, *, bits: int | None = None,
                 act_dtype: torch.dtype = torch.bfloat16):
        w = weight.detach().float().contiguous()
        self.dense = w
        self.bias = None if bias is None else bias.detach().float()
        self.act_dtype = act_dtype
        self.out_features, self.in_features = w.shape
        self.kind = "dense"
        if bits is None:
            bits = 4 if self._exact(w, 4) else (48 if self._exact(w, 8) else 8)
        if self.in_features % GROUP:
            bits = 8
        if bits == 4:
            q, d, m = int4_codes(w)
            self.packed = torch._convert_weight_to_int4pack_for_cpu(q, 1)
            # the kernel computes (q - 8) * scale + zero, so zero = m + 8d; layout (K/group, N, 2)
            self.scales = torch.stack([d.t(), (m + 8 * d).t()], dim=-1).contiguous().to(act_dtype)
            self.kind = "int4"
        elif bits == 48:
            # Q8_0-style blocks (w = d * q8, q8 in -127..127) held exactly as two int4 planes:
            # q8 = 16 h + l with h = q8 >> 4 in -8..7 and l = q8 & 15; planes stacked along N.
            q8, d = int8_block_codes(w)
            hi, lo = (q8 >> 4) + 8, q8 & 15
            self.packed = torch._convert_weight_to_int4pack_for_cpu(torch.cat([hi, lo]).to(torch.int32), 1)
            dt = d.t()
            hs = torch.stack([16 * dt, torch.zeros_like(dt)], dim=-1)
            ls = torch.stack([dt, 8 * dt], dim=-1)
            self.scales = torch.cat([hs, ls], dim=1).contiguous().to(act_dtype)
            self.kind = "int4x2"
        else:
            s = w.abs().amax(1).clamp_min(1e-12) / 127
            self.packed = (w / s[:, None]).round().clamp(-127, 127).to(torch.int8).contiguous()
            self.scales = s.to(act_dtype)
            self.kind = "int8"
        self.bias_act = None if self.bias is None else self.bias.to(act_dtype)

    @staticmethod
    def _exact(w: torch.Tensor, bits: int) -> bool:
        """Is `w` exactly a GGUF Q4_0/Q4_1 (bits=4) or Q8_0 (bits=8) block layout along its rows?"""
        N, K = w.shape
        if K % GROUP:
            return False
        if bits == 4:
            q, d, m = int4_codes(w)
            back = q.float().view(N, K // GROUP, GROUP) * d[..., None] + m[..., None]
        else:
            q, d = int8_block_codes(w)
            back = q.float().view(N, K // GROUP, GROUP) * d[..., None]
        return bool((back.view(N, K) - w).abs().max() <= 1e-6 * max(1.0, float(w.abs().max())))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., K) -> (..., N); act dtype for few rows, fp32 for many."""
        shape = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if x2.shape[0] > INT_MAX_ROWS:
            y = F.linear(x2.float(), self.dense, self.bias)
            return y.view(*shape, self.out_features)
        x2 = x2.to(self.act_dtype)
        if self.kind == "int4":
            y = torch._weight_int4pack_mm_for_cpu(x2, self.packed, GROUP, self.scales)
        elif self.kind == "int4x2":
            y2 = torch._weight_int4pack_mm_for_cpu(x2, self.packed, GROUP, self.scales)
            y = y2[:, : self.out_features] + y2[:, self.out_features:]
        else:
            y = torch._weight_int8pack_mm(x2, self.packed, self.scales)
        if self.bias_act is not None:
            y = y + self.bias_act
        return y.view(*shape, self.out_features)

    def nbytes(self) -> int:
        return self.packed.numel() * self.packed.element_size() + self.scales.numel() * self.scales.element_size()


class FastDecoder:
    """A lean forward over packed weights with the same signature as `Transformer.forward` (no loss).

    Holds no autograd state; build it once per model (`fast_decoder(model)` caches it).
    """

    def __init__(self, model: Transformer, *, bits: int | None = None, act_dtype: torch.dtype = torch.bfloat16):
        cfg = model.cfg
        self.cfg = cfg
        self.act_dtype = act_dtype
        self.embed = model.embed.weight.detach().float()
        self.rope_cos, self.rope_sin = model.rope_cos.float(), model.rope_sin.float()
        half = cfg.rotary_dim // 2
        # rotate-half as one multiply: rot(x) = cat(x2, x1) * [-1]*half ++ [+1]*half
        self.rope_sign = torch.cat([-torch.ones(half), torch.ones(half)])
        self.layers = []
        hs, nh, nkv = cfg.head_dim, cfg.n_head, cfg.n_kv_head
        self.split = (nh * hs, nkv * hs, nkv * hs)
        for blk in model.blocks:
            a, m = blk.attn, blk.mlp
            qkv_w = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight])
            qkv_b = torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]) if cfg.bias else None
            layer = {
                "n1": self._norm(blk.attn_norm),
                "n2": self._norm(blk.mlp_norm) if blk.mlp_norm is not None else None,
                "qkv": PackedLinear(qkv_w, qkv_b, bits=bits, act_dtype=act_dtype),
                "o": PackedLinear(a.o_proj.weight, a.o_proj.bias, bits=bits, act_dtype=act_dtype),
            }
            if cfg.mlp == "swiglu":
                layer["up"] = PackedLinear(torch.cat([m.gate_proj.weight, m.up_proj.weight]),
                                           torch.cat([m.gate_proj.bias, m.up_proj.bias]) if cfg.bias else None,
                                           bits=bits, act_dtype=act_dtype)
                layer["down"] = PackedLinear(m.down_proj.weight, m.down_proj.bias, bits=bits, act_dtype=act_dtype)
            else:
                layer["up"] = PackedLinear(m.fc1.weight, m.fc1.bias, bits=bits, act_dtype=act_dtype)
                layer["down"] = PackedLinear(m.fc2.weight, m.fc2.bias, bits=bits, act_dtype=act_dtype)
            self.layers.append(layer)
        self.norm = self._norm(model.norm)
        head_bits = bits if bits is not None else None
        self.head = PackedLinear(model.lm_head.weight, model.lm_head.bias, bits=head_bits, act_dtype=act_dtype)

    def _norm(self, mod):
        w = mod.weight.detach().float()
        b = None if getattr(mod, "bias", None) is None else mod.bias.detach().float()
        eps = getattr(mod, "eps", self.cfg.norm_eps)
        if self.cfg.norm == "layernorm":
            return lambda x: F.layer_norm(x, (x.shape[-1],), w, b, eps)
        return lambda x: F.rms_norm(x, (x.shape[-1],), w, eps)

    def weight_bytes(self) -> int:
        mats = [lin for layer in self.layers for k, lin in layer.items() if isinstance(lin, PackedLinear)]
        return sum(m.nbytes() for m in mats + [self.head])

    def kinds(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for lin in [lin for layer in self.layers for lin in layer.values() if isinstance(lin, PackedLinear)] + [self.head]:
            out[lin.kind] = out.get(lin.kind, 0) + 1
        return out

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x (B, T, H, hs); cos/sin (B|1, T, 1, rd)."""
        rd = self.cfg.rotary_dim
        xr = x[..., :rd]
        rot = torch.cat([xr[..., rd // 2:], xr[..., : rd // 2]], dim=-1) * sin
        out = xr * cos + rot
        return torch.cat([out, x[..., rd:]], dim=-1) if rd < x.shape[-1] else out

    @torch.inference_mode()
    def __call__(self, idx: torch.Tensor, *, pos: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None,
                 cache: KVCache | None = None, last_only: bool = False) -> torch.Tensor:
        cfg = self.cfg
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if pos is None:
            pos = torch.arange(start, start + T).unsqueeze(0)
        cos = self.rope_cos[pos].unsqueeze(2)  # (B|1, T, 1, rd)
        sin = (self.rope_sin[pos] * self.rope_sign).unsqueeze(2)
        nh, nkv, hs = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        rep = nh // nkv
        x = F.embedding(idx, self.embed)  # (B, T, C) fp32 residual stream
        for li, L in enumerate(self.layers):
            h = L["n1"](x)
            # attention runs in fp32 (the cache is fp32); the int kernels' bf16 output is widened once
            qkv = L["qkv"](h).float().view(B, T, nh + 2 * nkv, hs)  # (B, T, nh+2nkv, hs)
            qk = self._rope(qkv[:, :, : nh + nkv], cos, sin)
            q = qk[:, :, :nh].transpose(1, 2)  # (B, nh, T, hs)
            k = qk[:, :, nh:].transpose(1, 2)  # (B, nkv, T, hs)
            v = qkv[:, :, nh + nkv:].transpose(1, 2)
            mask, causal = attn_mask, attn_mask is None
            if cache is not None:
                ck, cv = cache.k[li], cache.v[li]
                ck[:, :, start:start + T] = k
                cv[:, :, start:start + T] = v
                k, v = ck[:, :, : start + T], cv[:, :, : start + T]
                if start > 0 and mask is None:
                    causal = False
                    if T > 1:
                        mask = torch.ones(T, start + T, dtype=torch.bool).tril(start)
            if T == 1 and rep > 1:
                # one query per row: fold the query heads of a kv group into the "time" axis, so
                # k/v are read as they are instead of being repeated rep times.
                y = F.scaled_dot_product_attention(q.reshape(B, nkv, rep, hs), k, v, attn_mask=mask)
                y = y.reshape(B, 1, nh * hs)
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                   is_causal=causal and T > 1, enable_gqa=rep > 1)
                y = y.transpose(1, 2).reshape(B, T, nh * hs)
            attn = L["o"](y)
            if cfg.parallel_residual:
                x = x + attn + self._mlp(L, h)
            else:
                x = x + attn
                x = x + self._mlp(L, L["n2"](x))
        if cache is not None:
            cache.length = start + T
        if last_only:
            x = x[:, -1:]
        return self.head(self.norm(x)).float()

    def _mlp(self, L, h):
        u = L["up"](h)
        if self.cfg.mlp == "swiglu":
            g, u = u.chunk(2, dim=-1)
            return L["down"](F.silu(g) * u)
        return L["down"](F.gelu(u, approximate="tanh" if self.cfg.mlp == "gelu_tanh" else "none"))


_CACHE: dict[int, tuple] = {}


def fast_decoder(model: Transformer, bits: int | None = None) -> FastDecoder:
    """The (cached) FastDecoder of `model`; rebuilt if the model's weights object changed."""
    key = (id(model), bits)
    hit = _CACHE.get(key)
    if hit is not None and hit[0]() is model:
        return hit[1]
    import weakref

    dec = FastDecoder(model, bits=bits)
    _CACHE[key] = (weakref.ref(model), dec)
    return dec
