"""llama.cpp (llama-cpp-python) as primer uses it: the GGUF teacher, and the peer in parity tests and
benchmarks. One home for how it is opened.

Why the extra buffer types are off: on CPUs with AMX (seen on this project's Xeon machines, in a
sandboxed kernel), llama.cpp's extra CPU buffers (AMX / repacked weights) return wrong logits for
batches above 8 tokens — teacher-forced top-1 agreement with primer fell to 31% on 96-token batches,
against 97% with them off (and with 8-token batches either way) — and llama-cpp-python 0.3.36
segfaulted on its second decode call. `use_extra_bufts = False` is llama.cpp's own switch for them
(`--no-repack` in its CLI); the plain CPU path stays multi-threaded and SIMD.

`patch_defaults` also fixes the echoed prompt log-probs of `create_completion` (`_aligned_echo`), which
llama-cpp-python 0.3.16 shifts by one token for models without a BOS token; primer's served-model eval
reads them through the server (`SERVER_MAIN`) like any OpenAI-compatible one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from primer.errors import PrimerError


def patch_defaults() -> None:
    """Make every `llama_cpp.Llama` created in this process use plain CPU buffers and return aligned echoed
    prompt log-probs (see module doc)."""
    try:
        import llama_cpp.llama_cpp as C
    except ImportError as e:
        raise PrimerError("llama.cpp is needed here: pip install 'llama-cpp-python[server]==0.3.16'") from e
    if getattr(C.llama_model_default_params, "_primer", False):
        return
    import llama_cpp

    llama_cpp.Llama.create_completion = _aligned_echo(llama_cpp.Llama.create_completion)
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


def _aligned_echo(create_completion):
    """Wrap `Llama.create_completion` so echoed prompt log-probs belong to the right tokens.

    With `echo=True` and `logprobs`, llama-cpp-python (0.3.16) pairs the i-th echoed token with the
    distribution its logits row i holds -- the prediction *after* token i -- which is right only when the
    prompt starts with a BOS token it then drops. For a model that adds none (SmolLM2, Qwen, ...) every
    prompt token gets log p(token_i | tokens up to and including i) and the top log-probs of row i predict
    token i+1, so likelihood scores through its server come out wrong (primer's served-model eval probes
    for this). Here rows are read one position earlier: token i from row i-1, as the OpenAI API means it.
    """
    import functools

    import numpy as np

    @functools.wraps(create_completion)
    def wrapped(self, *args, **kw):
        out = create_completion(self, *args, **kw)
        k = kw.get("logprobs")
        if not kw.get("echo") or k is None or kw.get("stream") or not isinstance(out, dict):
            return out
        lp = (out.get("choices") or [{}])[0].get("logprobs")
        ids = [int(t) for t in self._input_ids[: self.n_tokens]]
        if not lp or not ids or ids[0] == self.token_bos():
            return out
        n = min(len(lp["token_logprobs"]), len(ids))
        rows = self.logits_to_logprobs(self._scores[:n])
        for j in range(1, n):
            row = rows[j - 1]
            top = {self.detokenize([int(i)], prev_tokens=ids[:j]).decode("utf-8", errors="ignore"): float(row[i])
                   for i in np.argsort(-row)[: max(1, k)]}
            lp["token_logprobs"][j] = float(row[ids[j]])
            lp["top_logprobs"][j] = {**top, lp["tokens"][j]: float(row[ids[j]])}
        return out

    return wrapped


SERVER_MAIN = ("import sys; from primer.weights.llamacpp import patch_defaults; patch_defaults(); "
               "from llama_cpp.server.__main__ import main; sys.argv[0] = 'llama_cpp.server'; main()")
"""`python -c SERVER_MAIN --model ...` runs llama-cpp-python's OpenAI server with plain CPU buffers."""
