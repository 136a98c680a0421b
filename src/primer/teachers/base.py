"""The teacher API every backend implements: a prompt in, a `Completion` with its accounting out.

`Sampling` is recorded with every generated document; `Teacher.imap` is the streaming form a long run
uses (results as they finish, so they can be written one by one).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from primer.config import Count, Positive, PositiveFraction, check_config
from primer.errors import PrimerError

Prompt = str | list[dict[str, str]]


class TeacherUnavailable(PrimerError):
    """The teacher could not be reached (after retries); the run stops and can be resumed."""

    def __init__(self, message: str, last: str = ""):
        super().__init__(message)
        self.last = last or message
        """the last failure alone (an HTTP status and body, or a connection error), without the hints"""


@dataclass(frozen=True)
class Sampling:
    """How the teacher samples; recorded with every generated document."""

    max_tokens: Count = 512
    """most new tokens per completion"""
    temperature: float = 0.8
    """softmax temperature; 0 = greedy"""
    top_p: PositiveFraction = 0.95
    """nucleus sampling mass"""
    seed: int | None = None
    """base seed; callers that want per-prompt reproducibility pass one per call (see with_seed)"""
    stop: tuple[str, ...] = ()
    """strings that end a completion early (not included in the text)"""
    repeat_penalty: Positive = 1.1
    """penalty on repeated tokens where the backend supports it (1.0 = off; HTTP sends it as an extra)"""

    def __post_init__(self) -> None:
        check_config(self)  # temperature -1 or nan, top_p 0: refused, not quietly greedy

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
