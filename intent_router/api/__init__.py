"""The HTTP API: FastAPI routers over ``intent_router.service``; only HTTP concerns live here.

uvicorn --factory intent_router.api:create_app_from_env      # or: intent-router serve
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from .. import __version__
from ..model_folder import ModelLoadError
from ..service import (
    CleanedTextRefused,
    EmptiedText,
    NoAnchors,
    Service,
    ServiceSettings,
    UnknownIntents,
    UnknownModel,
    UnknownRouter,
)
from . import admin, auth, discovery, inference


class Metrics:
    """Prometheus counters and histograms of one app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "intent_router_requests", "HTTP requests", ["method", "path", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "intent_router_request_seconds",
            "HTTP request latency",
            ["method", "path"],
            buckets=(0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=self.registry,
        )
        self.routes = Counter(
            "intent_router_routes", "Routing decisions", ["router", "model", "reason"], registry=self.registry
        )
        self.passes = Counter("intent_router_inference_passes", "Forward passes run", registry=self.registry)
        self.pass_sizes = Histogram(
            "intent_router_inference_pass_texts",
            "Texts per forward pass (micro-batching combines requests)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 96),
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "intent_router_fallbacks", "Routing decisions that fell back", ["router", "model"], registry=self.registry
        )

    def inference_pass(self, texts: int) -> None:
        self.passes.inc()
        self.pass_sizes.observe(texts)

    def routed(self, router: str, model: str, reason: str) -> None:
        self.routes.labels(router, model, reason).inc()
        if reason != "confident":
            self.fallbacks.labels(router, model).inc()


def json_safe(value):
    """``value`` as strict JSON can carry it: NaN and infinities as text, lone surrogates escaped.

    A refused request is echoed in its 422; what made it invalid must not make the answer a 500.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


ECHO_CHARS, ECHO_ITEMS, ECHO_DEPTH = 200, 10, 4  # how much of a refused value a 422 echoes, how many errors


def brief(value, depth: int = 0):
    """A refused value as a 422 echoes it: long texts and lists cut, saying how long they were, and
    nesting below ``ECHO_DEPTH`` levels left out.

    A wrong-typed 5 MB field would otherwise come back whole in the error, and be logged with it; a
    body nested 500 deep (1 KB of brackets) would exhaust the recursion of what writes the answer.
    """
    if isinstance(value, str) and len(value) > ECHO_CHARS:
        return f"{value[:ECHO_CHARS]}... ({len(value):,} characters)"
    if isinstance(value, list | tuple | dict) and depth >= ECHO_DEPTH:
        return f"... ({len(value):,} {'keys' if isinstance(value, dict) else 'items'})"
    if isinstance(value, list | tuple):
        items = [brief(v, depth + 1) for v in value[:ECHO_ITEMS]]
        return items + [f"... ({len(value):,} items)"] if len(value) > ECHO_ITEMS else items
    if isinstance(value, dict):
        kept = list(value.items())[:ECHO_ITEMS]
        cut = {str(k)[:ECHO_CHARS]: brief(v, depth + 1) for k, v in kept}
        return cut | ({"...": f"{len(value):,} keys"} if len(value) > ECHO_ITEMS else {})
    return value


UPLOAD_OVERHEAD = 64 * 1024  # a multipart form's boundaries, headers and fields besides its files


def create_app(settings: ServiceSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.service = Service(settings, app.state.metrics.inference_pass)
        yield
        await app.state.service.close()

    app = FastAPI(title="intent-router", version=__version__, lifespan=lifespan)
    app.state.metrics = Metrics()
    app.include_router(inference.router)
    app.include_router(admin.router)
    app.include_router(discovery.router)

    @app.middleware("http")
    async def check_uploads_first(request: Request, call_next):
        """An upload's key and size are checked before its body is read: FastAPI reads (and spools to
        disk) a whole form before the endpoint's key check, so anyone could fill the disk."""
        if request.method == "POST" and request.url.path == "/v1/datasets":
            try:
                await auth.require("admin")(request, await auth.bearer(request))
            except HTTPException as error:
                return JSONResponse({"detail": error.detail}, error.status_code, headers=error.headers)
            limit = 2 * settings.max_upload_bytes + UPLOAD_OVERHEAD  # a training and a validation file
            length = request.headers.get("content-length", "")
            if not length.isdigit():
                return JSONResponse({"detail": "send the upload with a Content-Length header"}, 411)
            if int(length) > limit:
                detail = f"the upload is {int(length):,} bytes: more than two files of the upload limit allow"
                return JSONResponse({"detail": detail}, 413)
        return await call_next(request)

    @app.middleware("http")
    async def measure(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = route.path if route is not None else "unmatched"
        app.state.metrics.requests.labels(request.method, path, str(response.status_code)).inc()
        app.state.metrics.latency.labels(request.method, path).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        errors = [e | {"input": brief(e["input"])} if "input" in e else e for e in error.errors()]
        answer = {"detail": json_safe(jsonable_encoder(errors[:ECHO_ITEMS]))}
        if len(errors) > ECHO_ITEMS:
            answer["more_errors"] = len(errors) - ECHO_ITEMS  # 500 wrong items: the first ten say what is wrong
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        whole_body = any(tuple(e.get("loc", ())) == ("body",) for e in error.errors())
        if whole_body and not (content_type == "application/json" or content_type.endswith("+json")):
            # curl -d sends a form: FastAPI then reads no JSON, and pydantic says only "not a dictionary"
            answer["hint"] = (
                f"the body was sent as {content_type or 'no content type'}: send it as JSON, with the header "
                "Content-Type: application/json (curl: -H 'Content-Type: application/json', or --json)"
            )
        return JSONResponse(answer, status_code=422)

    @app.exception_handler(UnknownModel)
    async def unknown_model(request: Request, error: UnknownModel) -> JSONResponse:
        return JSONResponse({"detail": str(error), "available": error.available}, status_code=404)

    @app.exception_handler(UnknownRouter)
    async def unknown_router(request: Request, error: UnknownRouter) -> JSONResponse:
        return JSONResponse({"detail": str(error), "available": error.available}, status_code=404)

    @app.exception_handler(UnknownIntents)
    @app.exception_handler(NoAnchors)
    async def unroutable(request: Request, error: UnknownIntents | NoAnchors) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=422)

    @app.exception_handler(CleanedTextRefused)
    async def refused_once_cleaned(request: Request, error: CleanedTextRefused) -> JSONResponse:
        # which input and why, so a client can drop it and send the rest (the Rasa component does)
        reason = "emptied" if isinstance(error, EmptiedText) else "too_long"
        return JSONResponse({"detail": str(error), "input": error.index, "reason": reason}, status_code=422)

    @app.exception_handler(ModelLoadError)
    async def unloadable_model(request: Request, error: ModelLoadError) -> JSONResponse:
        # 503: the service works, this model does not until its folder is restored or it is retrained
        return JSONResponse({"detail": str(error), "model": error.path.name}, status_code=503)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz(request: Request) -> JSONResponse:
        try:
            request.app.state.service.registry.count_api_keys()
        except Exception as error:  # the database is what readiness depends on
            return JSONResponse({"status": "unavailable", "detail": str(error)}, status_code=503)
        return JSONResponse({"status": "ready", "models": request.app.state.service.available_models()})

    @app.get("/metrics", tags=["health"])
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def create_app_from_env() -> FastAPI:
    """The app with settings from ``INTENT_ROUTER_*`` environment variables (for uvicorn workers)."""
    supervisor = os.environ.get(SUPERVISOR_VARIABLE)
    if supervisor:
        stop_with_supervisor(int(supervisor))
    return create_app(ServiceSettings.from_env())


SUPERVISOR_VARIABLE = "INTENT_ROUTER_SUPERVISOR_PID"  # set by `serve --workers N` (N > 1) for its workers


def stop_with_supervisor(supervisor: int, poll_seconds: float = 1.0) -> None:
    """Stop this uvicorn worker (SIGTERM: a clean shutdown, pending store writes flushed) once the
    process that started it is gone. Killed, the supervisor cannot stop its workers, and orphans
    would keep the port, so a restart fails, and queue fine-tunes that no worker runs."""

    def watch() -> None:
        while os.getppid() == supervisor:
            time.sleep(poll_seconds)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()
