"""primer's native CPU kernels, built on first use: the matmul on block-quantized weights
(`qmm.cpp`), the small pieces of a decode step (`step.cpp`: RMSNorm, rotary, attention) and, for
training, those pieces' gradients and SwiGLU (`primer.model.fused`).

`load()` compiles the kernel with torch's C++ extension builder the first time it is needed on a
checkout and environment (about 35 s, cached under torch's extension directory; see `build_name`) and
returns the module, or None where it cannot run (no AVX-512, no C++ compiler, or
PRIMER_NO_KERNELS=1): the fast decoder then falls back to torch's own weight-only kernels.
`pack_q4` / `pack_q8` put GGUF-style blocks of 32 into the kernel's layout (see qmm.cpp).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sys
from pathlib import Path

import torch

SOURCES = [Path(__file__).with_name(n) for n in ("qmm.cpp", "step.cpp", "bind.cpp")]
FLAGS = ["-O3", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-fopenmp"]
_STATE: dict = {}


def load():
    """The compiled kernel module, or None where it is unavailable (the reason is in `why_not()`)."""
    if "mod" in _STATE:
        return _STATE["mod"]
    _STATE["mod"] = None
    if os.environ.get("PRIMER_NO_KERNELS"):
        _STATE["why"] = "PRIMER_NO_KERNELS is set"
        return None
    if torch.backends.cpu.get_cpu_capability() not in ("AVX512", "AMX"):
        _STATE["why"] = f"this CPU has no AVX-512 ({torch.backends.cpu.get_cpu_capability()})"
        return None
    name = build_name()
    from torch.utils.cpp_extension import _get_build_directory, load as build

    build_dir = Path(_get_build_directory(name, verbose=False))
    try:
        # One build at a time per machine, under a lock the OS drops when its holder dies: torch's
        # own lock file outlives a killed build and makes every later load wait forever, so one
        # found while we hold ours is stale and removed.
        with open(build_dir / "primer.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            (build_dir / "lock").unlink(missing_ok=True)
            if not (build_dir / f"{name}.so").exists():
                print("primer: building the CPU kernels (once per checkout and environment, ~40 s)...", file=sys.stderr,
                      flush=True)
            # OpenMP threads come from the libgomp torch already loaded (same soname), so the kernel
            # shares torch's thread pool and torch.set_num_threads governs both.
            _STATE["mod"] = build(name, [str(p) for p in SOURCES], extra_cflags=FLAGS, extra_ldflags=["-fopenmp"],
                                  build_directory=str(build_dir), verbose=False)
    except Exception as e:  # no compiler, no headers: run on torch's kernels instead
        _STATE["why"] = f"building it failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        print(f"primer: {_STATE['why']}; using torch's slower int4 kernels", file=sys.stderr)
    return _STATE["mod"]


def build_name() -> str:
    """The build's name, one per (sources, flags, where the sources and torch are): torch's builder writes the
    sources' and torch's headers' absolute paths into its ninja file, so two checkouts or two environments
    sharing one build directory each rebuilt it (~35 s) whenever the other had run last."""
    where = f"{SOURCES[0].parent.resolve()}|{Path(torch.__file__).parent.resolve()}|{torch.__version__}"
    key = b"".join(p.read_bytes() for p in SOURCES) + " ".join(FLAGS).encode() + where.encode()
    return f"primer_qmm_{hashlib.sha256(key).hexdigest()[:12]}"


def why_not() -> str | None:
    return _STATE.get("why")


def _pad_rows(t: torch.Tensor, n: int) -> torch.Tensor:
    return t if t.shape[0] == n else torch.cat([t, t.new_zeros((n - t.shape[0],) + tuple(t.shape[1:]))])


def pack_q4(q: torch.Tensor, d: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q4 blocks (w = d*q + m; q (N, K) codes 0..15, d/m (N, K/32), fp16 as in GGUF) -> (codes, d, m)
    for q4_mm. N is padded to a multiple of 32 with zero rows (the caller slices the output)."""
    N, K = q.shape
    Np = -(-N // 32) * 32
    q, d, m = _pad_rows(q.to(torch.uint8), Np), _pad_rows(d.half(), Np), _pad_rows(m.half(), Np)
    qq = q.view(Np // 16, 16, K // 32, 2, 4, 4)  # (group, n, block, half, t, j): k = 16 half + 4 t + j
    codes = (qq[:, :, :, 0] | (qq[:, :, :, 1] << 4)).permute(0, 2, 3, 1, 4).contiguous()  # (group, block, t, n, j)
    return codes, _scales(d), _scales(m)


def pack_q8(q: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q8 blocks (w = d*q; q (N, K) int8, d (N, K/32)) -> (codes, d) for q8_mm (N padded to 32)."""
    N, K = q.shape
    Np = -(-N // 32) * 32
    q, d = _pad_rows(q.to(torch.int8), Np), _pad_rows(d.half(), Np)
    codes = q.view(Np // 16, 16, K // 32, 8, 4).permute(0, 2, 3, 1, 4).contiguous()  # (group, block, t, n, j)
    return codes, _scales(d)


def quantize_q8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Float weights (N, K) -> Q8_0 blocks (q int8, d fp16 (N, K/32)): d = max|w| / 127 per block,
    rounded to fp16 as GGUF stores it, and q rounded against that d."""
    N, K = w.shape
    blocks = w.detach().float().view(N, K // 32, 32)
    d = (blocks.abs().amax(-1) / 127).half()
    q = (blocks / d.float().clamp_min(1e-30)[..., None]).round_().clamp_(-127, 127).to(torch.int8)
    return q.view(N, K), d


def _scales(s: torch.Tensor) -> torch.Tensor:
    N, nb = s.shape
    return s.view(N // 16, 16, nb).permute(0, 2, 1).contiguous()  # (group, block, n)
