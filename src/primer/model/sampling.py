"""How a next token is chosen and shown: per-request sampling settings, the sampler, the repeat
penalty, and the streaming detokenizer that holds back text that may still become a stop string.

The decode engine (`primer.model.engine`) applies these row by row, so a request's text depends on
its own settings and seed only, never on the requests it shares a batch with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from primer.errors import PrimerError

_TOPP_CANDIDATES = 512


@dataclass
class SamplingParams:
    """How one request is decoded."""

    max_new_tokens: int = 256
    """Most tokens generated (the context may end the request sooner, with finish reason "length")."""
    temperature: float = 0.0
    """<= 0: greedy; otherwise logits are divided by it before sampling."""
    top_k: int = 0
    """Sample among the k likeliest tokens; 0 = off."""
    top_p: float = 1.0
    """Nucleus: the smallest set of likeliest tokens whose probability reaches top_p; 1 = off."""
    stop: Sequence[str] = ()
    """Strings that end the request; the text is cut before the first one (it is never streamed)."""
    repeat_penalty: float = 1.0
    """llama.cpp's penalty on tokens this request already generated: positive logits / it, negative * it."""
    seed: int | None = None
    """Seed of this request's own generator (None: torch's global generator, not reproducible)."""
    stop_token_ids: frozenset[int] | None = None
    """Ids that end the request (not included); None: the tokenizer's EOS / end-of-turn ids."""
    ignore_eos: bool = False
    """Do not stop at the tokenizer's EOS / end-of-turn ids (benchmarks that need exact lengths)."""

    def __post_init__(self) -> None:
        self.stop = tuple(s for s in self.stop if s)
        if self.max_new_tokens < 0:
            raise PrimerError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if not 0 < self.top_p <= 1:
            raise PrimerError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repeat_penalty <= 0:
            raise PrimerError(f"repeat_penalty must be > 0, got {self.repeat_penalty}")

    def generator(self) -> torch.Generator | None:
        if self.seed is None or self.temperature <= 0:
            return None
        return torch.Generator().manual_seed(int(self.seed))


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


def sample(logits: torch.Tensor, temperature: float, top_k: int, top_p: float,
           generators: Sequence[torch.Generator | None] | None) -> torch.Tensor:
    """Next ids (B,) from logits (B, V): greedy when temperature <= 0, else temperature / top-k / top-p.

    Each row draws one uniform number from its own generator, and what a row computes depends on its
    own logits only (top-p looks at the likeliest candidates, and goes further only for a row whose
    nucleus is wider than them), so a seeded row's text does not depend on its batch.
    """
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    V = logits.shape[-1]
    k = min(top_k, V) if top_k and top_k > 0 else 0
    if 0 < top_p < 1:
        k = min(k or _TOPP_CANDIDATES, V)
    gens = list(generators) if generators is not None else [None] * logits.shape[0]
    if not k:
        return _draw(torch.softmax(logits, dim=-1), gens)
    vals, idx = logits.topk(k, dim=-1)  # (B, k) sorted descending
    wide: list[int] = []
    if 0 < top_p < 1:
        logz = torch.logsumexp(logits, dim=-1, keepdim=True)
        probs = (vals - logz).exp()
        vals = _nucleus(vals, probs, top_p)
        if not top_k:
            wide = (probs.sum(-1) < top_p).nonzero()[:, 0].tolist()
    out = idx.gather(1, _draw(torch.softmax(vals, dim=-1), gens, skip=set(wide))[:, None])[:, 0]
    for i in wide:
        # The nucleus is wider than the candidates. Tokens below (1 - top_p) / V hold less than 1 - top_p
        # together, so the nucleus lies within the others: sort those only (a 135M model's tail is most of
        # its vocabulary), not all V.
        row = logits[i] - logz[i]
        ix = (row >= math.log((1 - top_p) / V)).nonzero()[:, 0]
        v, order = row[ix].sort(descending=True)
        v = _nucleus(v, v.exp(), top_p)
        out[i] = ix[order[_draw(torch.softmax(v, dim=-1)[None], [gens[i]])[0]]]
    return out


def _nucleus(vals: torch.Tensor, probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """vals (sorted descending) with everything past the smallest set whose mass reaches top_p at -inf."""
    cum = probs.cumsum(-1)
    return vals.masked_fill(cum - probs >= top_p, float("-inf"))


def _draw(probs: torch.Tensor, gens: list, skip: set[int] = frozenset()) -> torch.Tensor:
    """One index per row of probs (B, n) by inverse CDF, row i with one uniform from gens[i] (rows in
    `skip` draw nothing and get 0). One draw instead of torch.multinomial's work over all n: over a
    49,152-token vocabulary that was ~1 ms a row, 32 ms for a batch of 32, twice that decode step's matmuls."""
    u = torch.zeros(probs.shape[0], 1)
    for i, g in enumerate(gens):
        if i not in skip:
            u[i, 0] = torch.rand((), generator=g)
    cdf = probs.cumsum(-1)
    out = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)[:, 0].clamp_(max=probs.shape[1] - 1)
    for i in (probs.gather(1, out[:, None])[:, 0] == 0).nonzero()[:, 0].tolist():
        out[i] = (probs[i] > 0).nonzero()[-1, 0]  # u * total rounded up to the total: the last possible token
    return out


def penalize(logits: torch.Tensor, seen: Sequence[int], penalty: float) -> None:
    """llama.cpp's repeat penalty on one row of logits (V,), in place."""
    if seen and penalty != 1.0:
        idx = torch.tensor(list(seen))
        got = logits[idx]
        logits[idx] = torch.where(got > 0, got / penalty, got * penalty)


class Detokenizer:
    """Incremental detokenizer for one request: emits only complete characters, holds back what may
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
