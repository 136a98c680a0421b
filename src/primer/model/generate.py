"""Text generation: KV cache, batched prompts of different lengths, sampling, stop strings, streaming.

    from primer.weights.load import load_model
    from primer.model.generate import generate
    lm = load_model("bundled")
    [r] = generate(lm, ["Photosynthesis is"], max_new_tokens=64)                  # greedy
    rs = generate(lm, [[{"role": "user", "content": "Hi"}]], temperature=0.7, top_p=0.9, seed=1)
    generate(lm, prompts, on_token=lambda row, piece: print(piece, end=""))        # streaming

A prompt is a string (encoded as the tokenizer does by default), a chat (a list of
{"role", "content"} messages, rendered with the model's chat template and a generation prompt),
or a list of token ids. Rows of a batch are left-padded: each row gets its own rotary positions
(starting at 0) and an attention mask hides the padding, so a prompt's continuation does not
depend on what it is batched with. Finished rows are dropped from the batch.

Speed: on CPU the decode loop runs `primer.model.quant.FastDecoder` (weight-only int4/int8 kernels with
bf16 activations, exact GGUF Q4/Q8 weights); `fast=False` runs the reference fp32
`Transformer.forward`, which the parity tests use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from primer.errors import PrimerError
from primer.model.transformer import KVCache, Transformer

Prompt = str | list[dict] | list[int]
# Rows dropped from the batch once this fraction of it has finished (reindexing the cache copies it).
_COMPACT_FRACTION = 0.25
_TOPP_CANDIDATES = 512


@dataclass
class GenerationResult:
    text: str
    """Generated text (stop string and stop token not included)."""
    token_ids: list[int] = field(default_factory=list)
    """Generated token ids (a stop token is not included)."""
    finish_reason: str = "length"
    """"stop" (a stop token or stop string ended it) or "length" (max tokens or the context ran out)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0


def _unpack(lm, tokenizer):
    if isinstance(lm, Transformer):
        return lm, tokenizer
    if isinstance(lm, tuple):
        return lm[0], tokenizer if tokenizer is not None else lm[1]
    model = getattr(lm, "model", None)
    if isinstance(model, Transformer):
        return model, tokenizer if tokenizer is not None else getattr(lm, "tokenizer", None)
    raise PrimerError(f"generate: expected a model (or load_model's result), got {type(lm).__name__}")


def encode_prompt(tokenizer, prompt: Prompt) -> list[int]:
    """Token ids for a string, a chat (list of messages) or ids."""
    if isinstance(prompt, str):
        if tokenizer is None:
            raise PrimerError("generate: text prompts need a tokenizer")
        return list(tokenizer.encode(prompt))
    prompt = list(prompt)
    if prompt and all(isinstance(m, dict) for m in prompt):
        if tokenizer is None:
            raise PrimerError("generate: chat prompts need a tokenizer")
        return list(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True))
    if all(isinstance(t, int) for t in prompt):
        return prompt
    raise PrimerError("generate: a prompt is a string, a list of {'role', 'content'} messages, or token ids")


class _Detok:
    """Incremental detokenizer for one row: emits only complete characters, holds back what may
    still become a stop string, and cuts the text at the first stop string."""

    def __init__(self, tokenizer, stops: Sequence[str]):
        self.tok = tokenizer
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.ids: list[int] = []
        self.prefix = 0  # ids[prefix:read] decode to the tail of `text` already accounted for
        self.read = 0
        self.text = ""
        self.emitted = 0
        self.hit = False

    def add(self, token: int) -> str:
        """Append one id; return the newly safe-to-show text."""
        self.ids.append(token)
        before = self.tok.decode(self.ids[self.prefix:self.read])
        now = self.tok.decode(self.ids[self.prefix:])
        if len(now) > len(before) and not now.endswith("\ufffd"):
            start = max(0, len(self.text) - self.hold)
            self.text += now[len(before):]
            self.prefix, self.read = self.read, len(self.ids)
            for s in self.stops:
                i = self.text.find(s, max(0, start - len(s)))
                if i >= 0:
                    self.text, self.hit = self.text[:i], True
            if self.hit:
                return self.flush()
        safe = max(self.emitted, len(self.text) - self.hold)
        piece, self.emitted = self.text[self.emitted:safe], safe
        return piece

    def flush(self) -> str:
        piece, self.emitted = self.text[self.emitted:], len(self.text)
        return piece


