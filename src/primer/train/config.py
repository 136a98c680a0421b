"""`TrainConfig`: every knob of `primer train`, one field each (CLI flags and recipe `[train]` sections).

Batch sizes count sequences; the global batch (`batch_size`) is what one optimizer step sees over
all processes, so a recipe means the same thing on 1 CPU and on 64 GPUs; the loop derives the
gradient accumulation from it (batch_size = micro_batch_size x accumulation x world size).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from primer.config import Count, Fraction, Positive, Range
from primer.errors import PrimerError
from primer.model.transformer import SHAPES, ModelConfig


@dataclass
class LoopConfig:
    """The training loop's knobs, shared by `primer train` (pretraining) and `primer tune` (SFT, DPO)."""

    batch_size: Count = 8
    """Sequences per optimizer step over all processes (the global batch)."""
    micro_batch_size: Count | None = None
    """Sequences per forward/backward in each process; None: batch_size / processes (no accumulation)."""
    max_steps: Count = 100
    """Optimizer steps to train for."""
    lr: Positive = 3e-4
    """Peak learning rate."""
    schedule: Literal["constant", "cosine", "wsd"] = "cosine"
    """Learning-rate schedule after warmup: constant (phi-1.5), cosine decay, or warmup-stable-decay."""
    warmup_steps: int = 0
    """Linear warmup steps from 0 to lr."""
    min_lr_ratio: Fraction = 0.1
    """Final learning rate as a fraction of lr (cosine and wsd)."""
    decay_fraction: Fraction = 0.2
    """wsd: share of all steps spent in the final decay to min_lr_ratio x lr."""
    beta1: Annotated[float, Range(ge=0, lt=1)] = 0.9
    """AdamW beta1."""
    beta2: Annotated[float, Range(ge=0, lt=1)] = 0.95
    """AdamW beta2."""
    eps: Positive = 1e-8
    """AdamW epsilon."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay, applied to matrices only (not norms, biases)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0: no clipping)."""
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Compute precision: auto = bf16 autocast on a GPU that has it, fp32 on CPU. Weights and optimizer stay fp32.
    On a CPU with AMX tiles (Xeon 4th gen and later) bf16 trains up to ~2x faster than fp32 (README; not DPO)."""
    compile: bool = False
    """torch.compile the model (faster on GPU after a compile pause)."""
    activation_checkpointing: bool = False
    """Recompute block activations in the backward pass (less memory for large shapes, ~30% more compute)."""
    parallel: Literal["ddp", "fsdp"] = "ddp"
    """Under torchrun: ddp replicates the model; fsdp shards parameters, gradients and optimizer state (FSDP2)."""
    device: str = "auto"
    """auto (cuda when available, else cpu), cpu, cuda, cuda:N."""
    threads: Count | None = None
    """CPU threads for torch (None: torch's default)."""
    seed: int = 1337
    """Seed of the initial weights and the data order."""
    log_every: Count = 10
    """Write a metrics line (loss, lr, tokens/s, MFU) every N steps."""
    save_every: int = 500
    """Write a checkpoint every N steps (and at the end); 0: only at the end."""
    keep_checkpoints: Count = 2
    """Keep the last N checkpoints, deleting older ones."""
    resume: bool = True
    """Continue from the latest checkpoint in out_dir when there is one."""
    progress: bool = True
    """Show a progress bar (main process only)."""
    peak_tflops: Positive | None = None
    """Device peak TFLOP/s for MFU; None: a table for GPUs, cores x clock x SIMD width for CPUs."""


@dataclass
class TrainConfig(LoopConfig):
    """`primer train`: pretrain a decoder on token shards."""

    data: str = "runs/tokens"
    """Token directory written by `primer tokenize` (tokens.json, tokenizer, .bin shards)."""
    out_dir: str = "runs/train"
    """Run directory: metrics.jsonl, config.json, checkpoints/, samples.txt."""
    model: str = "debug"
    """Model shape from the registry (primer.model.transformer.SHAPES), e.g. debug, tiny-8m, phi-1.5."""
    model_overrides: dict[str, Any] = field(default_factory=dict)
    """Shape fields to change, e.g. {n_layer = 2} in TOML, or n_layer=2,n_embd=128 on the command line."""
    vocab_size: Count | None = None
    """Embedding rows; None: the tokenizer's vocabulary rounded up to a multiple of 64."""
    init_from: str | None = None
    """Start from the weights of this primer checkpoint directory instead of a random init."""
    seq_len: Count | None = None
    """Tokens per training sequence; None: the shape's context length (block_size)."""
    max_tokens: Count | None = None
    """Train for this many tokens instead: max_steps = ceil(max_tokens / (batch_size x seq_len))."""
    eval_every: int = 100
    """Compute the validation loss every N steps (and at the end); 0: only at the end."""
    eval_batches: Count = 8
    """Validation batches (of batch_size sequences) per evaluation; fewer when the split is smaller."""
    samples: int = 0
    """After training, write this many samples (each started from <|endoftext|>) to out_dir/samples.txt."""
    sample_tokens: Count = 200
    """Maximum new tokens per sample."""
    sample_temperature: float = 0.8
    """Sampling temperature of those samples."""
    sample_top_k: int = 50
    """Sample among the k most likely tokens (0: all)."""

    def __post_init__(self) -> None:
        if isinstance(self.model_overrides, str):
            self.model_overrides = parse_overrides(self.model_overrides)

    def validate(self) -> None:
        """The shape and its overrides, built once (a bad one fails when the recipe loads, not after synth)."""
        build_model_config(self, self.vocab_size or 1)


def parse_overrides(text: str) -> dict[str, Any]:
    """'n_layer=2,n_embd=128' -> {'n_layer': 2, 'n_embd': 128} (values typed by ModelConfig)."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise PrimerError(f"model override '{part}' is not NAME=VALUE")
        k, v = (s.strip() for s in part.split("=", 1))
        out[k] = v
    return out


def build_model_config(cfg: TrainConfig, tokenizer_vocab: int) -> ModelConfig:
    """The shape to train: registry entry + overrides + a vocabulary that holds the tokenizer."""
    from primer.config import _convert

    if cfg.model not in SHAPES:
        raise PrimerError(f"unknown model shape '{cfg.model}'; known shapes: {', '.join(SHAPES)}")
    base = SHAPES[cfg.model]
    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    hints = __import__("typing").get_type_hints(ModelConfig)
    unknown = sorted(set(cfg.model_overrides) - set(fields))
    if unknown:
        raise PrimerError(f"unknown model override(s) {unknown}; known: {', '.join(sorted(fields))}")
    over = {k: _convert(f"model_overrides.{k}", hints[k], v) for k, v in cfg.model_overrides.items()}
    d = base.to_dict()
    # Derived fields follow their sources unless the base set them to something else on purpose.
    if ("n_embd" in over or "n_head" in over) and "head_dim" not in over and base.head_dim == base.n_embd // base.n_head:
        d["head_dim"] = None
        if "rotary_dim" not in over and base.rotary_dim == base.head_dim:
            d["rotary_dim"] = None
    if "n_head" in over and "n_kv_head" not in over and base.n_kv_head == base.n_head:
        d["n_kv_head"] = None
    d.update(over)
    vocab = cfg.vocab_size if cfg.vocab_size is not None else -(-tokenizer_vocab // 64) * 64
    if vocab < tokenizer_vocab:
        raise PrimerError(f"vocab_size {vocab} is smaller than the tokenizer's vocabulary ({tokenizer_vocab})")
    d["vocab_size"] = vocab
    try:
        mcfg = ModelConfig(**d)
    except PrimerError as e:
        raise PrimerError(f"model shape '{cfg.model}' with model_overrides {cfg.model_overrides}: {e}") from None
    if cfg.seq_len is not None and cfg.seq_len > mcfg.block_size:
        raise PrimerError(f"seq_len {cfg.seq_len} exceeds the shape's context ({mcfg.block_size}); raise block_size too")
    return mcfg
