"""The fast CPU decode path: block-quantized matmuls and a lean per-token forward.

Why: decoding one token reads every weight once, so on a CPU the fp32 loop is bound by memory
traffic (540 MB a token for SmolLM2-135M) and by Python launching ~50 ops per layer. Here:
  * with primer's own kernel (`primer.model.kernels`, AVX-512, built on first use) the weights stay
    the file's blocks of 32 (Q4_0/Q4_1 as 4-bit codes with their scales and mins, Q8_0 as int8;
    float weights become Q8_0-style blocks) and are multiplied in fp32: the output equals the fp32
    reference up to summation order, a batch reads the weights once for all its rows, and a row's
    output has the same bits whatever its batch. Prompts run on the same kernel, so no dense copy of
    the weights is needed. Decode steps (`act8`) quantize each input
    row to int8 per block of 32, as llama.cpp does, and multiply with VNNI int8 dot products (about 3x
    the fp32 kernel's speed, bench/decode_profile.py) where the CPU has AVX-512 VNNI; prompts (the engine's prefill, see
    engine.Runner.prefill) and scoring calls (`__call__` without act8) stay fp32.
  * without it (no AVX-512 or no compiler), torch's weight-only kernels
    (`_weight_int4pack_mm_for_cpu`, group 32; `_weight_int8pack_mm`, per output channel) with bf16
    activations, and dense fp32 sgemm for prompts and batches above INT_MAX_ROWS rows.
  * matrices that read the same input are fused (q|k|v, gate|up), RMSNorm is one op, rotary is
    applied to q and k heads at once, and grouped-query decode attends without expanding k/v.
`model.Transformer.forward` stays the exact reference; `FastDecoder` mirrors it step for step and
is tested against it (tests/test_generate.py, tests/test_kernels.py).
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F

from primer.model import kernels
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

    With primer's kernel (all row counts, fp32 activations and output):
      q4      GGUF Q4_0/Q4_1 blocks as they are in the file (w = d*q + m, fp32 scales);
      q8      GGUF Q8_0 blocks as they are, or any other weight as Q8_0-style blocks (max|w|/127 per 32).
    Without it, few rows (decoding) run torch's weight-only kernels with bf16 activations:
      int4    GGUF Q4_0/Q4_1 blocks (group 32, scale d, zero m + 8d);
      int4x2  GGUF Q8_0 blocks, exact, as two int4 planes: q8 = 16 h + l, h = q8 >> 4, l = q8 & 15;
      int8    anything else, per-output-channel symmetric int8;
    and many rows (prefill, big batches) run dense fp32 sgemm on the model's own weight tensors.
    """

    def __init__(self, parts: list[tuple], act_dtype: torch.dtype = torch.bfloat16, packing: str = "auto"):
        self.dense = [(w.detach(), None if b is None else b.detach()) for w, b, _ in parts]
        self.in_features = parts[0][0].shape[1]
        self.out_features = sum(p[0].shape[0] for p in parts)
        self.act_dtype = act_dtype
        bias = [b for _, b, _ in parts]
        bias = None if bias[0] is None else torch.cat([b.detach().float() for b in bias])
        codes = [_codes(p) for p in parts] if packing == "auto" else [None]
        kinds = {c[0] if c is not None else None for c in codes}
        self.ext = kernels.load() if self.in_features % GROUP == 0 else None
        if self.ext is not None:
            self.bias = bias
            if kinds == {"q4"}:
                self.packed = kernels.pack_q4(*(torch.cat([c[i] for c in codes]) for i in (1, 2, 3)))
                self.kind = "q4"
            else:
                if kinds == {"q8"}:
                    q, d = torch.cat([c[1] for c in codes]), torch.cat([c[2] for c in codes])
                else:
                    q, d = kernels.quantize_q8(torch.cat([p[0].detach().float() for p in parts]))
                self.packed = kernels.pack_q8(q, d)
                self.kind = "q8"
            self.dense = []  # the kernel runs every row count on the blocks
            return
        self.bias_act = None if bias is None else bias.to(act_dtype)
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

    def __call__(self, x: torch.Tensor, packed: bool = True, act8: bool = False) -> torch.Tensor:
        """x (..., K) -> (..., N): the block kernel (fp32; act8: x quantized to int8 per block of 32,
        where the CPU has VNNI), else the packed torch kernel in act dtype, or (packed=False) dense fp32."""
        shape = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if self.ext is not None:
            x2 = x2.float()
            y = (self.ext.q4_mm(x2, *self.packed, act8=act8) if self.kind == "q4"
                 else self.ext.q8_mm(x2, *self.packed, act8=act8))
            if y.shape[1] != self.out_features:
                y = y[:, : self.out_features]
            if self.bias is not None:
                y = y + self.bias
            return y.view(*shape, self.out_features)
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
        tensors = self.packed if isinstance(self.packed, tuple) else (self.packed, self.scales)
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)


