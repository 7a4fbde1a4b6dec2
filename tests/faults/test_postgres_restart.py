"""PostgreSQL stopped and started under load, on a private throwaway cluster.

Proves: while the database is away the webhook answers 503 (which Zuora retries) and its
readiness says so, and it recovers by itself when the database is back; a drain run that
loses its database fails cleanly (exit 1, one line, no traceback) and the next runs carry
on; nothing committed is lost, and the cache ends equal to Zuora.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from tests.faults.harness import (
    PrivateCluster,
    Service,
    Webhook,
    ZuoraSender,
    notifications,
    private_cluster,
    project_env,
    sized,
    statuses,
)
from tests.faults.test_webhook_killed import webhook_env
from tests.webhook.conftest import PASSWORD, USER
from warehouse import migrate
from warehouse.db import make_engine
from warehouse.models import inbox as inbox_table
from warehouse.models import sync_runs
from warehouse.verify import cache_differences


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    with private_cluster() as running:
        yield running


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.timeout(sized(300, 1500))
def test_postgres_restarts__webhook_503s_then_recovers_drains_fail_cleanly_nothing_lost(
    cluster: PrivateCluster, sandbox_factory: Any, tmp_path: Path
) -> None:
    url = cluster.create_database("zuora_sync")
    migrate.upgrade(url)
    # A second warehouse with nothing to do, where a drain idles in its window on LISTEN.
    idle_url = cluster.create_database("idle")
    migrate.upgrade(idle_url)
    engine: Engine = make_engine(url, pool_size=2)
    size = sized(20, 200)
    sandbox = sandbox_factory(subscriptions=size)
    numbers = [f"A-S{i:08d}" for i in range(1, size + 1)]
    hook = Webhook(webhook_env(url), tmp_path / "webhook.log")
    hook.start()
    idler = Service(
        ["drain", "--window", "600"],
        project_env(**sandbox.env(), DATABASE_URL=idle_url),
        tmp_path / "idle.log",
    )
    idler.start()
    hook.wait_up()
    assert hook.readiness() == 200
    wait_for(lambda: "drain.start" in idler.output(), 60, "the idle drain never started")
    try:
        # --- the webhook: the database goes away under load and comes back ---------------
        notes = notifications(sized(60, 1500), numbers)
        sender = ZuoraSender(hook.url, USER, PASSWORD, retry_interval=0.1)
        delivery = threading.Thread(
            target=lambda: asyncio.run(
                sender.deliver_all(notes, concurrency=4, deadline=time.monotonic() + 300)
            )
        )
        delivery.start()
        wait_for(lambda: sum(n.acknowledged for n in notes) >= len(notes) // 3, 120, "no load")
        cluster.stop("fast")
        # Zuora's attempts meanwhile are answered 503 with Retry-After, and readiness fails.
        wait_for(
            lambda: sum(a.status == 503 for n in notes for a in n.attempts) >= 10,
            60,
            "no 503 while the database was down",
        )
        unready = httpx.get(hook.url + "/readyz", timeout=30)
        assert unready.status_code == 503 and unready.headers["Retry-After"]
        cluster.start()
        # The idle drain lost its LISTEN session with the restart: it carries on, or, when
        # its next claim finds the database still away, it ends cleanly with one line.
        if idler.running:
            idler.stop()
        idle_output = idler.output()
        assert "Traceback" not in idle_output, idle_output[-3000:]
        last = idle_output.strip().splitlines()[-1]
        assert "drain.listen_lost" in idle_output or last.startswith("zuora-sync: the drain")
        delivery.join(timeout=300)
        assert not delivery.is_alive()
        wait_for(lambda: hook.readiness() == 200, 30, "readiness never recovered")
        assert hook.starts == 1 and hook.running  # it recovered by itself
        assert [n.id for n in notes if not n.acknowledged] == []
        answers = {a.status for n in notes for a in n.attempts}
        assert answers == {200, 401, 503}, answers  # never a 500, never a dropped connection
        with engine.connect() as conn:
            keys = set(conn.execute(select(inbox_table.c.dedup_key)).scalars())
        assert keys == {f"callout:{n.id}" for n in notes}  # every 200 is a stored row

        # --- a drain: the database crashes under it; the next runs carry on ---------------
        sandbox.admin.set_faults(latency_ms=200)
        env = project_env(
            **sandbox.env(),
            DATABASE_URL=url,
            INBOX_LEASE_SECONDS="2",
            ZUORA_MAX_CONCURRENCY="2",
            LOG_FORMAT="json",
        )
        first = Service(["drain", "--window", "0", "--batch-size", "5"], env, tmp_path / "d1.log")
        first.start()
        wait_for(lambda: statuses(engine).get("done", 0) >= 5, 120, "the drain never got going")
        engine.dispose()
        cluster.stop("immediate")  # a crash: no shutdown checkpoint, recovery on start
        assert first.wait(timeout=120) == 1
        lines = first.output().strip().splitlines()
        assert lines[-1].startswith("zuora-sync: the drain stopped:"), lines[-5:]
        assert "Traceback" not in first.output()
        cluster.start()
        done_before = statuses(engine).get("done", 0)
        assert 5 <= done_before < len(notes)

        runs = 0
        while set(statuses(engine)) != {"done"}:
            runs += 1
            assert runs <= 20, statuses(engine)
            again = Service(
                ["drain", "--window", "0", "--batch-size", "5"], env, tmp_path / f"d{runs + 1}.log"
            )
            again.start()
            assert again.wait(timeout=300) == 0, again.output()[-2000:]
            time.sleep(0.5)  # the crashed run's leases run out
        assert statuses(engine) == {"done": len(notes)}
        with engine.connect() as conn:
            run_rows = conn.execute(
                select(sync_runs.c.status, sync_runs.c.error).order_by(sync_runs.c.id)
            ).all()
        assert run_rows[0].status != "succeeded"  # the crashed run never claims success
        assert {r.status for r in run_rows[1:]} == {"succeeded"}
        sandbox.admin.clear_faults()
        assert cache_differences(engine, sandbox.admin.export()) == []
    finally:
        hook.stop()
        engine.dispose()
    assert PASSWORD not in hook.output()
