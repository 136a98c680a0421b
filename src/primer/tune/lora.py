"""LoRA through peft: adapters injected into primer's own Transformer, merged weights out.

`peft.inject_adapter_in_model` puts LoRA layers into any torch module in place, so the model stays
a primer `Transformer` (same forward, same checkpoint code) and only the adapter matrices train.
A checkpoint holds the merged weights W + (alpha/r) B A, computed from a copy (the live base
weights are never merged and unmerged in place, which would round them and break exact resume);
the adapter tensors themselves go to the trainer state, so a resumed run rebuilds the base model
from the MODEL spec and puts them back.
"""

from __future__ import annotations

import torch

from primer.errors import PrimerError

ADAPTER = "default"


def add_lora(model: torch.nn.Module, *, rank: int, alpha: float, dropout: float, targets: list[str],
             seed: int) -> torch.nn.Module:
    """Inject LoRA into `model` (in place) and freeze everything else; returns the model."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise PrimerError('LoRA needs peft; pip install "peft>=0.13" (or pip install -e ".[tune]")') from None
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    present = [t for t in targets if t in names]
    if not present:
        raise PrimerError(f"none of the LoRA targets {targets} is a linear layer of this model ({sorted(names)})")
    torch.manual_seed(seed)  # A's init draws from the global RNG
    cfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=present, bias="none")
    inject_adapter_in_model(cfg, model, adapter_name=ADAPTER)
    for n, p in model.named_parameters():
        p.requires_grad_("lora_" in n)
    return model


def is_lora(name: str) -> bool:
    return ".lora_" in name


def merged_state_dict(model: torch.nn.Module, msd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """primer-named weights with every adapter merged in, from the LoRA model and its full state dict `msd`."""
    from peft.tuners.lora import LoraLayer

    out = {k.replace(".base_layer.", "."): v for k, v in msd.items() if not is_lora(k)}
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, LoraLayer) and ADAPTER in mod.lora_A:
                key = f"{name}.weight"
                out[key] = out[key] + mod.get_delta_weight(ADAPTER).to(out[key].device, out[key].dtype)
    return out
