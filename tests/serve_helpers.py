"""`primer serve` as a real process on a loopback port, for tests and bench/serve.py."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from synth_helpers import free_port


class PrimerServer:
    """`python -m primer serve MODEL ARGS...` on a free loopback port; a context manager."""

    def __init__(self, model: str = "bundled", *args: str, log: Path | None = None, threads: int | None = None):
        self.model, self.args, self.log, self.port = model, [str(a) for a in args], log, free_port()
        self.threads = threads
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self, timeout: float = 180) -> PrimerServer:
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        src = str(Path(__file__).resolve().parents[1] / "src")  # this checkout's code, whatever is installed
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
        if self.threads:
            env["OMP_NUM_THREADS"] = str(self.threads)
        self.proc = subprocess.Popen([sys.executable, "-m", "primer", "serve", self.model, "--port", str(self.port),
                                      *self.args], stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"primer serve exited with {self.proc.returncode}"
                                   + (f"; see {self.log}" if self.log else ""))
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            time.sleep(0.3)
        self.stop()
        raise RuntimeError("primer serve did not come up")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc = None

    def __enter__(self) -> PrimerServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
