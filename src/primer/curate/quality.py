"""The quality filter: a reference language model's perplexity plus cheap gibberish signals.

Perplexity (CCNet, Wenzek et al. 2020; FineWeb's and RedPajama-V2's `ccnet_perplexity`): text a
language model finds very surprising is rarely good prose -- shuffled words, character noise, mixed
scripts, teacher babble. Every document's first `window` tokens are scored with a reference model
(any model primer loads; the bundled SmolLM2-135M by default), batched on the fast CPU path
(`primer.model.quant.FastDecoder`, the kernels decoding uses: the file's 4-bit blocks, no dense copy
of the weights) or the exact `Transformer` elsewhere. Per document: the mean negative log-likelihood
per token (nats; perplexity = exp of it) and its spread (std over tokens). Text far *below* the
usual NLL is a loop the model predicts by rote (a repeated line), so there is a lower bound too.
Thresholds are absolute, or a corpus percentile of the NLL (CCNet's head/middle/tail idea), resolved
once on a sample before the filter pass (`resolve_percentile`).

Cheap signals, computed first (documents they drop are never scored by the model):
  * repeat: share of words inside repeated word 5-grams (Gopher's repetition test, `synth.quality`);
  * caps: share of words written in capitals (RedPajama-V2 `rps_doc_frac_all_caps_words`);
  * nondict: share of letter words that are in no English word list -- wordfreq's "large" English
    list (321k words from Wikipedia, subtitles, books, web, news, ...; Apache-2.0, shipped in the
    wheel, so it works offline); it is a word list curated from many corpora, not the model's own
    tokenizer vocabulary, which covers any string by construction;
  * language: the probability that the document is in `language`, from py3langid (langid.py's
    model, shipped in the package; fastText lid.176, CCNet's choice, needs a download).

A document's score is its worst signal relative to its threshold (max of value / limit, and
limit / value for the lower bounds): above 1 it is dropped, for the reason of that signal.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from primer.common.iters import batched
from primer.curate.document import Document
from primer.curate.steps import Context, Step
from primer.errors import PrimerError

NLL_BIN = 0.1  # width of the NLL histogram's bins in stats.json (nats)

_CAPS_WORD = re.compile(r"[^\W\d_]{2,}")  # a run of >= 2 letters


@dataclass
class QualitySettings:
    """The filter's settings: CurateConfig's quality_* fields (the shipped defaults live there), collected."""

    model: str
    window: int
    max_nll: float | None
    min_nll: float | None
    max_nll_std: float | None
    max_repeat: float | None
    max_caps: float | None
    max_nondict: float | None
    language: str | None
    min_language_prob: float | None
    batch_tokens: int = 1024
    limits: dict[str, tuple[str, float]] = field(init=False, default_factory=dict)

    @classmethod
    def from_curate(cls, cfg: Any, **override: Any) -> "QualitySettings":
        """From a `CurateConfig` (its defaults are the shipped ones); `override` replaces fields."""
        names = [f for f in cls.__dataclass_fields__ if f not in ("limits", "batch_tokens")]
        kw = {f: getattr(cfg, f"quality_{f}") for f in names}
        return cls(**{**kw, **override})

    def __post_init__(self) -> None:
        # signal -> ("max" | "min", limit); None turns a rule off
        rules = {"nll": ("max", self.max_nll), "nll_low": ("min", self.min_nll), "nll_std": ("max", self.max_nll_std),
                 "repeat": ("max", self.max_repeat), "caps": ("max", self.max_caps),
                 "nondict": ("max", self.max_nondict),
                 "language": ("min", self.min_language_prob if self.language else None)}
        self.limits = {k: (kind, float(v)) for k, (kind, v) in rules.items() if v is not None}


# ------------------------------------------------------------------------------------ cheap signals


class CheapSignals:
    """repeat / caps / nondict / language of a text (the word list and language model load once)."""

    def __init__(self, language: str | None = "en"):
        try:
            import wordfreq
        except ImportError as e:
            raise PrimerError("the quality filter needs `pip install wordfreq py3langid`") from e
        self.language = language
        self._wf = wordfreq
        self.words = frozenset(wordfreq.get_frequency_dict(language or "en", wordlist="large"))
        self._lid = None
        if language:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            self._lid = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)

    def __call__(self, text: str) -> dict[str, float]:
        from primer.synth.quality import repeated_ngram_frac, words

        out = {"repeat": repeated_ngram_frac(words(text), 5)}
        letter_words = _CAPS_WORD.findall(text)
        out["caps"] = sum(w.isupper() for w in letter_words) / len(letter_words) if letter_words else 0.0
        toks = [t for t in self._wf.tokenize(text, self.language or "en") if any(c.isalpha() for c in t)]
        out["nondict"] = sum(t not in self.words for t in toks) / len(toks) if toks else 1.0
        if self._lid is not None:
            ranked = dict(self._lid.rank(text[:4000]))
            out["language"] = float(ranked.get(self.language, 0.0))
        return out


# ------------------------------------------------------------------------------------ the model


class LMScorer:
    """Mean and std of per-token NLL of each text's first `window` tokens under a reference model."""

    def __init__(self, spec: str = "bundled", window: int = 256, batch_tokens: int = 1024, fast: bool | str = "auto"):
        from primer.model.quant import FastDecoder
        from primer.weights.load import load_model

        # the fast path scores on the packed weights alone (load_model gives them where it runs: on a
        # CPU with int kernels); fast=False loads the fp32 model and runs its exact forward
        loaded = load_model(spec, decode_only=fast is not False)
        self.model, self.tok = loaded.model, loaded.tokenizer
        self.name = str(spec)
        self.window = min(window, self.model.cfg.block_size - 1)
        self.batch_tokens = max(batch_tokens, self.window + 1)
        bos, eos = self.tok.bos_id, self.tok.eos_id
        self.prefix = bos if bos is not None else eos  # lm-eval's rolling-loglikelihood prefix
        fast = isinstance(self.model, FastDecoder)
        self.forward = self.model
        self.device = torch.device("cpu") if fast else next(self.model.parameters()).device
        self.fast = bool(fast)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token rows: the prefix token, then at most `window` tokens of the text (its first ones)."""
        ids = self.tok.encode_batch(list(texts), add_special_tokens=False, allow_special=False)
        return [[self.prefix] + row[: self.window] for row in ids]

    @torch.inference_mode()
    def token_nll(self, rows: Sequence[list[int]]) -> list[np.ndarray]:
        """Per row: NLL (nats) of tokens 1.. given the ones before, in batches of similar length."""
        out: list[np.ndarray | None] = [None] * len(rows)
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
        b = 0
        while b < len(order):
            T = len(rows[order[b]])
            n = max(1, self.batch_tokens // T)
            chunk = order[b: b + n]
            b += n
            idx = torch.zeros(len(chunk), T, dtype=torch.long)
            for j, i in enumerate(chunk):
                idx[j, : len(rows[i])] = torch.tensor(rows[i])
            # right padding under a causal mask: the pads never reach a real position
            logits = self.forward(idx.to(self.device)).float()[:, :-1]
            target = idx[:, 1:].to(logits.device)
            nll = torch.logsumexp(logits, -1) - logits.gather(-1, target.unsqueeze(-1)).squeeze(-1)
            nll = nll.cpu().numpy()
            for j, i in enumerate(chunk):
                out[i] = nll[j, : len(rows[i]) - 1]
        return out  # type: ignore[return-value]

    def score(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """{"nll": mean, "nll_std": std, "tokens": n} per text (nll inf for a text with no tokens)."""
        res = []
        for v in self.token_nll(self.encode(texts)):
            if v.size == 0:
                res.append({"nll": math.inf, "nll_std": 0.0, "tokens": 0})
            else:
                res.append({"nll": float(v.mean()), "nll_std": float(v.std()), "tokens": int(v.size)})
        return res


# ------------------------------------------------------------------------------------ the verdict


def badness(signals: dict[str, float], limits: dict[str, tuple[str, float]]) -> tuple[float, str | None]:
    """(score, worst signal): each signal's value relative to its limit, the worst of them; > 1 = drop."""
    worst, why = 0.0, None
    for name, (kind, limit) in limits.items():
        key = "nll" if name == "nll_low" else name
        if key not in signals:
            continue
        v = signals[key]
        if kind == "max":
            r = v / limit if limit > 0 else (math.inf if v > 0 else 0.0)
        else:
            r = limit / v if v > 0 else math.inf
        if r > worst:
            worst, why = r, name
    return worst, why


