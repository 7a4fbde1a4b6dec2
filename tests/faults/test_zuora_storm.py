"""Zuora in a storm: 20% of API requests answered 5xx, bursts of 429s, latency spikes,
while subscriptions change, some with a callout and some without (lost callouts).

Proves: the drain rides the storm out with retries and backoff and leaves nothing
transient in `dead`; what was announced by a callout reaches the cache; what was not is
exactly the drift a full reconcile then finds and heals, after which a full reconcile
reports 0 drift and the cache equals Zuora row for row.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from flows.drain import DrainOptions
from flows.reconcile import run_reconcile
from flows.runner import run_drain
from tests.faults.harness import sized, statuses
from tests.flows.test_drain import callouts
from tests.flows.test_end_to_end import TRACKED, enable_callout
from tests.webhook.conftest import Live, running_webhook
from warehouse.models import charges, rate_plans
from warehouse.verify import cache_differences
from zuora.sandbox.server import RunningSandbox
from zuora_sync.settings import Settings, load_settings


class Bursts:
    """Every so often the tenant's rate limit drops to almost nothing for a moment:
    bursts of 429s with Retry-After, on top of the injected faults."""

    def __init__(self, sandbox: RunningSandbox, period: float = 0.4) -> None:
        self.sandbox = sandbox
        self.period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Bursts:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.sandbox.admin.configure(rate_limit_per_window=0)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sandbox.admin.configure(rate_limit_per_window=2, rate_limit_window_s=1)
            self._stop.wait(self.period / 2)
            self.sandbox.admin.configure(rate_limit_per_window=0)
            self._stop.wait(self.period)


def edit_through_the_api(sandbox: RunningSandbox, number: str, fields: dict[str, Any]) -> None:
    """A Zuora admin's edit through the REST API (it fires the custom event), done by a
    patient admin: the storm hits their requests too."""
    token = httpx.post(
        f"{sandbox.base_url}/oauth/token",
        data={
            "client_id": sandbox.client_id,
            "client_secret": sandbox.client_secret,
            "grant_type": "client_credentials",
        },
    ).json()["access_token"]
    with httpx.Client(
        base_url=sandbox.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as api:
        for _ in range(200):
            got = api.get(f"/v1/subscriptions/{number}")
            if got.status_code == 200:
                answer = api.put(
                    f"/v1/subscriptions/{number}/versions/{got.json()['version']}/customFields",
                    json={"customFields": fields},
                )
                if answer.status_code == 200:
                    return
            time.sleep(0.05)
    raise AssertionError(f"the edit of {number} never got through")


def storm_settings(pg_url: str, sandbox: RunningSandbox) -> Settings:
    return load_settings(
        DATABASE_URL=pg_url,
        **sandbox.env(),
        ZUORA_MAX_CONCURRENCY=6,
        INBOX_RETRY_BASE_SECONDS=0.05,
        INBOX_RETRY_MAX_SECONDS=0.5,
    )


def drain_until_done(settings: Settings, engine: Engine, runs: int = 40) -> None:
    """Drain runs one after another, as the schedule would, until nothing is left."""
    options = DrainOptions.from_settings(settings, batch_size=20, window_seconds=0)
    for _ in range(runs):
        asyncio.run(run_drain(settings, options))
        if set(statuses(engine)) <= {"done", "dead"} and "pending" not in statuses(engine):
            return
        time.sleep(0.2)  # rows that failed wait out their short backoff


def drift_by_subscription(engine: Engine, export: list[dict[str, Any]]) -> dict[str, list[str]]:
    """`cache_differences`, each problem filed under the subscription it is about."""
    owner: dict[str, str] = {}
    for payload in export:
        for plan in payload.get("ratePlans") or []:
            owner[plan["id"]] = payload["subscriptionNumber"]
            for charge in plan.get("ratePlanCharges") or []:
                owner[charge["id"]] = payload["subscriptionNumber"]
    with engine.connect() as conn:
        for table in (rate_plans, charges):
            owner.update(dict(conn.execute(select(table.c.id, table.c.subscription_number)).all()))
    found: dict[str, list[str]] = {}
    for problem in cache_differences(engine, export):
        kind = next(k for k in ("subscription", "rate plan", "charge") if problem.startswith(k))
        key = problem[len(kind) + 1 :].split(" ", 1)[0].rstrip(":")
        found.setdefault(owner.get(key, key), []).append(problem)
    return found


@pytest.fixture
def webhook(pg_url: str) -> Iterator[Live]:
    with running_webhook(pg_url, LOG_LEVEL="WARNING") as live:
        yield live


@pytest.mark.slow
@pytest.mark.timeout(sized(300, 1500))
def test_storm_of_5xx_429_and_spikes_with_lost_callouts__nothing_dead_and_reconcile_heals_all(
    pg_url: str, pg_engine: Engine, sandbox_factory: Any, webhook: Live
) -> None:
    size = sized(30, 300)
    sandbox = sandbox_factory(subscriptions=size, concurrency_limit=4, rate_limit_per_window=0)
    settings = storm_settings(pg_url, sandbox)
    numbers = [f"A-S{i:08d}" for i in range(1, size + 1)]
    asyncio.run(enable_callout(sandbox, webhook.url))
    # The cache starts in sync with Zuora (a first full load).
    callouts(pg_engine, numbers, prefix="load")
    drain_until_done(settings, pg_engine)
    assert cache_differences(pg_engine, sandbox.admin.export()) == []

    rng = random.Random(11)
    changed = rng.sample(numbers, k=size // 2)
    announced, lost = changed[: size // 3], changed[size // 3 :]
    sandbox.admin.reset_counters()
    sandbox.admin.set_faults(
        error_rate=0.2, latency_ms=10, latency_jitter_ms=20, spike_rate=0.05, spike_ms=400
    )
    with Bursts(sandbox):
        for i, number in enumerate(announced):
            edit_through_the_api(sandbox, number, {"SupportTier__c": f"Storm-{i}"})
        # Lost callouts: changes Zuora makes without a callout (or whose callout never came).
        for i, number in enumerate(lost):
            if i % 2:
                sandbox.admin.amend(number)
            else:
                sandbox.admin.edit_custom_fields(number, {TRACKED[1]: str(100 + i)})
        deadline = time.monotonic() + 60
        while len(webhook.rows()) < size + len(announced):
            assert time.monotonic() < deadline, "the callouts never reached the inbox"
            time.sleep(0.05)
        drain_until_done(settings, pg_engine)
        counters = sandbox.admin.counters()
    sandbox.admin.clear_faults()

    # The storm really happened, and the drain rode it out: nothing transient went dead.
    assert counters["faults_injected"] > 0 and counters["throttled_429"] > 0, counters
    assert statuses(pg_engine) == {"done": size + len(announced)}
    # Every change a callout announced is in the cache; the only drift left is the lost
    # callouts', every one of them, for a reconcile to find.
    drifted = drift_by_subscription(pg_engine, list(sandbox.admin.export()))
    assert set(drifted) == set(lost), drifted

    healed = asyncio.run(run_reconcile(settings, mode="full", heal=True, drain=True))
    assert healed.drift_total >= len(lost)
    again = asyncio.run(run_reconcile(settings, mode="full", heal=True, drain=True))
    assert again.drift_total == 0
    assert "dead" not in statuses(pg_engine)
    assert cache_differences(pg_engine, sandbox.admin.export()) == []
