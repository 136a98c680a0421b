"""llama.cpp (llama-cpp-python) as primer uses it: the GGUF teacher, and the peer in parity tests and
benchmarks. One home for how it is opened.

Why the extra buffer types are off: on CPUs with AMX (seen on this project's Xeon machines, in a
sandboxed kernel), llama.cpp's extra CPU buffers (AMX / repacked weights) return wrong logits for
batches above 8 tokens — teacher-forced top-1 agreement with primer fell to 31% on 96-token batches,
against 97% with them off (and with 8-token batches either way) — and llama-cpp-python 0.3.36
segfaulted on its second decode call. `use_extra_bufts = False` is llama.cpp's own switch for them
(`--no-repack` in its CLI); the plain CPU path stays multi-threaded and SIMD.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from primer.errors import PrimerError


def patch_defaults() -> None:
    """Make every `llama_cpp.Llama` created in this process use plain CPU buffers (see module doc)."""
    try:
        import llama_cpp.llama_cpp as C
    except ImportError as e:
        raise PrimerError("llama.cpp is needed here: pip install 'llama-cpp-python[server]==0.3.16'") from e
    if getattr(C.llama_model_default_params, "_primer", False):
        return
    original = C.llama_model_default_params

    def defaults():
        p = original()
        if hasattr(p, "use_extra_bufts"):
            p.use_extra_bufts = False
        return p

    defaults._primer = True  # type: ignore[attr-defined]
    C.llama_model_default_params = defaults


def open_llama(path: str | Path, **kwargs: Any):
    """`llama_cpp.Llama(path, **kwargs)` with plain CPU buffers."""
    patch_defaults()
    import llama_cpp

    return llama_cpp.Llama(model_path=str(path), **kwargs)


SERVER_MAIN = ("import sys; from primer.weights.llamacpp import patch_defaults; patch_defaults(); "
               "from llama_cpp.server.__main__ import main; sys.argv[0] = 'llama_cpp.server'; main()")
"""`python -c SERVER_MAIN --model ...` runs llama-cpp-python's OpenAI server with plain CPU buffers."""