REASONS = {"nll": "quality:nll_high", "nll_low": "quality:nll_low", "nll_std": "quality:nll_spread",
           "repeat": "quality:repeated_ngrams", "caps": "quality:all_caps", "nondict": "quality:non_dictionary",
           "language": "quality:language"}


class QualityScorer:
    """All signals of a batch of texts: the cheap ones, then the model's for the texts they keep."""

    def __init__(self, settings: QualitySettings, lm: LMScorer | None = None):
        self.settings = settings
        self.cheap = CheapSignals(settings.language)
        self.lm = lm or LMScorer(settings.model, settings.window, settings.batch_tokens)

    def signals(self, texts: Sequence[str], lazy: bool = True) -> list[dict[str, float]]:
        """Per text: its signals, "score" and "reason" (None: kept). lazy: skip the model for texts a
        cheap signal already drops."""
        lim = self.settings.limits
        out = [self.cheap(t) for t in texts]
        cheap_lim = {k: v for k, v in lim.items() if not k.startswith("nll")}
        todo = [i for i, s in enumerate(out) if not lazy or badness(s, cheap_lim)[0] <= 1.0]
        for i, s in zip(todo, self.lm.score([texts[i] for i in todo])):
            out[i].update(s)
        for s in out:
            score, why = badness(s, lim)
            s["score"], s["reason"] = score, (REASONS[why] if score > 1.0 else None)
        return out


