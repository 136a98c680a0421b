"""Evidence that test items were in the training data: four independent signals.

(a) n-gram overlap: each benchmark item's word 13-grams looked up in the training corpus with
    curate's `NgramIndex` (the index curation uses to drop test material); per item, the largest
    fraction of its grams found in one corpus document, and how many documents hit it.
(b) Min-K%++ (Zhang et al. 2024): per token, z = (log p(x_t) - mu_t) / sigma_t where mu_t and
    sigma_t are the mean and standard deviation of log p(z) under the model's own next-token
    distribution; the item score is the mean of the lowest k% of z. A model that trained on an
    item scores it above an unseen item of the same kind, so each test item is compared with a
    *matched perturbed copy* (new numbers, new names) that cannot have been trained on.
(c) Verbatim completion: prompt with the first half of the item, decode greedily, and measure
    exact and near-exact (ROUGE-L F1 on words, normalized edit similarity) reproduction of the
    second half.
(d) Oren et al. (2023) permutation test: exchangeable examples have the same likelihood in any
    order unless the model saw them in one; the log-likelihood of the items in canonical order is
    compared with shuffled orders (per shard: rank among permutations; across shards: a one-sided
    t-test of canonical minus mean-shuffled, the paper's sharded test).

Each signal returns its numbers and a `flag` with the rule that set it; report.py words verdicts.
"""

from __future__ import annotations

import difflib
import math
import random
import re
from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from primer.audit.stats import binom_two_sided


# -- (a) n-gram overlap ------------------------------------------------------------------------------
def ngram_overlap(items: Sequence[str], corpus: Iterable[str], *, n: int = 13, min_words: int = 8,
                  threshold: float = 0.5, max_docs: int | None = None) -> dict:
    """Per item: max fraction of its n-grams found in one corpus document, and documents hit."""
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
    indexed = {int(i) for i in index.item_ids}
    contaminated = [i for i in range(len(items)) if best[i] >= threshold]
    return {
        "n": n, "threshold": threshold, "items": len(items), "indexed": len(indexed), "corpus_docs": n_docs,
        "per_item": [{"overlap": round(float(best[i]), 4), "docs": int(docs_hit[i])} for i in range(len(items))],
        "contaminated": contaminated, "contaminated_fraction": len(contaminated) / max(1, len(items)),
        "any_overlap": int((best > 0).sum()), "mean_overlap": float(best.mean()) if len(items) else 0.0,
        "flag": bool(contaminated),
        "rule": f"an item is contaminated when >= {threshold:.0%} of its {n}-grams occur in one corpus document",
    }


# -- (b) Min-K%++ ------------------------------------------------------------------------------------
def _model_and_tokenizer(lm):
    model, tok = getattr(lm, "model", None), getattr(lm, "tok", None)
    if model is None or tok is None:
        raise TypeError("Min-K%++ needs next-token distributions: pass a primer LM (with .model and .tok)")
    return model, tok


@torch.inference_mode()
def token_stats(lm, texts: Sequence[str], batch_size: int = 8) -> list[dict[str, np.ndarray]]:
    """Per text and token (after the first): log p(x_t), mu_t and sigma_t of log p over the vocab."""
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


def min_k(stats: dict[str, np.ndarray], k: float = 0.2) -> float:
    """Min-K% (Shi et al. 2023): mean of the lowest k fraction of token log-probs."""
    lp = stats["logp"]
    if lp.size == 0:
        return float("nan")
    m = max(1, int(math.ceil(k * lp.size)))
    return float(np.sort(lp)[:m].mean())


