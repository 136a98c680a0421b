"""primer's checkpoint directory: weights + a `meta.json` that is enough to rebuild the model.

    ckpt/
      model.safetensors   our parameter names; a tied head is stored once (as embed.weight)
      meta.json           {"format": "primer-checkpoint", "format_version": 1, "model": ModelConfig dict,
                           "dtype", "primer_version", "git_sha", "torch_version", "created", "user": {...}}
      tokenizer.json ...  when a tokenizer was given (see primer.model.tokenizer.Tokenizer.save)

Files are written to temporary names and renamed into place, so an interrupted save never leaves
a half-written checkpoint behind. Loading checks every tensor's name and shape against the
config in meta.json and says which tensor disagrees, with both shapes.

`model_from_state_dict` (config + tensors -> model without a throwaway random init) is shared by
the Hugging Face importer in primer.weights.hf.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import torch

from primer.common.files import atomic_write_bytes
from primer.common.provenance import git_sha
from primer.errors import PrimerError
from primer.model.transformer import ModelConfig, Transformer, rope_cache

FORMAT = "primer-checkpoint"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
META = "meta.json"


class Checkpoint(NamedTuple):
    model: Transformer
    tokenizer: Any  # primer.model.tokenizer.Tokenizer | None
    meta: dict


def unwrap(model: torch.nn.Module) -> Transformer:
    """The `Transformer` inside DDP/FSDP-style (`.module`) or torch.compile (`._orig_mod`) wrappers."""
    while True:
        inner = getattr(model, "module", None)
        if not isinstance(inner, torch.nn.Module):
            inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            break
        model = inner
    if not isinstance(model, Transformer):
        raise PrimerError(f"expected a primer Transformer, got {type(model).__name__}")
    return model


def state_dict_for_saving(model: Transformer) -> dict[str, torch.Tensor]:
    """The model's tensors, contiguous, on CPU, with a tied head dropped (it is embed.weight)."""
    sd = model.state_dict()
    if model.cfg.tie_embeddings:
        sd.pop("lm_head.weight", None)
    return {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}


def save_checkpoint(directory: str | Path, model: torch.nn.Module, tokenizer=None, meta: dict | None = None) -> Path:
    """Write `model` (+ `tokenizer`, + user `meta`, e.g. step/loss/train config) to `directory`."""
    from safetensors.torch import save_file

    import primer

    m = unwrap(model)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    sd = state_dict_for_saving(m)
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in sd.values()})
    info = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": m.cfg.to_dict(),
        "dtype": dtypes[0] if len(dtypes) == 1 else dtypes,
        "num_params": m.num_params(),
        "primer_version": primer.__version__,
        "git_sha": git_sha(),
        "torch_version": torch.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "tokenizer_hash": tokenizer.hash() if tokenizer is not None else None,
        "user": meta or {},
    }
    try:
        meta_text = json.dumps(info, indent=2, ensure_ascii=False) + "\n"
    except TypeError as e:
        raise PrimerError(f"checkpoint meta must be JSON-serialisable: {e}") from None
    # save_file writes the tensors from their own memory; `save` would first build the whole file as one bytes
    # object, a transient second copy of the weights (at a training checkpoint, on top of the optimizer state)
    tmp = d / (WEIGHTS + ".tmp")
    save_file(sd, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, d / WEIGHTS)
    if tokenizer is not None:
        tokenizer.save(d)
    # meta.json last: its presence marks a complete checkpoint.
    atomic_write_bytes(d / META, meta_text.encode("utf-8"))
    return d


def is_checkpoint(directory: str | Path) -> bool:
    return (Path(directory) / META).is_file() and (Path(directory) / WEIGHTS).is_file()