class QualityFilter(Step):
    """Pipeline step: drops documents whose score is above 1 (per-reason counts), keeps their signals
    under metadata "quality", and counts every scored NLL in the step's histogram."""

    name = "quality"

    def __init__(self, scorer: QualityScorer, batch_docs: int = 32):
        self.scorer = scorer
        self.batch_docs = batch_docs

    def run(self, docs: Iterable[Document], ctx: Context) -> Iterator[Document]:
        for batch in batched(docs, self.batch_docs):
            for d, s in zip(batch, self.scorer.signals([d.text for d in batch])):
                ctx.stats.seen(self.name)
                if "nll" in s and math.isfinite(s["nll"]):
                    ctx.stats.observe(self.name, math.floor(s["nll"] / NLL_BIN) * NLL_BIN)
                q = {k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v)
                     for k, v in s.items() if k != "reason"}
                d.metadata["quality"] = q
                if s["reason"] is None:
                    ctx.stats.kept(self.name)
                    yield d
                else:
                    ctx.drop(self.name, s["reason"], d)  # its signals go with it (metadata)


def resolve_percentile(lm: LMScorer, texts: Sequence[str], percentile: float) -> float:
    """The absolute NLL limit at `percentile` (0..1) of a sample's NLLs (CCNet: cut by corpus quantile)."""
    nll = [s["nll"] for s in lm.score(texts) if math.isfinite(s["nll"])]
    if not nll:
        raise PrimerError("quality_percentile: no scorable document in the sample")
    return float(np.quantile(nll, percentile))


def describe(settings: QualitySettings) -> dict[str, Any]:
    """The resolved limits, for stats.json and the report."""
    return {"model": settings.model, "window_tokens": settings.window,
            "limits": {k: {kind: v} for k, (kind, v) in settings.limits.items()}, "language": settings.language}
