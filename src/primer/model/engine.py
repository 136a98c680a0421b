"""The one decode loop: a step-level engine with continuous batching over a per-slot KV cache.

    eng = Engine(lm, max_batch=16)                  # lm: load_model(...)'s result, (model, tok), or a Transformer
    rid = eng.submit("Once upon a time", SamplingParams(max_new_tokens=64, temperature=0.8, seed=1))
    while eng.has_work():
        for ev in eng.step():                       # Event(rid, token_id, text, finish_reason, counts)
            print(ev.text, end="")

`step()` first decodes one token for every active request (one batched forward), then admits
waiting requests into free slots (their prompts prefilled, each one's first token sampled), so a request
that arrives while others decode joins the running batch at the next step. A prompt identical to one
already running (several samples of one prompt: preference sampling's on-policy answers) is not
prefilled again: the running slot's prompt positions are copied and its prompt logits reused, the
same numbers a prefill would compute. Finished and cancelled
requests free their slot at once: the last slot's cache rows move into the hole, so the active rows
are always slots 0..n-1 and a decode step reads the cache as views, without gathering it.

A request's text does not depend on its batch: positions are per row (no left padding), the
prompt is prefilled alone or (on primer's kernels) packed with the prompts admitted beside it into one
forward that gives each the bits it gets alone, each row samples with its own settings and generator,
and in a decode step each row attends over its own positions only. That holds bit for bit on the fast
path (primer's kernels; without them, up to `quant.INT_MAX_ROWS` rows); the exact fp32 forward and
torch's dense fallback multiply with torch's GEMMs, whose rows change in the last bits with the row
count, so there a near tie can flip with the batch. `generate()` (`primer.model.generate`), the
bundled teacher, eval generation, `primer chat` and `primer serve` all run on this engine.

Runners: `fast=False` runs the exact fp32 `Transformer.forward` (what evaluation and the parity tests
use, any device); `fast=True` runs `primer.model.quant.FastDecoder` (packed int4/int8 weights, CPU);
"auto" picks the fast one on a CPU that has the kernels.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch

from primer.errors import PrimerError
from primer.model.quant import FastDecoder, fast_decoder, has_cpu_int_kernels
from primer.model.sampling import Detokenizer, SamplingParams, penalize, sample
from primer.model.transformer import KVCache, Transformer

Prompt = str | list[dict] | list[int]
# Prompt tokens prefilled per forward call (bounds the (T, S) attention scores and activations).
PREFILL_CHUNK = 512


@dataclass
class Event:
    """What one step did for one request."""

    rid: int
    token_id: int | None
    """The token this step added, or None on a final event that adds none (a stop token)."""
    text: str
    """Text that became final with this step (complete characters; never part of a stop string)."""
    finish_reason: str | None
    """None while running; "stop" (stop token or stop string) or "length" (max_new_tokens, or the context is full)."""
    prompt_tokens: int
    completion_tokens: int


def unpack_lm(lm, tokenizer=None) -> tuple[Transformer | FastDecoder, object]:
    """(model, tokenizer) from load_model's result, a (model, tokenizer) pair, or a bare model (a
    Transformer, or the packed FastDecoder of `load_model(..., decode_only=True)`)."""
    if isinstance(lm, (Transformer, FastDecoder)):
        return lm, tokenizer
    if isinstance(lm, tuple):
        return lm[0], tokenizer if tokenizer is not None else lm[1]
    model = getattr(lm, "model", None)
    if isinstance(model, (Transformer, FastDecoder)):
        return model, tokenizer if tokenizer is not None else getattr(lm, "tokenizer", None)
    raise PrimerError(f"expected a model (or load_model's result), got {type(lm).__name__}")


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


# ------------------------------------------------------------------------------------ the KV cache


class SlotCache:
    """Keys/values per layer (slots, n_kv_head, capacity, head_dim), written in place.

    The capacity (positions) grows by doubling up to `max_len` as rows need it, so a cache sized
    for the model's whole context is only paid for when a request uses it, and never past the
    horizon the engine gives (the most positions its running requests can still reach).
    """

    def __init__(self, cfg, slots: int, max_len: int, dtype, device):
        self.cfg, self.slots, self.max_len, self.dtype, self.device = cfg, slots, max_len, dtype, device
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.capacity = 0

    def reserve(self, positions: int, horizon: int | None = None) -> None:
        if positions <= self.capacity:
            return
        cap = max(positions, 2 * self.capacity, 64)
        if horizon is not None:  # 64 rows of 76 positions need 76, not the 128 a doubling gives
            cap = min(cap, max(positions, horizon))
        cap = min(self.max_len, cap)
        shape = (self.slots, self.cfg.n_kv_head, cap, self.cfg.head_dim)
        if not self.k:
            self.k = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(self.cfg.n_layer)]
            self.v = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(self.cfg.n_layer)]
        else:
            # one layer at a time, the old one freed as its copy is made: the old and the grown cache are
            # never both whole (growing a batch-64 cache from 64 to 128 positions had peaked at 1.5x the new one)
            for cache in (self.k, self.v):
                for i, old in enumerate(cache):
                    new = torch.zeros(shape, dtype=self.dtype, device=self.device)
                    new[:, :, : self.capacity] = old
                    cache[i] = new
                    del old
        self.capacity = cap

    def move(self, src: int, dst: int, length: int) -> None:
        """Copy slot src's first `length` positions into slot dst."""
        for t in self.k + self.v:
            t[dst, :, :length] = t[src, :, :length]

    def slot(self, slot: int, start: int) -> KVCache:
        """One slot as a plain KVCache that has `start` positions filled (prefill writes after them)."""
        return KVCache.wrap([k[slot: slot + 1] for k in self.k], [v[slot: slot + 1] for v in self.v], start)

    def rows(self, pos: torch.Tensor) -> KVCache:
        """Slots 0..n-1 for one decode step, row i writing its new key/value at position pos[i]."""
        return _RowCache(self.k, self.v, pos)


