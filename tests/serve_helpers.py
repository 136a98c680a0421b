"""`primer serve` as a real process on a loopback port, for tests and bench/serve.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from synth_helpers import ServerProcess


class PrimerServer(ServerProcess):
    """`python -m primer serve MODEL ARGS...` (this checkout's code) on a free loopback port."""

    name = "primer serve"
    ready_path = "/health"

    def __init__(self, model: str = "bundled", *args: str, log: Path | None = None, threads: int | None = None):
        super().__init__(log=log, threads=threads)
        self.model, self.args = model, [str(a) for a in args]

    def command(self) -> list[str]:
        return [sys.executable, "-m", "primer", "serve", self.model, "--port", str(self.port), *self.args]

    def env(self) -> dict[str, str]:
        src = str(Path(__file__).resolve().parents[1] / "src")  # this checkout's code, whatever is installed
        return {**super().env(), "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