def sample(logits: torch.Tensor, temperature: float, top_k: int, top_p: float,
           generators: Sequence[torch.Generator] | None) -> torch.Tensor:
    """Next ids (B,) from logits (B, V): greedy when temperature <= 0, else temperature / top-k / top-p.

    Each row draws from its own generator, so a seeded row's text does not depend on its batch.
    """
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    V = logits.shape[-1]
    k = min(top_k, V) if top_k and top_k > 0 else 0
    if 0 < top_p < 1:
        k = min(k or _TOPP_CANDIDATES, V)
    if k:
        vals, idx = logits.topk(k, dim=-1)  # (B, k) sorted descending
        logz = torch.logsumexp(logits, dim=-1, keepdim=True)
        if 0 < top_p < 1:
            probs = (vals - logz).exp()
            mass = probs.sum(-1)
            if not top_k and bool((mass < top_p).any()):
                # the nucleus is wider than the candidates for some row: sort the whole vocabulary
                vals, idx = logits.sort(dim=-1, descending=True)
                probs = (vals - logz).exp()
            cum = probs.cumsum(-1)
            vals = vals.masked_fill(cum - probs >= top_p, float("-inf"))  # keep the smallest set >= top_p
        probs = torch.softmax(vals, dim=-1)
    else:
        idx, probs = None, torch.softmax(logits, dim=-1)
    out = torch.empty(probs.shape[0], dtype=torch.long)
    for i in range(probs.shape[0]):
        gen = generators[i] if generators is not None else None
        out[i] = torch.multinomial(probs[i], 1, generator=gen)[0]
    return out if idx is None else idx.gather(1, out[:, None])[:, 0]


def check_sampling(max_new_tokens: int, temperature: float, top_k: int, top_p: float, repeat_penalty: float) -> None:
    """Refuse sampling settings that cannot mean what was asked (temperature -1 is not "greedy")."""
    for name, value, ok, rule in (
        ("max_new_tokens", max_new_tokens, max_new_tokens >= 1, "at least 1"),
        ("temperature", temperature, math.isfinite(temperature) and temperature >= 0, "a finite number >= 0 (0 = greedy)"),
        ("top_k", top_k, top_k >= 0, ">= 0 (0 = off)"),
        ("top_p", top_p, 0 < top_p <= 1, "in (0, 1] (1 = off)"),
        ("repeat_penalty", repeat_penalty, math.isfinite(repeat_penalty) and repeat_penalty > 0, "a finite number > 0"),
    ):
        if not ok:
            raise PrimerError(f"{name} must be {rule}, got {value}")


def _forward_fn(model: Transformer, fast: bool | str):
    on_cpu = next(model.parameters()).device.type == "cpu"
    if fast == "auto":
        from primer.model.quant import has_cpu_int_kernels

        fast = on_cpu and has_cpu_int_kernels()
    if fast:
        if not on_cpu:
            raise PrimerError("the fast (int4/int8) decode path runs on CPU; pass fast=False on GPU")
        from primer.model.quant import fast_decoder

        return fast_decoder(model), torch.float32, torch.device("cpu")
    p = next(model.parameters())
    return model, p.dtype, p.device