def mink_test(lm, originals: Sequence[str], perturbed: Sequence[str], *, k: float = 0.2,
              alpha: float = 0.01, min_effect: float = 0.65, iters: int = 2000, seed: int = 0) -> dict:
    """Min-K%++ of each original vs its matched perturbed copy (aligned lists).

    Flag when the paired difference is above 0 in a one-sided paired t-test at `alpha` AND the
    original scores higher in at least `min_effect` of the pairs (an effect size, so a large
    benchmark does not flag a tiny systematic difference between original and perturbed wording).
    The sign-test p-value is reported beside it.
    """
    if len(originals) != len(perturbed):
        raise ValueError("originals and perturbed must be aligned")
    n = len(originals)
    if n == 0:
        return {"n": 0, "flag": False, "rule": "no matched pairs"}
    stats = token_stats(lm, list(originals) + list(perturbed))
    so = np.array([min_k_plus_plus(s, k) for s in stats[:n]])
    sp = np.array([min_k_plus_plus(s, k) for s in stats[n:]])
    lo_ = np.array([min_k(s, k) for s in stats[:n]])
    lp_ = np.array([min_k(s, k) for s in stats[n:]])
    d = so - sp
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    p_sign = _sign_test_greater(wins, losses)
    p = t_test_greater(d)
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, n, size=(iters, n))].mean(1)
    frac = wins / max(1, wins + losses)
    flag = bool(p < alpha and frac >= min_effect)
    return {
        "n": n, "k": k, "orig_mean": float(so.mean()), "pert_mean": float(sp.mean()),
        "diff_mean": float(d.mean()), "diff_ci": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
        "orig_higher": wins, "pert_higher": losses, "frac_orig_higher": frac, "p_value": p, "p_sign": p_sign,
        "min_k_diff_mean": float((lo_ - lp_).mean()),
        "per_item": [{"orig": round(float(a), 4), "pert": round(float(b), 4)} for a, b in zip(so, sp)],
        "flag": flag,
        "rule": f"paired t-test p < {alpha} and originals above their perturbed copies in >= {min_effect:.0%} of pairs",
    }


def _sign_test_greater(wins: int, losses: int) -> float:
    n = wins + losses
    if n == 0:
        return 1.0
    return float(sum(math.comb(n, j) for j in range(wins, n + 1)) / 2**n)


# -- (c) verbatim completion -----------------------------------------------------------------------------
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


