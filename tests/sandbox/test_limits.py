"""Concurrency and rate limits, injected faults, counters, runtime configuration."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.fixtures.sandbox import SandboxFactory, authorized_client
from zuora.sandbox.admin import SandboxAdminError
from zuora.sandbox.server import RunningSandbox


async def burst(
    sb: RunningSandbox,
    token: str,
    count: int,
    path: str = "/v1/subscriptions/A-S00000001",
    timeout: float = 30.0,
) -> list[httpx.Response]:
    headers = {"Authorization": token}
    async with httpx.AsyncClient(
        base_url=sb.base_url,
        headers=headers,
        timeout=timeout,
        limits=httpx.Limits(max_connections=count),
    ) as client:
        return list(await asyncio.gather(*(client.get(path) for _ in range(count))))


def bearer(sb: RunningSandbox) -> str:
    with authorized_client(sb) as http:
        return str(http.headers["Authorization"])


def test_concurrency_limit_answers_429_with_zuoras_body_and_headers(
    sandbox_factory: SandboxFactory,
) -> None:
    sb = sandbox_factory(concurrency_limit=3)
    sb.admin.set_faults(latency_ms=1500)  # wide enough for all 8 to arrive while 3 are held
    responses = asyncio.run(burst(sb, bearer(sb), 8))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 3 and statuses.count(429) == 5
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json() == {
        "code": "REQUEST_EXCEEDED_LIMIT",
        "message": "Your total number of concurrent requests have exceeded the limit allowed "
        "by the system. Please resubmit your request later.",
    }
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["concurrency-limit-type"] == "Default"
    assert refused.headers["concurrency-limit-limit"] == "3"
    assert refused.headers["concurrency-limit-remaining"] == "0"
    served = next(r for r in responses if r.status_code == 200)
    assert int(served.headers["concurrency-limit-remaining"]) < 3
    assert served.headers["ratelimit-limit"] == "50000, 50000;w=60"
    counters = sb.admin.counters()
    assert counters["peak_concurrency"] == 3
    assert counters["throttled_429"] == 5
    assert counters["requests"]["GET /v1/subscriptions/{key} 429"] == 5


def test_latency_is_spent_inside_the_slot(sandbox_factory: SandboxFactory) -> None:
    sb = sandbox_factory(concurrency_limit=2)
    sb.admin.set_faults(latency_ms=200)
    token = bearer(sb)
    started = time.monotonic()
    done = 0
    while done < 6:  # a polite client: one request per free slot
        responses = asyncio.run(burst(sb, token, 2))
        done += sum(r.status_code == 200 for r in responses)
    # 6 requests / 2 slots * 0.2 s: throughput is limit / latency.
    assert time.monotonic() - started >= 0.6


def test_rate_limit_window(sandbox_factory: SandboxFactory) -> None:
    sb = sandbox_factory(rate_limit_per_window=5, rate_limit_window_s=60)
    with authorized_client(sb) as http:
        statuses = [http.get("/v1/subscriptions/A-S00000001").status_code for _ in range(7)]
        assert statuses == [200] * 5 + [429] * 2
        refused = http.get("/v1/subscriptions/A-S00000001")
        assert refused.json()["code"] == "REQUEST_EXCEEDED_RATE"
        assert refused.headers["ratelimit-remaining"] == "0"
        assert 0 < int(refused.headers["retry-after"]) <= 60
        assert int(refused.headers["ratelimit-reset"]) == int(refused.headers["retry-after"])
    assert sb.admin.counters()["throttled_rate"] == 3


def test_injected_errors_use_zuoras_bodies(
    sandbox: RunningSandbox, zuora_http: httpx.Client
) -> None:
    sandbox.admin.set_faults(error_rate=1.0, error_statuses=[500])
    response = zuora_http.get("/v1/subscriptions/A-S00000001")
    assert response.status_code == 500
    assert response.json() == {
        "reasons": [{"code": "SystemError", "message": "internal server error"}]
    }
    sandbox.admin.set_faults(error_statuses=[503])
    unavailable = zuora_http.get("/v1/subscriptions/A-S00000001")
    assert unavailable.status_code == 503 and unavailable.headers["retry-after"] == "1"
    assert unavailable.json()["success"] is False
    sandbox.admin.set_faults(error_statuses=[502], paths=["/v1/action"])
    assert zuora_http.get("/v1/subscriptions/A-S00000001").status_code == 200
    assert (
        zuora_http.post(
            "/v1/action/query", json={"queryString": "select Id from Account"}
        ).status_code
        == 502
    )
    sandbox.admin.clear_faults()
    assert (
        zuora_http.post(
            "/v1/action/query", json={"queryString": "select Id from Account"}
        ).status_code
        == 200
    )
    assert sandbox.admin.counters()["faults_injected"] == 3


def test_timeouts_hold_the_request_past_the_clients_timeout(
    sandbox: RunningSandbox, zuora_http: httpx.Client
) -> None:
    sandbox.admin.set_faults(timeout_rate=1.0, timeout_hold_s=1.0)
    with pytest.raises(httpx.ReadTimeout):
        zuora_http.get("/v1/subscriptions/A-S00000001", timeout=0.3)
    held = zuora_http.get("/v1/subscriptions/A-S00000001", timeout=5)
    assert held.status_code == 504
    assert sandbox.admin.counters()["timeouts_injected"] == 2


def test_admin_endpoints_ignore_faults_and_limits(sandbox: RunningSandbox) -> None:
    sandbox.admin.set_faults(error_rate=1.0, latency_ms=0)
    assert sandbox.admin.health()["status"] == "ok"
    assert sandbox.admin.counters()["requests_total"] == 0


def test_counters_reset_and_runtime_config(
    sandbox: RunningSandbox, zuora_http: httpx.Client
) -> None:
    for _ in range(3):
        zuora_http.get("/v1/subscriptions/A-S00000001")
    zuora_http.get("/v1/subscriptions/A-S99999999")
    counters = sandbox.admin.counters()
    assert counters["requests"]["GET /v1/subscriptions/{key} 200"] == 3
    assert counters["requests"]["GET /v1/subscriptions/{key} 404"] == 1
    assert counters["by_status"]["200"] >= 3
    sandbox.admin.reset_counters()
    assert sandbox.admin.counters()["requests_total"] == 0
    changed = sandbox.admin.configure(concurrency_limit=7, callout_retry_interval_s=0.01)
    assert changed["concurrency_limit"] == 7
    headers = zuora_http.get("/v1/subscriptions/A-S00000001").headers
    assert headers["concurrency-limit-limit"] == "7"
    with pytest.raises(SandboxAdminError):
        sandbox.admin.configure(subscriptions=5)
    with pytest.raises(SandboxAdminError):
        sandbox.admin.configure(concurrency_limit=0)
    with pytest.raises(SandboxAdminError):
        sandbox.admin.set_faults(error_rate=2)
    assert "client_secret" not in sandbox.admin.config()


def test_track_id_is_echoed(zuora_http: httpx.Client) -> None:
    response = zuora_http.get(
        "/v1/subscriptions/A-S00000001", headers={"Zuora-Track-Id": "drain-42"}
    )
    assert response.headers["zuora-track-id"] == "drain-42"
