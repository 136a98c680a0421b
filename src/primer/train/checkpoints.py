"""Training checkpoints: a primer checkpoint directory (weights + meta.json + tokenizer) plus
`trainer.pt` (optimizer, step, RNG, loss scaler), so a stopped run resumes exactly.

    OUT/checkpoints/step_0000500/{model.safetensors, meta.json, tokenizer.json, ..., trainer.pt}

`trainer.pt` is written last and atomically: a directory without it is an unfinished save and is
ignored (and cleaned up by the next save). Only the newest `keep` checkpoints are kept.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch

from primer.weights.checkpoint import model_from_state_dict, read_meta, read_safetensors, save_checkpoint
from primer.errors import PrimerError
from primer.model.transformer import ModelConfig

TRAINER_STATE = "trainer.pt"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_root(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def list_checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under OUT/checkpoints, oldest first."""
    root = checkpoint_root(out_dir)
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        m = _STEP_DIR.match(d.name)
        if m and (d / TRAINER_STATE).is_file():
            found.append((int(m.group(1)), d))
    return sorted(found)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    cks = list_checkpoints(out_dir)
    return cks[-1][1] if cks else None


def save_training_checkpoint(out_dir: str | Path, step: int, model_cfg: ModelConfig, model_sd: dict,
                             trainer_state: dict, tokenizer, meta: dict, keep: int) -> Path:
    """Write step `step`'s checkpoint (main process only) and prune old ones."""
    d = checkpoint_root(out_dir) / f"step_{step:07d}"
    if d.exists():
        shutil.rmtree(d)
    model = model_from_state_dict(model_cfg, model_sd, source="training state")
    save_checkpoint(d, model, tokenizer=tokenizer, meta=meta)
    tmp = d / (TRAINER_STATE + ".tmp")
    torch.save(trainer_state, tmp)
    os.replace(tmp, d / TRAINER_STATE)
    complete = {p for _, p in list_checkpoints(out_dir)}
    for stale in checkpoint_root(out_dir).iterdir():
        if _STEP_DIR.match(stale.name) and stale not in complete and stale != d:
            shutil.rmtree(stale, ignore_errors=True)  # an interrupted save
    for _, old in list_checkpoints(out_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return d


def check_same_shape(directory: Path, model_cfg: ModelConfig, what: str) -> dict:
    """meta.json of `directory`, after checking it holds `model_cfg`'s shape (a clear error if not)."""
    info = read_meta(directory)
    theirs = dict(info["model"])
    ours = model_cfg.to_dict()
    diff = sorted(k for k in ours if k != "name" and theirs.get(k) != ours[k])
    if diff:
        pairs = ", ".join(f"{k}: {theirs.get(k)!r} there vs {ours[k]!r} here" for k in diff[:6])
        raise PrimerError(
            f"{what} {directory} is a model of another shape ({theirs.get('name')}: {pairs}); "
            f"train with the same model settings, or point out_dir/init_from elsewhere"
        )
    return info


def load_weights(directory: Path, model_cfg: ModelConfig, what: str) -> dict[str, torch.Tensor]:
    """Full state dict of a checkpoint of `model_cfg`'s shape (tied head filled in)."""
    check_same_shape(directory, model_cfg, what)
    sd = read_safetensors(directory / "model.safetensors")
    if model_cfg.tie_embeddings and "lm_head.weight" not in sd:
        sd["lm_head.weight"] = sd["embed.weight"]
    return sd


def load_trainer_state(directory: Path) -> dict:
    try:
        return torch.load(directory / TRAINER_STATE, map_location="cpu", weights_only=False)
    except Exception as e:
        raise PrimerError(f"{directory / TRAINER_STATE}: unreadable trainer state ({e}); delete that checkpoint") from None
