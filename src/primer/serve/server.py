"""`serve(ServeConfig)`: load a model, start the engine loop, run uvicorn until SIGINT/SIGTERM.

The engine loop runs on the main thread (the one that loaded the model, see `primer.serve.worker`
for why) and uvicorn on a second one. On SIGTERM or Ctrl-C uvicorn stops accepting connections and
waits for the requests in flight (streams included) to finish, up to `drain_seconds`; then the
engine loop stops. A second Ctrl-C stops at once.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from primer.config import Count, Range
from primer.errors import PrimerError

INSTALL_HINT = "pip install -e '.[serve]'"


@dataclass
class ServeConfig:
    model: str = "bundled"
    """'bundled', a .gguf file, an HF model dir or a primer checkpoint dir."""
    host: str = "127.0.0.1"
    """Interface to listen on (loopback by default; 0.0.0.0 exposes it to the network)."""
    port: Annotated[int, Range(ge=1, le=65535)] = 8000
    """TCP port to listen on."""
    index: str | None = None
    """A `primer index build` directory: retrieved passages go before each question."""
    passages: Count = 3
    """Retrieved chunks per request with an index."""
    model_name: str | None = None
    """The model id clients use (default: the file or directory name, or 'bundled')."""
    api_key: str | None = None
    """Require `Authorization: Bearer KEY` on /v1/* (default: $PRIMER_API_KEY, else no key)."""
    max_batch: Count = 16
    """Requests decoded together (continuous batching slots)."""
    max_queue: int = 64
    """Requests waiting for a slot before new ones get 429."""
    max_len: Count | None = None
    """Context per request (default: the model's)."""
    exact: bool = False
    """Decode with the fp32 reference forward instead of the fast int4/int8 CPU path."""
    drain_seconds: float = 60.0
    """On SIGTERM, how long requests in flight may take to finish."""


def model_names(spec: str, name: str | None) -> tuple[str, ...]:
    """The reported id first, then other names a client may use for the same model."""
    p = Path(spec)
    default = p.stem if p.suffix == ".gguf" else (p.name or spec)
    names = [name] if name else []
    return tuple(dict.fromkeys([*names, default, spec]))


def build(cfg: ServeConfig):
    """The FastAPI app for `cfg` and the engine loop behind it (model loaded; the loop not running:
    `Worker.run` steps it, and the app's shutdown ends it)."""
    try:
        from primer.serve.app import Served, create_app
        from primer.serve.metrics import Metrics
        from primer.serve.worker import Worker
    except ImportError as e:
        raise PrimerError(f"primer serve needs FastAPI, uvicorn and prometheus_client ({e.name}): {INSTALL_HINT}") from None
    from primer.model.engine import Engine
    from primer.weights.load import load_model

    index = None
    if cfg.index is not None:
        from primer.index.bm25 import Index

        index = Index.load(cfg.index)
    lm = load_model(cfg.model, decode_only=not cfg.exact)  # exact runs the fp32 forward
    if lm.tokenizer is None:
        raise PrimerError(f"model '{cfg.model}' has no tokenizer; primer serve needs one to read text")
    engine = Engine(lm, max_batch=cfg.max_batch, max_len=cfg.max_len, fast=False if cfg.exact else "auto")
    worker = Worker(engine, Metrics(), max_queue=cfg.max_queue)
    served = Served(worker, lm.tokenizer, model_names(cfg.model, cfg.model_name), engine.max_len, index,
                    cfg.passages, cfg.api_key or os.environ.get("PRIMER_API_KEY") or None)
    app = create_app(served)

    @asynccontextmanager
    async def lifespan(_app):
        try:
            yield
        finally:  # uvicorn has drained the requests in flight (or given up on them)
            worker.close()

    app.router.lifespan_context = lifespan
    return app, worker


def serve(cfg: ServeConfig) -> None:
    app, worker = build(cfg)
    import uvicorn

    logging.getLogger("primer.serve").setLevel(logging.INFO)
    server = uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning",
                                           timeout_graceful_shutdown=int(cfg.drain_seconds) or None))
    http = threading.Thread(target=server.run, name="primer-http", daemon=True)
    # uvicorn listens for signals only on the main thread, which steps the engine here: its own handler
    # (the first SIGTERM/SIGINT drains, a second SIGINT stops at once) is installed for it.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, server.handle_exit)
    http.start()
    while not server.started and http.is_alive():
        http.join(0.05)
    if not server.started:
        raise PrimerError(f"primer serve could not start on {cfg.host}:{cfg.port} (uvicorn's message is above; "
                          "is the port in use? pick another with --port)")
    print(f"primer serve: {cfg.model} on http://{cfg.host}:{cfg.port}/ (chat page), "
          f"OpenAI API at http://{cfg.host}:{cfg.port}/v1", flush=True)
    worker.run(cfg.drain_seconds, alive=http.is_alive)
    http.join(cfg.drain_seconds)
