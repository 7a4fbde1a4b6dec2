"""The client's protocol behaviour against a scripted Zuora on loopback.

Each test gives a small real HTTP server a script of answers (429 with Retry-After, 503s,
expired tokens, `success: false`, ...) and checks what the client sent and what it did.
The same client is tested against the full simulated tenant in test_client_sandbox.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from tests.http_server import serve
from zuora.client import RetryBudget, TokenInfo, ZuoraClient, resolve_base_url
from zuora.errors import (
    ZuoraAuthError,
    ZuoraNotFound,
    ZuoraPermanentError,
    ZuoraRateLimited,
    ZuoraTransientError,
)
from zuora.limiter import AdaptiveLimiter

SECRET = "s3cr3t-client-secret"
FAST = RetryBudget(max_attempts=4, base_seconds=0.01, max_seconds=0.05, total_seconds=10)


@dataclass
class Script:
    """What the fake tenant answers, in order, per path; and what it received."""

    answers: dict[str, list[Callable[[], Response]]] = field(default_factory=dict)
    seen: list[dict[str, Any]] = field(default_factory=list)
    tokens_issued: int = 0
    in_flight: int = 0
    peak: int = 0
    delay: float = 0.0

    def on(self, path: str, *answers: Callable[[], Response]) -> None:
        self.answers.setdefault(path, []).extend(answers)


def ok(body: Any = None, **headers: str) -> Callable[[], Response]:
    return lambda: JSONResponse(body if body is not None else {"success": True}, headers=headers)


def status(code: int, body: Any = None, **headers: str) -> Callable[[], Response]:
    return lambda: JSONResponse(body or {}, status_code=code, headers=headers)


def make_app(script: Script) -> FastAPI:
    app = FastAPI()

    @app.post("/oauth/token")
    async def token(request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        if form.get("client_secret") != SECRET or form.get("grant_type") != "client_credentials":
            return JSONResponse({"message": "Authentication error"}, status_code=401)
        script.tokens_issued += 1
        return JSONResponse(
            {
                "access_token": f"token-{script.tokens_issued}",
                "token_type": "bearer",
                "expires_in": 3599,
                "scope": "entity.1a2b platform.write service.usage.write tenant.10000719 user.2c92a0",
                "jti": "x",
            }
        )

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE"])
    async def anything(path: str, request: Request) -> Response:
        script.seen.append(
            {
                "method": request.method,
                "path": "/" + path,
                "headers": dict(request.headers),
                "body": await request.body(),
            }
        )
        script.in_flight += 1
        script.peak = max(script.peak, script.in_flight)
        try:
            await asyncio.sleep(script.delay)
            queue = script.answers.get("/" + path)
            return queue.pop(0)() if queue else JSONResponse({"success": True, "path": path})
        finally:
            script.in_flight -= 1

    return app


@pytest.fixture
def tenant() -> Iterator[tuple[str, Script]]:
    script = Script()
    with serve(make_app(script)) as url:
        yield url, script


def client(url: str, **kwargs: Any) -> ZuoraClient:
    kwargs.setdefault("retry", FAST)
    kwargs.setdefault("limiter", AdaptiveLimiter(kwargs.pop("max_concurrency", 10)))
    return ZuoraClient(url, "client-id", SECRET, **kwargs)


async def test_token_is_fetched_once_and_names_the_tenant(tenant: tuple[str, Script]) -> None:
    url, script = tenant
    async with client(url) as zuora:
        info = await zuora.authenticate()
        await zuora.get_subscription("A-S1")
        await zuora.get_subscription("A-S2")
    assert script.tokens_issued == 1
    assert info == TokenInfo.from_scope(info.scope, 3599)
    assert (info.tenant_id, info.entity_ids, info.user_id) == ("10000719", ("1a2b",), "2c92a0")
    sent = script.seen[-1]["headers"]
    assert sent["authorization"] == "Bearer token-1"
    assert sent["zuora-version"] == "2025-08-12"
    assert sent["zuora-track-id"].startswith("zuora-sync-")


async def test_bad_credentials_are_an_auth_error_without_the_secret(
    tenant: tuple[str, Script],
) -> None:
    url, _ = tenant
    async with ZuoraClient(
        url, "client-id", "wrong-secret", retry=FAST, limiter=AdaptiveLimiter(2)
    ) as zuora:
        with pytest.raises(ZuoraAuthError) as caught:
            await zuora.get_subscription("A-S1")
    assert "wrong-secret" not in str(caught.value) and "Authentication error" in str(caught.value)


async def test_an_expired_token_is_refreshed_once(tenant: tuple[str, Script]) -> None:
    url, script = tenant
    script.on(
        "/v1/subscriptions/A-S1", status(401, {"message": "Authentication error"}), ok({"id": "x"})
    )
    script.on("/v1/subscriptions/A-S2", *[status(401, {"message": "Authentication error"})] * 3)
    async with client(url) as zuora:
        assert (await zuora.get_subscription("A-S1"))["id"] == "x"
        with pytest.raises(ZuoraAuthError):
            await zuora.get_subscription("A-S2")
    assert script.tokens_issued == 3  # first, after A-S1's 401, after A-S2's first 401 only


async def test_429_waits_for_retry_after_then_succeeds(tenant: tuple[str, Script]) -> None:
    url, script = tenant
    busy = {"code": "REQUEST_EXCEEDED_LIMIT", "message": "concurrent requests exceeded"}
    script.on("/v1/subscriptions/A-S1", status(429, busy, **{"Retry-After": "1"}), ok({"id": "x"}))
    async with client(url) as zuora:
        started = time.monotonic()
        assert (await zuora.get_subscription("A-S1"))["id"] == "x"
        waited = time.monotonic() - started
    assert waited >= 1.0  # Retry-After honoured, not the 10 ms backoff
    assert (zuora.stats.throttled, zuora.stats.retries) == (1, 1)


async def test_a_429_storm_ends_as_rate_limited_with_retry_after(
    tenant: tuple[str, Script],
) -> None:
    url, script = tenant
    script.on("/v1/subscriptions/A-S1", *[status(429, **{"Retry-After": "0"})] * 10)
    async with client(url) as zuora:
        with pytest.raises(ZuoraRateLimited) as caught:
            await zuora.get_subscription("A-S1")
    assert caught.value.retry_after == 0 and caught.value.retryable
    assert zuora.stats.throttled == FAST.max_attempts


async def test_5xx_and_retryable_codes_are_retried(tenant: tuple[str, Script]) -> None:
    url, script = tenant
    lock = {"success": False, "reasons": [{"code": "50000050", "message": "lock competition"}]}
    script.on("/v1/subscriptions/A-S1", status(503), status(500), ok(lock), ok({"id": "x"}))
    async with client(url) as zuora:
        assert (await zuora.get_subscription("A-S1"))["id"] == "x"
    assert zuora.stats.retries == 3


async def test_transient_errors_give_up_when_the_budget_is_spent(
    tenant: tuple[str, Script],
) -> None:
    url, script = tenant
    script.on("/v1/subscriptions/A-S1", *[status(502)] * 10)
    async with client(url) as zuora:
        with pytest.raises(ZuoraTransientError) as caught:
            await zuora.get_subscription("A-S1")
    assert caught.value.status == 502
    assert (
        len([s for s in script.seen if s["path"] == "/v1/subscriptions/A-S1"]) == FAST.max_attempts
    )


@pytest.mark.parametrize(
    ("answer", "kind", "code"),
    [
        (status(404, {"success": False, "reasons": [{"code": "50000040", "message": "no such"}]}), ZuoraNotFound, "50000040"),
        (status(400, {"success": False, "reasons": [{"code": "58730222", "message": "bad"}]}), ZuoraPermanentError, "58730222"),
        (ok({"success": False, "reasons": [{"code": 53100320, "message": "refused"}]}), ZuoraPermanentError, "53100320"),
        (ok({"success": False, "reasons": [{"code": "50000040", "message": "gone"}]}), ZuoraNotFound, "50000040"),
        (status(403, {"code": "403", "message": "HTTP 403 Forbidden"}), ZuoraAuthError, "403"),
    ],
)  # fmt: skip
async def test_permanent_failures_are_typed_and_not_retried(
    tenant: tuple[str, Script], answer: Callable[[], Response], kind: type, code: str
) -> None:
    url, script = tenant
    script.on("/v1/subscriptions/A-S1", answer, ok({"id": "never reached"}))
    async with client(url) as zuora:
        with pytest.raises(kind) as caught:
            await zuora.get_subscription("A-S1")
    assert caught.value.code == code
    assert len(script.seen) == 1


async def test_a_post_is_repeated_after_429_but_never_after_503(tenant: tuple[str, Script]) -> None:
    url, script = tenant
    script.on("/events/event-triggers", status(429, **{"Retry-After": "0"}), ok({"id": "t1"}))
    async with client(url) as zuora:
        assert (await zuora.create_event_trigger({"active": True}))["id"] == "t1"
        script.on("/events/event-triggers", status(503), ok({"id": "t2"}))
        with pytest.raises(ZuoraTransientError):
            await zuora.create_event_trigger({"active": True})
    posts = [s for s in script.seen if s["method"] == "POST"]
    assert len(posts) == 3  # 429 + retry, then the 503 alone: Zuora may have acted on it


async def test_timeouts_are_transient(tenant: tuple[str, Script]) -> None:
    url, script = tenant
    script.delay = 0.5
    import httpx

    async with client(
        url, timeout=httpx.Timeout(0.1), retry=RetryBudget(max_attempts=2, base_seconds=0.01)
    ) as zuora:
        with pytest.raises(ZuoraTransientError, match="ReadTimeout"):
            await zuora.get_subscription("A-S1")


async def test_a_connection_refused_is_transient() -> None:
    from tests.http_server import free_port

    async with client(f"http://127.0.0.1:{free_port()}") as zuora:
        with pytest.raises(ZuoraTransientError, match="ConnectError"):
            await zuora.get_subscription("A-S1")


async def test_concurrency_never_exceeds_the_bound(tenant: tuple[str, Script]) -> None:
    url, script = tenant
    script.delay = 0.02
    async with client(url, max_concurrency=5) as zuora:
        await asyncio.gather(*(zuora.get_subscription(f"A-S{i}") for i in range(60)))
    assert script.peak == 5


async def test_zoql_pages_through_query_more(tenant: tuple[str, Script]) -> None:
    url, script = tenant
    script.on(
        "/v1/action/query",
        ok(
            {
                "records": [{"Id": "1"}, {"Id": "2"}],
                "size": 5,
                "done": False,
                "queryLocator": "abc-2",
            }
        ),
    )
    script.on(
        "/v1/action/queryMore",
        ok(
            {
                "records": [{"Id": "3"}, {"Id": "4"}],
                "size": 5,
                "done": False,
                "queryLocator": "abc-4",
            }
        ),
        ok({"records": [{"Id": "5"}], "size": 5, "done": True}),
    )
    async with client(url) as zuora:
        batches = [batch async for batch in zuora.zoql("select Id from Subscription", batch_size=2)]
    assert [[r["Id"] for r in b] for b in batches] == [["1", "2"], ["3", "4"], ["5"]]
    assert b'"queryLocator":"abc-4"' in script.seen[-1]["body"].replace(b" ", b"")


async def test_nothing_secret_is_logged(
    tenant: tuple[str, Script], caplog: pytest.LogCaptureFixture
) -> None:
    url, script = tenant
    script.on("/v1/subscriptions/A-S1", status(503), ok({"id": "x"}))
    caplog.set_level(logging.DEBUG)
    async with client(url) as zuora:
        await zuora.get_subscription("A-S1")
    logged = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    assert "zuora.retry" in logged
    assert SECRET not in logged and "token-1" not in logged
    assert SECRET not in repr(zuora)


def test_environment_names_resolve_to_base_urls() -> None:
    assert resolve_base_url("us-production-cloud2") == "https://rest.zuora.com"
    assert resolve_base_url("https://rest.test.zuora.com/") == "https://rest.test.zuora.com"
