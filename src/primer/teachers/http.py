"""OpenAI-compatible servers: `OpenAIEndpoint` (async POSTs with a concurrency cap, retries with jittered
backoff, an optional rate limit; an endpoint that stays unreachable raises `TeacherUnavailable`) and the
HTTP teacher on it."""

from __future__ import annotations

import asyncio
import os
import queue
import random
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from primer.config import Count, Positive
from primer.errors import PrimerError
from primer.teachers.base import Completion, Prompt, Sampling, Teacher, TeacherUnavailable, _item, as_messages

# ---------------------------------------------------------------------------- OpenAI-compatible HTTP

_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


@dataclass
class HttpOptions:
    """Knobs of the HTTP teacher (all have CLI flags in `primer synth`)."""

    concurrency: Count = 8
    """requests in flight at once"""
    timeout: Positive = 120.0
    """seconds for one request (read timeout); connect timeout is min(10, timeout)"""
    retries: int = 6
    """extra tries on connection errors, timeouts, 429 and 5xx"""
    backoff: float = 0.5
    """first retry delay in seconds; doubles each try (with +-50% jitter), capped at backoff_max"""
    backoff_max: float = 30.0
    """longest retry delay in seconds"""
    rate_limit: float | None = None
    """most requests started per second (None = unlimited)"""
    api_key_env: str = "OPENAI_API_KEY"
    """environment variable holding the API key (sent as a Bearer token when set)"""
    extra_body: dict[str, Any] = field(default_factory=dict)
    """extra JSON fields for every request (server-specific sampling options)"""


class OpenAIEndpoint:
    """An OpenAI-compatible server: base URL, API key, and one POST with retries, backoff and a rate limit.

    The HTTP teacher (chat completions) and the served-model eval (`primer.eval.served`: completions with
    echo + logprobs, chat completions) both talk to a server through this, with the same `HttpOptions`.
    """

    def __init__(self, base_url: str, options: HttpOptions | None = None) -> None:
        self.opts = options or HttpOptions()
        self.base_url = base_url.rstrip("/")
        for suffix in ("/chat/completions", "/completions"):
            if self.base_url.endswith(suffix):
                self.base_url = self.base_url[: -len(suffix)]
        self.concurrency = max(1, self.opts.concurrency)
        key = os.environ.get(self.opts.api_key_env) if self.opts.api_key_env else None
        self.headers = {"Content-Type": "application/json"}
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        self.retried = 0
        """requests retried so far (connection errors, 429, 5xx)"""
        self._reset()

    def _reset(self) -> None:
        """Per-event-loop pacing state (set again by each driver that opens a client)."""
        self._rate_lock: asyncio.Lock | None = None
        self._next_start = 0.0
        self._retry_after = 0.0

    def _unavailable(self, url: str, tries: int, last: str) -> TeacherUnavailable:
        return TeacherUnavailable(
            f"endpoint {url} failed {tries} times (last: {last}); is the server up? "
            f"check with: curl {self.base_url}/models  — then rerun the same command to resume",
            last=last,
        )

    def client(self) -> Any:
        import httpx

        timeout = httpx.Timeout(self.opts.timeout, connect=min(10.0, self.opts.timeout))
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        return httpx.AsyncClient(timeout=timeout, limits=limits)

    async def _pace(self) -> None:
        if not self.opts.rate_limit:
            return
        if self._rate_lock is None:
            self._rate_lock = asyncio.Lock()
        async with self._rate_lock:
            now = time.monotonic()
            wait = self._next_start - now
            if wait > 0:
                await asyncio.sleep(wait)
            self._next_start = max(now, self._next_start) + 1.0 / self.opts.rate_limit

    async def post(self, client: Any, path: str, body: dict[str, Any], retries: int | None = None,
                   model: str = "") -> tuple[int, Any, float]:
        """(status, parsed JSON or error text, seconds) of POST base_url/path.

        Connection errors, timeouts, 429 and 5xx are retried (`retries`, default the options'); a server
        that stays unreachable raises `TeacherUnavailable`; 401/403/404 raise a `PrimerError` saying what
        to fix; any other 4xx (the request's own fault) comes back as (status, text) for the caller."""
        import httpx

        url = f"{self.base_url}/{path}"
        retries = self.opts.retries if retries is None else retries
        last = ""
        for attempt in range(retries + 1):
            if attempt:
                self.retried += 1
                delay = min(self.opts.backoff_max, self.opts.backoff * 2 ** (attempt - 1))
                delay *= 0.5 + random.random()
                await asyncio.sleep(max(delay, self._retry_after))
                self._retry_after = 0.0
            await self._pace()
            t0 = time.perf_counter()
            try:
                r = await client.post(url, json=body, headers=self.headers)
            except (httpx.TransportError, httpx.TimeoutException) as e:
                last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                continue
            if r.status_code in _RETRY_STATUS:
                last = f"HTTP {r.status_code}: {r.text[:200]}"
                ra = r.headers.get("retry-after")
                if ra:
                    try:
                        self._retry_after = min(self.opts.backoff_max, float(ra))
                    except ValueError:
                        pass
                continue
            if r.status_code in (401, 403):
                raise PrimerError(
                    f"endpoint {url} refused the request (HTTP {r.status_code}); "
                    f"set the API key in ${self.opts.api_key_env}"
                )
            if r.status_code == 404:
                raise PrimerError(
                    f"endpoint {url} answered 404: check the base URL ends in /v1 and the "
                    f"model name '{model}' is served (curl {self.base_url}/models)"
                )
            if r.status_code >= 400:  # the request's fault (too long, bad params): not retried
                return r.status_code, r.text[:500], time.perf_counter() - t0
            try:
                return r.status_code, r.json(), time.perf_counter() - t0
            except ValueError as e:
                last = f"unparseable response: {e}"
                continue
        raise self._unavailable(url, retries + 1, last)

    def post_many(self, path: str, bodies: list[dict[str, Any]], model: str = "",
                  on_done: Any = None) -> list[tuple[int, Any, float]]:
        """POST every body (at most `concurrency` in flight), results in order; `on_done(n)` after each."""

        async def run() -> list[tuple[int, Any, float]]:
            self._reset()
            sem = asyncio.Semaphore(self.concurrency)
            async with self.client() as client:

                async def one(body: dict[str, Any]) -> tuple[int, Any, float]:
                    async with sem:
                        out = await self.post(client, path, body, model=model)
                    if on_done is not None:
                        on_done(1)
                    return out

                return list(await asyncio.gather(*(one(b) for b in bodies)))

        return asyncio.run(run())


