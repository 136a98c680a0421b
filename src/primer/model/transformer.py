"""One readable decoder-only transformer for both the phi-1.5 and the Llama (phi-3) shapes.

Every difference between the families is a `ModelConfig` value, never a branch on a name:
  * phi-1.5: parallel attention+MLP off one LayerNorm, GELU(tanh) MLP, biases everywhere,
    rotary on the first 32 of 64 dims per head, untied head with a bias.
  * Llama / phi-3-mini / SmolLM2: sequential pre-RMSNorm blocks, SwiGLU MLP, no biases,
    full rotary, grouped-query attention (SmolLM2), tied or untied head.
Rotary uses the "rotate half" (GPT-NeoX / HF) convention; importers of interleaved layouts
(GGUF llama Q/K) un-permute the weights instead of the model carrying two conventions.

The shape registry (`ModelConfig.from_name`) holds a tiny `debug` entry for tests, CPU-trainable
sizes, and real entries that cite the config they reproduce.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from primer.config import Count, Positive, check_config
from primer.errors import PrimerError
from primer.model import fused
from primer.model.loss import cross_entropy


@dataclass
class ModelConfig:
    name: str = "debug"
    """Registry name of this shape (informational once built)."""
    vocab_size: Count = 512
    """Rows of the embedding table (may exceed the tokenizer's vocabulary, e.g. phi-1.5 pads to 51200)."""
    n_layer: Count = 2
    """Number of transformer blocks."""
    n_head: Count = 4
    """Attention (query) heads per block."""
    n_kv_head: Count | None = None
    """Key/value heads (grouped-query attention); None means n_head (plain multi-head)."""
    n_embd: Count = 64
    """Residual stream width d_model."""
    head_dim: Count | None = None
    """Per-head width; None means n_embd // n_head."""
    intermediate_size: Count = 256
    """Hidden width of the MLP."""
    block_size: Count = 128
    """Maximum context length in tokens."""
    rotary_dim: int | None = None
    """Leading dims of each head that get rotary embedding (phi-1.5: 32 of 64); None means all."""
    rope_base: Positive = 10000.0
    """Rotary base frequency theta."""
    parallel_residual: bool = False
    """True: x + attn(ln(x)) + mlp(ln(x)) off one norm (phi); False: sequential pre-norm (Llama)."""
    norm: Literal["layernorm", "rmsnorm"] = "rmsnorm"
    """Normalisation layer kind."""
    norm_eps: Positive = 1e-5
    """Epsilon of the norm layers."""
    mlp: Literal["gelu", "gelu_tanh", "swiglu"] = "swiglu"
    """MLP kind: GELU (exact or tanh approximation, phi) with fc1/fc2, or SwiGLU (Llama)."""
    bias: bool = False
    """Biases on the attention and MLP linear layers (phi: yes, Llama: no)."""
    lm_head_bias: bool = False
    """Bias on the output head (phi: yes)."""
    tie_embeddings: bool = False
    """Share the output head with the token embedding."""

    def __post_init__(self) -> None:
        check_config(self)  # a zero or negative size, from a recipe's model_overrides or a file, is named here
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if self.head_dim is None:
            self.head_dim = self.n_embd // self.n_head
        if self.rotary_dim is None:
            self.rotary_dim = self.head_dim
        if self.n_head % self.n_kv_head:
            raise PrimerError(f"n_head ({self.n_head}) must be a multiple of n_kv_head ({self.n_kv_head})")
        if self.rotary_dim % 2 or self.rotary_dim > self.head_dim:
            raise PrimerError(f"rotary_dim ({self.rotary_dim}) must be even and <= head_dim ({self.head_dim})")

    @classmethod
    def from_name(cls, name: str, **overrides) -> "ModelConfig":
        if name not in SHAPES:
            raise PrimerError(f"unknown model shape '{name}'; known shapes: {', '.join(SHAPES)}")
        # Rebuild from the entry's declared fields (not the resolved config), so derived fields
        # such as head_dim and rotary_dim follow an overridden n_embd / n_head.
        return cls(**{**_SHAPE_ARGS[name], **overrides})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise PrimerError(f"unknown model config field(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


_PHI = dict(parallel_residual=True, norm="layernorm", mlp="gelu_tanh", bias=True, lm_head_bias=True)
_LLAMA = dict(parallel_residual=False, norm="rmsnorm", mlp="swiglu", bias=False)

_SHAPE_ARGS: dict[str, dict] = {
    # Tiny shape for unit tests: trains in seconds, deterministic on CPU.
    "debug": dict(name="debug"),
    "debug-phi": dict(name="debug-phi", rotary_dim=8, norm_eps=1e-5, **_PHI),
    # CPU-trainable sizes (Llama block; TinyStories-style models learn English at these sizes).
    "tiny-8m": dict(name="tiny-8m", vocab_size=8192, n_layer=4, n_head=4, n_embd=256,
        intermediate_size=688, block_size=256, tie_embeddings=True, **_LLAMA),
    "small-30m": dict(name="small-30m", vocab_size=16384, n_layer=8, n_head=8, n_embd=384,
        intermediate_size=1024, block_size=512, tie_embeddings=True, **_LLAMA),
    # GPT-2-small-sized model for GPU throughput/MFU measurements.
    "gpt2-124m": dict(name="gpt2-124m", vocab_size=50304, n_layer=12, n_head=12, n_embd=768,
        intermediate_size=3072, block_size=1024, tie_embeddings=True,
        **{**_PHI, "parallel_residual": False, "lm_head_bias": False, "mlp": "gelu"}),
    # HuggingFaceTB/SmolLM2-135M config.json: hidden 576, 30 layers, 9 heads, 3 kv heads,
    # intermediate 1536, rope_theta 100000, rms_norm_eps 1e-5, tie_word_embeddings true, vocab 49152.
    "smollm2-135m": dict(name="smollm2-135m", vocab_size=49152, n_layer=30, n_head=9, n_kv_head=3,
        n_embd=576, intermediate_size=1536, block_size=8192, rope_base=100000.0,
        norm_eps=1e-5, tie_embeddings=True, **_LLAMA),
    # microsoft/phi-1_5 config.json: hidden 2048, 24 layers, 32 heads, intermediate 8192,
    # partial_rotary_factor 0.5 (32 of 64 dims), layer_norm_eps 1e-5, gelu_new, vocab 51200, ctx 2048.
    "phi-1.5": dict(name="phi-1.5", vocab_size=51200, n_layer=24, n_head=32, n_embd=2048,
        intermediate_size=8192, block_size=2048, rotary_dim=32, norm_eps=1e-5, **_PHI),
    # microsoft/Phi-3-mini-4k-instruct config.json: hidden 3072, 32 layers, 32 heads, intermediate 8192,
    # vocab 32064, ctx 4096, rms_norm_eps 1e-5, rope_theta 10000, untied head.
    "phi-3-mini": dict(name="phi-3-mini", vocab_size=32064, n_layer=32, n_head=32, n_embd=3072,
        intermediate_size=8192, block_size=4096, norm_eps=1e-5, **_LLAMA),
}

SHAPES: dict[str, ModelConfig] = {name: ModelConfig(**args) for name, args in _SHAPE_ARGS.items()}


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = fused.rms_norm(x, self.weight, self.eps)  # training on a CPU: one native pass each way
        if y is not None:
            return y
        # Normalise in fp32 (as HF Llama does) so bf16 training matches fp32 statistics.
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def make_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "layernorm":
        return nn.LayerNorm(cfg.n_embd, eps=cfg.norm_eps)
    return RMSNorm(cfg.n_embd, cfg.norm_eps)


def rope_cache(cfg: ModelConfig, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables of shape (block_size, rotary_dim), duplicated halves (rotate-half layout)."""
    rd = cfg.rotary_dim
    inv_freq = 1.0 / (cfg.rope_base ** (torch.arange(0, rd, 2, dtype=torch.float32, device=device) / rd))
    t = torch.arange(cfg.block_size, dtype=torch.float32, device=device)
    freqs = torch.outer(t, inv_freq)  # (T, rd/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # (T, rd)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rd: int) -> torch.Tensor:
    """Rotate the first `rd` dims of each head; x (B, nh, T, hs), cos/sin (B or 1, 1, T, rd)."""
    xr, xpass = x[..., :rd], x[..., rd:]
    x1, x2 = xr[..., : rd // 2], xr[..., rd // 2 :]
    rotated = torch.cat([-x2, x1], dim=-1)
    xr = xr * cos + rotated * sin
    return torch.cat([xr, xpass], dim=-1) if xpass.shape[-1] else xr


class KVCache:
    """Preallocated keys/values for incremental decoding: per layer (B, n_kv_head, max_len, hs).

    `length` is how many positions are filled (the same for every row; padded rows are masked).
    `update` is the one place a layer writes its new keys/values; the decode engine
    (`primer.model.engine`) subclasses it to write each row at its own position.
    """

    def __init__(self, cfg: ModelConfig, batch: int, max_len: int, dtype=torch.float32, device=None):
        if max_len > cfg.block_size:
            raise PrimerError(f"requested {max_len} positions but the model's context is {cfg.block_size} tokens")
        shape = (batch, cfg.n_kv_head, max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.n_layer)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.n_layer)]
        self.length = 0
        self.max_len = max_len

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k/v (B, nkv, T, hs) at positions length..length+T-1 in place; return the keys and
        values of positions 0..length+T-1 to attend over (views, no copy)."""
        s, T = self.length, k.shape[2]
        ck, cv = self.k[layer], self.v[layer]
        ck[:, :, s:s + T] = k
        cv[:, :, s:s + T] = v
        return ck[:, :, : s + T], cv[:, :, : s + T]

    @classmethod
    def wrap(cls, k: list[torch.Tensor], v: list[torch.Tensor], length: int = 0) -> "KVCache":
        """A cache over existing per-layer tensors (e.g. one slot of the engine's cache), written in place."""
        cache = cls.__new__(cls)
        cache.k, cache.v, cache.length, cache.max_len = k, v, length, k[0].shape[2]
        return cache


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.cfg, self.layer = cfg, layer
        hs = cfg.head_dim
        self.q_proj = nn.Linear(cfg.n_embd, cfg.n_head * hs, bias=cfg.bias)
        self.k_proj = nn.Linear(cfg.n_embd, cfg.n_kv_head * hs, bias=cfg.bias)
        self.v_proj = nn.Linear(cfg.n_embd, cfg.n_kv_head * hs, bias=cfg.bias)
        self.o_proj = nn.Linear(cfg.n_head * hs, cfg.n_embd, bias=cfg.bias)

    def forward(self, x, cos, sin, attn_mask=None, cache: KVCache | None = None) -> torch.Tensor:
        cfg = self.cfg
        B, T, _ = x.shape
        q = self._rotated_heads(self.q_proj(x), cos, sin, cfg.n_head)  # (B, nh, T, hs)
        k = self._rotated_heads(self.k_proj(x), cos, sin, cfg.n_kv_head)  # (B, nkv, T, hs)
        v = self.v_proj(x).view(B, T, cfg.n_kv_head, cfg.head_dim).transpose(1, 2)  # (B, nkv, T, hs)
        is_causal = attn_mask is None
        if cache is not None:
            start = cache.length
            k, v = cache.update(self.layer, k, v)  # (B, nkv, S, hs)
            if start > 0 and attn_mask is None:
                # SDPA's is_causal aligns top-left; with a prefix in the cache we need bottom-right.
                is_causal = False
                if T > 1:
                    attn_mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(start)
        gqa = cfg.n_kv_head != cfg.n_head
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=is_causal and T > 1, enable_gqa=gqa
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, cfg.n_head * cfg.head_dim)
        return self.o_proj(y)

    def _rotated_heads(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, heads: int) -> torch.Tensor:
        """A projection's output (B, T, heads * hs) as its heads (B, heads, T, hs), rotated."""
        B, T, _ = x.shape
        hs = self.cfg.head_dim
        y = fused.rope(x, cos, sin, heads, hs)  # training on a CPU: one native pass each way
        if y is not None:
            return y.view(B, T, heads, hs).transpose(1, 2)
        return apply_rope(x.view(B, T, heads, hs).transpose(1, 2), cos, sin, self.cfg.rotary_dim)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.kind = cfg.mlp
        if cfg.mlp == "swiglu":
            self.gate_proj = nn.Linear(cfg.n_embd, cfg.intermediate_size, bias=cfg.bias)
            self.up_proj = nn.Linear(cfg.n_embd, cfg.intermediate_size, bias=cfg.bias)
            self.down_proj = nn.Linear(cfg.intermediate_size, cfg.n_embd, bias=cfg.bias)
        else:
            self.fc1 = nn.Linear(cfg.n_embd, cfg.intermediate_size, bias=cfg.bias)
            self.fc2 = nn.Linear(cfg.intermediate_size, cfg.n_embd, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "swiglu":
            gate, up = self.gate_proj(x), self.up_proj(x)
            h = fused.swiglu(gate, up)  # training on a CPU: one native pass each way
            return self.down_proj(F.silu(gate) * up if h is None else h)
        approx = "tanh" if self.kind == "gelu_tanh" else "none"
        return self.fc2(F.gelu(self.fc1(x), approximate=approx))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.parallel = cfg.parallel_residual
        self.attn_norm = make_norm(cfg)
        self.attn = Attention(cfg, layer)
        # phi's parallel block reads both branches off one norm, so it has no second norm.
        self.mlp_norm = None if cfg.parallel_residual else make_norm(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, attn_mask=None, cache=None) -> torch.Tensor:
        if self.parallel:
            h = self.attn_norm(x)
            return x + self.attn(h, cos, sin, attn_mask, cache) + self.mlp(h)
        x = x + self.attn(self.attn_norm(x), cos, sin, attn_mask, cache)
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.norm = make_norm(cfg)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=cfg.lm_head_bias)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        # a model built on the meta device (to receive loaded weights) gets its tables computed when they are assigned:
        # torch's meta arange imports torch._dynamo (~80 MB resident, ~1.7 s) in a process that only loads and scores
        if self.embed.weight.is_meta:
            cos = sin = torch.empty(cfg.block_size, cfg.rotary_dim)
        else:
            cos, sin = rope_cache(cfg)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.gradient_checkpointing = False
        self.apply(self._init_weights)
        # GPT-2 / nanoGPT: scale residual-branch output projections by 1/sqrt(2 * n_layer).
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight", "fc2.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        """Total parameters, counting a tied embedding/head once."""
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        pos: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        last_only: bool = False,
        select: torch.Tensor | None = None,
        head: bool = True,
    ):
        """idx (B, T) token ids.

        pos: (B, T) rotary positions (default: cache.length + arange(T)); left-padded batches pass
             their own so every row starts at position 0.
        attn_mask: bool (B, 1, T, S) True = may attend; None = causal.
        targets: (B, T) ids, -100 ignored; returns the mean cross-entropy instead of logits when given (the
                 head applied a block of rows at a time, no (B, T, vocab) logits: `primer.model.loss`).
        last_only: compute logits for the last position only (decoding).
        select: bool (B, T): logits for these positions only, as (N, vocab) in row-major order. Fine-tuning
                trains on a subset of tokens (the assistant replies); never building the (B, T, vocab) logits
                of the rest saves their memory and the head's time (the vocabulary is most of a small model's
                activations).
        head: False returns the final-norm hidden states instead of logits, for a caller that applies lm_head
              itself a chunk at a time (`primer.tune.logps`).
        """
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > self.cfg.block_size:
            raise PrimerError(
                f"sequence of {start + T} tokens exceeds the model's context of {self.cfg.block_size} tokens"
            )
        if pos is None:
            pos = torch.arange(start, start + T, device=idx.device).unsqueeze(0)  # (1, T)
        cos = self.rope_cos[pos].unsqueeze(1)  # (B|1, 1, T, rd)
        sin = self.rope_sin[pos].unsqueeze(1)
        x = self.embed(idx)  # (B, T, C)
        for block in self.blocks:
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(block, x, cos, sin, attn_mask, None, use_reentrant=False)
            else:
                x = block(x, cos, sin, attn_mask, cache)
        if cache is not None:
            cache.length = start + T
        if last_only:
            x = x[:, -1:, :]
        elif select is not None:
            x = x[select]  # (N, C)
        if not head:
            return self.norm(x)
        if targets is not None:
            h = self.norm(x)
            return cross_entropy(h.reshape(-1, h.size(-1)), self.lm_head.weight, self.lm_head.bias, targets.reshape(-1))
        return self.lm_head(self.norm(x))  # (B, T, vocab), or (N, vocab) with select