def edit_similarity(a: str, b: str) -> float:
    """1 - normalized edit distance, approximated by difflib's ratio (exact for our use: ranking)."""
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def split_half(text: str) -> tuple[str, str]:
    """First half of the words (with the original spacing) and the rest."""
    spans = [m.span() for m in re.finditer(r"\S+", text)]
    if len(spans) < 2:
        return text, ""
    cut = spans[len(spans) // 2][0]
    return text[:cut], text[cut:]


def verbatim_completion(lm, texts: Sequence[str], *, near: float = 0.8, min_words: int = 8,
                        min_rate: float = 0.05, min_count: int = 2, max_tokens: int | None = None) -> dict:
    """Greedy completion of each text's second half from its first half.

    exact: the generated words equal the reference words; near-exact: ROUGE-L F1 >= `near`.
    Flag when the near-exact rate is >= `min_rate` and at least `min_count` items (an unseen
    benchmark item's second half is practically never reproduced near-verbatim).
    """
    prompts, refs, keep = [], [], []
    for i, t in enumerate(texts):
        a, b = split_half(t)
        if len(_words(b)) < min_words:
            continue
        prompts.append(a)
        refs.append(b)
        keep.append(i)
    if not prompts:
        return {"n": 0, "flag": False, "rule": "no item long enough"}
    tok = getattr(lm, "tok", None)
    budget = max_tokens or max(len(tok.encode(r, add_special_tokens=False)) if tok else 4 * len(_words(r)) for r in refs)
    max_len = getattr(lm, "max_length", None)
    if max_len:
        budget = min(budget, max_len // 2)  # leave room for the prompt in the context
    if tok is not None:
        # Compare with as much of the reference as the budget can produce.
        refs = [tok.decode(tok.encode(r, add_special_tokens=False)[:budget]) for r in refs]
    gens = lm.generate(prompts, stop=[], max_tokens=budget, temperature=0.0)
    per = []
    for i, g, r in zip(keep, gens, refs):
        rw, gw = _words(r), _words(g)[: len(_words(r))]
        rl = rouge_l(gw, rw)
        es = edit_similarity(" ".join(gw), " ".join(rw))
        per.append({"item": i, "exact": gw == rw, "rouge_l": round(rl, 4), "edit_sim": round(es, 4),
                    "near_exact": rl >= near, "completion": " ".join(gw)[:300], "reference": " ".join(rw)[:300]})
    n = len(per)
    n_exact = sum(p["exact"] for p in per)
    n_near = sum(p["near_exact"] for p in per)
    rate = n_near / n
    return {
        "n": n, "exact": n_exact, "near_exact": n_near, "exact_rate": n_exact / n, "near_exact_rate": rate,
        "mean_rouge_l": float(np.mean([p["rouge_l"] for p in per])),
        "mean_edit_sim": float(np.mean([p["edit_sim"] for p in per])),
        "per_item": per, "flag": bool(rate >= min_rate and n_near >= min_count),
        "rule": f"near-exact (ROUGE-L >= {near}) second halves in >= {min_rate:.0%} of items and >= {min_count} items",
    }


def compare_verbatim(orig: dict, pert: dict) -> dict:
    """Near-exact counts on originals vs matched perturbed copies (exact McNemar on pairs)."""
    a = {p["item"]: p["near_exact"] for p in orig.get("per_item", [])}
    b = {p["item"]: p["near_exact"] for p in pert.get("per_item", [])}
    both = sorted(set(a) & set(b))
    n01 = sum(1 for i in both if a[i] and not b[i])
    n10 = sum(1 for i in both if b[i] and not a[i])
    return {"pairs": len(both), "orig_only": n01, "pert_only": n10, "p_mcnemar": binom_two_sided(min(n01, n10), n01 + n10)}


# -- (d) permutation test -------------------------------------------------------------------------------
def permutation_test(lm, items: Sequence[str], *, shards: int = 1, permutations: int = 50,
                     sep: str = "\n\n", alpha: float = 0.05, seed: int = 0) -> dict:
    """Oren et al. 2023: log p(items in canonical order) vs shuffled orders.

    Items are split into `shards` contiguous shards (>= 2 items each). Per shard the p-value is
    the rank of the canonical order among `permutations` shuffles; with several shards the
    statistic is the mean over shards of (canonical - mean shuffled) with a one-sided t-test.
    """
    items = list(items)
    shards = max(1, min(shards, len(items) // 2))
    if len(items) < 2:
        return {"n": len(items), "flag": False, "rule": "needs at least 2 items"}
    bounds = np.linspace(0, len(items), shards + 1).astype(int)
    rng = random.Random(seed)
    per_shard = []
    for s in range(shards):
        part = items[bounds[s]: bounds[s + 1]]
        orders = []
        for _ in range(permutations):
            perm = list(range(len(part)))
            while perm == sorted(perm) and len(part) > 1:
                rng.shuffle(perm)
            orders.append(perm)
        texts = [sep.join(part)] + [sep.join(part[j] for j in o) for o in orders]
        lls = lm.loglikelihood_rolling(texts)
        canon, shuf = lls[0], np.array(lls[1:])
        p = (1 + int((shuf >= canon).sum())) / (len(shuf) + 1)
        per_shard.append({"items": len(part), "canonical": float(canon), "shuffled_mean": float(shuf.mean()),
                          "shuffled_std": float(shuf.std()), "diff": float(canon - shuf.mean()), "p_value": p,
                          "shuffled": [round(float(x), 3) for x in shuf]})
    if shards == 1:
        p_value = per_shard[0]["p_value"]
        test = f"rank of the canonical order among {permutations} shuffles"
    else:
        diffs = np.array([s["diff"] for s in per_shard])
        p_value = t_test_greater(diffs)
        test = f"one-sided t-test over {shards} shards of canonical minus mean shuffled log-likelihood"
    return {
        "n": len(items), "shards": shards, "permutations": permutations, "p_value": float(p_value), "test": test,
        "mean_diff": float(np.mean([s["diff"] for s in per_shard])), "per_shard": per_shard,
        "flag": bool(p_value < alpha), "rule": f"p < {alpha}",
    }


def t_test_greater(x: np.ndarray) -> float:
    """One-sided one-sample t-test of mean(x) > 0."""
    n = len(x)
    if n < 2:
        return 1.0
    sd = float(np.std(x, ddof=1))
    if sd == 0:
        return 0.0 if float(np.mean(x)) > 0 else 1.0
    t = float(np.mean(x)) / (sd / math.sqrt(n))
    return 1.0 - student_t_cdf(t, n - 1)


def student_t_cdf(t: float, df: int) -> float:
    x = df / (df + t * t)
    tail = 0.5 * _betainc(df / 2, 0.5, x)
    return 1 - tail if t > 0 else tail


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) (continued fraction, Numerical Recipes)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1 - x)
    if x > (a + 1) / (a + b + 2):
        return 1 - _betainc(b, a, 1 - x)
    front = math.exp(lbeta) / a
    f, c, d = 1.0, 1.0, 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            num = -((a + m) * (a + b + m) * x) / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1 + num * d
        d = 1 / (d if abs(d) > 1e-30 else 1e-30)
        c = 1 + num / c
        c = c if abs(c) > 1e-30 else 1e-30
        f *= c * d
        if abs(1 - c * d) < 1e-12:
            break
    return front * (f - 1)
