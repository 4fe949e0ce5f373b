"""The ASGI app: KServe v2 REST endpoints over the model workers, plus /metrics.

``create_app(models, settings)`` returns a Starlette app whose lifespan starts one worker per model (each loads and
warms its engine on its own thread) and, at shutdown, lets every worker finish what it has queued. The server is
ready (``/v2/health/ready`` 200) once every model is warm.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mace.errors import InputError
from mace.serving.batcher import BatchSettings, ModelConfig, ModelWorker, QueueFull
from mace.serving.metrics import ServerMetrics
from mace.serving.protocol import (
    HEADER_LENGTH,
    ProtocolError,
    build_infer_response,
    check_inputs,
    check_outputs,
    parse_infer_request,
)
from mace.version import __version__

log = logging.getLogger("mace.serving")

SERVER_NAME = "mace"
EXTENSIONS = ["binary_tensor_data"]


@dataclass(frozen=True)
class ServeSettings:
    batch: BatchSettings = field(default_factory=BatchSettings)
    timeout_s: float = 30.0
    max_body_bytes: int = 64 << 20
    retry_after_s: int = 1
    process_start: float | None = None  # time.time() when the process started: start-to-ready is measured from it
    # the app's startup returns only once every model is warm or failed to load: a Ray Serve replica gets requests
    # only after its startup (and its first health check, check_loaded), so it is warm on its first one
    warm_before_serving: bool = False
    replica: str | None = None  # sent as the Mace-Replica header of every response (which replica answered)


def _error(message: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class _Server:
    def __init__(self, models: Sequence[ModelConfig], settings: ServeSettings) -> None:
        names = [m.name for m in models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"model name {duplicates[0]!r} given twice (name them with MODEL.mace:NAME)")
        self.settings = settings
        self.metrics = ServerMetrics()
        self.workers = {m.name: ModelWorker(m, settings.batch, self.metrics) for m in models}
        self.ready_seconds: float | None = None

    @property
    def ready(self) -> bool:
        return all(w.ready.is_set() for w in self.workers.values())

    def start(self) -> None:
        for worker in self.workers.values():
            self.metrics.model_ready.labels(worker.name).set(0)
            self.metrics.queue_depth.labels(worker.name).set(0)
            worker.start()
        threading.Thread(target=self._watch_ready, name="mace-serve-ready", daemon=True).start()

    def _watch_ready(self) -> None:
        self.wait_loaded()
        try:
            self.check_loaded()
        except RuntimeError as exc:
            log.error("not ready: %s", exc)
            return
        start = self.settings.process_start
        self.ready_seconds = time.time() - start if start is not None else None
        if self.ready_seconds is not None:
            self.metrics.start_to_ready.set(self.ready_seconds)
        source = sum(int(w.engine.stats.get("programs_from_source", 0) or 0) for w in self.workers.values())
        log.warning("ready: %d model(s) warm%s, %d program(s) compiled from source", len(self.workers),
                    f" {self.ready_seconds:.2f} s after process start" if self.ready_seconds is not None else "",
                    source)

    def stop(self) -> None:
        for worker in self.workers.values():
            worker.stop()

    def wait_loaded(self) -> None:
        """Block until every model has loaded or failed to (check_loaded tells which)."""
        for worker in self.workers.values():
            worker.done.wait()

    def check_loaded(self) -> None:
        failed = [f"{w.name}: {w.error}" for w in self.workers.values() if w.error]
        if failed:
            raise RuntimeError(f"model(s) failed to load: {'; '.join(failed)}")

    def worker(self, request: Request) -> ModelWorker:
        name = request.path_params["model"]
        worker = self.workers.get(name)
        if worker is None:
            raise ProtocolError(f"model {name!r}: no such model (serving {sorted(self.workers)})", status=404)
        return worker

    # -- endpoints --------------------------------------------------------------------------------------------------
    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready_endpoint(self, request: Request) -> Response:
        return JSONResponse({"ready": self.ready}, status_code=200 if self.ready else 503)

    async def server_metadata(self, request: Request) -> Response:
        return JSONResponse({"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS})

    async def model_metadata(self, request: Request) -> Response:
        worker = self.worker(request)
        if worker.info is None:
            return _error(f"model {worker.name!r} is not ready: {worker.error or 'still loading'}", 503)
        return JSONResponse({"name": worker.name, "versions": ["1"], "platform": "mace",
                             "inputs": [t.to_json() for t in worker.info.inputs],
                             "outputs": [t.to_json() for t in worker.info.outputs]})

    async def model_ready(self, request: Request) -> Response:
        worker = self.worker(request)
        ready = worker.ready.is_set()
        return JSONResponse({"name": worker.name, "ready": ready}, status_code=200 if ready else 503)

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def _body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            raise ProtocolError(f"header Content-Length: {int(declared)} bytes, more than the {limit} allowed "
                                "(--max-body-bytes)")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ProtocolError(f"request body: more than the {limit} bytes allowed (--max-body-bytes)")
        return bytes(body)

    async def infer(self, request: Request) -> Response:
        start = time.perf_counter()
        name = request.path_params["model"]
        label = name if name in self.workers else "(unknown)"
        response = await self._infer(request)
        self.metrics.requests.labels(label, str(response.status_code)).inc()
        if label != "(unknown)":
            self.metrics.latency.labels(label).observe(time.perf_counter() - start)
        return response

    async def _infer(self, request: Request) -> Response:
        try:
            worker = self.worker(request)
            if not worker.ready.is_set() or worker.info is None:
                return _error(f"model {worker.name!r} is not ready: {worker.error or 'still loading'}", 503,
                              {"Retry-After": str(self.settings.retry_after_s)})
            body = await self._body(request)
            parsed = parse_infer_request(body, request.headers.get(HEADER_LENGTH))
            check_inputs(parsed, worker.info.inputs, worker.info.admits)
            check_outputs(parsed, [t.name for t in worker.info.outputs])
        except ProtocolError as exc:
            return _error(str(exc), exc.status)
        try:
            future = worker.submit(parsed.inputs)
        except QueueFull as exc:
            return _error(f"{exc}: retry later", 503, {"Retry-After": str(self.settings.retry_after_s)})
        try:
            results = await asyncio.wait_for(asyncio.wrap_future(future), self.settings.timeout_s)
        except asyncio.TimeoutError:
            return _error(f"model {worker.name!r}: no answer within {self.settings.timeout_s:g} s (--timeout-s)", 504)
        except InputError as exc:
            return _error(f"model {worker.name!r}: {exc}", 400)
        except Exception as exc:
            return _error(f"model {worker.name!r}: the run failed: {type(exc).__name__}: {exc}", 500)
        try:
            payload, header_length = build_infer_response(worker.name, parsed, results)
        except ProtocolError as exc:
            return _error(str(exc), exc.status)
        if header_length is None:
            return Response(payload, media_type="application/json")
        return Response(payload, media_type="application/octet-stream",
                        headers={HEADER_LENGTH: str(header_length)})


async def _http_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ProtocolError):
        return _error(str(exc), exc.status)
    if isinstance(exc, HTTPException):
        return _error(f"{request.method} {request.url.path}: {exc.detail}", exc.status_code)
    log.exception("internal error on %s %s", request.method, request.url.path)
    return _error(f"internal error: {type(exc).__name__}: {exc}", 500)


class _ReplicaHeader:
    """Adds ``Mace-Replica: <value>`` to every HTTP response (pure ASGI: the body streams through untouched)."""

    def __init__(self, app: ASGIApp, value: str) -> None:
        self.app = app
        self.header = (b"mace-replica", value.encode("latin-1", "replace"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, send_with_header)


def create_app(models: Sequence[ModelConfig], settings: ServeSettings | None = None) -> Starlette:
    """The KServe v2 app over ``models``; its lifespan starts and stops the model workers."""
    server = _Server(models, settings or ServeSettings())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        server.start()
        if server.settings.warm_before_serving:
            await asyncio.get_running_loop().run_in_executor(None, server.wait_loaded)
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, server.stop)

    routes = [
        Route("/v2/health/live", server.live, methods=["GET"]),
        Route("/v2/health/ready", server.ready_endpoint, methods=["GET"]),
        Route("/v2", server.server_metadata, methods=["GET"]),
        Route("/v2/models/{model}", server.model_metadata, methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}", server.model_metadata, methods=["GET"]),
        Route("/v2/models/{model}/ready", server.model_ready, methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}/ready", server.model_ready, methods=["GET"]),
        Route("/v2/models/{model}/infer", server.infer, methods=["POST"]),
        Route("/v2/models/{model}/versions/{version}/infer", server.infer, methods=["POST"]),
        Route("/metrics", server.metrics_endpoint, methods=["GET"]),
    ]
    middleware = [] if server.settings.replica is None else [
        Middleware(_ReplicaHeader, value=server.settings.replica)]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware,
                    exception_handlers={ProtocolError: _http_error, HTTPException: _http_error,
                                        Exception: _http_error})
    app.state.server = server
    return app
