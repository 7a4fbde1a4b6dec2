"""The drain against real PostgreSQL and the running sandbox."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, func, select, text

from flows.drain import Drainer, DrainOptions, DrainStats
from warehouse import inbox
from warehouse.inbox import NewItem, RetryPolicy
from warehouse.models import inbox as inbox_table
from warehouse.models import subscriptions
from warehouse.verify import cache_differences
from zuora.client import RetryBudget, ZuoraClient
from zuora.limiter import AdaptiveLimiter
from zuora.sandbox.server import RunningSandbox

FAST_RETRY = RetryBudget(max_attempts=3, base_seconds=0.01, max_seconds=0.05, total_seconds=10)
QUICK_POLICY = RetryPolicy(max_attempts=3, base_seconds=0.01, max_seconds=0.02)


def numbers(sandbox: RunningSandbox, count: int) -> list[str]:
    return [f"A-S{i:08d}" for i in range(1, count + 1)]


def callouts(engine: Engine, keys: list[str], *, prefix: str = "n", by_id: bool = False) -> None:
    items = [
        NewItem(
            source="callout",
            dedup_key=f"{prefix}-{i}",
            subscription_number=None if by_id else key,
            subscription_id=key if by_id else None,
            payload={"SubscriptionNumber": key},
        )
        for i, key in enumerate(keys)
    ]
    with engine.begin() as conn:
        inbox.enqueue(conn, items)


def drain(
    engine: Engine,
    sandbox: RunningSandbox,
    *,
    secret: str | None = None,
    policy: RetryPolicy = QUICK_POLICY,
    concurrency: int = 10,
    **options: Any,
) -> DrainStats:
    async def run() -> DrainStats:
        async with ZuoraClient(
            sandbox.base_url,
            sandbox.client_id,
            secret or sandbox.client_secret,
            retry=FAST_RETRY,
            limiter=AdaptiveLimiter(concurrency),
        ) as zuora:
            return await Drainer(engine, zuora, DrainOptions(policy=policy, **options)).run()

    return asyncio.run(run())


def statuses(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(
            conn.execute(
                select(inbox_table.c.status, func.count()).group_by(inbox_table.c.status)
            ).all()
        )


def test_one_callout_puts_the_whole_subscription_graph_in_the_cache(
    pg_engine: Engine, sandbox: RunningSandbox
) -> None:
    (number,) = numbers(sandbox, 1)
    callouts(pg_engine, [number])
    stats = drain(pg_engine, sandbox)
    assert (stats.claimed, stats.fetched, stats.inserted, stats.completed) == (1, 1, 1, 1)
    expected = [p for p in sandbox.admin.export() if p["subscriptionNumber"] == number]
    with pg_engine.connect() as conn:
        conn.execute(
            text("DELETE FROM zuora_subscriptions WHERE subscription_number <> :n"), {"n": number}
        )
    assert cache_differences(pg_engine, expected) == []
    assert statuses(pg_engine) == {"done": 1}
    assert stats.lag(0.95) is not None


def test_every_subscription_ends_equal_to_zuora_and_callouts_coalesce(
    pg_engine: Engine, sandbox: RunningSandbox
) -> None:
    keys = numbers(sandbox, 20)
    callouts(pg_engine, keys * 5)  # five callouts for each subscription
    stats = drain(pg_engine, sandbox, batch_size=200)
    assert stats.claimed == 100 and stats.fetched == 20  # one fetch per subscription
    assert cache_differences(pg_engine, sandbox.admin.export()) == []
    assert statuses(pg_engine) == {"done": 100}


def test_a_custom_field_edit_and_an_amendment_reach_the_cache(
    pg_engine: Engine, sandbox: RunningSandbox
) -> None:
    first, second = numbers(sandbox, 2)
    callouts(pg_engine, [first, second], prefix="initial")
    drain(pg_engine, sandbox)
    sandbox.admin.edit_custom_fields(first, {"SupportTier__c": "Platinum"})
    new_id = sandbox.admin.amend(second)
    callouts(pg_engine, [first], prefix="edit")
    callouts(
        pg_engine, [new_id], prefix="amend", by_id=True
    )  # the callout names the new version id
    stats = drain(pg_engine, sandbox)
    assert stats.updated == 2
    with pg_engine.connect() as conn:
        tier = conn.execute(
            select(subscriptions.c.custom_fields).where(
                subscriptions.c.subscription_number == first
            )
        ).scalar_one()["SupportTier__c"]
        latest = conn.execute(
            select(subscriptions.c.zuora_id).where(subscriptions.c.subscription_number == second)
        ).scalar_one()
    assert tier == "Platinum" and latest == new_id
    expected = [p for p in sandbox.admin.export() if p["subscriptionNumber"] in (first, second)]
    assert cache_differences(pg_engine, expected) == []


def test_an_old_version_id_arriving_late_never_moves_the_cache_back(
    pg_engine: Engine, sandbox: RunningSandbox
) -> None:
    (number,) = numbers(sandbox, 1)
    old_id = sandbox.admin.export().__next__()["id"]
    sandbox.admin.amend(number)
    sandbox.admin.amend(number)
    callouts(pg_engine, [number], prefix="latest")
    drain(pg_engine, sandbox)
    with pg_engine.connect() as conn:
        version = conn.execute(select(subscriptions.c.version)).scalar_one()
    # Out of order: a callout about the first version, and a duplicate of the latest one.
    callouts(pg_engine, [old_id], prefix="old", by_id=True)
    callouts(pg_engine, [number], prefix="latest")
    stats = drain(pg_engine, sandbox)
    assert stats.claimed == 1  # the duplicate notification stored nothing
    with pg_engine.connect() as conn:
        assert conn.execute(select(subscriptions.c.version)).scalar_one() == version
    assert (
        cache_differences(
            pg_engine, [p for p in sandbox.admin.export() if p["subscriptionNumber"] == number]
        )
        == []
    )


def test_a_subscription_deleted_in_zuora_is_marked_deleted(
    pg_engine: Engine, sandbox: RunningSandbox
) -> None:
    first, second = numbers(sandbox, 2)
    callouts(pg_engine, [first, second], prefix="a")
    drain(pg_engine, sandbox)
    sandbox.admin.delete(first)
    callouts(pg_engine, [first], prefix="b")
    stats = drain(pg_engine, sandbox)
    assert stats.deleted == 1 and statuses(pg_engine) == {"done": 3}
    with pg_engine.connect() as conn:
        deleted = dict(
            conn.execute(
                select(subscriptions.c.subscription_number, subscriptions.c.deleted_at)
            ).all()
        )
    assert deleted[first] is not None and deleted[second] is None


def test_429_and_5xx_storms_converge_with_nothing_dead(
    pg_engine: Engine, sandbox_factory: Any
) -> None:
    # 30% of requests fail with a 5xx; the tenant takes 4 at a time and 40 a second. Each
    # request is held 100 ms so the 12 the drain sends at once overlap even on a busy machine.
    sandbox = sandbox_factory(
        subscriptions=60, concurrency_limit=4, rate_limit_per_window=40, rate_limit_window_s=1
    )
    sandbox.admin.set_faults(error_rate=0.3, latency_ms=100)
    keys = numbers(sandbox, 60)
    callouts(pg_engine, keys)
    patient = RetryPolicy(max_attempts=50, base_seconds=0.01, max_seconds=0.05)
    total = DrainStats()
    for _ in range(30):  # later runs pick up what earlier runs failed with backoff
        stats = drain(pg_engine, sandbox, policy=patient, concurrency=12, window_seconds=0)
        total.retried += stats.retried
        if statuses(pg_engine) == {"done": 60}:
            break
    counters = sandbox.admin.counters()
    sandbox.admin.clear_faults()
    assert statuses(pg_engine) == {"done": 60}
    # The storm really happened: injected 5xx, and 429s from the limits.
    assert counters["faults_injected"] > 0 and counters["throttled_429"] > 0
    assert counters["peak_concurrency"] <= 4
    assert cache_differences(pg_engine, sandbox.admin.export()) == []


def test_permanent_errors_go_dead_after_the_budget_and_replay_brings_them_back(
    pg_engine: Engine, sandbox: RunningSandbox
) -> None:
    keys = numbers(sandbox, 3)
    callouts(pg_engine, keys)
    budget = RetryPolicy(max_attempts=2, base_seconds=0.01, max_seconds=0.01)
    # The run keeps taking the rows back as their short backoff passes, until the budget of
    # two attempts is spent.
    failing = drain(pg_engine, sandbox, secret="revoked-secret", policy=budget)
    assert (failing.retried, failing.dead) == (3, 3) and statuses(pg_engine) == {"dead": 3}
    with pg_engine.connect() as conn:
        errors = set(conn.execute(select(inbox_table.c.last_error)).scalars())
    assert all("HTTP 401" in e for e in errors) and not any("revoked-secret" in e for e in errors)

    with pg_engine.begin() as conn:
        assert len(inbox.replay(conn, all_dead=True)) == 3
    healed = drain(pg_engine, sandbox, policy=budget)  # the credentials were fixed
    assert healed.completed == 3
    assert statuses(pg_engine) == {"done": 6}


def test_a_window_keeps_draining_what_arrives_meanwhile(
    pg_engine: Engine, sandbox: RunningSandbox
) -> None:
    keys = numbers(sandbox, 4)

    async def scenario() -> DrainStats:
        async with ZuoraClient(
            sandbox.base_url, sandbox.client_id, sandbox.client_secret, limiter=AdaptiveLimiter(4)
        ) as zuora:
            drainer = Drainer(
                pg_engine, zuora, DrainOptions(window_seconds=3, idle_poll_seconds=0.5)
            )
            running = asyncio.create_task(drainer.run())
            for i, key in enumerate(keys):
                await asyncio.sleep(0.3)
                await asyncio.to_thread(callouts, pg_engine, [key], prefix=f"late{i}")
            return await running

    stats = asyncio.run(scenario())
    assert stats.claimed == 4 and statuses(pg_engine) == {"done": 4}
    # Woken by NOTIFY rather than by the poll: each row waited well under the window.
    assert stats.lag(1.0) is not None and stats.lag(1.0) < 2.5


def test_rows_a_dead_worker_held_are_finished_after_the_lease(
    pg_engine: Engine, sandbox: RunningSandbox
) -> None:
    keys = numbers(sandbox, 3)
    callouts(pg_engine, keys)
    with pg_engine.begin() as conn:
        inbox.claim(conn, worker="crashed", limit=3, lease=timedelta(seconds=1))
    assert drain(pg_engine, sandbox).claimed == 0  # still leased
    import time

    time.sleep(1.2)
    assert drain(pg_engine, sandbox).completed == 3
    assert statuses(pg_engine) == {"done": 3}


def test_the_drain_works_on_sqlite_too(sqlite_url: str, sandbox: RunningSandbox) -> None:
    from warehouse.db import make_engine

    engine = make_engine(sqlite_url)
    callouts(engine, numbers(sandbox, 10) * 2)
    stats = drain(engine, sandbox)
    assert stats.completed == 20
    assert cache_differences(engine, list(sandbox.admin.export())[:10]) == []
    engine.dispose()


def test_a_drain_process_killed_mid_batch_loses_nothing(
    pg_url: str, pg_engine: Engine, sandbox_factory: Any
) -> None:
    """A real SIGKILL: the dead process's rows come back after its lease and get finished."""
    import os
    import signal
    import subprocess
    import sys
    import time

    sandbox = sandbox_factory(subscriptions=40)
    sandbox.admin.set_faults(latency_ms=300)
    keys = numbers(sandbox, 40)
    callouts(pg_engine, keys)
    env = {
        **os.environ,
        **sandbox.env(),
        "DATABASE_URL": pg_url,
        "INBOX_LEASE_SECONDS": "4",
        "ZUORA_MAX_CONCURRENCY": "4",
    }
    env.pop("PREFECT_API_URL", None)
    victim = subprocess.Popen(
        [sys.executable, "-m", "zuora_sync", "drain", "--batch-size", "40"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while statuses(pg_engine).get("done", 0) < 4:  # it is working: some done, more in hand
        assert time.monotonic() < deadline and victim.poll() is None, "the drain never got going"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    at_kill = statuses(pg_engine)
    assert at_kill.get("processing", 0) > 0, at_kill  # killed mid-batch, rows still leased

    sandbox.admin.clear_faults()
    with pg_engine.connect() as conn:
        expiry = conn.execute(select(func.max(inbox_table.c.lease_expires_at))).scalar_one()
    from warehouse.inbox import utcnow

    if (expiry - utcnow()).total_seconds() > 1:
        assert drain(pg_engine, sandbox).claimed == 0  # the leases still hold
    time.sleep(max(0.0, (expiry - utcnow()).total_seconds()) + 0.1)
    rescued = drain(pg_engine, sandbox)
    assert rescued.claimed == at_kill["processing"]
    assert statuses(pg_engine) == {"done": 40}
    assert cache_differences(pg_engine, sandbox.admin.export()) == []
