"""The model interface tasks talk to, and its adapter for every model primer loads.

`LM` is lm-eval's model API in miniature:
    loglikelihood([(context, continuation), ...])  -> [(sum log p(continuation | context), is_greedy)]
    loglikelihood_rolling([text, ...])              -> [sum log p(text)] over disjoint windows
    generate([prompt, ...], stop, max_tokens, temperature, seed) -> [completion]

`load_lm(spec)` opens any model primer evaluates: `PrimerLM` for a model primer loads, `served.ServedLM` for
`openai:BASE_URL/MODEL` (any OpenAI-compatible server).

`PrimerLM` wraps a `primer.model.transformer.Transformer` and its `primer.model.tokenizer.Tokenizer`. It tokenizes
exactly as lm-eval's HF model does (encode context+continuation whole and split at the length of
the encoded context, trailing context spaces moved to the continuation, tokenizer's own BOS policy,
BOS-or-EOS as the context of an empty context), so scores agree with lm-eval on the same weights.
Requests sharing a context (the choices of one question) run the context once and the choices as
one batch over a copy of its KV cache; other requests run length-sorted in padded batches.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F

from primer.errors import PrimerError


class LM(Protocol):
    name: str
    fingerprint: str

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]: ...

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]: ...

    def generate(self, prompts: Sequence[str], stop: Sequence[str], max_tokens: int,
                 temperature: float = 0.0, seed: int = 0) -> list[str]: ...


def file_fingerprint(path: str | Path) -> str:
    """Hash of (name, size, mtime) of a file or every file under a directory: cheap and stable."""
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(p) if p.is_dir() else f.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


class PrimerLM:
    """LM over a primer Transformer + Tokenizer (any model kind `primer.weights.load.load_model` returns)."""

    def __init__(self, model, tokenizer, *, name: str = "model", fingerprint: str | None = None,
                 max_length: int | None = None, batch_size: int = 8, device: str | None = None,
                 share_prefix: bool | None = None):
        self.model = model.eval()
        self.tok = tokenizer
        self.name = name
        self.device = torch.device(device) if device else next(model.parameters()).device
        if self.device != next(model.parameters()).device:
            self.model.to(self.device)
        self.max_length = min(max_length or model.cfg.block_size, model.cfg.block_size)
        self.batch_size = batch_size
        # Prefix reuse saves compute where compute is the limit (CPU); on a GPU wide padded
        # batches are faster than many small cached passes.
        self.share_prefix = (self.device.type == "cpu") if share_prefix is None else share_prefix
        bos, eos = getattr(tokenizer, "bos_id", None), getattr(tokenizer, "eos_id", None)
        self.prefix_token_id = bos if bos is not None else eos
        self.eos_id = eos
        self.fingerprint = fingerprint or self._weights_fingerprint()
        self.fast: bool | str = False

    def use_fast_decoder(self) -> None:
        """Generate with the int4/int8 CPU decoder (`generate(fast="auto")`: the GGUF's own 4-bit blocks, bf16
        activations, ~3x the fp32 forward's tokens/s at batch 16) instead of the exact fp32 forward, for long
        generation runs on a CPU. Greedy replies can differ from the fp32 ones where two tokens nearly tie, so
        the answers get their own cache key. Scores of log-likelihood tasks are unaffected."""
        self.fast = "auto"
        self.fingerprint += "+fast-decoder"

    @classmethod
    def load(cls, spec: str, **kw) -> "PrimerLM":
        """Load through `primer.weights.load.load_model` ('bundled', a .gguf, an HF dir, a checkpoint)."""
        model, tok, path = _load_any(spec)
        fp = file_fingerprint(path) if path else None
        return cls(model, tok, name=str(spec), fingerprint=fp, **kw)

    def _weights_fingerprint(self) -> str:
        h = hashlib.sha256()
        for k, v in sorted(self.model.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().float().flatten()[:4096].cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    # -- tokenization as lm-eval ------------------------------------------------------------------
    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if context == "":
            cont = self.tok.encode(continuation, add_special_tokens=False)
            if cont and cont[0] == self.prefix_token_id:
                return cont[:1], cont[1:]
            return [self.prefix_token_id], cont
        n = len(context) - len(context.rstrip())
        if n:
            context, continuation = context[:-n], context[-n:] + continuation
        whole = self.tok.encode(context + continuation)
        ctx = self.tok.encode(context)
        return ctx, whole[len(ctx):]

    # -- scoring ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def _forward(self, rows: list[list[int]]) -> torch.Tensor:
        """Right-padded batch forward; (B, T, V) log-probs in float32."""
        T = max(len(r) for r in rows)
        idx = torch.zeros(len(rows), T, dtype=torch.long)
        for i, r in enumerate(rows):
            idx[i, : len(r)] = torch.tensor(r)
        logits = self.model(idx.to(self.device))
        return F.log_softmax(logits.float(), dim=-1)

    def score_tokens(self, reqs: Sequence[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(context ids, continuation ids) -> (log-likelihood, is_greedy), lm-eval's truncation."""
        out: list[tuple[float, bool] | None] = [None] * len(reqs)
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        singles: list[int] = []
        for i, (ctx, cont) in enumerate(reqs):
            if self.share_prefix and len(ctx) + len(cont) <= self.max_length + 1 and len(cont) > 0:
                groups[tuple(ctx)].append(i)
            else:
                singles.append(i)
        shared = {c: ix for c, ix in groups.items() if len(ix) > 1 and len(c) > 1}
        for ix in groups.values():
            if len(ix) == 1 or len(reqs[ix[0]][0]) <= 1:
                singles.extend(ix)
        for ctx, ix in shared.items():
            for i, r in zip(ix, self._score_shared(list(ctx), [reqs[i][1] for i in ix])):
                out[i] = r
        singles.sort(key=lambda i: -(len(reqs[i][0]) + len(reqs[i][1])))
        for b in range(0, len(singles), self.batch_size):
            chunk = singles[b: b + self.batch_size]
            rows, conts = [], []
            for i in chunk:
                ctx, cont = reqs[i]
                rows.append((ctx + cont)[-(self.max_length + 1):][:-1])
                conts.append(cont)
            logp = self._forward(rows)
            for j, i in enumerate(chunk):
                n, L = len(conts[j]), len(rows[j])
                out[i] = self._gather(logp[j, L - n: L], conts[j])
        return out  # type: ignore[return-value]

    @staticmethod
    def _gather(logp: torch.Tensor, cont: list[int]) -> tuple[float, bool]:
        target = torch.tensor(cont, device=logp.device)
        ll = logp.gather(-1, target.unsqueeze(-1)).sum().item()
        greedy = bool((logp.argmax(-1) == target).all().item())
        return ll, greedy

    @torch.inference_mode()
    def _score_shared(self, ctx: list[int], conts: list[list[int]]) -> list[tuple[float, bool]]:
        """Run the context once, then all continuations as one batch over copies of its cache."""
        from primer.model.transformer import KVCache  # noqa: PLC0415

        m = self.model
        Tc = max(len(c) for c in conts)
        cache = KVCache(m.cfg, 1, len(ctx) - 1 + Tc, dtype=next(m.parameters()).dtype, device=self.device)
        # The last context token is fed with the continuations, so its logits come out of the same
        # batched pass as theirs (the cache holds ctx[:-1]).
        m(torch.tensor([ctx[:-1]], device=self.device), cache=cache, last_only=True)
        B = len(conts)
        cache.k = [k.expand(B, -1, -1, -1).clone() for k in cache.k]
        cache.v = [v.expand(B, -1, -1, -1).clone() for v in cache.v]
        rows = [[ctx[-1]] + c[:-1] for c in conts]
        T = max(len(r) for r in rows)
        idx = torch.zeros(B, T, dtype=torch.long)
        for i, r in enumerate(rows):
            idx[i, : len(r)] = torch.tensor(r)
        logp = F.log_softmax(m(idx.to(self.device), cache=cache).float(), dim=-1)
        return [self._gather(logp[i, : len(c)], c) for i, c in enumerate(conts)]

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        return self.score_tokens([self.encode_pair(c, x) for c, x in requests])

    def rolling_windows(self, text: str) -> list[tuple[list[int], list[int]]]:
        """lm-eval's get_rolling_token_windows + make_disjoint_window (context_len=1)."""
        tokens = self.tok.encode(text, add_special_tokens=False)
        if not tokens:
            return []
        L = self.max_length
        windows = [([self.prefix_token_id] + tokens[: min(L, len(tokens)) - 1], tokens[: min(L, len(tokens))])]
        predicted = len(windows[0][1])
        while predicted < len(tokens):
            n = min(len(tokens) - predicted, L)
            end = predicted + n
            windows.append((tokens[end - L - 1: end - 1], tokens[end - n: end]))
            predicted += n
        # disjoint: the context part is what precedes the predicted tokens
        return [(a[: len(a) - (len(b) - 1)], b) for a, b in windows]

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]:
        out = []
        for text in texts:
            wins = self.rolling_windows(text)
            out.append(sum(ll for ll, _ in self.score_tokens(wins)) if wins else 0.0)
        return out

    # -- generation ------------------------------------------------------------------------------
    def chat_prompt(self, messages: list[dict]) -> str:
        """`messages` rendered with the model's chat template and the assistant's generation prompt."""
        return self.tok.apply_chat_template(messages, add_generation_prompt=True)

    def generate(self, prompts: Sequence[str], stop: Sequence[str] = (), max_tokens: int = 256,
                 temperature: float = 0.0, seed: int = 0) -> list[str]:
        """Batched greedy or sampled decoding (`primer.model.generate`, the exact fp32 path the scores use);
        a prompt longer than the context keeps its last tokens, as lm-eval does."""
        from primer.model.generate import generate  # noqa: PLC0415

        budget = max(1, self.max_length - max_tokens)
        bos = getattr(self.tok, "bos_token", None)
        # a rendered chat prompt that already begins with the BOS text gets no second BOS
        enc = [self.tok.encode(p, add_special_tokens=not (bos and p.startswith(bos)))[-budget:] or [self.prefix_token_id]
               for p in prompts]
        res = generate((self.model, self.tok), enc, max_new_tokens=max_tokens, temperature=temperature,
                       stop=stop, seed=seed, batch_size=self.batch_size, fast=self.fast)
        return [r.text for r in res]