class ModelWeights:
    """What `FastDecoder` reads, by the `Transformer`'s parameter names ("blocks.0.attn.q_proj.weight"):

      tensor(name, shape_only)  the fp32 tensor (None where the model has none, e.g. no bias); with
                                shape_only a weight that has block codes may come as a shape on the
                                meta device (the kernels run on the codes, so its values are never read);
      codes(name)               a function returning the weight's quantized blocks (`PackedLinear`), or None;
      embed(idx)                the embedding rows of token ids idx, fp32 (*idx.shape, n_embd);
      rope_cos, rope_sin        the rotary tables.
    This one reads a built `Transformer` (and the GGUF blocks it was loaded from, `model.block_codes`);
    `primer.weights.gguf_io.GGUFWeights` reads a GGUF file without ever building one.
    """

    def __init__(self, model: Transformer):
        self.cfg = model.cfg
        self._params = dict(model.named_parameters(remove_duplicate=False))  # a tied head under both names
        self._codes = getattr(model, "block_codes", {})
        # the decoder keeps this function (and through it the table), not this view of every weight
        self.embed = functools.partial(F.embedding, weight=model.embed.weight.detach().float())
        self.rope_cos, self.rope_sin = model.rope_cos.float(), model.rope_sin.float()

    def tensor(self, name: str, shape_only: bool = False) -> torch.Tensor | None:
        p = self._params.get(name)
        return None if p is None else p.detach()

    def codes(self, name: str):
        return self._codes.get(name)


