"""What the contamination signals measure, per item, on one model: the raw numbers, no decisions.

(a) n-gram overlap: each benchmark item's word 13-grams (the whole item: its task's decontamination
    parts) looked up in the training corpus with curate's `NgramIndex` (the index curation uses to drop
    test material); per item, the largest
    fraction of its grams found in one corpus document, and how many documents hit it.
(b) Membership-inference scores of an item's own text (question + answer, the way it would have
    been memorised), higher = more familiar to the model:
      loss  log-likelihood per byte (Yeom et al. 2018's loss attack; per byte, so models with
            different tokenizers compare: the reference ratio of Carlini et al. 2021 is the
            difference of two models' `loss`);
      zlib  log-likelihood per bit of the zlib-compressed text (Carlini et al. 2021: how surprising
            the text is to the model relative to how compressible it is at all);
      mink  Min-K%++ (Zhang et al. 2024): per token z = (log p(x_t) - mu_t) / sigma_t with mu_t and
            sigma_t the mean and standard deviation of log p under the model's own next-token
            distribution; the mean of the lowest k fraction of z.
(c) Verbatim completion: prompt with the first half of the item's words, decode greedily, and
    score the completion against the true next words (ROUGE-L F1 on words, exact match).
(d) Oren et al. (2023): the log-likelihood of the items concatenated in canonical order against
    shuffled orders, per shard of consecutive items.

Model answers go through eval's cache (`eval.runner.Cache`): generations and rolling
log-likelihoods as eval's own request kinds, membership scores under a kind of their own, so a
rerun (or a second audit against the same reference) asks the model only what is new.
`evidence` turns these numbers into tests and verdicts.
"""

from __future__ import annotations

import math
import random
import re
import zlib
from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from primer.eval.runner import Cache, answer_docs

SCORES = ("mink", "loss", "zlib")
"""The membership-inference scores, each a signal of its own."""


# -- (a) n-gram overlap ------------------------------------------------------------------------------
def ngram_overlap(items: Sequence[str | tuple[str, ...]], corpus: Iterable[str], *, n: int = 13, min_words: int = 8,
                  threshold: float = 0.5, max_docs: int | None = None) -> dict:
    """Per item (a text, or a task's decontamination parts): max fraction of its n-grams found in one corpus
    document, and documents hit."""
    from primer.curate.decontam import NgramIndex  # noqa: PLC0415

    built = [("audit", str(i), t) for i, t in enumerate(items)]
    index = NgramIndex.build(built, n=n, min_words=min_words)
    best = np.zeros(len(items))
    docs_hit = np.zeros(len(items), dtype=int)
    n_docs = 0
    for doc in corpus:
        n_docs += 1
        for m in index.overlap(doc):
            i = int(m.item_id)
            best[i] = max(best[i], m.matched / max(1, m.grams))
            docs_hit[i] += 1
        if max_docs is not None and n_docs >= max_docs:
            break
    indexed = {int(i) for i, g in zip(index.item_ids, index.item_grams) if g}
    contaminated = [i for i in range(len(items)) if best[i] >= threshold]
    return {
        "n": n, "threshold": threshold, "items": len(items), "indexed": len(indexed), "corpus_docs": n_docs,
        "per_item": [{"overlap": round(float(best[i]), 4), "docs": int(docs_hit[i])} for i in range(len(items))],
        "contaminated": contaminated, "contaminated_fraction": len(contaminated) / max(1, len(items)),
        "any_overlap": int((best > 0).sum()), "mean_overlap": float(best.mean()) if len(items) else 0.0,
        "rule": f"an item is contaminated when >= {threshold:.0%} of its {n}-grams occur in one corpus document",
    }


# -- (b) membership-inference scores ------------------------------------------------------------------
def _model_and_tokenizer(lm):
    model, tok = getattr(lm, "model", None), getattr(lm, "tok", None)
    if model is None or tok is None:
        raise TypeError("Min-K%++ needs next-token distributions: pass a primer LM (with .model and .tok)")
    return model, tok


