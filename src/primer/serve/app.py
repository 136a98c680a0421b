"""The HTTP side of `primer serve`: FastAPI routes in OpenAI's shape over a `Worker`.

Every error is OpenAI's body `{"error": {"message", "type", "param", "code"}}`: a body that is not
JSON or fails validation is 400 naming the field; a prompt that does not fit the context is 400
`context_length_exceeded` with both token counts; an unknown model 404 `model_not_found`; a wrong
or missing API key (when one is set) 401; a full queue 429 with `Retry-After`.

With an index, the last user message together with the one before it (`chat_query`; for completions
the prompt) is searched and its top passages go before the last message in `primer.index.prompt`'s
template; the response carries them as `sources` (top
level of the body; in the first chunk when streaming), which the chat page shows under the answer.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib import resources

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from primer.errors import PrimerError
from primer.index.prompt import chat_query, with_passages
from primer.model.engine import Event
from primer.serve import protocol as P
from primer.serve.metrics import CONTENT_TYPE
from primer.serve.worker import Failure, QueueFull, ShuttingDown, Ticket, Worker

ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics", "/")
# How often a non-streaming request checks that its client is still there (seconds).
DISCONNECT_POLL = 0.5


@dataclass
class Served:
    """What the routes serve: the worker (and through it the model), its tokenizer and names."""

    worker: Worker
    tokenizer: object
    names: tuple[str, ...]
    """Model names a request may ask for; the first is the one reported."""
    context: int
    index: object | None = None
    passages: int = 3
    api_key: str | None = None
    created: int = field(default_factory=lambda: int(time.time()))


def create_app(s: Served) -> FastAPI:
    app = FastAPI(title="primer serve", docs_url=None, redoc_url=None, openapi_url=None)
    metrics = s.worker.metrics
    app.add_middleware(_CountRequests, metrics=metrics)

    @app.exception_handler(P.ApiError)
    async def _api_error(_req, e: P.ApiError):
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req, e: RequestValidationError):
        return JSONResponse(_validation_error(e).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req, e: StarletteHTTPException):
        err = P.ApiError(e.status_code, str(e.detail), code="not_found" if e.status_code == 404 else None)
        return JSONResponse(err.body(), status_code=e.status_code)

    async def auth(request: Request) -> None:
        sent = request.headers.get("authorization", "").encode()
        if s.api_key and not hmac.compare_digest(sent, f"Bearer {s.api_key}".encode()):
            raise P.ApiError(401, "Incorrect or missing API key: send 'Authorization: Bearer KEY' with the key "
                             "primer serve was started with (--api-key)", code="invalid_api_key")

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse(resources.files("primer.serve").joinpath("page.html").read_text(encoding="utf-8"))

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": s.names[0], "in_flight": s.worker.inflight()}

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models", dependencies=[Depends(auth)])
    async def models():
        return {"object": "list", "data": [{"id": s.names[0], "object": "model", "created": s.created,
                                             "owned_by": "primer", "context_length": s.context,
                                             "retrieval": s.index is not None}]}

    @app.post("/v1/chat/completions", dependencies=[Depends(auth)])
    async def chat(req: P.ChatRequest, request: Request):
        _check_model(s, req.model)
        if not getattr(s.tokenizer, "chat_template", None):
            raise P.ApiError(400, f"model '{s.names[0]}' has no chat template; use /v1/completions", param="messages")
        messages, sources = req.chat(), None
        users = [i for i, m in enumerate(messages) if m["role"] == "user"]
        if s.index is not None and users:
            last = messages[users[-1]]
            hits = s.index.search(chat_query([messages[i]["content"] for i in users]), k=s.passages)
            last["content"] = with_passages(last["content"], hits)
            sources = [h.to_dict() for h in hits]
        try:
            ids = list(s.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
        except PrimerError as e:
            raise P.ApiError(400, f"the chat template rejected these messages: {e}", param="messages") from None
        ticket = _submit(s, req, ids, req.limit(), "messages")
        rid = P.new_id("chatcmpl")
        if req.stream:
            return _sse(s, ticket, _chat_stream(s, ticket, rid, sources, req.include_usage()))
        text, last = await _collect(s, ticket, request)
        return P.chat_response(rid, s.names[0], text, last.finish_reason, last.prompt_tokens,
                               last.completion_tokens, sources)

    @app.post("/v1/completions", dependencies=[Depends(auth)])
    async def completions(req: P.CompletionRequest, request: Request):
        _check_model(s, req.model)
        sources = None
        if isinstance(req.prompt, str):
            prompt = req.prompt
            if s.index is not None:
                hits = s.index.search(prompt, k=s.passages)
                prompt, sources = with_passages(prompt, hits), [h.to_dict() for h in hits]
            ids = list(s.tokenizer.encode(prompt))
        else:
            ids = list(req.prompt)
            vocab = s.worker.engine.model.cfg.vocab_size
            if not all(0 <= t < vocab for t in ids):
                raise P.ApiError(400, f"prompt token ids must be in [0, {vocab})", param="prompt")
        ticket = _submit(s, req, ids, req.limit(), "prompt")
        rid = P.new_id("cmpl")
        if req.stream:
            return _sse(s, ticket, _completion_stream(s, ticket, rid, sources, req.include_usage()))
        text, last = await _collect(s, ticket, request)
        body = P.completion_response(rid, s.names[0], text, last.finish_reason, last.prompt_tokens,
                                     last.completion_tokens)
        if sources is not None:
            body["sources"] = sources
        return body

    return app


# ------------------------------------------------------------------------------------ requests


def _check_model(s: Served, name: str | None) -> None:
    if name and name not in s.names:
        raise P.ApiError(404, f"The model '{name}' does not exist; this server serves '{s.names[0]}' "
                         "(GET /v1/models)", param="model", code="model_not_found")


def _submit(s: Served, req, ids: list[int], asked: int | None, what: str) -> Ticket:
    """Check the prompt against the context (OpenAI's message, both counts) and queue it."""
    n, ctx = len(ids), s.context
    if n >= ctx:
        raise P.ApiError(400, f"This model's maximum context length is {ctx} tokens. However, your {what} "
                         f"resulted in {n} tokens. Please reduce the length of the {what}.",
                         param=what, code="context_length_exceeded")
    if asked is not None and n + asked > ctx:
        raise P.ApiError(400, f"This model's maximum context length is {ctx} tokens. However, you requested "
                         f"{n + asked} tokens ({n} in the {what}, {asked} in the completion). Please reduce the "
                         f"length of the {what} or completion.", param="max_tokens", code="context_length_exceeded")
    try:
        return s.worker.submit(ids, req.sampling(asked if asked is not None else ctx - n))
    except QueueFull:
        raise P.ApiError(429, f"The server is at capacity ({s.worker.capacity} requests decoding or waiting); "
                         "retry after a moment", type="server_busy", code="queue_full",
                         headers={"Retry-After": "1"}) from None
    except ShuttingDown:
        raise P.ApiError(503, "The server is shutting down", type="server_busy", code="shutting_down",
                         headers={"Retry-After": "5"}) from None
    except PrimerError as e:  # sampling settings SamplingParams refuses
        raise P.ApiError(400, str(e)) from None


async def _events(s: Served, t: Ticket, request: Request | None = None) -> AsyncIterator[Event]:
    """A request's events up to its last one. If the consumer stops early (its client went away: the
    stream is cancelled, or `request` reports a disconnect), the request is cancelled and frees its slot."""
    try:
        while True:
            if request is None:
                item = await t.events.get()
            else:
                try:
                    item = await asyncio.wait_for(t.events.get(), DISCONNECT_POLL)
                except TimeoutError:
                    if await request.is_disconnected():
                        return
                    continue
            if isinstance(item, Failure):
                raise P.ApiError(500, item.message, type="server_error")
            yield item
            if item.finish_reason is not None:
                return
    finally:
        s.worker.cancel(t)


async def _collect(s: Served, t: Ticket, request: Request) -> tuple[str, Event]:
    parts, last = [], None
    async for ev in _events(s, t, request):
        parts.append(ev.text)
        last = ev
    if last is None or last.finish_reason is None:  # the client went away; nobody reads this answer
        raise P.ApiError(499, "client closed the request")
    return "".join(parts), last


def _sse(s: Served, t: Ticket, gen: AsyncIterator[dict | str]) -> StreamingResponse:
    async def lines():
        try:
            async for item in gen:
                yield item if isinstance(item, str) else f"data: {json.dumps(item, ensure_ascii=False)}\n\n"
        finally:  # the client left (the stream is cancelled), even before the first token: free the slot
            s.worker.cancel(t)

    return StreamingResponse(lines(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _chat_stream(s: Served, t: Ticket, rid: str, sources, include_usage: bool):
    model, created = s.names[0], int(time.time())
    first = P.chat_chunk(rid, model, created, {"role": "assistant", "content": ""}, None)
    if sources is not None:
        first["sources"] = sources
    yield first
    async for item in _stream_events(s, t):
        if isinstance(item, dict):
            yield item
            return
        if item.text:
            yield P.chat_chunk(rid, model, created, {"content": item.text}, None)
        if item.finish_reason:
            yield P.chat_chunk(rid, model, created, {}, item.finish_reason)
            if include_usage:
                yield P.usage_chunk(rid, model, created, "chat.completion.chunk", item.prompt_tokens,
                                    item.completion_tokens)
    yield "data: [DONE]\n\n"


async def _completion_stream(s: Served, t: Ticket, rid: str, sources, include_usage: bool):
    model, created = s.names[0], int(time.time())
    first = True
    async for item in _stream_events(s, t):
        if isinstance(item, dict):
            yield item
            return
        if item.text or item.finish_reason:
            chunk = P.completion_chunk(rid, model, created, item.text, item.finish_reason)
            if first and sources is not None:
                chunk["sources"] = sources
            first = False
            yield chunk
        if item.finish_reason and include_usage:
            yield P.usage_chunk(rid, model, created, "text_completion", item.prompt_tokens, item.completion_tokens)
    yield "data: [DONE]\n\n"


async def _stream_events(s: Served, t: Ticket):
    """_events for a stream: an engine failure becomes an error event in the stream (the status is sent)."""
    try:
        async for ev in _events(s, t):
            yield ev
    except P.ApiError as e:
        yield e.body()


def _validation_error(e: RequestValidationError) -> P.ApiError:
    errors = e.errors()
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        why = (first.get("ctx") or {}).get("error", "")
        return P.ApiError(400, f"We could not parse the JSON body of your request ({why}). The body must be "
                          "a JSON object, sent with 'Content-Type: application/json'.", code="invalid_json")
    param = _param(first.get("loc", ()))
    if not param:
        return P.ApiError(400, "The request body must be a JSON object with the fields of the OpenAI API "
                          f"({first.get('msg', 'invalid body')})", code="invalid_body")
    msg = first.get("msg", "invalid value").removeprefix("Value error, ")
    if first.get("type") == "missing":
        return P.ApiError(400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    return P.ApiError(400, f"Invalid value for '{param}': {msg}.", param=param, code="invalid_value")


def _param(loc) -> str:
    """The field a validation error is about: `messages.0.role` (pydantic adds the type it tried for
    a union field, e.g. `stop.str`; that tail is dropped)."""
    out = []
    for x in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(x, int):
            out.append(str(x))
        elif isinstance(x, str) and x.isidentifier() and x not in ("str", "int", "float", "bool"):
            out.append(x)
        else:
            break
    return ".".join(out)


class _CountRequests:
    """ASGI middleware: counts answered requests by route and status (for /metrics)."""

    def __init__(self, app, metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = [500]

        async def send_status(msg):
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope["path"] if scope["path"] in ROUTES else "other"
            self.metrics.requests.labels(route, str(status[0])).inc()
