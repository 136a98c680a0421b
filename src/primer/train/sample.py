"""Plain sampling for looking at what a freshly trained model writes (temperature + top-k, KV cache)."""

from __future__ import annotations

import torch

from primer.model.transformer import KVCache, Transformer


@torch.no_grad()
def sample(model: Transformer, prompt: list[int], *, max_new_tokens: int, stop_ids: set[int] = frozenset(),
           temperature: float = 0.8, top_k: int = 50, generator: torch.Generator | None = None) -> list[int]:
    """Continue `prompt` (token ids) until a stop id or `max_new_tokens`; returns the new ids."""
    model.eval()
    dev = next(model.parameters()).device
    limit = min(model.cfg.block_size, len(prompt) + max_new_tokens)
    cache = KVCache(model.cfg, batch=1, max_len=limit, dtype=next(model.parameters()).dtype, device=dev)
    x = torch.tensor([prompt], dtype=torch.long, device=dev)
    out: list[int] = []
    while len(prompt) + len(out) < limit:
        logits = model(x, cache=cache, last_only=True)[0, -1].float()  # (vocab,)
        if temperature <= 0:
            nxt = int(logits.argmax())
        else:
            logits = logits / temperature
            if top_k and top_k < logits.numel():
                kth = torch.topk(logits, top_k).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits, dim=-1)
            nxt = int(torch.multinomial(probs.cpu(), 1, generator=generator))
        if nxt in stop_ids:
            break
        out.append(nxt)
        x = torch.tensor([[nxt]], dtype=torch.long, device=dev)
    return out
