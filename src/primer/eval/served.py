"""A model behind any OpenAI-compatible server, as an `LM`: `primer eval openai:BASE_URL/MODEL`.

    generate              POST /v1/completions (prompt, stop, max_tokens, temperature); a chat prompt
                          (`chat_prompt`, IFEval/XSTest, `--chat`) goes to /v1/chat/completions as messages
    loglikelihood         POST /v1/completions with echo=true, logprobs=1, max_tokens=1: the server scores the
                          prompt context+continuation; the continuation's tokens are those whose text_offset
                          falls at or after the end of the context (lm-evaluation-harness's `local-completions`
                          method, which sends token ids where primer sends the text and reads the offsets back)
    loglikelihood_rolling the same request on the whole text, summing every token's log-prob but the first
                          (a prompt's first token has none; lm-eval prepends the EOT id, which a text request
                          cannot name), in one window: a text longer than the server's context is an error

Prompt log-probs (echo + logprobs) are what multiple-choice tasks and the audit's likelihood signals
need. Servers that return them: vLLM, llama-cpp-python's server (its default `logits_all`), OpenAI's
legacy completions models (babbage-002, davinci-002). Servers that do not: llama.cpp's own
`llama-server` (no echo), Ollama, and chat-only endpoints; the first such request is probed once and
raises `NeedsPromptLogprobs`, which eval turns into one line naming the task and the audit into a
skipped signal. Generation-only work (GSM8K, IFEval, XSTest, the robustness audit of a generative task)
runs on any of them; a chat-only endpoint with `--chat`.

HTTP is the HTTP teacher's (`primer.teachers.http.OpenAIEndpoint`): the same `HttpOptions`
(concurrency, retries with backoff, timeouts, rate limit, API key). Answers are cached like any
model's (eval's sqlite `Cache`), keyed by a fingerprint of the URL, the model name and the server's
/v1/models entry for it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from primer.errors import PrimerError
from primer.teachers.base import TeacherUnavailable
from primer.teachers.http import HttpOptions, OpenAIEndpoint

PREFIX = "openai:"
SPEC_HELP = ("'bundled', a .gguf file, an HF model dir, a primer checkpoint dir, or a model behind an "
             "OpenAI-compatible server: openai:http://HOST:PORT/v1/MODEL")
CHAT_MARK = "\x00chat\x00"
"""Starts a prompt `chat_prompt` made: the rest is the JSON messages, sent to /v1/chat/completions."""


class NeedsPromptLogprobs(PrimerError):
    """The model cannot score given text: its server returns no prompt log-probs."""


def parse_spec(spec: str) -> tuple[str, str]:
    """'openai:http://host:8000/v1/NAME' -> (base URL ending in /v1, model NAME; it may hold slashes)."""
    rest = spec[len(PREFIX):] if spec.startswith(PREFIX) else spec
    if "/v1/" in rest:
        base, model = rest.split("/v1/", 1)
        base += "/v1"
    else:
        base, _, model = rest.rstrip("/").rpartition("/")
    if not base.startswith(("http://", "https://")) or not model:
        raise PrimerError(f"served model '{spec}': expected openai:http(s)://HOST[:PORT]/v1/MODEL, "
                          f"e.g. openai:http://127.0.0.1:8000/v1/smollm2")
    return base, model


class ServedLM:
    """The `LM` interface over an OpenAI-compatible server (see the module docstring for the method)."""

    def __init__(self, spec: str, options: HttpOptions | None = None, *, fingerprint: str | None = None):
        base, self.model = parse_spec(spec)
        self.endpoint = OpenAIEndpoint(base, options)
        self.name = f"{PREFIX}{self.endpoint.base_url}/{self.model}"
        self.fingerprint = fingerprint or self._fingerprint()
        self._prompt_logprobs: str | None = None  # None: not probed; "" ok; else why not

    # -- identity ---------------------------------------------------------------------------------
    def _fingerprint(self) -> str:
        """URL + model + the server's /v1/models entry for it (a restarted or swapped model gets a new one)."""
        import httpx  # noqa: PLC0415

        url = f"{self.endpoint.base_url}/models"
        try:
            r = httpx.get(url, headers=self.endpoint.headers, timeout=min(30.0, self.endpoint.opts.timeout))
            r.raise_for_status()
            entries = r.json().get("data") or []
        except (httpx.HTTPError, ValueError, AttributeError) as e:
            raise PrimerError(f"cannot list the models at {url} ({type(e).__name__}: {e}); is the server up?") from None
        entry = next((m for m in entries if isinstance(m, dict) and m.get("id") == self.model), None)
        if entry is None:
            served = [m.get("id") for m in entries if isinstance(m, dict)]
            raise PrimerError(f"{self.endpoint.base_url} does not serve '{self.model}'; it serves {served}")
        blob = json.dumps([self.endpoint.base_url, self.model, entry], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # -- requests ---------------------------------------------------------------------------------
    def _post(self, path: str, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for status, data, _ in self.endpoint.post_many(path, bodies, model=self.model):
            if status >= 400:
                raise PrimerError(f"{self.name}: the server refused a /{path} request (HTTP {status}: "
                                  f"{str(data)[:300]})")
            if not isinstance(data, dict) or not data.get("choices"):
                raise PrimerError(f"{self.name}: /{path} answered without choices: {str(data)[:300]}")
            out.append(data["choices"][0])
        return out

    def chat_prompt(self, messages: list[dict]) -> str:
        """A chat prompt stays messages: the server applies its own chat template (/v1/chat/completions)."""
        return CHAT_MARK + json.dumps(messages, ensure_ascii=False)

    def generate(self, prompts: Sequence[str], stop: Sequence[str] = (), max_tokens: int = 256,
                 temperature: float = 0.0, seed: int = 0) -> list[str]:
        base: dict[str, Any] = {"model": self.model, "max_tokens": max_tokens, "temperature": temperature,
                                **self.endpoint.opts.extra_body}
        if stop:
            base["stop"] = list(stop)
        if temperature > 0:
            base["seed"] = seed
        chat = [i for i, p in enumerate(prompts) if p.startswith(CHAT_MARK)]
        plain = [i for i, p in enumerate(prompts) if not p.startswith(CHAT_MARK)]
        out: list[str] = [""] * len(prompts)
        if plain:
            for i, ch in zip(plain, self._post("completions", [{**base, "prompt": prompts[i]} for i in plain])):
                out[i] = ch.get("text") or ""
        if chat:
            bodies = [{**base, "messages": json.loads(prompts[i][len(CHAT_MARK):])} for i in chat]
            for i, ch in zip(chat, self._post("chat/completions", bodies)):
                out[i] = (ch.get("message") or {}).get("content") or ""
        # a server may honour only some stop strings (OpenAI: 4); cut at the first, as lm-eval does
        return [_cut(t, stop) for t in out]

    # -- log-likelihoods ----------------------------------------------------------------------------
    def _echo(self, texts: list[str]) -> list[dict[str, list]]:
        body = {"model": self.model, "max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": 1}
        got = self._post("completions", [{**body, "prompt": t} for t in texts])
        out = []
        for text, ch in zip(texts, got):
            lp = ch.get("logprobs") or {}
            keys = ("tokens", "token_logprobs", "text_offset", "top_logprobs")
            if not all(isinstance(lp.get(k), list) for k in keys) or not (ch.get("text") or "").startswith(text):
                raise NeedsPromptLogprobs(self._why_not(f"its answer has no echoed prompt log-probs "
                                                        f"(logprobs keys {sorted(lp)})"))
            out.append({k: lp[k] for k in keys})
        return out

    def _why_not(self, detail: str) -> str:
        return (f"{self.name} does not return prompt log-probs ({detail}); they come from /v1/completions with "
                "echo=true and logprobs, which vLLM and llama-cpp-python's server support and llama.cpp's "
                "llama-server, Ollama and chat-only endpoints do not")

    def require_prompt_logprobs(self) -> None:
        """Probe once (one short request, one retry): raise NeedsPromptLogprobs if the server cannot echo them."""
        if self._prompt_logprobs is None:
            import asyncio  # noqa: PLC0415

            body = {"model": self.model, "prompt": PROBE, "max_tokens": 1, "temperature": 0.0, "echo": True,
                    "logprobs": 1}

            async def probe():
                async with self.endpoint.client() as client:
                    return await self.endpoint.post(client, "completions", body, retries=1, model=self.model)

            try:
                status, data, _ = asyncio.run(probe())
            except TeacherUnavailable as e:  # the server listed its models, so it is up: its own answer says why
                self._prompt_logprobs = self._why_not(f"the probe request failed: {e.last}")
            except PrimerError as e:  # 404, a refused request ...: the probe failed as a request, say how
                self._prompt_logprobs = self._why_not(f"the probe request failed: {e}")
            else:
                lp = ((data.get("choices") or [{}])[0].get("logprobs") or {}) if isinstance(data, dict) else {}
                if status >= 400:
                    self._prompt_logprobs = self._why_not(f"HTTP {status}: {str(data)[:200]}")
                elif not (isinstance(lp.get("token_logprobs"), list) and len(lp["token_logprobs"]) >= 8):
                    self._prompt_logprobs = self._why_not("no echoed token log-probs in its answer")
                elif shifted(lp):
                    self._prompt_logprobs = (
                        f"{self.name} returns prompt log-probs shifted by one token (each token scored by the "
                        "distribution after it: llama-cpp-python 0.3.16's server does this for models without a BOS "
                        "token; start it with primer.weights.llamacpp.SERVER_MAIN, which fixes it), so likelihood "
                        "scores through it would be wrong")
                else:
                    self._prompt_logprobs = ""
        if self._prompt_logprobs:
            raise NeedsPromptLogprobs(self._prompt_logprobs)

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        self.require_prompt_logprobs()
        pairs = []
        for ctx, cont in requests:
            n = len(ctx) - len(ctx.rstrip())  # trailing context whitespace belongs to the continuation (lm-eval)
            pairs.append((ctx[: len(ctx) - n], ctx[len(ctx) - n:] + cont))
        out = []
        for (ctx, cont), lp in zip(pairs, self._echo([c + x for c, x in pairs])):
            end, total, greedy = len(ctx) + len(cont), 0.0, True
            for off, tlp, top in zip(lp["text_offset"], lp["token_logprobs"], lp["top_logprobs"]):
                if off < len(ctx) or off >= end or tlp is None:
                    continue
                total += tlp
                greedy = greedy and (not top or tlp >= max(top.values()) - 1e-6)
            out.append((total, greedy))
        return out

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]:
        self.require_prompt_logprobs()
        out = []
        for text, lp in zip(texts, self._echo(list(texts))):
            out.append(sum(x for off, x in zip(lp["text_offset"], lp["token_logprobs"])
                           if x is not None and off < len(text)))
        return out


PROBE = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20"
"""A text any language model predicts well, so its echoed top log-probs show which token each row scores."""


def shifted(lp: dict[str, list]) -> bool:
    """Do the echoed rows predict the *next* token (row i's top choice is token i+1) more often than their own?"""
    tokens, tops = lp.get("tokens") or [], lp.get("top_logprobs") or []
    own = nxt = 0
    for i, top in enumerate(tops[:-1]):
        if not top:
            continue
        best = max(top, key=top.get)
        own += best == tokens[i]
        nxt += best == tokens[i + 1]
    return nxt > own


def _cut(text: str, stop: Sequence[str]) -> str:
    cuts = [text.find(s) for s in stop if s and s in text]
    return text[: min(cuts)] if cuts else text
