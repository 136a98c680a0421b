"""`primer tune`: post-training the phi-3 way -- SFT on conversations, then DPO/IPO on preference pairs.

Both run on `primer train`'s loop (`primer.train.loop.Trainer` and its hooks), so they get its
accumulation, precision, metrics, progress bar, checkpoints, exact resume and torchrun layouts.

    config.py   SFTConfig / DPOConfig (LoopConfig + model, data, template, LoRA; recipe `[tune]`)
    chat.py     conversations and pairs in (OpenAI/HF messages, ShareGPT), chat template, assistant masks
    data.py     batches as a function of the step: padded or packed (attention kept within a conversation)
    trainer.py  the shared hooks (model, template, LoRA, checkpoints, resume) and SFT's loss
    preference.py  reference log-probs cached once, DPO (sigmoid) and IPO losses, reward metrics
    lora.py     LoRA through peft, merged weights in every checkpoint
"""

from primer.tune.config import DPOConfig, SFTConfig

__all__ = ["SFTConfig", "DPOConfig", "sft", "dpo"]


def sft(cfg: SFTConfig) -> dict:
    """Supervised fine-tuning (or resume it); returns the run summary."""
    from primer.train.loop import train
    from primer.tune.trainer import SFTTrainer

    return train(cfg, SFTTrainer)


def dpo(cfg: DPOConfig) -> dict:
    """Preference tuning (or resume it); returns the run summary."""
    from primer.train.loop import train
    from primer.tune.preference import DPOTrainer

    return train(cfg, DPOTrainer)