class HttpTeacher(OpenAIEndpoint, Teacher):
    """Any OpenAI-compatible /v1/chat/completions endpoint (vLLM, SGLang, llama.cpp, Ollama...)."""

    def __init__(self, base_url: str, model: str | None = None, options: HttpOptions | None = None) -> None:
        OpenAIEndpoint.__init__(self, base_url, options)
        self.model = model or "default"
        self.batch_size = self.concurrency
        self.name = f"{self.base_url}#{self.model}"
        self.url = f"{self.base_url}/chat/completions"

    # -- request building / parsing

    def _body(self, prompt: Prompt, sampling: Sampling) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": as_messages(prompt),
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if sampling.repeat_penalty != 1.0:
            body["repeat_penalty"] = sampling.repeat_penalty
        body.update(self.opts.extra_body)
        return body

    @staticmethod
    def _parse(data: dict[str, Any], seconds: float) -> Completion:
        ch = (data.get("choices") or [{}])[0]
        msg = ch.get("message") or {}
        text = msg.get("content")
        if text is None:
            text = ch.get("text") or ""
        u = data.get("usage") or {}
        return Completion(
            text=text,
            finish_reason=ch.get("finish_reason") or "stop",
            prompt_tokens=int(u.get("prompt_tokens") or 0),
            completion_tokens=int(u.get("completion_tokens") or 0),
            seconds=seconds,
        )

    async def _one(self, client: Any, prompt: Prompt, sampling: Sampling) -> Completion:
        status, data, seconds = await self.post(client, "chat/completions", self._body(prompt, sampling),
                                                model=self.model)
        if status >= 400:
            return Completion("", "error", error=f"HTTP {status}: {str(data)[:300]}", seconds=seconds)
        return self._parse(data, seconds)

    async def _drive(self, items: Iterator[tuple], sampling: Sampling, out: queue.Queue,
                     stop: threading.Event) -> None:
        self._reset()
        async with self.client() as client:

            async def worker() -> None:  # `concurrency` of these pull prompts until none are left
                while not stop.is_set():
                    try:
                        key, prompt, samp = _item(next(items), sampling)
                    except StopIteration:
                        return
                    out.put(("item", (key, await self._one(client, prompt, samp))))

            async def watch() -> None:  # the caller went away (Ctrl-C, closed generator): stop
                while not stop.is_set():
                    await asyncio.sleep(0.2)

            workers = [asyncio.create_task(worker()) for _ in range(self.concurrency)]
            everything = asyncio.gather(*workers)
            watcher = asyncio.create_task(watch())
            try:
                await asyncio.wait([everything, watcher], return_when=asyncio.FIRST_COMPLETED)
                if everything.done():
                    everything.result()  # raises TeacherUnavailable & co.
            finally:
                watcher.cancel()
                for w in workers:
                    w.cancel()
                await asyncio.gather(*workers, watcher, return_exceptions=True)
                if everything.done() and not everything.cancelled():
                    everything.exception()  # retrieved: no "never retrieved" warning

    def imap(self, items: Iterable[tuple], sampling: Sampling | None = None) -> Iterator[tuple[Any, Completion]]:
        sampling = sampling or Sampling()
        out: queue.Queue = queue.Queue()
        stop = threading.Event()
        it = iter(items)

        def worker() -> None:
            try:
                asyncio.run(self._drive(it, sampling, out, stop))
                out.put(("done", None))
            except BaseException as e:  # handed to the caller's thread
                out.put(("error", e))

        thread = threading.Thread(target=worker, name="http-teacher", daemon=True)
        thread.start()
        try:
            while True:
                try:
                    kind, payload = out.get(timeout=0.5)
                except queue.Empty:
                    continue
                if kind == "done":
                    return
                if kind == "error":
                    raise payload
                yield payload
        finally:
            stop.set()
            thread.join(timeout=10)