class _RowCache(KVCache):
    """A decode step's view: each row stores its one new key/value at its own position and attends
    over positions 0..max(pos) (the caller masks each row's positions past its own)."""

    def __init__(self, k: list[torch.Tensor], v: list[torch.Tensor], pos: torch.Tensor):
        n = pos.shape[0]
        self.k, self.v, self.max_len = k, v, k[0].shape[2]
        self.pos, self.rows, self.n = pos, torch.arange(n, device=pos.device), n
        self.length = int(pos.max())  # so the forward's start + 1 is the number of positions attended

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ck, cv, S = self.k[layer], self.v[layer], self.length + 1
        ck[self.rows, :, self.pos] = k[:, :, 0]  # k (n, nkv, 1, hs)
        cv[self.rows, :, self.pos] = v[:, :, 0]
        return ck[: self.n, :, :S], cv[: self.n, :, :S]


class Runner:
    """Runs a forward (the exact `Transformer` or the fast decoder; same signature) over a SlotCache."""

    def __init__(self, model: Transformer | FastDecoder, fast: bool | str, slots: int, max_len: int):
        if isinstance(model, FastDecoder):  # loaded decode-only: the packed weights are all there is
            if fast is False:
                raise PrimerError("this model was loaded for decoding only (packed weights, "
                                  "load_model(..., decode_only=True)); load it without decode_only to run the exact fp32 forward")
            fast, on_cpu = True, True
        else:
            on_cpu = next(model.parameters()).device.type == "cpu"
        if fast == "auto":
            fast = on_cpu and has_cpu_int_kernels()
        if fast:
            if not on_cpu:
                raise PrimerError("the fast (int4/int8) decode path runs on CPU; pass fast=False on GPU")
            dec = model if isinstance(model, FastDecoder) else fast_decoder(model)
            self.forward, dtype, self.device = dec, torch.float32, torch.device("cpu")
        else:
            p = next(model.parameters())
            self.forward, dtype, self.device = model, p.dtype, p.device
        # the fast decoder's native step: per-row attention over each slot's own positions
        self.step = self.forward.step if fast and self.forward.ext is not None else None
        self.fast = bool(fast)
        self.cache = SlotCache(model.cfg, slots, max_len, dtype, self.device)

    def prefill(self, group: list[tuple[int, list[int]]], horizon: int | None = None) -> list[torch.Tensor]:
        """Run fresh prompts into their slots, [(slot, ids)]; the logits (V,) after each one's last token.
        `horizon`: the most positions any running request can reach (the cache grows no further for now).
        On primer's kernels the prompts that fit one chunk share one forward (`FastDecoder.prefill`, which
        gives each the numbers it gets alone, bit for bit); the others run alone."""
        self.cache.reserve(max(len(ids) for _, ids in group) + 1, horizon)
        out: dict[int, torch.Tensor] = {}
        short = [(s, ids) for s, ids in group if len(ids) <= PREFILL_CHUNK]
        if self.step is not None and len(short) > 1:
            logits = self.forward.prefill([ids for _, ids in short], [s for s, _ in short], self.cache.k, self.cache.v)
            out = {s: row for (s, _), row in zip(short, logits)}
        return [out[s] if s in out else self._prefill_alone(s, ids) for s, ids in group]

    def _prefill_alone(self, slot: int, ids: list[int]) -> torch.Tensor:
        view = self.cache.slot(slot, 0)
        x = torch.tensor([ids], device=self.device)
        # Prompts keep fp32 activations: with int8 rows the bundled model's first reply token to "What is
        # the capital of France?" flips (a 0.08-logit near tie) and the answer derails; decode steps use int8.
        for s in range(0, len(ids), PREFILL_CHUNK):
            logits = self.forward(x[:, s: s + PREFILL_CHUNK], cache=view, last_only=True)
        return logits[0, -1].float().cpu()

    def decode(self, tokens: list[int], pos: list[int], horizon: int | None = None) -> torch.Tensor:
        """Feed token i to slot i at position pos[i] (rows 0..n-1); logits (n, V)."""
        n, S = len(tokens), max(pos) + 1
        self.cache.reserve(S, horizon)
        if self.step is not None:
            return self.step(torch.tensor(tokens), torch.tensor(pos), self.cache.k, self.cache.v)
        p = torch.tensor(pos, device=self.device)
        mask = (torch.arange(S, device=self.device) <= p[:, None]).view(n, 1, 1, S)
        idx = torch.tensor(tokens, device=self.device).view(n, 1)
        kw = {"act8": True} if self.fast else {}  # the same numerics as the native step
        logits = self.forward(idx, pos=p.view(n, 1), attn_mask=mask, cache=self.cache.rows(p), **kw)
        return logits[:, -1].float().cpu()

    def move(self, src: int, dst: int, length: int) -> None:
        self.cache.move(src, dst, length)


