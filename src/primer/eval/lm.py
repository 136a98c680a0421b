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
Requests sharing a context (the choices of one question) are scored as one tree-masked row (the
context once, each choice attending to it and to itself); rows run length-sorted in wide batches.
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

from primer.common.files import content_digest
from primer.errors import PrimerError

SCORE_TOKENS = 2048  # tokens (rows x longest row) per scoring forward
PACK_TOKENS = 256  # a scoring row holds several short questions up to this length
HEAD_ROWS = 256  # positions per lm_head + log-softmax chunk: 256 x 49k vocab x 4 B = 50 MB


class LM(Protocol):
    name: str
    fingerprint: str

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]: ...

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]: ...

    def generate(self, prompts: Sequence[str], stop: Sequence[str], max_tokens: int,
                 temperature: float = 0.0, seed: int = 0) -> list[str]: ...


class PrimerLM:
    """LM over a primer Transformer + Tokenizer (any model kind `primer.weights.load.load_model` returns)."""

    def __init__(self, model, tokenizer, *, name: str = "model", fingerprint: str | None = None,
                 max_length: int | None = None, batch_size: int = 8, device: str | None = None):
        self.model = model.eval()
        self.tok = tokenizer
        self.name = name
        self.device = torch.device(device) if device else next(model.parameters()).device
        if self.device != next(model.parameters()).device:
            self.model.to(self.device)
        self.max_length = min(max_length or model.cfg.block_size, model.cfg.block_size)
        self.batch_size = batch_size
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
        fp = content_digest(path)[:16] if path else None  # the weights' bytes, wherever they lie
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
    def score_tokens(self, reqs: Sequence[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(context ids, continuation ids) -> (log-likelihood, is_greedy), lm-eval's truncation.

        Requests that share a (truncated) context form a tree: one row holds the context once and
        each continuation after it, every continuation attending to the context and to itself only
        (a tree attention mask; positions restart after the context), so a question's context runs
        once and its choices never see each other. Short trees share a row (PACK_TOKENS; the mask keeps
        each tree to itself), so there is no padding to speak of; rows run SCORE_TOKENS at a
        time (wide matmuls are what a CPU is fast at: 20 GFLOP/s at 1 row, ~250 at 128+), and the
        vocabulary-wide head runs only where a continuation token is predicted.
        """
        out: list[tuple[float, bool] | None] = [None] * len(reqs)
        by_context: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, (ctx, cont) in enumerate(reqs):
            if not cont:
                out[i] = (0.0, True)
                continue
            if not ctx:
                raise PrimerError("a scored continuation needs at least one context token (encode_pair gives "
                                  "an empty context the BOS/EOS prefix, as lm-eval does)")
            if len(cont) > self.max_length:
                raise PrimerError(f"a continuation of {len(cont)} tokens is longer than the model's context "
                                  f"({self.max_length}); lm-eval refuses it too")
            full = (ctx + cont)[-(self.max_length + 1):]
            by_context[tuple(full[: len(full) - len(cont)])].append(i)
        trees: list[tuple[list[int], list[int]]] = []  # (context, requests), each at most max_length tokens
        for ctx, ix in by_context.items():
            tree: list[int] = []
            for i in ix:
                if tree and len(ctx) + sum(len(reqs[j][1]) - 1 for j in tree + [i]) > self.max_length:
                    trees.append((list(ctx), tree))
                    tree = []
                tree.append(i)
            trees.append((list(ctx), tree))
        size = [len(c) + sum(len(reqs[i][1]) - 1 for i in ix) for c, ix in trees]
        # First-fit decreasing: short trees share a row (the mask keeps each to itself), so a mix of
        # short and long questions runs without padding.
        cap = max(min(PACK_TOKENS, self.max_length), max(size, default=0))
        rows: list[list[int]] = []
        room: list[int] = []
        for t in sorted(range(len(trees)), key=lambda t: -size[t]):
            r = next((r for r in range(len(rows)) if room[r] >= size[t]), None)
            if r is None:
                rows.append([])
                room.append(cap)
                r = len(rows) - 1
            rows[r].append(t)
            room[r] -= size[t]
        rows.sort(key=lambda r: -sum(size[t] for t in r))
        b = 0
        while b < len(rows):
            batch = [[trees[t] for t in r] for r in rows[b: b + max(1, SCORE_TOKENS // sum(size[t] for t in rows[b]))]]
            for i, res in zip((i for row in batch for _, ix in row for i in ix), self._score_rows(batch, reqs)):
                out[i] = res
            b += len(batch)
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def _score_rows(self, rows: list[list[tuple[list[int], list[int]]]],
                    reqs: Sequence[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """One forward over `rows`, each a list of trees (context, requests); results in row, tree, request order."""
        T = max(sum(len(c) + sum(len(reqs[i][1]) - 1 for i in ix) for c, ix in row) for row in rows)
        B = len(rows)
        idx = torch.zeros(B, T, dtype=torch.long)
        pos = torch.zeros(B, T, dtype=torch.long)
        tree = torch.full((B, T), -1, dtype=torch.long)  # which tree of the row; -1 padding
        branch = torch.zeros((B, T), dtype=torch.long)  # 0 context, k continuation k of its tree
        pick, target, owner = [], [], []  # flat positions whose logits predict a continuation token
        k = 0
        for b, row in enumerate(rows):
            at = 0
            for t, (ctx, ix) in enumerate(row):
                n, c0 = len(ctx), at
                idx[b, at: at + n] = torch.tensor(ctx)
                pos[b, at: at + n] = torch.arange(n)
                tree[b, at: at + n] = t
                at += n
                for j, i in enumerate(ix):
                    cont = reqs[i][1]
                    m = len(cont) - 1
                    idx[b, at: at + m] = torch.tensor(cont[:-1], dtype=torch.long)
                    pos[b, at: at + m] = torch.arange(n, n + m)
                    tree[b, at: at + m] = t
                    branch[b, at: at + m] = j + 1
                    pick += [b * T + c0 + n - 1] + [b * T + p for p in range(at, at + m)]
                    target += cont
                    owner += [k] * len(cont)
                    at += m
                    k += 1
        kt, qt = tree.unsqueeze(1), tree.unsqueeze(2)  # keys (B, 1, T), queries (B, T, 1)
        kb, qb = branch.unsqueeze(1), branch.unsqueeze(2)
        mask = torch.ones(T, T, dtype=torch.bool).tril() & (kt >= 0) & (kt == qt) & ((kb == 0) | (kb == qb))
        mask |= torch.eye(T, dtype=torch.bool) & (qt < 0)  # a padding query sees itself: no empty softmax
        dev = self.device
        h = self.model(idx.to(dev), pos=pos.to(dev), attn_mask=mask.unsqueeze(1).to(dev), head=False)
        h = h.reshape(B * T, -1)[torch.tensor(pick, device=dev)]
        tgt = torch.tensor(target, device=dev)
        ll = torch.empty(len(target), dtype=torch.float32, device=dev)
        hit = torch.empty(len(target), dtype=torch.bool, device=dev)
        for c in range(0, len(target), HEAD_ROWS):  # (positions x vocab) log-probs a chunk at a time
            logp = F.log_softmax(self.model.lm_head(h[c: c + HEAD_ROWS]).float(), dim=-1)
            ll[c: c + HEAD_ROWS] = logp.gather(-1, tgt[c: c + HEAD_ROWS, None]).squeeze(-1)
            hit[c: c + HEAD_ROWS] = logp.argmax(-1) == tgt[c: c + HEAD_ROWS]
        who = torch.tensor(owner, device=dev)
        total = torch.zeros(k, dtype=torch.float32, device=dev).index_add_(0, who, ll)
        missed = torch.zeros(k, dtype=torch.long, device=dev).index_add_(0, who, (~hit).long())
        return [(a, m == 0) for a, m in zip(total.tolist(), missed.tolist())]

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
