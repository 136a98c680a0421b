"""`primer tune` settings: `SFTConfig` and `DPOConfig`, both the training loop's `LoopConfig` plus their own fields.

Defaults are the usual fine-tuning ones (TRL's and the SmolLM2/Zephyr recipes'), not pretraining's:
AdamW betas (0.9, 0.999) without weight decay, a small learning rate, a log line every step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from primer.config import Count, Fraction, Positive, Range
from primer.train.config import LoopConfig


@dataclass
class TuneConfig(LoopConfig):
    """What SFT and DPO share: the model, the data, the template, LoRA."""

    model: str = "bundled"
    """Model to tune: 'bundled', a .gguf (dequantized to fp32), an HF model dir or a primer checkpoint dir."""
    data: list[str] = field(default_factory=list)
    """JSONL files, comma-separated (SFT: OpenAI/HF `messages`, ShareGPT `conversations`, or pairs as prompt +
    chosen, a pair `primer synth` scored by its verified reply only; DPO: {prompt, chosen, rejected})."""
    out_dir: str = "runs/tune"
    """Run directory: metrics.jsonl, config.json, data.json, checkpoints/ (each a merged, loadable model)."""
    max_seq_len: Annotated[int, Range(ge=8)] = 1024
    """Longest training sequence in tokens (also capped by the model's context)."""
    overlong: Literal["truncate", "drop"] = "truncate"
    """A conversation longer than max_seq_len: cut at the end, or drop it (either way counted in data.json)."""
    shuffle: bool = True
    """Visit the examples in a seeded random order each epoch (False: file order, as the TRL parity test does)."""
    lora_rank: int = 0
    """LoRA rank through peft (0: full fine-tuning); checkpoints hold the merged weights."""
    lora_alpha: float = 16.0
    """LoRA alpha (the update is scaled by alpha / rank)."""
    lora_dropout: Fraction = 0.0
    """Dropout on the LoRA input."""
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                             "up_proj", "down_proj", "fc1", "fc2"])
    """Linear layers that get adapters (names in primer's model; absent ones are ignored)."""
    batch_size: Count = 8
    """Sequences (SFT) or pairs (DPO) per optimizer step over all processes."""
    max_steps: Count = 100
    """Optimizer steps (the data repeats in reshuffled epochs when it is shorter)."""
    epochs: Positive | None = None
    """Passes over the data instead of max_steps (TRL's num_train_epochs): the steps are ceil(epochs x rows of an
    epoch / batch_size), an SFT row being a conversation (with packing, a packed row) and a DPO row a pair."""
    lr: Positive = 2e-5
    """Peak learning rate."""
    schedule: Literal["constant", "cosine", "wsd"] = "cosine"
    """Learning-rate schedule after warmup."""
    beta2: Annotated[float, Range(ge=0, lt=1)] = 0.999
    """AdamW beta2."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay on matrices."""
    log_every: Count = 1
    """Write a metrics line every N steps."""
    save_every: int = 50
    """Write a checkpoint every N steps (and at the end)."""

    def __post_init__(self) -> None:
        if isinstance(self.data, str):
            self.data = [p for p in self.data.split(",") if p]


@dataclass
class SFTConfig(TuneConfig):
    """`primer tune sft`: supervised fine-tuning on conversations, loss on assistant tokens only."""

    packing: bool = False
    """Pack several conversations into each max_seq_len row; attention and positions stay within each conversation."""


@dataclass
class DPOConfig(TuneConfig):
    """`primer tune dpo`: preference tuning on {prompt, chosen, rejected} pairs against cached reference log-probs."""

    loss: Literal["sigmoid", "ipo"] = "sigmoid"
    """DPO's sigmoid loss (Rafailov et al. 2023) or IPO's squared loss on length-normalised log-ratios (Azar et al. 2023)."""
    beta: Positive = 0.1
    """Strength of the KL constraint to the reference model (sigmoid: scale of the log-ratio margin; IPO: 1/(2 beta) target)."""
    lr: Positive = 1e-6
    """Peak learning rate."""
    ref_batch_size: Count = 8
    """Pairs per forward pass while computing the reference log-probs (once, before training)."""
