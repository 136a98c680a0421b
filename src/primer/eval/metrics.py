"""Metrics and their standard errors, defined the way lm-evaluation-harness defines them.

* Multiple choice: `acc` = argmax of summed log-likelihoods; `acc_norm` = argmax of log-likelihood
  divided by the choice's length in characters (lm-eval's `acc_norm`); `acc_bytes` = the same by
  UTF-8 byte length. The delimiter before the choice is not counted (as in lm-eval).
* Mean metrics get stderr = sample std / sqrt(n); corpus metrics (perplexity) get lm-eval's
  bootstrap (chunks of 1000 draws, chunk i seeded with i); groups pool subtask stderrs.
* Generation: lm-eval's `exact_match` (regexes to ignore, case, punctuation), its regex answer
  filters (GSM8K strict / flexible), SQuAD's official EM/F1 normalisation, and the unbiased pass@k
  estimator of Chen et al. (2021).
"""

from __future__ import annotations

import collections
import math
import random
import re
import string
from collections.abc import Callable, Sequence

import numpy as np


# -- aggregation and standard errors ------------------------------------------------------------
def wilson_ci(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (for single counts: verbatim hits, flagged items)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    den = 1 + z * z / n
    c = (p + z * z / (2 * n)) / den
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, c - h), min(1.0, c + h))


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def sample_stddev(xs: Sequence[float]) -> float:
    mu = mean(xs)
    return math.sqrt(sum((x - mu) ** 2 for x in xs) / (len(xs) - 1))


def mean_stderr(xs: Sequence[float]) -> float:
    """lm-eval's `mean_stderr`: sample standard deviation over sqrt(n) (nan for n < 2)."""
    if len(xs) < 2:
        return float("nan")
    return sample_stddev(xs) / math.sqrt(len(xs))


def bootstrap_stderr(f: Callable[[list], float], xs: Sequence, iters: int = 100) -> float:
    """lm-eval's bootstrap: `iters // chunk` chunks, chunk i drawn with random.Random(i)."""
    xs = list(xs)
    if len(xs) < 2:
        return float("nan")
    chunk = min(1000, iters)
    res = []
    for i in range(iters // chunk):
        rnd = random.Random(i)
        for _ in range(chunk):
            res.append(f(rnd.choices(xs, k=len(xs))))
    return sample_stddev(res)


def pooled_sample_stderr(stderrs: Sequence[float], sizes: Sequence[int]) -> float:
    """lm-eval's stderr of a size-weighted group mean (pooled variance of the subtasks)."""
    var = sum((n - 1) * s**2 * n for n, s in zip(sizes, stderrs)) / (sum(sizes) - len(sizes))
    return math.sqrt(var / sum(sizes))


def unweighted_mean_stderr(stderrs: Sequence[float]) -> float:
    """Stderr of an unweighted mean of k independent subtask means (macro average)."""
    return math.sqrt(sum(s**2 for s in stderrs)) / len(stderrs)


def perplexity(lls: Sequence[float]) -> float:
    """exp(-mean log-likelihood): LAMBADA's perplexity over per-document log-likelihoods."""
    return math.exp(-mean(lls))


def weighted_perplexity(items: Sequence[tuple[float, int]]) -> float:
    """exp(-sum ll / sum units) over (log-likelihood, units) pairs: word or byte perplexity."""
    return math.exp(-sum(a for a, _ in items) / sum(b for _, b in items))


def bits_per_byte(items: Sequence[tuple[float, int]]) -> float:
    return -sum(a for a, _ in items) / sum(b for _, b in items) / math.log(2)


def count_words(text: str) -> int:
    """lm-eval's word count for word perplexity (split on runs of whitespace)."""
    return len(re.split(r"\s+", text))


# -- multiple choice ----------------------------------------------------------------------------
def multiple_choice(lls: Sequence[float], choices: Sequence[str], gold: int) -> dict[str, float]:
    """acc / acc_norm (by characters, as lm-eval) / acc_bytes for one document."""
    lls_a = np.array(lls, dtype=np.float64)
    chars = np.array([float(len(c)) for c in choices])
    nbytes = np.array([float(len(c.encode("utf-8"))) for c in choices])
    return {
        "acc": float(int(np.argmax(lls_a)) == gold),
        "acc_norm": float(int(np.argmax(lls_a / chars)) == gold),
        "acc_bytes": float(int(np.argmax(lls_a / nbytes)) == gold),
    }


# -- exact match as lm-eval ---------------------------------------------------------------------
_PUNCT = str.maketrans("", "", string.punctuation)


def exact_match(
    prediction: str,
    references: str | Sequence[str],
    *,
    ignore_case: bool = False,
    ignore_punctuation: bool = False,
    regexes_to_ignore: Sequence[str] = (),
) -> float:
    """lm-eval / HF evaluate `exact_match`; with several references, 1 if any matches."""
    refs = [references] if isinstance(references, str) else list(references)

    def norm(s: str) -> str:
        for rx in regexes_to_ignore:
            s = re.sub(rx, "", s)
        if ignore_case:
            s = s.lower()
        if ignore_punctuation:
            s = s.translate(_PUNCT)
        return s

    p = norm(prediction)
    return float(any(p == norm(r) for r in refs))


def regex_extract(text: str, pattern: str, group_select: int = 0, fallback: str = "[invalid]") -> str:
    """lm-eval's RegexFilter: findall, pick a match, first non-empty group, strip."""
    found = re.findall(pattern, text)
    if not found:
        return fallback
    m = found[group_select]
    if isinstance(m, tuple):
        m = next((g for g in m if g), fallback)
    return m.strip()


GSM8K_STRICT = r"#### (\-?[0-9\.\,]+)"
GSM8K_FLEXIBLE = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"
GSM8K_IGNORE = (",", r"\$", r"(?s).*#### ", r"\.$")


# -- SQuAD (official v1.1 evaluation script) ----------------------------------------------------
def squad_normalize(s: str) -> str:
    """Lower case, drop punctuation and articles (a/an/the), collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def squad_em(prediction: str, truths: Sequence[str]) -> float:
    return float(max(squad_normalize(prediction) == squad_normalize(t) for t in truths))


def _f1(prediction: str, truth: str) -> float:
    p, t = squad_normalize(prediction).split(), squad_normalize(truth).split()
    common = collections.Counter(p) & collections.Counter(t)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(t)
    return 2 * precision * recall / (precision + recall)


def squad_f1(prediction: str, truths: Sequence[str]) -> float:
    return max(_f1(prediction, t) for t in truths)


# -- code -------------------------------------------------------------------------------------
def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c passed: 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def passage_hit(passage: str, gold: str) -> bool:
    """A retrieved chunk is the gold passage when one contains the other (chunks are cut from documents)."""
    a, b = " ".join(passage.split()), " ".join(gold.split())
    return bool(a) and (a in b or b in a)


def answer_hit(passage: str, answers: Sequence[str]) -> bool:
    """DPR's retrieval accuracy test: some answer, normalised as SQuAD does, occurs in the passage."""
    text = f" {squad_normalize(passage)} "
    return any(n and f" {n} " in text for n in map(squad_normalize, answers))
