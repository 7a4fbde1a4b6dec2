"""The webhook's FastAPI application: the callout endpoint, health, readiness and metrics.

`create_app()` builds everything from the settings, so tests, benchmarks and
`zuora-sync webhook` (uvicorn, possibly several worker processes, each calling the factory)
get the same app. The group-commit writer starts and stops with the app's lifespan;
uvicorn finishes the requests in flight before the lifespan ends, so none of them is
dropped on shutdown.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from warehouse.db import make_engine
from webhook.auth import BasicAuth
from webhook.callout import CalloutReader
from webhook.metrics import WebhookMetrics
from webhook.receiver import CALLOUT_PATH, RETRY_AFTER_SECONDS, CalloutReceiver
from webhook.schema import CALLOUT_RESPONSES, SECURITY_SCHEMES, callout_operation_extra
from webhook.writer import InboxWriter, make_writer
from zuora_sync import logs
from zuora_sync.logs import fields
from zuora_sync.settings import ConfigError, Settings, get_settings

log = logging.getLogger("zuora_sync.webhook")

DESCRIPTION = """\
Receives Zuora callouts and records each one in the `callout_inbox` table, from which the
drain flow syncs the subscription. A 200 is only sent after the row is committed.
See docs/zuora_callouts.md for the contract."""


def check_settings(settings: Settings) -> BasicAuth | None:
    """The authenticator the settings call for; a `ConfigError` if credentials are missing
    outside dev mode (an open webhook would let anyone fill the inbox)."""
    if settings.CALLOUT_USERNAME is None or settings.CALLOUT_PASSWORD is None:
        if not settings.is_dev:
            raise ConfigError(
                "CALLOUT_USERNAME and CALLOUT_PASSWORD must be set to serve the webhook "
                f"(ZUORA_SYNC_ENV={settings.ZUORA_SYNC_ENV}); only ZUORA_SYNC_ENV=dev or test "
                "may run it without authentication"
            )
        return None
    return BasicAuth(settings.CALLOUT_USERNAME, settings.CALLOUT_PASSWORD)


class WebhookApp(FastAPI):
    """The FastAPI app, with the callout path answered before FastAPI's own machinery.

    Measured on a 2-core machine, FastAPI's per-request layers (error and telemetry
    middleware, routing, dependency solving) cost more than the whole callout receiver, and
    a plain FastAPI endpoint tops out below the webhook's target rate. So requests for the
    callout path go straight to the receiver, which handles its own errors; everything else
    (health, metrics, the OpenAPI document, 404s) is FastAPI as usual, and the callout
    route is still declared below, for the OpenAPI document and for mounting without this
    shortcut.
    """

    receiver: CalloutReceiver | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.receiver is not None and scope["type"] == "http" and scope["path"] == CALLOUT_PATH:
            await self.receiver(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


class _Delegate(Response):
    """A response that lets the receiver answer the request itself."""

    def __init__(self, receiver: CalloutReceiver) -> None:
        self.receiver = receiver
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.receiver(scope, receive, send)


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """Build the webhook app. `engine` defaults to one made from `DATABASE_URL`, which the
    app then also disposes of; a given engine stays the caller's."""
    settings = settings or get_settings()
    logs.configure(settings.LOG_LEVEL, settings.LOG_FORMAT)
    auth = check_settings(settings)
    owns_engine = engine is None
    db = engine if engine is not None else make_engine(settings.DATABASE_URL, pool_size=2)
    metrics = WebhookMetrics(db)
    writer = make_writer(db, on_batch=metrics.batch_size.observe)
    receiver = CalloutReceiver(
        reader=CalloutReader(settings.ZUORA_TRACKED_FIELDS),
        writer=writer,
        metrics=metrics,
        auth=auth,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Everything built so far (modules, the app, the schema) lives as long as the process:
        # keep the cyclic garbage collector from walking it again and again. A full
        # collection over it paused the loop for ~90 ms, a p99 of its own.
        gc.collect()
        gc.freeze()
        writer.start(asyncio.get_running_loop())
        log.info(
            "webhook.started",
            extra=fields(
                database=settings.database_url_masked,
                auth="basic" if auth else "none (dev mode)",
                multiprocess_metrics=metrics.multiprocess,
            ),
        )
        if auth is None:
            log.warning("webhook.unauthenticated", extra=fields(env=settings.ZUORA_SYNC_ENV))
        try:
            yield
        finally:
            await writer.stop()
            if owns_engine:
                db.dispose()
            log.info("webhook.stopped")

    app = WebhookApp(
        title="zuora-sync webhook",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        # FastAPI's built-in OpenTelemetry hooks; metrics here are Prometheus's.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.receiver = receiver
    app.state.writer = writer
    app.state.metrics = metrics
    app.state.engine = db

    @app.post(
        CALLOUT_PATH,
        operation_id="sync_subscription",
        summary="Record a Zuora callout in the inbox",
        description="Zuora calls this when a subscription changes. The callout is validated "
        "and stored in `callout_inbox` (deduplicated by `Zuora-Notification-Id`); the answer "
        "comes after the commit. No call to Zuora happens here.",
        tags=["callouts"],
        responses=CALLOUT_RESPONSES,
        openapi_extra=callout_operation_extra(settings.ZUORA_TRACKED_FIELDS),
        response_class=JSONResponse,
    )
    async def sync_subscription(request: Request) -> Response:
        # Normally `WebhookApp` answers before routing gets here; this keeps the route
        # working (and identical) where the app is mounted under another one.
        return _Delegate(receiver)

    @app.get("/healthz", tags=["operations"], summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="The inbox table answers the writer, and the writer runs",
        responses={503: {"description": "not ready; the reason is in the body"}},
    )
    async def readyz() -> JSONResponse:
        problem = await _readiness_problem(writer)
        if problem:
            return JSONResponse(
                {"status": "unavailable", "reason": problem},
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    def prometheus_metrics() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    _install_error_handlers(app)
    app.openapi = _openapi_with_security(app)  # type: ignore[method-assign]
    return app


async def _readiness_problem(writer: InboxWriter) -> str | None:
    if not writer.alive:
        return "the inbox writer is not running"
    try:
        await asyncio.wait_for(writer.ping(), timeout=5)
    except Exception as exc:
        log.warning("webhook.not_ready", extra=fields(error=type(exc).__name__))
        return f"the inbox database is unreachable or not migrated ({type(exc).__name__})"
    return None


def _failure(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"success": False, "reasons": [{"code": code, "message": message}]},
        status_code=status,
        headers=headers,
    )


def _install_error_handlers(app: FastAPI) -> None:
    """Every error in the same shape as the callout's, and never a 500 with a traceback."""

    async def http_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        response = _failure(exc.status_code, code, str(exc.detail))
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    async def validation_error(_request: Request, exc: Exception) -> Response:
        return _failure(422, "invalid_request", str(exc)[:500])

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error(
            "webhook.unexpected_error",
            exc_info=exc,
            extra=fields(path=request.url.path, method=request.method),
        )
        return _failure(
            503,
            "internal_error",
            "unexpected error; retry later",
            {"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)


def _openapi_with_security(app: FastAPI) -> Callable[[], dict[str, Any]]:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi
