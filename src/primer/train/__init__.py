"""Pretraining: `TrainConfig` (every knob, recipe `[train]` section) and `train(cfg)` (the loop).

    config.py       the dataclass and the model shape it builds
    data.py         batches as a pure function of the step (exact resume, any process count)
    schedule.py     constant / cosine / warmup-stable-decay learning rates
    loop.py         the loop: accumulation, clipping, autocast, eval, metrics, checkpoints
    distributed.py  torchrun, DDP and FSDP2: the only file that knows about processes
    checkpoints.py  checkpoint dirs + trainer state, keep-last-N
    metrics.py      FLOPs per token, device peaks, MFU, metrics.jsonl
    sample.py       sampling a few texts from the trained model
"""

from primer.train.config import TrainConfig

__all__ = ["TrainConfig", "train"]


def train(cfg: TrainConfig):
    """Run (or resume) training; returns a `primer.train.loop.TrainResult`."""
    from primer.train.loop import train as _train

    return _train(cfg)
