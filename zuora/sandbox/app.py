"""The sandbox's HTTP surface: Zuora's endpoints, its limits and faults, and `/_sandbox/`.

`create_app(config)` builds one simulated tenant. Every Zuora endpoint except
`POST /oauth/token` needs a bearer token. A pure ASGI gate in front of the routes answers
401s, applies the rate and concurrency limits (429 with Zuora's body and headers), spends
injected latency inside the concurrency slot (so throughput is bounded by limit / latency,
as at Zuora), injects 5xx and timeouts, adds Zuora's response headers and counts requests.
The admin surface (`/_sandbox/...`) needs no token and is never faulted or limited; neither
is the result-file download, which stands for Zuora's pre-signed S3 URLs.
"""

from __future__ import annotations

import asyncio
import gzip
import random
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, unquote

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response, StreamingResponse

from zuora.sandbox.config import Faults, SandboxConfig
from zuora.sandbox.dataquery import QueryRefused
from zuora.sandbox.events import ValidationError
from zuora.sandbox.store import StoreError
from zuora.sandbox.tenant import RUNTIME_FIELDS, Tenant
from zuora.sandbox.zoql import MAX_BATCH, ZoqlError
from zuora.sandbox.zoql import parse as parse_zoql

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

WWW_AUTHENTICATE = "Basic realm=Zuora API, ZSession realm=Zuora API, Bearer realm=Zuora API"
_CONCURRENCY_BODY = {
    "code": "REQUEST_EXCEEDED_LIMIT",
    "message": "Your total number of concurrent requests have exceeded the limit allowed by "
    "the system. Please resubmit your request later.",
}
_RATE_BODY = {
    "code": "REQUEST_EXCEEDED_RATE",
    "message": "Your request rate has exceeded the limit allowed by the system. Please "
    "resubmit your request later.",
}
_LABELS = [
    (
        re.compile(r"^/v1/subscriptions/[^/]+/versions/[^/]+/customFields$"),
        "/v1/subscriptions/{number}/versions/{version}/customFields",
    ),
    (
        re.compile(r"^/v1/subscriptions/[^/]+/versions/[^/]+$"),
        "/v1/subscriptions/{key}/versions/{version}",
    ),
    (re.compile(r"^/v1/subscriptions/[^/]+/cancel$"), "/v1/subscriptions/{key}/cancel"),
    (re.compile(r"^/v1/subscriptions/[^/]+$"), "/v1/subscriptions/{key}"),
    (re.compile(r"^/query/jobs/[^/]+$"), "/query/jobs/{id}"),
    (re.compile(r"^/events/event-triggers/[^/]+$"), "/events/event-triggers/{id}"),
    (
        re.compile(r"^/notifications/notification-definitions/[^/]+$"),
        "/notifications/notification-definitions/{id}",
    ),
]


_GET_LABEL = "GET /v1/subscriptions/{key}"


def endpoint_label(method: str, path: str) -> str:
    """`METHOD /route/{param}` for counters."""
    for pattern, label in _LABELS:
        if pattern.match(path):
            return f"{method} {label}"
    return f"{method} {path}"


def dumps(body: Any) -> bytes:
    return orjson.dumps(body)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json", headers=headers)


def process_id() -> str:
    return secrets.token_hex(8).upper()


def rest_error(request_id: str, status: int, code: str, message: str) -> Response:
    """Zuora's REST error body (`success: false` with reasons)."""
    return json_response(
        {
            "success": False,
            "processId": process_id(),
            "reasons": [{"code": code, "message": message}],
            "requestId": request_id,
        },
        status,
    )


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", uuid.uuid4()))


# --- the gate -------------------------------------------------------------------------------


