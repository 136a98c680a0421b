"""Throughput accounting: FLOPs per token, the device's peak, MFU, and the metrics JSONL file.

FLOPs per trained token follow the PaLM appendix / nanoGPT `estimate_mfu`: 6 x (weights of every
matrix multiply, the output head included, the embedding lookup not) + 12 x layers x heads x
head_dim x seq_len for attention scores and values (forward + backward, causal mask not
discounted). Recomputation for activation checkpointing is not counted (model FLOPs, not hardware
FLOPs), as MFU is defined.

Peaks: dense bf16/fp16 tensor-core numbers from the vendors' datasheets for common GPUs (TF32 for
fp32 runs); for CPUs an estimate, cores x clock x FLOPs per cycle of the units that run the compute
dtype: fp32 FMAs (AVX-512: 64, AVX2+FMA: 32), and for bf16/fp16 autocast the AMX tiles (1,024: a
16x32 by 32x16 tile product a cycle) or AVX-512 dot products (128) where the CPU has them. These are
the units' ceilings, so CPU MFU is a rough gauge. `peak_tflops` overrides.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from primer.common.files import atomic_write_bytes
from primer.common.jsonl import read_jsonl
from primer.model.transformer import ModelConfig

# name fragment -> (bf16/fp16 dense, tf32 dense) TFLOP/s
GPU_PEAKS = [
    ("h200", 989.0, 494.0),
    ("h100 pcie", 756.0, 378.0),
    ("h100", 989.0, 494.0),
    ("gh200", 989.0, 494.0),
    ("a100", 312.0, 156.0),
    ("l40s", 362.0, 183.0),
    ("l4", 121.0, 60.0),
    ("a10g", 70.0, 35.0),
    ("a10", 125.0, 62.5),
    ("4090", 165.0, 82.6),
    ("3090", 71.0, 35.6),
    ("v100", 125.0, 15.7),
    ("t4", 65.0, 8.1),
]


def matmul_params(cfg: ModelConfig) -> int:
    hd = cfg.head_dim
    attn = cfg.n_embd * (cfg.n_head + 2 * cfg.n_kv_head) * hd + cfg.n_head * hd * cfg.n_embd
    mlp = (3 if cfg.mlp == "swiglu" else 2) * cfg.n_embd * cfg.intermediate_size
    return cfg.n_layer * (attn + mlp) + cfg.n_embd * cfg.vocab_size


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training (forward + backward) FLOPs per token of a seq_len-long sequence."""
    return 6.0 * matmul_params(cfg) + 12.0 * cfg.n_layer * cfg.n_head * cfg.head_dim * seq_len


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        m = re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.M)
    except OSError:
        return set()
    return set(m.group(1).split()) if m else set()


def cpu_matrix_units(dtype: torch.dtype) -> str | None:
    """The CPU's native unit for `dtype` matmuls beyond fp32 FMAs ("amx" or "avx512"), or None."""
    half = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype)
    if half is None:
        return None
    flags = cpu_flags()
    if f"amx_{half}" in flags:
        return "amx"
    return "avx512" if f"avx512_{half}" in flags else None


def cpu_peak_flops(threads: int | None = None, dtype: torch.dtype = torch.float32) -> float:
    threads = threads or torch.get_num_threads()
    flags = cpu_flags()
    per_cycle = {"amx": 1024, "avx512": 128}.get(cpu_matrix_units(dtype) or "")
    if per_cycle is None:
        per_cycle = 64 if "avx512f" in flags else 32 if {"avx2", "fma"} <= flags else 16 if "avx" in flags else 8
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    m = re.search(r"@ *([\d.]+) *GHz", info)
    if m:
        ghz = float(m.group(1))
    else:
        mhz = re.findall(r"^cpu MHz\s*:\s*([\d.]+)", info, re.M)
        ghz = float(mhz[0]) / 1000 if mhz else 2.0
    return threads * ghz * 1e9 * per_cycle


def device_peak_flops(device: torch.device, dtype: torch.dtype, override_tflops: float | None = None) -> float:
    """Peak FLOP/s of one device for `dtype` compute (an estimate on CPU)."""
    if override_tflops:
        return override_tflops * 1e12
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device).lower()
        for frag, half, tf32 in GPU_PEAKS:
            if frag in name:
                return (half if dtype in (torch.bfloat16, torch.float16) else tf32) * 1e12
        return float("nan")
    return cpu_peak_flops(dtype=dtype)


class MetricsLog:
    """Append-only JSONL of training metrics; on resume, lines past the resumed step are dropped.

    The read-back on resume goes through `primer.common.jsonl`: a torn last line (a kill in the
    middle of a write) is cut and reported; any other unreadable line stops the resume with a
    PrimerError naming the file and line (a log damaged anywhere else is not ours to guess at).
    """

    def __init__(self, path: str | Path, resume_step: int | None, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        if not enabled:
            return
        if resume_step is None:
            self.path.write_text("")
        elif self.path.exists():
            keep = [r for r in read_jsonl(self.path, strict=True, repair=True) if r.get("step", 0) <= resume_step]
            atomic_write_bytes(self.path, "".join(json.dumps(r) + "\n" for r in keep).encode())

    def write(self, **row) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a metrics.jsonl (an unreadable line is named on stderr and left out)."""
    return list(read_jsonl(path))
