"""`primer serve`: an OpenAI-compatible HTTP server and a chat page over primer's decode engine.

    primer serve runs/default/export/model-q4_0.gguf --port 8000      # then open http://127.0.0.1:8000/

- `worker.py`: one thread owns the model and steps `primer.model.engine.Engine` (continuous
  batching); requests reach it through a command queue and read their tokens from per-request
  asyncio queues. A bounded queue answers 429 when full; a request whose client went away is
  cancelled and frees its slot.
- `protocol.py`: the request bodies (pydantic), OpenAI's error shape, the response and chunk bodies.
- `app.py`: the FastAPI routes (`/v1/chat/completions`, `/v1/completions`, `/v1/models`, `/health`,
  `/metrics`, the chat page at `/`), validation and the optional API key.
- `server.py`: `ServeConfig` and `serve()`: load the model, start the worker, run uvicorn.
- `page.html`: the chat page, one self-contained file (no CDN, no build step).
"""