@torch.inference_mode()
def generate(
    lm,
    prompts: Prompt | Sequence[Prompt],
    *,
    max_new_tokens: int = 256,
    max_tokens: int | None = None,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    stop: Sequence[str] = (),
    seed: int | Sequence[int | None] | None = None,
    repeat_penalty: float = 1.0,
    on_token: Callable[[int, str], None] | None = None,
    batch_size: int = 32,
    stop_token_ids: set[int] | None = None,
    ignore_eos: bool = False,
    fast: bool | str = "auto",
    tokenizer=None,
) -> list[GenerationResult]:
    """Continue each prompt; one `GenerationResult` per prompt, in order.

    lm: `load_model(...)`'s result, a (model, tokenizer) pair, or a bare Transformer (+ tokenizer=).
    max_new_tokens (alias max_tokens): most tokens generated per prompt (the context may cut it).
    temperature <= 0 is greedy; top_k 0 and top_p 1 disable those filters.
    stop: strings that end a row (not included in its text); stop tokens default to the
        tokenizer's EOS / end-of-turn ids (`ignore_eos=True` disables them, for benchmarks).
    seed: row i samples from torch.Generator seeded with seed + i, or with seed[i] when one seed per
        prompt is given (None: nondeterministic). Either way a row's text does not depend on its batch.
    repeat_penalty: llama.cpp's penalty on tokens this row has already generated (1.0 = off):
        positive logits are divided by it, negative ones multiplied.
    on_token(row, text_piece): called as text becomes final, row = the prompt's index.
    batch_size: prompts decoded together (sorted by length to limit padding).
    fast: "auto" uses the int4/int8 CPU decoder when available; False runs exact fp32 forward.
    """
    model, tok = _unpack(lm, tokenizer)
    if max_tokens is not None:
        max_new_tokens = max_tokens
    check_sampling(max_new_tokens, temperature, top_k, top_p, repeat_penalty)
    if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], (dict, int))):
        prompts = [prompts]  # one prompt given bare
    encoded = [encode_prompt(tok, p) for p in prompts]
    ctx = model.cfg.block_size
    for i, ids in enumerate(encoded):
        if not ids:
            raise PrimerError(f"prompt {i} is empty after tokenization")
        if len(ids) >= ctx:
            raise PrimerError(
                f"prompt {i} is {len(ids)} tokens; the model's context is {ctx} tokens (shorten the prompt)"
            )
    if stop_token_ids is None:
        stop_token_ids = set()
        if tok is not None and not ignore_eos:
            stop_token_ids = set(getattr(tok, "stop_ids", None) or ({tok.eos_id} - {None}))
    if seed is None or isinstance(seed, int):
        seeds = [None if seed is None else int(seed) + i for i in range(len(encoded))]
    else:
        seeds = list(seed)
        if len(seeds) != len(encoded):
            raise PrimerError(f"generate: {len(seeds)} seeds for {len(encoded)} prompts (give one seed, or one per prompt)")
    if (stop or on_token is not None) and tok is None:
        raise PrimerError("generate: stop strings and streaming need a tokenizer")
    forward = _forward_fn(model, fast)  # (callable, cache dtype, device)
    results: list[GenerationResult | None] = [None] * len(encoded)
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    for b in range(0, len(order), max(1, batch_size)):
        rows = order[b: b + batch_size]
        _generate_batch(forward, model.cfg, tok, rows, [encoded[i] for i in rows], results,
                        max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                        stop=list(stop), seeds=[seeds[i] for i in rows], repeat_penalty=repeat_penalty,
                        on_token=on_token, stop_ids=stop_token_ids)
    return results  # type: ignore[return-value]


