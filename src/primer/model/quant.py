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

from primer.model.transformer import KVCache, Transformer

GROUP = 32
# Batch rows at or below which decode steps use the weight-only kernels (above it dense fp32
# sgemm is faster on a 2-core AVX-512 CPU).
INT_MAX_ROWS = int(os.environ.get("PRIMER_INT_MAX_ROWS", "8"))


def has_cpu_int_kernels() -> bool:
    return hasattr(torch, "_weight_int4pack_mm_for_cpu") and hasattr(torch, "_weight_int8pack_mm")


def _int4_scales(d: torch.Tensor, m: torch.Tensor, act_dtype) -> torch.Tensor:
    """(K/group, N, 2) [scale, zero] for w = d * q + m; the kernel computes (q - 8) * scale + zero."""
    return torch.stack([d.t(), (m + 8 * d).t()], dim=-1).contiguous().to(act_dtype)


def _codes(part) -> tuple | None:
    """Quantized block codes of one (weight, bias, codes function) part, or None."""
    codes = part[2]
    return codes() if codes is not None else None


class PackedLinear:
    """y = x @ W.T + b for W = the row-wise concatenation of `parts` [(weight (N_i, K), bias, source)].

    Few rows (decoding) run a weight-only kernel on packed codes with bf16 activations:
      int4    GGUF Q4_0/Q4_1 blocks as they are in the file (group 32, scale d, zero m + 8d);
      int4x2  GGUF Q8_0 blocks, exact, as two int4 planes: q8 = 16 h + l, h = q8 >> 4, l = q8 & 15;
      int8    anything else (fp32/bf16 weights, k-quants), per-output-channel symmetric int8.
    Many rows (prefill, big batches) run dense fp32 sgemm on the model's own weight tensors.
    """

    def __init__(self, parts: list[tuple], act_dtype: torch.dtype = torch.bfloat16, packing: str = "auto"):
        self.dense = [(w.detach(), None if b is None else b.detach()) for w, b, _ in parts]
        self.in_features = parts[0][0].shape[1]
        self.out_features = sum(p[0].shape[0] for p in parts)
        self.act_dtype = act_dtype
        bias = [b for _, b, _ in parts]
        self.bias_act = None if bias[0] is None else torch.cat([b.detach().float() for b in bias]).to(act_dtype)
        codes = [_codes(p) for p in parts] if packing == "auto" else [None]
        kinds = {c[0] if c is not None else None for c in codes}
        if kinds == {"q4"}:
            q = torch.cat([c[1] for c in codes]).to(torch.int32)
            self.packed = torch._convert_weight_to_int4pack_for_cpu(q, 1)
            self.scales = _int4_scales(torch.cat([c[2] for c in codes]), torch.cat([c[3] for c in codes]), act_dtype)
            self.kind = "int4"
        elif kinds == {"q8"}:
            q8 = torch.cat([c[1] for c in codes]).to(torch.int32)
            d = torch.cat([c[2] for c in codes])
            self.packed = torch._convert_weight_to_int4pack_for_cpu(torch.cat([(q8 >> 4) + 8, q8 & 15]), 1)
            self.scales = torch.cat([_int4_scales(16 * d, -128 * d, act_dtype),  # (h+8-8)*16d + 0
                                     _int4_scales(d, torch.zeros_like(d), act_dtype)], dim=1)  # l*d
            self.kind = "int4x2"
        else:
            w = torch.cat([p[0].detach().float() for p in parts])
            s = w.abs().amax(1).clamp_min(1e-12) / 127
            self.packed = (w / s[:, None]).round_().clamp_(-127, 127).to(torch.int8)
            self.scales = s.to(act_dtype)
            self.kind = "int8"

    def __call__(self, x: torch.Tensor, packed: bool = True) -> torch.Tensor:
        """x (..., K) -> (..., N): packed kernel in act dtype, or (packed=False) dense fp32."""
        shape = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if not packed:
            xf = x2.float()
            ys = [F.linear(xf, w.float(), None if b is None else b.float()) for w, b in self.dense]
            y = ys[0] if len(ys) == 1 else torch.cat(ys, dim=-1)
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

    def __init__(self, model: Transformer, *, packing: str = "auto", act_dtype: torch.dtype = torch.bfloat16):
        cfg = model.cfg
        self.cfg = cfg
        self.act_dtype = act_dtype
        self.embed = model.embed.weight.detach().float()
        self.rope_cos, self.rope_sin = model.rope_cos.float(), model.rope_sin.float()
        half = cfg.rotary_dim // 2
        # rotate-half as one multiply: rot(x) = cat(x2, x1) * [-1]*half ++ [+1]*half
        self.rope_sign = torch.cat([-torch.ones(half), torch.ones(half)])
        self.layers = []
        sources = getattr(model, "block_codes", {}) if packing == "auto" else {}
        names = {id(p): n for n, p in model.named_parameters()}

        def lin(*mods):
            parts = [(m.weight, m.bias, sources.get(names.get(id(m.weight)))) for m in mods]
            return PackedLinear(parts, act_dtype, packing)

        for blk in model.blocks:
            a, m = blk.attn, blk.mlp
            layer = {
                "n1": self._norm(blk.attn_norm),
                "n2": self._norm(blk.mlp_norm) if blk.mlp_norm is not None else None,
                "qkv": lin(a.q_proj, a.k_proj, a.v_proj),
                "o": lin(a.o_proj),
            }
            if cfg.mlp == "swiglu":
                layer["up"], layer["down"] = lin(m.gate_proj, m.up_proj), lin(m.down_proj)
            else:
                layer["up"], layer["down"] = lin(m.fc1), lin(m.fc2)
            self.layers.append(layer)
        self.norm = self._norm(model.norm)
        self.head = lin(model.lm_head)

    def _norm(self, mod):
        w = mod.weight.detach().float()
        b = None if getattr(mod, "bias", None) is None else mod.bias.detach().float()
        eps = getattr(mod, "eps", self.cfg.norm_eps)
        if self.cfg.norm == "layernorm":
            return lambda x: F.layer_norm(x, (x.shape[-1],), w, b, eps)
        # RMSNorm as one native LayerNorm over [x, -x] (mean 0, variance mean(x^2)): 2 ops instead
        # of F.rms_norm's ~7 small ones, which matters at one token per step.
        C = w.shape[0]
        w2, pm = torch.cat([w, w]), torch.tensor([[1.0], [-1.0]])
        return lambda x: F.layer_norm((x.unsqueeze(-2) * pm).flatten(-2), (2 * C,), w2, None, eps)[..., :C]

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
        # Decode steps of small batches use the packed kernels; prompts (T > 1) and big batches use
        # dense fp32. The choice depends on B only through the threshold, so a prompt decodes the
        # same alone or in any batch of up to INT_MAX_ROWS rows.
        pk = T == 1 and B <= INT_MAX_ROWS
        x = F.embedding(idx, self.embed)  # (B, T, C) fp32 residual stream
        for li, L in enumerate(self.layers):
            h = L["n1"](x)
            # attention runs in fp32 (the cache is fp32); the int kernels' bf16 output is widened once
            qkv = L["qkv"](h, pk).float().view(B, T, nh + 2 * nkv, hs)  # (B, T, nh+2nkv, hs)
            qk = self._rope(qkv[:, :, : nh + nkv], cos, sin)
            q = qk[:, :, :nh].transpose(1, 2)  # (B, nh, T, hs)
            k = qk[:, :, nh:].transpose(1, 2)  # (B, nkv, T, hs)
            v = qkv[:, :, nh + nkv:].transpose(1, 2)
            mask, causal = attn_mask, attn_mask is None
            if cache is not None:
                k, v = cache.update(li, k, v)
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
            attn = L["o"](y, pk)
            if cfg.parallel_residual:
                x = x + attn + self._mlp(L, h, pk)
            else:
                x = x + attn
                x = x + self._mlp(L, L["n2"](x), pk)
        if cache is not None:
            cache.length = start + T
        if last_only:
            x = x[:, -1:]
        return self.head(self.norm(x), pk).float()

    def _mlp(self, L, h, pk: bool):
        u = L["up"](h, pk)
        if self.cfg.mlp == "swiglu":
            g, u = u.chunk(2, dim=-1)
            return L["down"](F.silu(g) * u, pk)
        return L["down"](F.gelu(u, approximate="tanh" if self.cfg.mlp == "gelu_tanh" else "none"), pk)


_CACHE: dict[int, tuple] = {}


def fast_decoder(model: Transformer, packing: str = "auto") -> FastDecoder:
    """The (cached) FastDecoder of `model` ("auto": GGUF blocks as they are, else int8; "int8": always int8)."""
    key = (id(model), packing)
    hit = _CACHE.get(key)
    if hit is not None and hit[0]() is model:
        return hit[1]
    import weakref

    dec = FastDecoder(model, packing=packing)
    _CACHE[key] = (weakref.ref(model), dec)
    return dec
