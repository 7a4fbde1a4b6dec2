"""Running the webhook: database outages, metrics, NOTIFY, logs, startup checks."""

from __future__ import annotations

import json
import select
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import psycopg2
import psycopg2.extras
import pytest
from sqlalchemy.engine import make_url

from warehouse.inbox import NOTIFY_CHANNEL
from webhook.app import create_app
from zuora_sync.settings import ConfigError, load_settings

from .conftest import BASIC, CALLOUT, PASSWORD, USER, Live, LogCapture, through
from .proxy import Proxy


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


# --- the database goes away --------------------------------------------------------------------


def test_database_down__503_with_retry_after_nothing_stored_then_recovery(
    pg_url: str, proxy: Proxy, start: Callable[..., Live]
) -> None:
    live = start(through(pg_url, proxy))
    assert live.post(json={"SubscriptionNumber": "A-S1"}, notification="before").status_code == 200

    proxy.cut()
    for i in range(3):
        down = live.post(json={"SubscriptionNumber": "A-S2"}, notification=f"during-{i}")
        assert down.status_code == 503, down.text
        assert down.headers["Retry-After"].isdigit()
        assert down.json()["reasons"][0]["code"] == "database_unavailable"
    ready = live.client.get("/readyz")
    assert ready.status_code == 503 and ready.headers["Retry-After"]

    proxy.restore()
    # Zuora retries the same notification later; now it is stored, once.
    wait_for(
        lambda: (
            live.post(json={"SubscriptionNumber": "A-S2"}, notification="during-0").status_code
            == 200
        )
    )
    assert live.client.get("/readyz").status_code == 200
    keys = [r.dedup_key for r in _rows_direct(pg_url)]
    assert keys == ["callout:before", "callout:during-0"]