@torch.inference_mode()
def token_stats(lm, texts: Sequence[str], batch_size: int = 8) -> list[dict[str, np.ndarray]]:
    """Per text and token: log p(x_t), mu_t and sigma_t of log p over the vocab (the first token is
    predicted from the model's BOS-or-EOS prefix, as lm-eval scores an empty context)."""
    model, tok = _model_and_tokenizer(lm)
    device = next(model.parameters()).device
    prefix = getattr(lm, "prefix_token_id", None)
    max_len = getattr(lm, "max_length", model.cfg.block_size)
    rows = []
    for t in texts:
        ids = tok.encode(t, add_special_tokens=False)
        if prefix is not None:
            ids = [prefix] + ids
        rows.append(ids[: max_len + 1])
    out: list[dict[str, np.ndarray]] = [None] * len(rows)  # type: ignore[list-item]
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    for b in range(0, len(order), batch_size):
        chunk = order[b: b + batch_size]
        T = max(len(rows[i]) for i in chunk) - 1
        idx = torch.zeros(len(chunk), max(T, 1), dtype=torch.long)
        for j, i in enumerate(chunk):
            r = rows[i][:-1]
            idx[j, : len(r)] = torch.tensor(r)
        logp = F.log_softmax(model(idx.to(device)).float(), dim=-1)  # (B, T, V)
        p = logp.exp()
        mu = (p * logp).sum(-1)  # (B, T)
        sigma = ((p * logp.pow(2)).sum(-1) - mu.pow(2)).clamp_min(1e-12).sqrt()
        for j, i in enumerate(chunk):
            tgt = torch.tensor(rows[i][1:], device=device)
            n = len(tgt)
            lp = logp[j, :n].gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
            out[i] = {"logp": lp.cpu().numpy(), "mu": mu[j, :n].cpu().numpy(), "sigma": sigma[j, :n].cpu().numpy()}
    return out


def min_k_plus_plus(stats: dict[str, np.ndarray], k: float = 0.2) -> float:
    """Mean of the lowest k fraction of the per-token z-scores (Zhang et al. 2024)."""
    z = (stats["logp"] - stats["mu"]) / stats["sigma"]
    if z.size == 0:
        return float("nan")
    m = max(1, int(math.ceil(k * z.size)))
    return float(np.sort(z)[:m].mean())


def zlib_bits(text: str) -> int:
    return 8 * len(zlib.compress(text.encode("utf-8")))


def membership_scores(lm, texts: Sequence[str], *, k: float = 0.2, cache: Cache | None = None,
                      ) -> list[dict[str, float]]:
    """Per text: mink, loss and zlib (see the module doc), and its token count. Cached by the model's
    fingerprint and the text."""
    fp = getattr(lm, "fingerprint", None)
    kind = f"membership-v1-k{k}"
    keys = [Cache.key(fp, kind, t) for t in texts] if fp and cache is not None else []
    have = cache.get_many(keys) if keys else {}
    out: list[dict[str, float] | None] = [have.get(keys[i]) if keys else None for i in range(len(texts))]
    todo = [i for i, o in enumerate(out) if o is None]
    new = {}
    stats = token_stats(lm, [texts[i] for i in todo], batch_size=getattr(lm, "batch_size", 8)) if todo else []
    for i, st in zip(todo, stats):
        ll = float(st["logp"].sum())
        nbytes = max(1, len(texts[i].encode("utf-8")))
        out[i] = {"mink": min_k_plus_plus(st, k), "loss": ll / nbytes, "zlib": ll / zlib_bits(texts[i]),
                  "tokens": int(st["logp"].size)}
        if keys:
            new[keys[i]] = out[i]
    if new:
        cache.put_many(new)
    return out  # type: ignore[return-value]


# -- (c) verbatim completion -----------------------------------------------------------------------
def _words(text: str) -> list[str]:
    return re.findall(r"\S+", text)