class Gate:
    """Auth, limits, faults, headers and counters for every Zuora endpoint."""

    def __init__(self, app: ASGIApp, tenant: Tenant) -> None:
        self.app = app
        self.tenant = tenant

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith(("/_sandbox", "/query-results/", "/docs", "/openapi.json")):
            await self.app(scope, receive, send)
            return
        tenant = self.tenant
        request_id = str(uuid.uuid4())
        scope.setdefault("state", {})["request_id"] = request_id
        method: str = scope["method"]
        label = endpoint_label(method, path)
        track_id = None
        auth = None
        gzip_ok = False
        for name, value in scope["headers"]:
            if name == b"authorization":
                auth = value.decode("latin-1")
            elif name == b"zuora-track-id":
                track_id = value.decode("latin-1")[:64]
            elif name == b"accept-encoding":
                gzip_ok = b"gzip" in value.lower()
        gzip_ok = gzip_ok and tenant.config.gzip_responses
        is_v1 = path.startswith("/v1/")
        config = tenant.config

        def decorate(headers: list[tuple[bytes, bytes]], rate: tuple[int, int] | None) -> None:
            headers.append((b"zuora-request-id", request_id.encode()))
            if track_id is not None:
                headers.append((b"zuora-track-id", track_id.encode("latin-1")))
            if rate is not None and config.rate_limit_per_window:
                remaining, reset = rate
                limit = config.rate_limit_per_window
                window = config.rate_limit_window_s
                headers.append((b"ratelimit-limit", f"{limit}, {limit};w={window}".encode()))
                headers.append((b"ratelimit-remaining", str(remaining).encode()))
                headers.append((b"ratelimit-reset", str(reset).encode()))
            if is_v1:
                remaining_slots = max(0, config.concurrency_limit - tenant.inflight)
                headers.append((b"concurrency-limit-type", config.concurrency_limit_type.encode()))
                headers.append((b"concurrency-limit-limit", str(config.concurrency_limit).encode()))
                headers.append((b"concurrency-limit-remaining", str(remaining_slots).encode()))

        async def reply(
            status: int,
            body: Any,
            rate: tuple[int, int] | None,
            extra: list[tuple[bytes, bytes]] | None = None,
        ) -> None:
            payload = dumps(body)
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ]
            headers.extend(extra or [])
            decorate(headers, rate)
            tenant.requests[f"{label} {status}"] += 1
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": payload})

        if path == "/oauth/token":
            await self._forward(scope, receive, send, label, decorate, None, False)
            return

        if auth is None or not auth.startswith("Bearer ") or not tenant.token_valid(auth[7:]):
            await reply(
                401,
                {"message": "Authentication error"},
                None,
                [(b"www-authenticate", WWW_AUTHENTICATE.encode())],
            )
            return

        allowed, remaining, reset = tenant.rate_check()
        rate = (remaining, reset)
        if not allowed:
            tenant.count("throttled_429")
            tenant.count("throttled_rate")
            await reply(429, _RATE_BODY, rate, [(b"retry-after", str(reset).encode())])
            return
        if tenant.inflight >= config.concurrency_limit:
            tenant.count("throttled_429")
            tenant.count("throttled_concurrency")
            await reply(
                429,
                _CONCURRENCY_BODY,
                rate,
                [(b"retry-after", str(config.concurrency_retry_after_s).encode())],
            )
            return
        tenant.inflight += 1
        tenant.peak = max(tenant.peak, tenant.inflight)
        try:
            faults = config.faults
            faulted = not faults.paths or path.startswith(tuple(faults.paths))
            if faulted:
                delay = tenant.fault_delay(faults)
                if delay:
                    await asyncio.sleep(delay)
                if faults.timeout_rate and random.random() < faults.timeout_rate:
                    tenant.count("timeouts_injected")
                    await asyncio.sleep(faults.timeout_hold_s)
                    await reply(504, _error_body(request_id, "50000061", "Gateway timeout"), rate)
                    return
                if faults.error_rate and random.random() < faults.error_rate:
                    tenant.count("faults_injected")
                    fault_status = random.choice(faults.error_statuses)
                    await reply(
                        fault_status,
                        _fault_body(fault_status, request_id),
                        rate,
                        [(b"retry-after", b"1")] if fault_status == 503 else None,
                    )
                    return
            if method == "GET" and label == _GET_LABEL:
                # The hot path of every sync: served without the router's overhead.
                status, payload = self.get_subscription(
                    path[len("/v1/subscriptions/") :], request_id
                )
                headers = [(b"content-type", b"application/json")]
                if gzip_ok and len(payload) > GZIP_MIN_BYTES:
                    payload = gzip.compress(payload, compresslevel=GZIP_LEVEL)
                    headers.append((b"content-encoding", b"gzip"))
                headers.append((b"content-length", str(len(payload)).encode()))
                decorate(headers, rate)
                tenant.requests[f"{label} {status}"] += 1
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": payload})
                return
            await self._forward(scope, receive, send, label, decorate, rate, gzip_ok)
        finally:
            tenant.inflight -= 1

    def get_subscription(self, raw_key: str, request_id: str) -> tuple[int, bytes]:
        """`GET /v1/subscriptions/{key}`: the latest version, by number or any version id."""
        key = unquote(raw_key)
        store = self.tenant.store
        try:
            row = store.resolve(key, self.tenant.config.old_id_returns_latest)
        except StoreError as exc:
            return exc.status, dumps(_error_body(request_id, exc.code, exc.message))
        return 200, store.render_bytes(row)

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        label: str,
        decorate: Callable[[list[tuple[bytes, bytes]], tuple[int, int] | None], None],
        rate: tuple[int, int] | None,
        gzip_ok: bool,
    ) -> None:
        tenant = self.tenant
        start: Message | None = None
        chunks: list[bytes] = []

        async def wrapped(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                decorate(headers, rate)
                message["headers"] = headers
                tenant.requests[f"{label} {message['status']}"] += 1
                if gzip_ok:
                    start = message  # held until the body is known (Zuora: gzip > 1000 B)
                    return
            elif start is not None and message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                body = _gzip_body(start, b"".join(chunks))
                await send(start)
                message = {"type": "http.response.body", "body": body}
            await send(message)

        await self.app(scope, receive, wrapped)


GZIP_MIN_BYTES = 1000
GZIP_LEVEL = 1


def _gzip_body(start: Message, body: bytes) -> bytes:
    """Compress `body` when it is big enough, fixing the held response start's headers."""
    headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
    if len(body) > GZIP_MIN_BYTES:
        body = gzip.compress(body, compresslevel=GZIP_LEVEL)
        headers.append((b"content-encoding", b"gzip"))
        headers.append((b"vary", b"Accept-Encoding"))
    headers.append((b"content-length", str(len(body)).encode()))
    start["headers"] = headers
    return body


def _error_body(request_id: str, code: str, message: str) -> dict[str, Any]:
    return {
        "success": False,
        "processId": process_id(),
        "reasons": [{"code": code, "message": message}],
        "requestId": request_id,
    }


def _fault_body(status: int, request_id: str) -> dict[str, Any]:
    if status == 500:
        # Zuora's documented 500 example, exactly.
        return {"reasons": [{"code": "SystemError", "message": "internal server error"}]}
    message = "Bad gateway" if status == 502 else "Service temporarily unavailable, retry later"
    return _error_body(request_id, "50000061", message)


# --- the app ----------------------------------------------------------------------------------


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return {}
    return orjson.loads(raw)


def create_app(config: SandboxConfig) -> FastAPI:
    """A FastAPI app simulating one Zuora tenant (see the module docstring)."""
    tenant = Tenant(config)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        tenant.dataquery.warm_up()
        yield
        await tenant.close()

    app = FastAPI(
        title="Zuora sandbox",
        description="A simulated Zuora tenant for local runs, tests and benchmarks.",
        lifespan=lifespan,
    )
    app.state.tenant = tenant
    _oauth_routes(app, tenant)
    _subscription_routes(app, tenant)
    _zoql_routes(app, tenant)
    _dataquery_routes(app, tenant)
    _event_routes(app, tenant)
    from zuora.sandbox.admin_routes import admin_routes

    admin_routes(app, tenant)
    app.add_middleware(Gate, tenant=tenant)
    return app


def _oauth_routes(app: FastAPI, tenant: Tenant) -> None:
    @app.post("/oauth/token")
    async def token(request: Request) -> Response:
        """Client credentials grant, form encoded: 1 h bearer tokens."""
        raw = (await request.body()).decode("utf-8", "replace")
        form = {k: v[0] for k, v in parse_qs(raw).items()}
        if form.get("grant_type") != "client_credentials":
            return json_response(
                {"code": 400, "message": "grant_type must be client_credentials"}, 400
            )
        if not (
            secrets.compare_digest(form.get("client_id", ""), tenant.config.client_id)
            and secrets.compare_digest(form.get("client_secret", ""), tenant.config.client_secret)
        ):
            return json_response(
                {"message": "Authentication error"}, 401, {"WWW-Authenticate": WWW_AUTHENTICATE}
            )
        access, expires_in = tenant.issue_token()
        return json_response(
            {
                "access_token": access,
                "token_type": "bearer",
                "expires_in": expires_in,
                "scope": tenant.scope(),
                "jti": uuid.uuid4().hex,
            }
        )


def _subscription_routes(app: FastAPI, tenant: Tenant) -> None:
    store = tenant.store

    def failure(request: Request, exc: StoreError) -> Response:
        return rest_error(request_id_of(request), exc.status, exc.code, exc.message)

    @app.get("/v1/subscriptions/{key}")
    async def get_subscription(key: str, request: Request) -> Response:
        """The latest version, by number or by the id of any version."""
        try:
            row = store.resolve(key, tenant.config.old_id_returns_latest)
        except StoreError as exc:
            return failure(request, exc)
        return Response(store.render_bytes(row), media_type="application/json")

    @app.get("/v1/subscriptions/{key}/versions/{version}")
    async def get_version(key: str, version: str, request: Request) -> Response:
        try:
            wanted = int(version)
        except ValueError:
            return rest_error(request_id_of(request), 400, "50000020", f"Invalid version {version}")
        rows = [r for r in store.versions(key) if r["version"] == wanted]
        if not rows:
            return rest_error(
                request_id_of(request),
                404,
                "50000040",
                f"The subscription {key} with version {version} is invalid.",
            )
        return Response(dumps(store.render(rows[0])), media_type="application/json")

    async def body_or_error(request: Request) -> Any:
        try:
            body = await _json_body(request)
        except orjson.JSONDecodeError:
            return rest_error(request_id_of(request), 400, "50000090", "Malformed JSON body")
        if not isinstance(body, dict):
            return rest_error(
                request_id_of(request), 400, "50000090", "The body must be a JSON object"
            )
        return body

    @app.put("/v1/subscriptions/{key}")
    async def amend(key: str, request: Request) -> Response:
        """Legacy 'Update a subscription': a new version (new id, version + 1)."""
        body = await body_or_error(request)
        if isinstance(body, Response):
            return body
        try:
            changes = store.amend(key, body)
        except StoreError as exc:
            return failure(request, exc)
        tenant.fire(changes)
        return json_response(
            {
                "success": True,
                "subscriptionId": changes.subscription_id,
                "totalDeltaMrr": changes.delta_mrr,
                "totalDeltaTcv": changes.delta_tcv,
            }
        )

    @app.put("/v1/subscriptions/{key}/cancel")
    async def cancel(key: str, request: Request) -> Response:
        body = await body_or_error(request)
        if isinstance(body, Response):
            return body
        try:
            changes = store.cancel(key, body)
        except StoreError as exc:
            return failure(request, exc)
        tenant.fire(changes)
        latest = store.latest(changes.subscription_number) or {}
        return json_response(
            {
                "success": True,
                "subscriptionId": changes.subscription_id,
                "cancelledDate": latest.get("cancelleddate"),
                "totalDeltaMrr": changes.delta_mrr,
                "totalDeltaTcv": changes.delta_tcv,
            }
        )

    @app.put("/v1/subscriptions/{key}/versions/{version}/customFields")
    async def custom_fields(key: str, version: str, request: Request) -> Response:
        """Edit custom fields of one version in place (same id, same version)."""
        body = await body_or_error(request)
        if isinstance(body, Response):
            return body
        fields = body.get("customFields")
        if not isinstance(fields, dict):
            return rest_error(
                request_id_of(request),
                400,
                "50000022",
                "customFields is required: an object of custom field values",
            )
        try:
            changes = store.edit_custom_fields(
                key,
                int(version),
                fields,
                touch_updated=tenant.config.custom_field_edit_touches_updated_date,
            )
        except ValueError:
            return rest_error(request_id_of(request), 400, "50000020", "Invalid version")
        except StoreError as exc:
            return failure(request, exc)
        tenant.fire(changes)
        return json_response({"success": True})


def _zoql_routes(app: FastAPI, tenant: Tenant) -> None:
    def batch_size(body: dict[str, Any]) -> int:
        conf = body.get("conf") or {}
        size = conf.get("batchSize", MAX_BATCH) if isinstance(conf, dict) else MAX_BATCH
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ZoqlError("INVALID_VALUE", "conf.batchSize must be an integer from 1 to 2000")
        return min(size, MAX_BATCH)

    async def read(request: Request) -> dict[str, Any]:
        try:
            body = await _json_body(request)
        except orjson.JSONDecodeError:
            raise ZoqlError("MALFORMED_QUERY", "Malformed JSON body") from None
        if not isinstance(body, dict):
            raise ZoqlError("MALFORMED_QUERY", "The body must be a JSON object")
        return body

    @app.post("/v1/action/query")
    async def query(request: Request) -> Response:
        try:
            body = await read(request)
            parsed = parse_zoql(
                str(body.get("queryString") or ""),
                tenant.store.tables,
                lowercase_keywords=tenant.config.zoql_lowercase_keywords,
                tz=tenant.tz,
            )
            return json_response(tenant.zoql.query(parsed, batch_size(body)))
        except ZoqlError as exc:
            return json_response(exc.body(), 400)

    @app.post("/v1/action/queryMore")
    async def query_more(request: Request) -> Response:
        try:
            body = await read(request)
            locator = body.get("queryLocator")
            if not isinstance(locator, str):
                raise ZoqlError("INVALID_QUERY_LOCATOR", "queryLocator is required")
            return json_response(tenant.zoql.query_more(locator, batch_size(body)))
        except ZoqlError as exc:
            return json_response(exc.body(), 400)


def _dq_error(status: int, message: str) -> Response:
    return json_response({"code": status, "message": message}, status)


def _dataquery_routes(app: FastAPI, tenant: Tenant) -> None:
    dq = tenant.dataquery

    def base_url(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    @app.post("/query/jobs")
    async def submit(request: Request) -> Response:
        if "application/json" not in request.headers.get("content-type", ""):
            return _dq_error(415, "HTTP 415 Unsupported Media Type")
        try:
            body = await _json_body(request)
            job = dq.submit(body)
        except orjson.JSONDecodeError:
            return _dq_error(400, "Malformed JSON body")
        except QueryRefused as exc:
            return _dq_error(exc.status, exc.message)
        shown = job.to_json(base_url(request))
        dq.pump()
        return json_response({"data": shown})

    @app.get("/query/jobs")
    async def list_jobs(request: Request) -> Response:
        status = request.query_params.get("queryStatus")
        try:
            size = int(request.query_params.get("pageSize", "20"))
        except ValueError:
            return _dq_error(400, "pageSize must be a number")
        if not 1 <= size <= 1000:
            return _dq_error(400, "pageSize must be 1 to 1000")
        jobs = [j for j in reversed(list(dq.jobs.values())) if status in (None, j.status)]
        return json_response({"data": [j.to_json(base_url(request)) for j in jobs[:size]]})

    @app.get("/query/jobs/{job_id}")
    async def get_job(job_id: str, request: Request) -> Response:
        job = dq.jobs.get(job_id)
        if job is None:
            return _dq_error(404, f"Query job {job_id} not found")
        return json_response({"data": job.to_json(base_url(request))})

    @app.delete("/query/jobs/{job_id}")
    async def cancel_job(job_id: str, request: Request) -> Response:
        try:
            job = dq.cancel(job_id)
        except QueryRefused as exc:
            return _dq_error(exc.status, exc.message)
        if job is None:
            return _dq_error(404, f"Query job {job_id} not found")
        return json_response({"data": job.to_json(base_url(request))})

    @app.get("/query-results/{token}/{name}")
    async def result_file(token: str, name: str) -> Response:
        """A job's result file (Zuora serves it from S3 behind an unguessable URL)."""
        path = dq.file(token, name)
        if path is None:
            return Response(
                b"<Error><Code>NoSuchKey</Code></Error>", 404, media_type="application/xml"
            )
        media = "application/octet-stream"
        if name.endswith((".gz", ".zip")):
            media = "application/gzip" if name.endswith(".gz") else "application/zip"
        elif name.endswith(".jsonl"):
            media = "application/json"
        elif name.endswith((".csv", ".tsv", ".dsv")):
            media = "text/csv"
        return FileResponse(path, media_type=media)


def _ev_error(status: int, message: str) -> Response:
    return json_response({"code": status, "message": message}, status)


_NOT_FOUND = {"code": "404", "message": "HTTP 404 Not Found"}


def _paging(request: Request, default_limit: int, max_limit: int) -> tuple[int, int]:
    try:
        start = int(request.query_params.get("start", "0"))
        limit = int(request.query_params.get("limit", str(default_limit)))
    except ValueError:
        raise ValidationError("start and limit must be numbers") from None
    if start < 0 or not 1 <= limit <= max_limit:
        raise ValidationError(f"start must be >= 0 and limit 1 to {max_limit}")
    return start, limit


def _event_routes(app: FastAPI, tenant: Tenant) -> None:
    events = tenant.events

    async def body_of(request: Request) -> Any:
        try:
            return await _json_body(request)
        except orjson.JSONDecodeError:
            raise ValidationError("Malformed JSON body") from None

    @app.post("/events/event-triggers")
    async def create_trigger(request: Request) -> Response:
        try:
            trigger = events.create_trigger(await body_of(request))
        except ValidationError as exc:
            return _ev_error(400, str(exc))
        return json_response(trigger.to_json())

    @app.get("/events/event-triggers")
    async def list_triggers(request: Request) -> Response:
        params = request.query_params
        active_raw = params.get("active")
        try:
            start, limit = _paging(request, 10, 1000)
            if active_raw not in (None, "true", "false"):
                raise ValidationError("active must be true or false")
        except ValidationError as exc:
            return _ev_error(400, str(exc))
        found = events.list_triggers(
            params.get("baseObject"),
            params.get("eventTypeName"),
            None if active_raw is None else active_raw == "true",
        )
        body: dict[str, Any] = {"data": [t.to_json() for t in found[start : start + limit]]}
        if start + limit < len(found):
            body["next"] = str(request.url.include_query_params(start=start + limit, limit=limit))
        return json_response(body)

    @app.get("/events/event-triggers/{trigger_id}")
    async def get_trigger(trigger_id: str) -> Response:
        trigger = events.triggers.get(trigger_id)
        if trigger is None:
            return json_response(_NOT_FOUND, 404)
        return json_response(trigger.to_json())

    @app.put("/events/event-triggers/{trigger_id}")
    async def update_trigger(trigger_id: str, request: Request) -> Response:
        try:
            trigger = events.update_trigger(trigger_id, await body_of(request))
        except ValidationError as exc:
            return _ev_error(400, str(exc))
        if trigger is None:
            return json_response(_NOT_FOUND, 404)
        return json_response(trigger.to_json())

    @app.delete("/events/event-triggers/{trigger_id}")
    async def delete_trigger(trigger_id: str) -> Response:
        if events.triggers.pop(trigger_id, None) is None:
            return json_response(_NOT_FOUND, 404)
        return Response(status_code=204)

    @app.post("/notifications/notification-definitions")
    async def create_definition(request: Request) -> Response:
        try:
            definition = events.create_definition(await body_of(request))
        except ValidationError as exc:
            return _ev_error(400, str(exc))
        return json_response(definition.public())

    @app.get("/notifications/notification-definitions")
    async def list_definitions(request: Request) -> Response:
        try:
            start, limit = _paging(request, 20, 100)
        except ValidationError as exc:
            return _ev_error(400, str(exc))
        params = request.query_params
        found = events.list_definitions(params.get("eventTypeName"), params.get("profileId"))
        more = start + limit < len(found)
        return json_response(
            {
                "next": f"/notification-definitions?start={start + limit}&limit={limit}"
                if more
                else None,
                "data": [d.public() for d in found[start : start + limit]],
            }
        )

    @app.get("/notifications/notification-definitions/{definition_id}")
    async def get_definition(definition_id: str) -> Response:
        definition = events.definitions.get(definition_id)
        if definition is None:
            return json_response(_NOT_FOUND, 404)
        return json_response(definition.public())

    @app.put("/notifications/notification-definitions/{definition_id}")
    async def update_definition(definition_id: str, request: Request) -> Response:
        try:
            definition = events.update_definition(definition_id, await body_of(request))
        except ValidationError as exc:
            return _ev_error(400, str(exc))
        if definition is None:
            return json_response(_NOT_FOUND, 404)
        return json_response(definition.public())

    @app.delete("/notifications/notification-definitions/{definition_id}")
    async def delete_definition(definition_id: str) -> Response:
        if events.definitions.pop(definition_id, None) is None:
            return json_response(_NOT_FOUND, 404)
        return Response(status_code=204)

    @app.get("/v1/notification-history/callout")
    async def callout_history(request: Request) -> Response:
        rows = events.callout_history()
        try:
            page_size = int(request.query_params.get("pageSize", "20"))
            page = int(request.query_params.get("page", "1"))
        except ValueError:
            return rest_error(request_id_of(request), 400, "50000027", "Invalid page")
        chunk = rows[(page - 1) * page_size : page * page_size]
        more = page * page_size < len(rows)
        return json_response(
            {
                "calloutHistories": chunk,
                "nextPage": f"/v1/notification-history/callout?page={page + 1}&pageSize={page_size}"
                if more
                else None,
                "success": True,
            }
        )


def faults_from(current: Faults, patch: dict[str, Any]) -> Faults:
    """Merge a partial fault setting into the current one, validated."""
    return Faults.model_validate({**current.model_dump(), **patch})


def runtime_update(config: SandboxConfig, patch: dict[str, Any]) -> SandboxConfig:
    """Apply a partial change of the runtime settings, validated, refusing the others."""
    unknown = set(patch) - RUNTIME_FIELDS
    if unknown:
        raise ValueError(f"not changeable at run time: {', '.join(sorted(unknown))}")
    data = config.model_dump()
    data.update(patch)
    return SandboxConfig.model_validate(data)


def stream_jsonl(rows: Any) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        batch: list[bytes] = []
        for row in rows:
            batch.append(orjson.dumps(row))
            if len(batch) >= 500:
                yield b"\n".join(batch) + b"\n"
                batch = []
                await asyncio.sleep(0)
        if batch:
            yield b"\n".join(batch) + b"\n"

    return StreamingResponse(chunks(), media_type="application/x-ndjson")
