"""The routes of ``edge serve`` on the request helpers of :mod:`indvision.edge.service_core`.

Imports FastAPI at its top: :func:`indvision.edge.service.create_app` imports this module when
it builds an app, so an edge install without the ``[serve]`` extra never needs it.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartParser
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import Receive, Scope, Send

from indvision.edge.service_core import (
    Limits,
    PixelBudget,
    RequestError,
    ServiceState,
    check_token,
    live_page,
    model_input,
    model_summary,
    predict_inputs,
    predict_object,
    recent_view,
)

OPEN_PATHS = {"/healthz", "/"}  # no token: a liveness probe, and the page's static HTML
IMAGE_TYPES = ("image/", "application/octet-stream")


def host_checker(hosts: list[str]) -> Any:
    """``await check(scope)``: whether the request's ``Host`` is one of ``hosts``, decided by
    Starlette's :class:`TrustedHostMiddleware` itself (its matching, wildcards included); its
    plain-text 400 is dropped, so that the guard answers in JSON and counts the refusal."""
    async def allowed(scope: Scope, receive: Receive, send: Send) -> None:
        scope["indvision.host_allowed"] = True

    async def drop(message: Any) -> None:
        return None

    middleware = TrustedHostMiddleware(allowed, allowed_hosts=hosts, www_redirect=False)

    async def check(scope: Scope) -> bool:
        probe = {key: value for key, value in scope.items() if key != "indvision.host_allowed"}
        await middleware(probe, _no_body, drop)
        return bool(probe.get("indvision.host_allowed"))
    return check


async def _no_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def build(state: ServiceState) -> FastAPI:
    """The application: the routes below behind one guard (host, token, body size, timing)."""
    app = FastAPI(title="indvision", docs_url=None, redoc_url=None, openapi_url=None)
    _add_guard(app, state)
    _add_predict_routes(app, state)
    _add_status_routes(app, state)
    app.state.paths = {route.path for route in app.routes}
    return app


def _add_guard(app: FastAPI, state: ServiceState) -> None:
    """The middleware around every request and the handlers that turn refusals into JSON."""
    host_allowed = host_checker(state.hosts) if state.hosts is not None else None
    limits = state.limits

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        """Host, token, body size and timing around every request; every refusal is JSON
        and counted; no traceback ever leaves."""
        started = time.perf_counter()
        try:
            if host_allowed is not None and not await host_allowed(request.scope):
                raise RequestError(400, f"Host header {request.headers.get('host')!r} is not "
                                        "one this service answers to (--allowed-host)")
            if request.url.path not in OPEN_PATHS:
                check_token(request.headers.get("authorization"), state.token)
            length = request.headers.get("content-length")
            if length is not None and (not length.isdigit()
                                       or int(length) > limits.max_body_bytes):
                raise RequestError(413, f"body of {length} bytes, over the limit of "
                                        f"{limits.max_body_bytes}")
            response = await call_next(request)
        except RequestError as exc:
            response = _error(exc.status, exc.reason)
        except Exception:  # the one place that turns any failure into JSON: logged here
            traceback.print_exc(file=sys.stderr)
            response = _error(500, "internal error (see the service's log)")
        path = request.url.path if request.url.path in app.state.paths else "other"
        state.counters.observe(path, response.status_code, time.perf_counter() - started)
        return response

    @app.exception_handler(RequestError)
    async def refused(request: Request, exc: RequestError) -> JSONResponse:
        return _error(exc.status, exc.reason)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))


def _add_predict_routes(app: FastAPI, state: ServiceState) -> None:
    """``POST /predict`` (an image body or multipart files) and ``POST /predict/object``."""
    slot, limits, recent, counters = state.slot, state.limits, state.recent, state.counters

    @app.post("/predict")
    async def predict(request: Request) -> Any:
        classifier = slot.get()  # one model for the whole request, even during a swap
        named = await _images(request, limits, classifier)
        results, batch = await run_in_threadpool(predict_inputs, classifier,
                                                 [array for _, array in named])
        counters.decided([r["label"] for r in results])
        for (name, _), result, prepared in zip(named, results, batch, strict=True):
            recent.add(classifier, name, prepared, result)
        if request.headers.get("content-type", "").startswith("multipart/"):
            return {"results": [{"filename": name, **result}
                                for (name, _), result in zip(named, results, strict=True)]}
        return results[0]

    @app.post("/predict/object")
    async def predict_one_object(request: Request) -> Any:
        classifier = slot.get()
        if not request.headers.get("content-type", "").startswith("multipart/"):
            raise RequestError(415, "send the views of one object as multipart/form-data "
                                    "files")
        named = await _images(request, limits, classifier)
        result, batch = await run_in_threadpool(predict_object, classifier,
                                                [n for n, _ in named], [a for _, a in named])
        counters.decided([result["label"]])
        for (name, _), prepared in zip(named, batch, strict=True):
            recent.add(classifier, name, prepared, result)
        return result


def _add_status_routes(app: FastAPI, state: ServiceState) -> None:
    """``GET /model``, ``/healthz``, ``/metrics``, ``/recent`` and the live page ``/``."""
    slot, follower = state.slot, state.follower

    @app.get("/model")
    async def model() -> Any:
        return await run_in_threadpool(model_summary, slot)

    @app.get("/healthz")
    async def healthz() -> Any:
        if follower is None:
            return {"status": "ok"}
        return {"status": "ok", "follower": follower.state()}

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        classifier = slot.get()
        labels = {"run_id": (classifier.meta.get("provenance") or {}).get("run_id"),
                  "model": classifier.model_file}
        served = follower.state() if follower is not None else {
            "swaps": slot.swaps, "refusals": slot.refusals}
        return PlainTextResponse(state.counters.render(labels, served),
                                 media_type="text/plain; version=0.0.4")

    @app.get("/recent")
    async def recent_decisions() -> Any:
        return {"decisions": await run_in_threadpool(recent_view, slot.get(), state.recent)}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(live_page())


def _error(status: int, reason: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


async def _images(request: Request, limits: Limits, classifier: Any
                  ) -> list[tuple[str, Any]]:
    """(name, model input) pairs from a raw image body or multipart files, each checked and
    decoded in the thread pool, one at a time, within the request's pixel budget."""
    kind = request.headers.get("content-type", "")
    budget = PixelBudget(limits)
    if kind.startswith("multipart/form-data"):
        parser = MultiPartParser(request.headers, _stream(request, limits),
                                 max_files=limits.max_files, max_fields=limits.max_files,
                                 max_part_size=limits.max_body_bytes)
        try:
            form = await parser.parse()
        except RequestError:
            raise
        except Exception as exc:  # starlette's parser errors vary (HTTPException, its own)
            raise RequestError(422, f"cannot read the multipart body ({exc})") from None
        try:
            files = [value for _, value in form.multi_items() if hasattr(value, "read")]
            if not files:
                raise RequestError(422, "the multipart body holds no file")
            named = []
            for index, upload in enumerate(files):
                name = upload.filename or f"file {index + 1}"
                named.append((name, await run_in_threadpool(
                    model_input, classifier, await upload.read(), name, limits, budget)))
            return named
        finally:
            await form.close()
    if not kind.startswith(IMAGE_TYPES):
        raise RequestError(415, f"content type {kind or 'none'!r} is not an image: send an "
                                "image body (image/*) or multipart/form-data files")
    body = b"".join([chunk async for chunk in _stream(request, limits)])
    return [("body", await run_in_threadpool(model_input, classifier, body, "body", limits,
                                             budget))]


async def _stream(request: Request, limits: Limits) -> AsyncIterator[bytes]:
    """The body's chunks, refused (413) as soon as they pass the limit — an upload without
    Content-Length (chunked, multipart) too."""
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_body_bytes:
            raise RequestError(413, f"body over the limit of {limits.max_body_bytes} bytes")
        yield chunk