def test_database_cut_under_load__every_200_is_a_stored_row(
    pg_url: str, proxy: Proxy, start: Callable[..., Live]
) -> None:
    live = start(through(pg_url, proxy))
    answers: dict[str, int] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def client(worker: int) -> None:
        with httpx.Client(base_url=live.url, timeout=30) as http:
            n = 0
            while not stop.is_set():
                notification = f"load-{worker}-{n}"
                n += 1
                response = http.post(
                    CALLOUT,
                    auth=(USER, PASSWORD),
                    json={"SubscriptionNumber": f"A-S{worker}"},
                    headers={"Zuora-Notification-Id": notification},
                )
                with lock:
                    answers[notification] = response.status_code

    threads = [threading.Thread(target=client, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    proxy.cut()
    time.sleep(0.5)
    proxy.restore()
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join()

    stored = {r.dedup_key.removeprefix("callout:") for r in _rows_direct(pg_url)}
    ok = {n for n, status in answers.items() if status == 200}
    assert set(answers.values()) <= {200, 503}
    assert 503 in answers.values() and len(ok) > 10
    assert ok <= stored, "a callout answered 200 is missing from the inbox"
    # A 503 whose commit raced the cut may still have landed; Zuora's retry of it is then a
    # duplicate. Nothing else may appear.
    assert stored <= set(answers)


def test_database_without_the_schema__503_not_500(
    empty_pg_url: str, start: Callable[..., Live]
) -> None:
    live = start(empty_pg_url)
    response = live.post(json={"SubscriptionNumber": "A-S1"}, notification="n1")
    assert response.status_code == 503
    assert live.client.get("/readyz").status_code == 503


def _rows_direct(url: str) -> list[Any]:
    """The inbox read past the proxy, straight from PostgreSQL."""
    parts = make_url(url)
    conn = psycopg2.connect(
        host=parts.host, port=parts.port, user=parts.username, dbname=parts.database
    )
    try:
        with conn.cursor(cursor_factory=psycopg2.extras.NamedTupleCursor) as cur:
            cur.execute("SELECT * FROM callout_inbox ORDER BY id")
            return list(cur.fetchall())
    finally:
        conn.close()


# --- signals to the rest of the system ---------------------------------------------------------


def test_notify__a_listening_drain_wakes_after_a_stored_callout(live: Live, pg_url: str) -> None:
    parts = make_url(pg_url)
    listener = psycopg2.connect(
        host=parts.host, port=parts.port, user=parts.username, dbname=parts.database
    )
    listener.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
    try:
        listener.cursor().execute(f"LISTEN {NOTIFY_CHANNEL}")
        assert live.post(json={"SubscriptionNumber": "A-S1"}, notification="n1").status_code == 200
        assert select.select([listener], [], [], 5) != ([], [], [])
        listener.poll()
        assert [n.channel for n in listener.notifies] == [NOTIFY_CHANNEL]
        listener.notifies.clear()

        # A duplicate stores nothing and wakes nobody.
        assert live.post(json={"SubscriptionNumber": "A-S1"}, notification="n1").status_code == 200
        assert select.select([listener], [], [], 0.5) == ([], [], [])
    finally:
        listener.close()


def test_metrics__counters_histograms_and_the_inbox_move(live: Live) -> None:
    before = live.metrics()
    assert before['zuora_sync_inbox_depth{status="pending"}'] == 0
    assert before["zuora_sync_database_up"] == 1
    live.post(json={"SubscriptionNumber": "A-S1"}, notification="m1")
    live.post(json={"SubscriptionNumber": "A-S1"}, notification="m1")
    live.post(json={"SubscriptionNumber": "A-S2"}, notification="m2")
    live.post(auth=None, json={"SubscriptionNumber": "A-S3"})
    live.post(json={"AccountId": "x"}, notification="m3")
    time.sleep(1.1)  # the inbox gauges are cached for a second
    after = live.metrics()

    def moved(name: str) -> float:
        return after[name] - before.get(name, 0.0)

    assert moved("zuora_sync_callouts_received_total") == 5
    assert moved("zuora_sync_callouts_stored_total") == 2
    assert moved("zuora_sync_callouts_duplicates_total") == 1
    assert moved('zuora_sync_callouts_rejected_total{reason="unauthorized"}') == 1
    assert moved('zuora_sync_callouts_rejected_total{reason="missing_subscription_key"}') == 1
    assert moved('zuora_sync_callout_duration_seconds_count{outcome="stored"}') == 2
    assert moved('zuora_sync_callout_duration_seconds_count{outcome="rejected"}') == 2
    assert moved("zuora_sync_callout_commit_batch_size_sum") == 3  # two stored, one duplicate
    assert after['zuora_sync_inbox_depth{status="pending"}'] == 2
    assert 0 < after["zuora_sync_inbox_oldest_pending_age_seconds"] < 60


def test_metrics__the_database_gauge_falls_when_it_is_gone(
    pg_url: str, proxy: Proxy, start: Callable[..., Live]
) -> None:
    live = start(through(pg_url, proxy))
    assert live.metrics()["zuora_sync_database_up"] == 1
    proxy.cut()
    time.sleep(1.1)
    after = live.metrics()
    assert after["zuora_sync_database_up"] == 0
    assert not any(name.startswith("zuora_sync_inbox_depth") for name in after)


# --- logs --------------------------------------------------------------------------------------


def test_logs__one_line_per_callout_and_never_the_credentials(live: Live, logs: LogCapture) -> None:
    live.post(
        json={"SubscriptionNumber": "A-S1"},
        notification="log-1",
        headers={"Zuora-Request-Id": "req-log-1"},
    )
    live.post(auth=None, json={"SubscriptionNumber": "A-S1"}, notification="log-1")
    live.post(auth=(USER, "not-" + PASSWORD), json={"SubscriptionNumber": "A-S1"})
    live.post(
        auth=None,
        headers={"Authorization": "Basic " + PASSWORD, "Zuora-Request-Id": "Bearer " + PASSWORD},
        json={"SubscriptionNumber": "A-S1"},
    )
    live.client.get("/metrics")
    live.client.get("/readyz")
    live.client.get("/openapi.json")

    lines = [line for line in logs.lines if '"event":"callout"' in line]
    assert len(lines) == 4
    first = json.loads(lines[0])
    assert first["outcome"] == "stored" and first["status"] == 200
    assert (first["notification_id"], first["request_id"], first["subscription"]) == (
        "log-1",
        "req-log-1",
        "A-S1",
    )
    assert first["latency_ms"] > 0 and first["inbox_id"] >= 1
    assert [json.loads(line)["status"] for line in lines[1:]] == [401, 401, 401]

    everything = "\n".join(logs.lines)
    for secret in (PASSWORD, BASIC.split()[1], USER + ":"):
        assert secret not in everything
    assert repr(live.app.state.writer).find(PASSWORD) == -1
    assert PASSWORD not in repr(live.settings)


# --- startup -----------------------------------------------------------------------------------


def test_startup__refused_without_credentials_outside_dev(pg_url: str) -> None:
    for env in ("production", "staging"):
        settings = load_settings(DATABASE_URL=pg_url, ZUORA_SYNC_ENV=env)
        with pytest.raises(ConfigError, match="CALLOUT_USERNAME and CALLOUT_PASSWORD"):
            create_app(settings)


def test_startup__dev_mode_may_run_open(pg_url: str, start: Callable[..., Live]) -> None:
    live = start(pg_url, ZUORA_SYNC_ENV="dev", CALLOUT_USERNAME=None, CALLOUT_PASSWORD=None)
    response = live.post(auth=None, json={"SubscriptionNumber": "A-S1"}, notification="dev")
    assert response.status_code == 200


def test_route__served_the_same_when_mounted_under_another_app(
    pg_url: str, start: Callable[..., Live]
) -> None:
    # Mounted, the path no longer matches the shortcut, so FastAPI routes the request to
    # the declared endpoint, which must answer exactly as the shortcut does.
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    from .conftest import serve, webhook_settings

    inner = create_app(webhook_settings(pg_url))

    @asynccontextmanager
    async def lifespan(_app: FastAPI):  # type: ignore[no-untyped-def]
        async with inner.router.lifespan_context(inner):
            yield

    outer = FastAPI(lifespan=lifespan)
    outer.mount("/hooks", inner)
    live = serve(webhook_settings(pg_url), app=outer)
    try:
        url = "/hooks" + CALLOUT
        stored = live.client.post(url, auth=(USER, PASSWORD), json={"SubscriptionNumber": "A-S1"})
        assert stored.status_code == 200 and stored.json()["status"] == "stored"
        refused = live.client.post(url, json={"SubscriptionNumber": "A-S1"})
        assert refused.status_code == 401 and "WWW-Authenticate" in refused.headers
    finally:
        live.stop()
        live.engine.dispose()