class FastDecoder:
    """A lean forward over packed weights with the same signature as `Transformer.forward` (no loss).

    Built from a `Transformer` (`fast_decoder(model)` caches it) or from a weights view such as
    `primer.weights.gguf_io.GGUFWeights` (`load_model(spec, decode_only=True)`), which packs the
    file's blocks without an fp32 copy of the weights. Holds no autograd state.
    """

    def __init__(self, model, *, packing: str = "auto", act_dtype: torch.dtype = torch.bfloat16):
        w = ModelWeights(model) if isinstance(model, Transformer) else model
        cfg = w.cfg
        self.cfg = cfg
        self.act_dtype = act_dtype
        self.embed = w.embed
        self.rope_cos, self.rope_sin = w.rope_cos, w.rope_sin
        half = cfg.rotary_dim // 2
        # rotate-half as one multiply: rot(x) = cat(x2, x1) * [-1]*half ++ [+1]*half
        self.rope_sign = torch.cat([-torch.ones(half), torch.ones(half)])
        self.layers = []
        on_blocks = kernels.load() is not None  # primer's kernel runs every row count on the blocks

        def lin(*prefixes):
            fns = [w.codes(p + ".weight") if packing == "auto" else None for p in prefixes]
            codes = [None if f is None else f() for f in fns]
            # primer's kernel packs blocks of one kind as they are: the fp32 weights are not needed
            kinds = {None if c is None else c[0] for c in codes}
            shape_only = on_blocks and len(kinds) == 1 and None not in kinds
            parts = [(w.tensor(p + ".weight", shape_only), w.tensor(p + ".bias"), None if c is None else (lambda c=c: c))
                     for p, c in zip(prefixes, codes)]
            return PackedLinear(parts, act_dtype, packing)

        # the head first: its packing (the largest matrix) then peaks before the rest is resident
        self.head = lin("lm_head")
        for i in range(cfg.n_layer):
            b = f"blocks.{i}."
            layer = {
                "n1": self._norm(w, b + "attn_norm"),
                "n2": None if cfg.parallel_residual else self._norm(w, b + "mlp_norm"),
                "qkv": lin(b + "attn.q_proj", b + "attn.k_proj", b + "attn.v_proj"),
                "o": lin(b + "attn.o_proj"),
            }
            if cfg.mlp == "swiglu":
                layer["up"], layer["down"] = lin(b + "mlp.gate_proj", b + "mlp.up_proj"), lin(b + "mlp.down_proj")
            else:
                layer["up"], layer["down"] = lin(b + "mlp.fc1"), lin(b + "mlp.fc2")
            self.layers.append(layer)
        self.norm = self._norm(w, "norm")
        # one decode step in a dozen native calls per layer (`step`), where primer's kernels run
        # every matmul of the model and the shapes suit them
        mats = [v for layer in self.layers for v in layer.values() if isinstance(v, PackedLinear)] + [self.head]
        self.ext = kernels.load()
        if not (self.ext is not None and all(m.ext is not None for m in mats)
                and cfg.head_dim % 16 == 0 and cfg.n_embd % 16 == 0):
            self.ext = None

    def _norm(self, weights, prefix: str):
        w = weights.tensor(prefix + ".weight").float()
        b = weights.tensor(prefix + ".bias")
        b = None if b is None else b.float()
        eps = self.cfg.norm_eps
        if self.cfg.norm == "layernorm":
            return lambda x: F.layer_norm(x, (x.shape[-1],), w, b, eps)
        ext = kernels.load()
        if ext is not None and w.shape[0] % 16 == 0:
            return lambda x: ext.rms_norm(x, w, eps)
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

    @staticmethod
    def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                causal: bool) -> torch.Tensor:
        """q (B, nh, T, hs) over k/v (B, nkv, S, hs) -> (B, T, nh * hs)."""
        B, nh, T, hs = q.shape
        nkv = k.shape[1]
        if T == 1 and nh > nkv:
            # one query per row: fold the query heads of a kv group into the "time" axis, so
            # k/v are read as they are instead of being repeated nh / nkv times.
            y = F.scaled_dot_product_attention(q.reshape(B, nkv, nh // nkv, hs), k, v, attn_mask=mask)
            return y.reshape(B, 1, nh * hs)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and T > 1, enable_gqa=nh > nkv)
        return y.transpose(1, 2).reshape(B, T, nh * hs)

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x (B, T, H, hs); cos/sin (B|1, T, 1, rd)."""
        rd = self.cfg.rotary_dim
        xr = x[..., :rd]
        rot = torch.cat([xr[..., rd // 2:], xr[..., : rd // 2]], dim=-1) * sin
        out = xr * cos + rot
        return torch.cat([out, x[..., rd:]], dim=-1) if rd < x.shape[-1] else out

    @torch.inference_mode()
    def __call__(self, idx: torch.Tensor, *, pos: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None,
                 cache: KVCache | None = None, last_only: bool = False, act8: bool = False) -> torch.Tensor:
        """act8: the matmuls quantize their input rows to int8 (what `step` does; see PackedLinear)."""
        cfg = self.cfg
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if pos is None:
            pos = torch.arange(start, start + T).unsqueeze(0)
        cos = self.rope_cos[pos].unsqueeze(2)  # (B|1, T, 1, rd)
        sin = (self.rope_sin[pos] * self.rope_sign).unsqueeze(2)
        nh, nkv, hs = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        # primer's kernel runs every row count. Without it, decode steps of small batches use torch's
        # packed kernels and prompts (T > 1) and big batches dense fp32; the choice depends on B only
        # through the threshold, so a prompt decodes the same alone or in any batch of up to
        # INT_MAX_ROWS rows (their attention row by row, below).
        pk = T == 1 and B <= INT_MAX_ROWS
        # decode rows at their own lengths attend over their own keys, as each does alone: a softmax over
        # the batch's longest row, with the row's later keys masked, gives other bits
        own = None
        if pk and attn_mask is not None and B > 1 and attn_mask.shape[0] == B:
            own = attn_mask.view(B, -1).sum(1).tolist()
        x = self.embed(idx)  # (B, T, C) fp32 residual stream
        for li, L in enumerate(self.layers):
            h = L["n1"](x)
            # attention runs in fp32 (the cache is fp32); torch's int kernels' bf16 output is widened once
            qkv = L["qkv"](h, pk, act8).float().view(B, T, nh + 2 * nkv, hs)  # (B, T, nh+2nkv, hs)
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
            if own is not None:
                y = torch.cat([self._attend(q[i: i + 1], k[i: i + 1, :, : n], v[i: i + 1, :, : n],
                                            mask[i: i + 1, ..., : n], False) for i, n in enumerate(own)])
            else:
                y = self._attend(q, k, v, mask, causal)
            attn = L["o"](y, pk, act8)
            x = self._residual(L, x, h, attn, pk, act8)
        if cache is not None:
            cache.length = start + T
        if last_only:
            x = x[:, -1:]
        return self.head(self.norm(x), pk, act8).float()

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor, pos: torch.Tensor, kc: list[torch.Tensor], vc: list[torch.Tensor]) -> torch.Tensor:
        """One decode step on primer's kernels (requires `self.ext`): row m feeds tokens[m] at position
        pos[m] of cache slot m (kc/vc per layer: (slots, nkv, cap, hs), written in place) and attends
        over that slot's positions 0..pos[m] only. Logits (n, V) fp32."""
        cfg, ext = self.cfg, self.ext
        nh, nkv, hs = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        x = self.embed(tokens)  # (n, C)
        for li, L in enumerate(self.layers):
            h = L["n1"](x)
            qkv = L["qkv"](h, act8=True)  # (n, (nh + 2 nkv) hs)
            ext.rope_(qkv, pos, self.rope_cos, self.rope_sin, nh + nkv, hs)
            attn = L["o"](ext.attend(qkv, kc[li], vc[li], pos, nh, nkv), act8=True)
            x = self._residual(L, x, h, attn, True, True)
        return self.head(self.norm(x), act8=True)

    @torch.inference_mode()
    def prefill(self, prompts: list[list[int]], slots: list[int], kc: list[torch.Tensor],
                vc: list[torch.Tensor]) -> torch.Tensor:
        """Several fresh prompts in one forward (requires `self.ext`): prompt i is written into cache slot
        slots[i] at positions 0..len-1 (kc/vc as in `step`); logits (n, V) fp32 after each prompt's last token.

        The prompts are packed end to end, without padding. Every op of the forward but attention and the
        MLP's activation works row by row (primer's matmul and norm give a row the same bits in any row
        count), so those run once over all the prompts; attention and the activation run per prompt on the
        same shapes as `__call__` on that prompt alone (torch's vectorised loops end where a tensor does).
        Each prompt's cache and logits are thus the ones it gets alone, bit for bit, and the weights are
        read once for all of them instead of once per prompt (with a torch dispatch per op and prompt)."""
        cfg = self.cfg
        nh, nkv, hs = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        ends = torch.tensor([len(p) for p in prompts]).cumsum(0).tolist()
        spans = list(zip([0] + ends[:-1], ends))
        N = ends[-1]
        pos = torch.cat([torch.arange(b - a) for a, b in spans]).unsqueeze(0)
        cos = self.rope_cos[pos].unsqueeze(2)
        sin = (self.rope_sin[pos] * self.rope_sign).unsqueeze(2)
        x = self.embed(torch.tensor([[t for p in prompts for t in p]]))  # (1, N, C)
        for li, L in enumerate(self.layers):
            h = L["n1"](x)
            qkv = L["qkv"](h).view(1, N, nh + 2 * nkv, hs)
            qk = self._rope(qkv[:, :, : nh + nkv], cos, sin)
            ys = []
            for (a, b), s in zip(spans, slots):
                T = b - a
                ck, cv = kc[li][s: s + 1], vc[li][s: s + 1]
                ck[:, :, :T] = qk[:, a:b, nh:].transpose(1, 2)
                cv[:, :, :T] = qkv[:, a:b, nh + nkv:].transpose(1, 2)
                ys.append(self._attend(qk[:, a:b, :nh].transpose(1, 2), ck[:, :, :T], cv[:, :, :T], None, True))
            attn = L["o"](torch.cat(ys, dim=1))
            x = self._residual(L, x, h, attn, True, False, spans)
        last = x[:, [b - 1 for b in ends]]
        return self.head(self.norm(last)).float()[0]

    def _residual(self, L, x, h, attn, pk: bool, act8: bool, spans: list[tuple[int, int]] | None = None):
        """x after one layer, given its attention output and h = the layer's first norm of x."""
        if self.cfg.parallel_residual:
            return x + attn + self._mlp(L, h, pk, act8, spans)
        x = x + attn
        return x + self._mlp(L, L["n2"](x), pk, act8, spans)

    def _mlp(self, L, h, pk: bool, act8: bool, spans: list[tuple[int, int]] | None = None):
        u = L["up"](h, pk, act8)
        a = self._act(u) if spans is None else torch.cat([self._act(u[:, s:e]) for s, e in spans], dim=1)
        return L["down"](a, pk, act8)

    def _act(self, u: torch.Tensor) -> torch.Tensor:
        if self.cfg.mlp == "swiglu":
            g, u = u.chunk(2, dim=-1)
            return F.silu(g) * u
        return F.gelu(u, approximate="tanh" if self.cfg.mlp == "gelu_tanh" else "none")


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
