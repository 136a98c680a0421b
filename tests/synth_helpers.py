"""Helpers for the synth/teacher tests: a deterministic fake teacher and a real llama.cpp server."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from primer.weights.llamacpp import SERVER_MAIN

from primer.teachers import Completion, Teacher

LOREM = ("photosynthesis turns light energy into chemical energy stored in sugar molecules inside the "
         "chloroplasts of green plant cells while releasing oxygen gas into the air around them").split()


class FakeTeacher(Teacher):
    """Deterministic text from the prompt hash; `bad` maps a substring of a prompt to a bad output."""

    name = "fake"

    def __init__(self, batch_size: int = 4, bad: dict[str, str] | None = None) -> None:
        self.batch_size = batch_size
        self.bad = bad or {}
        self.calls = 0

    def _text(self, prompt: str) -> str:
        for key, out in self.bad.items():
            if key in prompt:
                return out
        h = hashlib.sha1(prompt.encode()).digest()
        words = [LOREM[(b + i) % len(LOREM)] + str(b) for i, b in enumerate(h * 4)]
        return f"{prompt}\n\n" + " ".join(words)

    def _complete_batch(self, prompts, samplings):
        self.calls += 1
        out = []
        for p in prompts:
            text = self._text(p if isinstance(p, str) else p[-1]["content"])
            out.append(Completion(text, "stop", prompt_tokens=len(str(p).split()), completion_tokens=len(text.split())))
        return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def have_llama_server() -> bool:
    try:
        import llama_cpp.server.app  # noqa: F401
    except ImportError:
        return False
    return True


class ServerProcess:
    """A server as a child process on a loopback port: start() waits until `ready_path` answers 200;
    stop() kills it; start()/stop() repeatable; a context manager. Subclasses give the command."""

    name = "server"
    ready_path = "/v1/models"

    def __init__(self, port: int | None = None, log: Path | None = None, threads: int | None = None) -> None:
        self.port, self.log, self.threads = port or free_port(), log, threads
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return {**os.environ, **({"OMP_NUM_THREADS": str(self.threads)} if self.threads else {})}

    def start(self, timeout: float = 600):
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, env=self.env())
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}"
                                   + (f"; see {self.log}" if self.log else ""))
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + self.ready_path, timeout=2).status_code == 200:
                    return self
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"{self.name} did not come up")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class LlamaServer(ServerProcess):
    """`python -m llama_cpp.server` serving a GGUF (AMX/repack buffers off: SERVER_MAIN); extra: its flags."""

    name = "llama_cpp.server"

    def __init__(self, model: Path, port: int | None = None, n_threads: int = 1, log: Path | None = None,
                 extra: tuple[str, ...] = ()) -> None:
        super().__init__(port, log, n_threads)
        self.model, self.extra = model, list(extra)

    def command(self) -> list[str]:
        return [sys.executable, "-c", SERVER_MAIN, "--model", str(self.model), "--host", "127.0.0.1",
                "--port", str(self.port), "--n_ctx", "2048", "--n_threads", str(self.threads),
                "--model_alias", "smollm2", *self.extra]