def _generate_batch(runner, cfg, tok, rows, prompts, results, *, max_new_tokens, temperature, top_k, top_p,
                    stop, seeds, repeat_penalty, on_token, stop_ids):
    run, cache_dtype, dev = runner

    def forward(ids, pos, attn_mask, cache, last_only=False):
        out = run(ids.to(dev), pos=pos.to(dev), attn_mask=attn_mask.to(dev), cache=cache, last_only=last_only)
        return out.float().cpu()

    B = len(rows)
    T = max(len(p) for p in prompts)
    steps = max(0, min(max_new_tokens, cfg.block_size - T))
    lens = torch.tensor([len(p) for p in prompts])
    idx = torch.zeros(B, T, dtype=torch.long)
    for i, p in enumerate(prompts):
        idx[i, T - len(p):] = torch.tensor(p)
    pads = T - lens
    # valid[b, s]: cache slot s of row b holds a real token (left padding is False)
    valid = torch.arange(T + steps).unsqueeze(0) >= pads.unsqueeze(1)  # (B, S)
    pos = (torch.arange(T).unsqueeze(0) - pads.unsqueeze(1)).clamp_min(0)  # (B, T) rotary positions
    out_ids: list[list[int]] = [[] for _ in range(B)]
    finish = ["length"] * B
    detok = [_Detok(tok, stop) for _ in range(B)] if (stop or on_token is not None) else None
    gens = None
    if temperature > 0 and any(s is not None for s in seeds):
        gens = [torch.Generator().manual_seed(s) if s is not None else None for s in seeds]
    if steps == 0:
        for i, r in enumerate(rows):
            results[r] = GenerationResult("", [], "length", len(prompts[i]), 0)
        return
    cache = KVCache(cfg, B, T + steps, dtype=cache_dtype, device=dev)
    # Prefill in chunks of positions so (B, chunk, hidden) activations stay bounded.
    chunk = max(1, 16384 // B)
    logits = None
    for s0 in range(0, T, chunk):
        s1 = min(T, s0 + chunk)
        q_valid = valid[:, s0:s1]  # (B, t)
        causal = torch.ones(s1 - s0, s1, dtype=torch.bool).tril(s0)  # (t, s1)
        mask = causal.unsqueeze(0) & valid[:, None, :s1]  # (B, t, s1)
        # a padding query sees only itself, so softmax has something to normalise (its output is unused)
        eye = torch.zeros(s1 - s0, s1, dtype=torch.bool)
        eye[:, s0:s1] = torch.eye(s1 - s0, dtype=torch.bool)
        mask |= ~q_valid[:, :, None] & eye
        logits = forward(idx[:, s0:s1], pos[:, s0:s1], mask.unsqueeze(1), cache, last_only=True)[:, -1]
    active = list(range(B))  # batch slot -> local row
    next_pos = lens.clone()
    alive = [True] * B
    seen = torch.zeros(B, logits.shape[-1], dtype=torch.bool) if repeat_penalty != 1.0 else None
    for step in range(steps):
        if seen is not None:
            logits = torch.where(seen, torch.where(logits > 0, logits / repeat_penalty, logits * repeat_penalty), logits)
        nxt = sample(logits, temperature, top_k, top_p, [gens[a] for a in active] if gens else None)
        for slot, a in enumerate(active):
            if not alive[a]:
                continue
            t = int(nxt[slot])
            if t in stop_ids:
                alive[a], finish[a] = False, "stop"
            else:
                out_ids[a].append(t)
                if detok is not None:
                    piece = detok[a].add(t)
                    if piece and on_token is not None:
                        on_token(rows[a], piece)
                    if detok[a].hit:
                        alive[a], finish[a] = False, "stop"
        if seen is not None:
            seen[torch.arange(len(active)), nxt] = True
        if step == steps - 1 or not any(alive[a] for a in active):
            break
        dead = [slot for slot, a in enumerate(active) if not alive[a]]
        if dead and len(dead) >= max(1, int(len(active) * _COMPACT_FRACTION)):
            keep = [slot for slot, a in enumerate(active) if alive[a]]
            ki = torch.tensor(keep)
            cache.reorder(ki.to(dev))
            valid, next_pos, nxt = valid[ki], next_pos[ki], nxt[ki]
            if seen is not None:
                seen = seen[ki]
            active = [active[s] for s in keep]
        S = cache.length + 1
        logits = forward(nxt.view(-1, 1), next_pos.view(-1, 1), valid[:, None, None, :S], cache)[:, -1]
        next_pos += 1
    for i, r in enumerate(rows):
        if detok is not None:
            tail = detok[i].flush()
            if tail and on_token is not None:
                on_token(r, tail)
            text = detok[i].text
        else:
            text = tok.decode(out_ids[i]) if tok is not None else ""
        results[r] = GenerationResult(text, out_ids[i], finish[i], len(prompts[i]), len(out_ids[i]))
