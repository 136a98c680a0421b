"""`primer serve MODEL`: an OpenAI-compatible server (continuous batching) and a chat page at `/`."""

from __future__ import annotations


def register(sub) -> None:
    from primer.config import add_arguments
    from primer.serve.server import ServeConfig

    p = sub.add_parser(
        "serve", help="serve a model over an OpenAI-compatible HTTP API, with a chat page at /",
        description="Serve MODEL ('bundled', a .gguf, an HF dir or a primer checkpoint) on /v1/chat/completions, "
        "/v1/completions and /v1/models (streaming or not; any OpenAI client works), with /health, /metrics "
        "(Prometheus) and a chat page at /. Concurrent requests decode together (continuous batching). "
        "Loopback only unless --host says otherwise.",
    )
    p.add_argument("model", nargs="?", default="bundled",
                   help="'bundled' (default), a .gguf file, an HF model dir or a primer checkpoint dir")
    add_arguments(p, ServeConfig, skip=("model",))
    p.set_defaults(func=run)


def run(args) -> int:
    from primer.config import from_args
    from primer.serve.server import ServeConfig, serve

    serve(from_args(ServeConfig, args))
    return 0
