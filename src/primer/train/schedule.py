"""Learning-rate schedules, as pure functions of the step (so a resumed run needs no schedule state).

  * constant: phi-1.5 ("constant learning rate 2e-4, no warmup"), optionally after a warmup.
  * cosine: linear warmup, then half a cosine from lr to min_lr_ratio x lr at the last step.
  * wsd (warmup-stable-decay, MiniCPM / SmolLM2): warmup, hold lr, then decay linearly to
    min_lr_ratio x lr over the last decay_fraction of the steps.
"""

from __future__ import annotations

import math


def lr_at(step: int, *, lr: float, max_steps: int, schedule: str = "cosine", warmup_steps: int = 0,
          min_lr_ratio: float = 0.1, decay_fraction: float = 0.2) -> float:
    """Learning rate for optimizer step `step` (0-based; step max_steps - 1 is the last)."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    min_lr = lr * min_lr_ratio
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        span = max(1, max_steps - 1 - warmup_steps)
        t = min(1.0, (step - warmup_steps) / span)
        return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * t))
    if schedule == "wsd":
        decay_steps = round(decay_fraction * max_steps)
        start = max_steps - decay_steps
        if decay_steps <= 0 or step < start:
            return lr
        t = min(1.0, (step - start + 1) / decay_steps)
        return lr + (min_lr - lr) * t
    raise ValueError(f"unknown schedule {schedule!r}")


def schedule_of(cfg, max_steps: int):
    """`step -> lr` for a TrainConfig."""
    kw = dict(lr=cfg.lr, max_steps=max_steps, schedule=cfg.schedule, warmup_steps=cfg.warmup_steps,
              min_lr_ratio=cfg.min_lr_ratio, decay_fraction=cfg.decay_fraction)
    return lambda step: lr_at(step, **kw)
