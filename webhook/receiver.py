"""The callout endpoint itself, as a plain ASGI application.

It runs for every callout, so it is written against ASGI directly: one pass over the
headers, the body read in a bounded loop, orjson for JSON, pre-encoded response headers.
FastAPI's per-request machinery (routing, dependency solving, pydantic) would cost more than
everything below together; the FastAPI app still declares the route, for its OpenAPI
document, and `WebhookApp` hands matching requests here before routing (see `app.py`).

Order of checks, each answered without touching the database:
method (405) -> credentials (401 challenge) -> declared length (413) -> content type (415)
-> body read with a running count (413) -> parse (400) -> validate (422). Then the item goes
to the group-commit writer and the answer waits for its commit: 200, or 503 with Retry-After
when the database cannot take it. An unexpected error is logged with its traceback and also
answered 503, so Zuora retries rather than dropping the callout.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from warehouse.inbox import Enqueued, NewItem
from webhook.auth import CHALLENGE, BasicAuth
from webhook.callout import MAX_BODY_BYTES, BodyFormat, Callout, CalloutReader, Rejection
from webhook.metrics import WebhookMetrics
from webhook.writer import InboxWriter, StoreError
from zuora_sync.logs import fields

log = logging.getLogger("zuora_sync.webhook")

CALLOUT_PATH = "/api/v1/zuora/callouts/sync_subscription"
#: Seconds a client is asked to wait before retrying a 503.
RETRY_AFTER_SECONDS = 5
#: Longest wait for the commit; far below Zuora's 25 s callout timeout.
STORE_TIMEOUT_SECONDS = 10.0
#: A notification id longer than this is stored as its digest, to fit the dedup key column.
MAX_NOTIFICATION_ID_LENGTH = 200


_JSON = (b"content-type", b"application/json")
_CLOSE = (b"connection", b"close")
_RETRY_AFTER = (b"retry-after", str(RETRY_AFTER_SECONDS).encode())
_CHALLENGE = (b"www-authenticate", CHALLENGE.encode())
_ALLOW = (b"allow", b"POST")


class CalloutReceiver:
    """ASGI app for `POST /api/v1/zuora/callouts/sync_subscription`."""

    def __init__(
        self,
        *,
        reader: CalloutReader,
        writer: InboxWriter,
        metrics: WebhookMetrics,
        auth: BasicAuth | None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.metrics = metrics
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        notification_id: str | None = None
        request_id: str | None = None
        callout: Callout | None = None
        self.metrics.received.inc()
        try:
            headers = _headers(scope)
            notification_id = _text_header(headers.get(b"zuora-notification-id"))
            request_id = _text_header(headers.get(b"zuora-request-id"))
            callout = await self._read(scope, receive, headers)
            item = self._item(callout, notification_id, request_id)
            result = await self._store(item)
        except Rejection as exc:
            await self._reject(send, exc, started, notification_id, request_id, callout)
            return
        except ClientDisconnected:
            # Nobody to answer, nothing stored; Zuora (if it was Zuora) will retry.
            log.info(
                "callout",
                extra=fields(
                    outcome="disconnected",
                    notification_id=notification_id,
                    request_id=request_id,
                    latency_ms=round((time.perf_counter() - started) * 1000, 2),
                ),
            )
            return
        except Exception as exc:
            if not isinstance(exc, StoreError):
                log.exception(
                    "callout.error",
                    extra=fields(notification_id=notification_id, request_id=request_id),
                )
            unavailable = isinstance(exc, StoreError) and exc.unavailable
            rejection = Rejection(
                503,
                "database_unavailable" if unavailable else "internal_error",
                "the inbox database cannot take the callout now; retry later"
                if unavailable
                else "the callout could not be stored; retry later",
            )
            await self._reject(send, rejection, started, notification_id, request_id, callout)
            return
        status = "duplicate" if result.duplicate else "stored"
        body = orjson.dumps({"success": True, "status": status, "id": result.id})
        await _reply(send, 200, body, [_JSON])
        elapsed = time.perf_counter() - started
        (self.metrics.duplicates if result.duplicate else self.metrics.stored).inc()
        self.metrics.latency[status].observe(elapsed)
        log.info(
            "callout",
            extra=fields(
                outcome=status,
                status=200,
                notification_id=notification_id,
                request_id=request_id,
                subscription=callout.subscription_number or callout.subscription_id,
                inbox_id=result.id,
                latency_ms=round(elapsed * 1000, 2),
            ),
        )

    async def _read(self, scope: Scope, receive: Receive, headers: dict[bytes, bytes]) -> Callout:
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        declared_raw = headers.get(b"content-length")
        body_format: BodyFormat | None = None
        body = b""
        try:
            declared = _content_length(declared_raw)
            if scope["method"] != "POST":
                raise Rejection(405, "method_not_allowed", "callouts must be sent with POST")
            if self.auth is not None and not self.auth.check(headers.get(b"authorization")):
                raise Rejection(401, "unauthorized", "valid HTTP Basic credentials are required")
            if declared is not None and declared > MAX_BODY_BYTES:
                raise Rejection(
                    413, "body_too_large", f"the body is larger than {MAX_BODY_BYTES} bytes"
                )
            if chunked or declared:
                content_type = headers.get(b"content-type", b"").decode("latin-1")
                body_format = self.reader.body_format(content_type)
                body = await _read_body(receive)
        except Rejection as exc:
            # The rest of the body may still be on the wire; closing beats reading it.
            exc.close_connection = chunked or bool(declared_raw and declared_raw != b"0")
            raise
        return self.reader.read(body, body_format, scope.get("query_string", b""))

    def _item(
        self, callout: Callout, notification_id: str | None, request_id: str | None
    ) -> NewItem:
        payload = {
            "params": callout.params,
            "fields": callout.fields,
            "format": callout.body_format,
            "notification_id": notification_id,
            "request_id": request_id,
            "received_at": datetime.now(UTC).isoformat(),
        }
        if notification_id is not None:
            return NewItem(
                source="callout",
                dedup_key=notification_key(notification_id),
                subscription_number=callout.subscription_number,
                subscription_id=callout.subscription_id,
                payload=payload,
            )
        return NewItem(
            source="callout",
            dedup_key=f"callout-content:{callout.content_key()}",
            subscription_number=callout.subscription_number,
            subscription_id=callout.subscription_id,
            payload=payload,
            dedup="while_pending",
        )

    async def _store(self, item: NewItem) -> Enqueued:
        future = self.writer.submit(item)
        loop = asyncio.get_running_loop()
        expiry = loop.call_later(STORE_TIMEOUT_SECONDS, _expire, future)
        try:
            return await future
        finally:
            expiry.cancel()

    async def _reject(
        self,
        send: Send,
        rejection: Rejection,
        started: float,
        notification_id: str | None,
        request_id: str | None,
        callout: Callout | None,
    ) -> None:
        headers = [_JSON]
        if rejection.status == 401:
            headers.append(_CHALLENGE)
        elif rejection.status == 503:
            headers.append(_RETRY_AFTER)
        elif rejection.status == 405:
            headers.append(_ALLOW)
        if rejection.close_connection:
            headers.append(_CLOSE)
        body = orjson.dumps(
            {
                "success": False,
                "reasons": [{"code": rejection.code, "message": rejection.message}],
            }
        )
        try:
            await _reply(send, rejection.status, body, headers)
        except Exception:  # the client went away; there is nobody left to tell
            log.debug("callout.reply_failed", exc_info=True)
        elapsed = time.perf_counter() - started
        counter = self.metrics.rejected.get(rejection.code)
        if counter is not None:
            counter.inc()
        self.metrics.latency["rejected"].observe(elapsed)
        log.log(
            logging.WARNING if rejection.status >= 500 else logging.INFO,
            "callout",
            extra=fields(
                outcome="rejected",
                status=rejection.status,
                reason=rejection.code,
                notification_id=notification_id,
                request_id=request_id,
                subscription=(callout.subscription_number or callout.subscription_id)
                if callout
                else None,
                latency_ms=round(elapsed * 1000, 2),
            ),
        )


class ClientDisconnected(Exception):
    """The client went away before sending its whole body."""


def notification_key(notification_id: str) -> str:
    """The inbox dedup key of a callout with a `Zuora-Notification-Id`."""
    if len(notification_id) > MAX_NOTIFICATION_ID_LENGTH:
        return "callout:sha256:" + hashlib.sha256(notification_id.encode()).hexdigest()
    return f"callout:{notification_id}"


def _headers(scope: Scope) -> dict[bytes, bytes]:
    """The request headers by lower-case name (ASGI servers lower-case them already);
    a repeated header keeps its first value."""
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        found.setdefault(name.lower(), value)
    return found


def _text_header(value: bytes | None) -> str | None:
    if value is None:
        return None
    text = value.decode("latin-1").strip()
    return text or None


def _content_length(value: bytes | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise Rejection(400, "malformed_body", "Content-Length is not a number") from None


async def _read_body(receive: Receive) -> bytes:
    """The whole body, refusing it as soon as the running count passes the limit."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise Rejection(
                    413, "body_too_large", f"the body is larger than {MAX_BODY_BYTES} bytes"
                )
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks) if len(chunks) != 1 else chunks[0]


async def _reply(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(
            StoreError(f"no commit within {STORE_TIMEOUT_SECONDS:g} s", unavailable=True)
        )
