"""The ASGI app of ``edge-rt serve`` (Starlette): OpenAI-compatible endpoints over one model.

Routes: ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions`` (server-sent events with
``"stream": true``), ``/health`` (JSON: status, model, queue, memory), ``/metrics`` (Prometheus text)
and ``/`` (the chat page, a static file shipped in the package). With an API key, ``/v1/*`` and
``/metrics`` need ``Authorization: Bearer KEY``; ``/`` and ``/health`` stay open (the page asks for
the key).

Generations run one at a time on the :class:`~edge_rt.server.generation_queue.GenerationQueue`
worker. A streamed response starts only when the first piece (or an error) arrives, so a request that
fails before generating anything gets a real status code, not an error inside a 200 stream. A client
that disconnects (streaming or not) cancels its generation, or removes it from the queue.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Dict, Optional

from .generation_queue import GenerationQueue, Job, QueueFull
from .metrics import ServerStats
from .openai_api import (
    RequestError,
    chat_body,
    chat_params,
    chunk,
    completion_body,
    completion_params,
    error_from,
    finish_reason,
    models_body,
    new_id,
    sse,
    timings,
    usage,
)

__all__ = ["create_app", "STATIC_DIR"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Largest request body read (a prompt of n_ctx tokens is far smaller); larger ones get 413.
MAX_BODY_BYTES = 8 * 2**20


def create_app(model: Any, *, model_id: str, api_key: Optional[str] = None, max_queue: int = 64,
               template: Optional[str] = None) -> Any:
    """The Starlette app serving ``model`` (an :class:`edge_rt.Model`, owned by the caller) as ``model_id``;
    chat requests use ``template`` (a built-in name or Jinja text), else the model's chat template.

    The generation worker starts and stops with the app's lifespan; at shutdown, waiting requests
    are answered with an error and the running one is let finish.
    """
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route

    stats = ServerStats()
    worker = GenerationQueue(model, max_queue, stats)
    created = int(time.time())

    def error(e: RequestError, endpoint: str, headers: Optional[Dict[str, str]] = None) -> Response:
        stats.request_done(endpoint, e.status)
        return JSONResponse(e.body(), status_code=e.status, headers=headers)

    def authorized(request: Request) -> bool:
        if not api_key:
            return True
        given = request.headers.get("authorization", "")
        return given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), api_key.encode())

    def unauthorized(endpoint: str) -> Response:
        return error(RequestError("missing or wrong API key: send 'Authorization: Bearer KEY'", None, 401,
                                  code="invalid_api_key"), endpoint, {"WWW-Authenticate": "Bearer"})

    async def read_json(request: Request) -> Dict[str, Any]:
        chunks, size = [], 0
        async for chunk_bytes in request.stream():  # read with a cap: a client cannot make us buffer gigabytes
            size += len(chunk_bytes)
            if size > MAX_BODY_BYTES:
                raise RequestError(f"the request body is over {MAX_BODY_BYTES // 2**20} MiB", None, 413)
            chunks.append(chunk_bytes)
        raw = b"".join(chunks)
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RequestError(f"the request body is not valid JSON: {e}", None) from None
        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object", None)
        return body

    async def watch_disconnect(request: Request, job: Job) -> None:
        """Cancels ``job`` when the client disconnects (the body is already read, so the next ASGI
        message can only be the disconnect)."""
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                job.cancel.set()
                return

    async def generate(request: Request, endpoint: str, chat: bool) -> Response:
        if not authorized(request):
            return unauthorized(endpoint)
        input_field = "messages" if chat else "prompt"
        try:
            body = await read_json(request)
            payload, params = (chat_params if chat else completion_params)(body, model_id, model.n_ctx)
        except RequestError as e:
            return error(e, endpoint)
        if chat:
            params["template"] = template
        job = Job("chat" if chat else "completion", payload, params, asyncio.get_running_loop())
        try:
            worker.submit(job)
        except QueueFull as e:
            return error(RequestError(str(e), None, 429, "rate_limit_error", "queue_full"), endpoint,
                         {"Retry-After": str(e.retry_after_s)})
        watcher = asyncio.ensure_future(watch_disconnect(request, job))
        rid = new_id("chatcmpl" if chat else "cmpl")
        try:
            first = await job.events.get()
        except asyncio.CancelledError:
            job.cancel.set()
            watcher.cancel()
            raise
        if first[0] == "error":
            watcher.cancel()
            return error(error_from(first[1], input_field), endpoint)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            stats.request_done(endpoint, 200)
            return StreamingResponse(stream_events(job, first, rid, chat, include_usage, watcher),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        pieces = []
        event = first
        try:
            while event[0] == "piece":
                pieces.append(event[1])
                event = await job.events.get()
        finally:
            if event[0] == "piece":  # cancelled while waiting: the server is shutting down
                job.cancel.set()
            watcher.cancel()
        if event[0] == "error":
            return error(error_from(event[1], input_field), endpoint)
        result = event[1]
        ttft = job.first_piece - job.arrived if job.first_piece else None
        make = chat_body if chat else completion_body
        stats.request_done(endpoint, 200)
        return JSONResponse(make(rid, model_id, "".join(pieces), result, ttft))

    async def stream_events(job: Job, first: tuple, rid: str, chat: bool, include_usage: bool,
                            watcher: "asyncio.Future[None]") -> AsyncIterator[bytes]:
        event = first
        try:
            if chat:
                yield sent(sse(chunk(rid, model_id, True, "", first=True)))
            while event[0] == "piece":
                yield sent(sse(chunk(rid, model_id, chat, event[1])))
                event = await job.events.get()
            if event[0] == "error":  # headers are out: report in the stream, as OpenAI does
                yield sent(sse(error_from(event[1], "messages" if chat else "prompt").body()))
            else:
                result = event[1]
                last = chunk(rid, model_id, chat, None, finish_reason(result))
                ttft = job.first_piece - job.arrived if job.first_piece else None
                last["timings"] = timings(result, ttft)
                yield sent(sse(last))
                if include_usage:
                    yield sent(sse({**chunk(rid, model_id, chat, None), "choices": [], "usage": usage(result)}))
            yield sent(sse("[DONE]"))
        finally:  # also on disconnect (the response task is cancelled or its send fails)
            if event[0] == "piece":
                job.cancel.set()
            watcher.cancel()

    def sent(data: bytes) -> bytes:
        stats.sent(len(data))
        return data

    async def completions(request: Request) -> Response:
        return await generate(request, "/v1/completions", chat=False)

    async def chat_completions(request: Request) -> Response:
        return await generate(request, "/v1/chat/completions", chat=True)

    async def models(request: Request) -> Response:
        if not authorized(request):
            return unauthorized("/v1/models")
        stats.request_done("/v1/models", 200)
        return JSONResponse(models_body(model_id, created))

    async def health(request: Request) -> Response:
        mem = worker.telemetry.get("memory") or {}
        stats.request_done("/health", 200)
        return JSONResponse({"status": "ok", "model": model_id, "n_ctx": model.n_ctx, "queue_depth": worker.depth,
                             "busy": worker.busy, "auth": bool(api_key),
                             "memory": {"total": mem.get("total"), "budget": mem.get("budget"),
                                        "classes": mem.get("classes")},
                             "ttft": stats.ttft_quantiles()})

    async def metrics(request: Request) -> Response:
        if not authorized(request):
            return unauthorized("/metrics")
        stats.request_done("/metrics", 200)
        return PlainTextResponse(stats.prometheus(worker.depth, worker.busy, worker.telemetry),
                                 media_type="text/plain; version=0.0.4")

    async def page(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "chat.html", media_type="text/html; charset=utf-8")

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        worker.start()
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, worker.stop, 30.0)

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    ]
    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        return JSONResponse(RequestError(f"{request.method} {request.url.path}: {getattr(exc, 'detail', 'not found')}",
                                         None, status).body(), status_code=status)

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found, 405: not_found})
    app.state.worker, app.state.stats = worker, stats
    return app