def load_lm(spec: str, *, http=None, **kw) -> LM:
    """'openai:BASE_URL/MODEL' -> a served model (`http`: its `HttpOptions`); anything else -> `PrimerLM.load(spec, **kw)`."""
    from primer.eval.served import PREFIX, ServedLM  # noqa: PLC0415

    if str(spec).startswith(PREFIX):
        return ServedLM(str(spec), http)
    return PrimerLM.load(str(spec), **kw)


def _load_any(spec: str):
    """(model, tokenizer, path or None) via primer.weights.load when present, else the GGUF reader."""
    path = None
    if spec == "bundled":
        from primer.weights.bundled import bundled_gguf_path  # noqa: PLC0415

        path = bundled_gguf_path()
    elif Path(spec).exists():
        path = Path(spec)
    try:
        from primer.weights.load import load_model  # noqa: PLC0415
    except ImportError:
        load_model = None
    if load_model is not None:
        from primer.weights.load import resolve_spec  # noqa: PLC0415

        path = resolve_spec(spec)[1]
        loaded = load_model(spec)
        model, tok = (loaded if isinstance(loaded, tuple) else (loaded.model, loaded.tokenizer))[:2]
        return model, tok, path
    if path is None or path.suffix != ".gguf":
        raise PrimerError(f"cannot load model '{spec}': expected 'bundled' or a .gguf file")
    from primer.weights.gguf_io import load_gguf  # noqa: PLC0415

    model, tok = load_gguf(path)
    return model, tok, path


def nan_safe(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x