# ------------------------------------------------------------------------------------ the engine


class _Request:
    def __init__(self, rid: int, ids: list[int], params: SamplingParams, stop_ids: set[int], limit: int, tok):
        self.rid, self.prompt, self.params, self.stop_ids, self.limit = rid, ids, params, stop_ids, limit
        self.gen = params.generator()
        self.detok = Detokenizer(tok, params.stop) if tok is not None else None
        self.out: list[int] = []
        self.filled = 0  # positions of this request held in the cache
        self.prompt_logits: torch.Tensor | None = None  # after the prompt's last token, for a twin prompt
        self.seen: set[int] = set()  # generated ids, for the repeat penalty
        self.finish: str | None = None


class Engine:
    """Continuous-batching decode over one model; see the module docstring.

    max_batch: requests decoded together (cache slots). max_len: context per request (default and
    maximum: the model's). fast: True (packed int4/int8, CPU), False (exact fp32), "auto".
    prefill_tokens: prompt tokens admitted per step beyond the first request (bounds a step's
    latency for the requests already streaming).
    """

    def __init__(self, lm, tokenizer=None, *, max_batch: int = 16, max_len: int | None = None,
                 fast: bool | str = "auto", prefill_tokens: int = 2048):
        self.model, self.tok = unpack_lm(lm, tokenizer)
        ctx = self.model.cfg.block_size
        self.max_len = min(max_len or ctx, ctx)
        self.max_batch = max(1, int(max_batch))
        self.prefill_tokens = prefill_tokens
        self.runner = Runner(self.model, fast, self.max_batch, self.max_len)
        self._waiting: deque[_Request] = deque()
        self._active: list[_Request] = []  # index = cache slot
        self._next = 0
        default = set()
        if self.tok is not None:
            default = set(getattr(self.tok, "stop_ids", None) or ({self.tok.eos_id} - {None}))
        self._default_stops = default

    # -- requests -------------------------------------------------------------------------------
    def submit(self, prompt: Prompt, params: SamplingParams | None = None) -> int:
        """Queue a request; its id. Raises PrimerError for an empty prompt or one that fills the context."""
        params = params or SamplingParams()
        ids = encode_prompt(self.tok, prompt)
        if not ids:
            raise PrimerError("the prompt is empty after tokenization")
        if len(ids) >= self.max_len:
            raise PrimerError(f"the prompt is {len(ids)} tokens; the model's context is {self.max_len} tokens "
                              "(shorten the prompt)")
        if params.stop_token_ids is not None:
            stops = set(params.stop_token_ids)
        else:
            stops = set() if params.ignore_eos else self._default_stops
        if params.stop and self.tok is None:
            raise PrimerError("stop strings need a tokenizer")
        rid, self._next = self._next, self._next + 1
        limit = min(params.max_new_tokens, self.max_len - len(ids))
        self._waiting.append(_Request(rid, ids, params, stops, limit, self.tok))
        return rid

    @torch.inference_mode()
    def cancel(self, rid: int) -> bool:
        """Drop a request (waiting or running) and free its slot now; False if it is not here."""
        for r in self._waiting:
            if r.rid == rid:
                self._waiting.remove(r)
                return True
        for r in self._active:
            if r.rid == rid:
                self._release(r)
                return True
        return False

    def has_work(self) -> bool:
        return bool(self._active or self._waiting)

    def active(self) -> int:
        return len(self._active)

    def waiting(self) -> int:
        return len(self._waiting)

    # -- one step -------------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> list[Event]:
        """Decode one token for every active request, then admit waiting ones; this step's events."""
        events: list[Event] = []
        if self._active:
            rows = list(self._active)
            logits = self.runner.decode([r.out[-1] for r in rows], [r.filled for r in rows], self._horizon())
            for r in rows:
                r.filled += 1
            self._emit(rows, logits, events)
        self._admit(events)
        return events

    def _admit(self, events: list[Event]) -> None:
        """Move waiting requests into free slots (prompt tokens up to the step's budget), prefill their
        prompts together, and sample each one's first token."""
        budget = self.prefill_tokens
        admitted: list[tuple[_Request, _Request | None]] = []
        while self._waiting and len(self._active) < self.max_batch:
            r = self._waiting[0]
            if r.limit <= 0:  # nothing may be generated (max_new_tokens=0)
                self._waiting.popleft()
                events.append(Event(r.rid, None, "", "length", len(r.prompt), 0))
                continue
            twin = next((a for a in self._active if a.prompt == r.prompt), None)
            if twin is None and budget < len(r.prompt) and budget < self.prefill_tokens:
                break  # this step already prefilled enough; admit the rest next step
            self._waiting.popleft()
            self._active.append(r)
            if twin is None:
                budget -= len(r.prompt)
            admitted.append((r, twin))
        fresh = [r for r, twin in admitted if twin is None]
        if fresh:
            logits = self.runner.prefill([(self._active.index(r), r.prompt) for r in fresh], self._horizon())
            for r, row in zip(fresh, logits):
                r.prompt_logits = row
        for r, twin in admitted:
            if twin is not None:  # its slot holds this prompt's positions, bit for bit what a prefill writes
                self.runner.move(self._active.index(twin), self._active.index(r), len(r.prompt))
                r.prompt_logits = twin.prompt_logits
            r.filled = len(r.prompt)
        for r, _ in admitted:
            self._emit([r], r.prompt_logits.clone()[None], events)  # sampling edits its logits in place

    def _horizon(self) -> int:
        """Cache positions the running requests can still reach: prompt + new tokens (the last one is not fed)."""
        return max(len(r.prompt) + r.limit for r in self._active)

    def _emit(self, rows: list[_Request], logits: torch.Tensor, events: list[Event]) -> None:
        """Sample each row's next token, record it, and release the rows that finished."""
        nxt = self._sample(rows, logits)
        for r, t in zip(rows, nxt):
            p = r.params
            if t in r.stop_ids:
                r.finish = "stop"
                events.append(Event(r.rid, None, r.detok.flush() if r.detok else "", "stop",
                                    len(r.prompt), len(r.out)))
                self._release(r)
                continue
            r.out.append(t)
            if p.repeat_penalty != 1.0:
                r.seen.add(t)
            text = r.detok.add(t) if r.detok else ""
            if r.detok is not None and r.detok.hit:
                r.finish = "stop"
            elif len(r.out) >= r.limit:
                r.finish = "length"
                text += r.detok.flush() if r.detok else ""
            events.append(Event(r.rid, t, text, r.finish, len(r.prompt), len(r.out)))
            if r.finish:
                self._release(r)

    @staticmethod
    def _sample(rows: list[_Request], logits: torch.Tensor) -> list[int]:
        """Next ids: rows grouped by their sampling settings, each row with its own generator."""
        for i, r in enumerate(rows):
            penalize(logits[i], r.seen, r.params.repeat_penalty)
        out = [0] * len(rows)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(rows):
            p = r.params
            key = (0.0, 0, 1.0) if p.temperature <= 0 else (p.temperature, p.top_k, p.top_p)
            groups.setdefault(key, []).append(i)
        for (temp, top_k, top_p), ix in groups.items():
            sub = logits if len(ix) == len(rows) else logits[ix]
            got = sample(sub, temp, top_k, top_p, [rows[i].gen for i in ix]).tolist()
            for i, t in zip(ix, got):
                out[i] = t
        return out

    def _release(self, r: _Request) -> None:
        """Free r's slot: the last active row moves into it, so active rows stay slots 0..n-1."""
        j, last = self._active.index(r), len(self._active) - 1
        if j != last:
            moved = self._active[last]
            self.runner.move(last, j, moved.filled)
            self._active[j] = moved
        self._active.pop()