def read_meta(directory: str | Path) -> dict:
    """meta.json of a checkpoint, checked for format; clear errors for a missing or foreign directory."""
    d = Path(directory)
    if not d.is_dir():
        raise PrimerError(f"checkpoint directory not found: {d}")
    p = d / META
    if not p.is_file():
        hint = " (it has config.json: load it as a Hugging Face directory)" if (d / "config.json").is_file() else ""
        raise PrimerError(f"{d}: not a primer checkpoint, {META} is missing{hint}")
    try:
        info = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PrimerError(f"{p}: unreadable meta.json ({e})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT or "model" not in info:
        raise PrimerError(f"{p}: not a primer checkpoint meta.json (format is not '{FORMAT}')")
    if int(info.get("format_version", 0)) > FORMAT_VERSION:
        raise PrimerError(
            f"{p}: checkpoint format version {info['format_version']} is newer than this primer reads "
            f"({FORMAT_VERSION}); upgrade primer"
        )
    return info


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of one safetensors file, with one-line errors for missing or corrupt files."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise PrimerError(f"weights file not found: {path}")
    try:
        return load_file(str(path))
    except Exception as e:  # SafetensorError, OSError, or a header that does not parse
        raise PrimerError(f"{path}: corrupt or truncated safetensors file ({type(e).__name__}: {e})") from None


@contextlib.contextmanager
def _no_init():
    """Module constructors' weight init as no-ops (transformers' `no_init_weights` does the same): the tensors are on
    the meta device, to be replaced by loaded ones, and torch's `normal_` on meta tensors imports torch._dynamo
    (~80 MB resident and ~1.7 s in a process that only loads and scores)."""
    names = ("normal_", "uniform_", "kaiming_uniform_", "trunc_normal_", "zeros_", "ones_")
    saved = {n: getattr(torch.nn.init, n) for n in names}
    try:
        for n in names:
            setattr(torch.nn.init, n, lambda tensor, *a, **k: tensor)
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.nn.init, n, f)


def model_from_state_dict(
    cfg: ModelConfig,
    sd: dict[str, torch.Tensor],
    *,
    source: str = "weights",
    config_source: str = "the config",
    dtype: torch.dtype | None = None,
) -> Transformer:
    """Build a `Transformer(cfg)` holding `sd` (our names), checking names and shapes first.

    The model is created on the meta device and the tensors are assigned, so no random init is
    spent and no second copy of the weights is made. A tied head may be absent from `sd`.
    """
    with torch.device("meta"), _no_init():
        model = Transformer(cfg)
    expected = model.state_dict()
    if cfg.tie_embeddings:
        expected.pop("lm_head.weight")
        sd = {k: v for k, v in sd.items() if k != "lm_head.weight"} if "lm_head.weight" in sd else sd
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s) the config needs, e.g. {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"{len(unexpected)} tensor(s) the config has no place for, e.g. {', '.join(unexpected[:3])}")
        raise PrimerError(f"{source} do not match {config_source} ({cfg.name}): {'; '.join(parts)}")
    for k, want in expected.items():
        got = tuple(sd[k].shape)
        if got != tuple(want.shape):
            raise PrimerError(
                f"{source} do not match {config_source} ({cfg.name}): tensor '{k}' has shape {got} in the "
                f"weights but {tuple(want.shape)} from {config_source}"
            )
    if dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    model.load_state_dict(sd, strict=False, assign=True)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embed.weight
    # Rotary tables are non-persistent buffers created on meta; compute them for real.
    cos, sin = rope_cache(cfg)
    model.rope_cos, model.rope_sin = cos, sin
    return model


def load_checkpoint(
    directory: str | Path, *, dtype: torch.dtype | None = None, device: str | torch.device | None = None
) -> Checkpoint:
    """(model, tokenizer or None, meta) from a directory written by `save_checkpoint`."""
    d = Path(directory)
    info = read_meta(d)
    try:
        cfg = ModelConfig.from_dict(info["model"])
    except (TypeError, ValueError) as e:
        raise PrimerError(f"{d / META}: bad model config ({e})") from None
    sd = read_safetensors(d / WEIGHTS)
    model = model_from_state_dict(cfg, sd, source=f"{d / WEIGHTS}", config_source=META, dtype=dtype)
    if device is not None:
        model = model.to(device)
    tokenizer = None
    if (d / "tokenizer.json").is_file():
        from primer.model.tokenizer import Tokenizer

        tokenizer = Tokenizer.load(d)
    return Checkpoint(model.eval(), tokenizer, info)