def rouge_l(pred: Sequence[str], ref: Sequence[str]) -> float:
    """ROUGE-L F1 over word sequences (longest common subsequence)."""
    if not pred or not ref:
        return 0.0
    prev = [0] * (len(ref) + 1)
    for a in pred:
        cur = [0]
        for j, b in enumerate(ref):
            cur.append(prev[j] + 1 if a == b else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    p, r = lcs / len(pred), lcs / len(ref)
    return 2 * p * r / (p + r)


def split_half(text: str) -> tuple[str, str]:
    """First half of the words (with the original spacing) and the rest."""
    spans = [m.span() for m in re.finditer(r"\S+", text)]
    if len(spans) < 2:
        return text, ""
    cut = spans[len(spans) // 2][0]
    return text[:cut], text[cut:]


def verbatim_scores(lm, texts: Sequence[str], *, words: int = 32, min_words: int = 8, near: float = 0.8,
                    cache: Cache | None = None) -> list[dict | None]:
    """Greedy completion of each text's second half from its first half, against the true next
    `words` words: ROUGE-L F1, exact and near-exact (ROUGE-L >= `near`). None for a text whose
    second half is shorter than `min_words` words."""
    prompts, refs, keep = [], [], []
    for i, t in enumerate(texts):
        a, b = split_half(t)
        ref = _words(b)[:words]
        if len(ref) < min_words:
            continue
        prompts.append(a)
        refs.append(ref)
        keep.append(i)
    out: list[dict | None] = [None] * len(texts)
    if not prompts:
        return out
    tok = getattr(lm, "tok", None)
    # The budget covers the longest reference in this model's tokens (+ slack for a different split
    # of the same words), within half the context so the prompt keeps room.
    need = max(len(tok.encode(" ".join(r), add_special_tokens=False)) if tok else 4 * len(" ".join(r)) for r in refs)
    budget = int(need * 1.25) + 4
    max_len = getattr(lm, "max_length", None)
    if max_len:
        budget = min(budget, max_len // 2)
    built = [("generate", [[p, [], budget, 0.0, 0]]) for p in prompts]
    gens, _ = answer_docs(lm, built, cache if cache is not None else Cache(None))
    for i, g, ref in zip(keep, gens, refs):
        gw = _words(g[0])[: len(ref)]
        rl = rouge_l(gw, ref)
        out[i] = {"rouge_l": round(rl, 4), "exact": gw == ref, "near_exact": rl >= near,
                  "completion": " ".join(gw)[:300], "reference": " ".join(ref)[:300]}
    return out


# -- (d) permutation test ----------------------------------------------------------------------------
def shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
    b = np.linspace(0, n, shards + 1).astype(int)
    return [(int(b[s]), int(b[s + 1])) for s in range(shards)]


def permutation_shards(lm, items: Sequence[str], *, shards: int, permutations: int, sep: str = "\n\n",
                       seed: int = 0, cache: Cache | None = None) -> list[dict]:
    """Per shard of consecutive items: log p(canonical order), log p of `permutations` shuffled orders,
    their difference and the canonical order's rank p-value. The orders depend only on `seed`, so
    two models are compared on the same shuffles."""
    items = list(items)
    rng = random.Random(seed)
    built, meta = [], []
    for lo, hi in shard_bounds(len(items), shards):
        part = items[lo:hi]
        orders = []
        for _ in range(permutations):
            perm = list(range(len(part)))
            while perm == sorted(perm) and len(part) > 1:
                rng.shuffle(perm)
            orders.append(perm)
        texts = [sep.join(part)] + [sep.join(part[j] for j in o) for o in orders]
        built.extend(("rolling", [t]) for t in texts)
        meta.append((lo, hi, len(texts)))
    lls, _ = answer_docs(lm, built, cache if cache is not None else Cache(None))
    out, at = [], 0
    for lo, hi, k in meta:
        canon, shuf = float(lls[at][0]), np.array([float(x[0]) for x in lls[at + 1: at + k]])
        at += k
        out.append({"items": [lo, hi], "canonical": canon, "shuffled_mean": float(shuf.mean()),
                    "shuffled_std": float(shuf.std()), "diff": float(canon - shuf.mean()),
                    "p_rank": (1 + int((shuf >= canon).sum())) / (len(shuf) + 1),
                    "shuffled": [round(float(x), 3) for x in shuf]})
    return out
