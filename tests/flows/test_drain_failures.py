"""A drain run under trouble: a failing database is reported in one line, a lost LISTEN
session does not end the run, and rows waiting behind the tenant's limit keep their lease."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text

from flows.drain import DrainAborted, Drainer, DrainOptions, DrainStats
from tests.faults.harness import free_port
from tests.flows.test_drain import callouts, statuses
from warehouse.db import make_engine
from warehouse.models import inbox as inbox_table
from zuora.client import ZuoraClient
from zuora.limiter import AdaptiveLimiter
from zuora.sandbox.server import RunningSandbox


def test_a_database_that_is_gone_aborts_the_run_with_a_one_line_reason() -> None:
    # Nothing listens there: the first claim fails the way a stopped server fails it.
    engine = make_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/gone")

    async def run() -> None:
        async with ZuoraClient("http://127.0.0.1:9", "id", "secret") as zuora:
            await Drainer(engine, zuora).run()

    with pytest.raises(DrainAborted) as aborted:
        asyncio.run(run())
    engine.dispose()
    message = str(aborted.value)
    assert message.startswith("the drain stopped: connection to server at")
    assert "\n" not in message and "sqlalche.me" not in message and "[SQL" not in message


def test_a_lost_listen_session_does_not_end_the_run(
    pg_engine: Engine, sandbox: RunningSandbox
) -> None:
    """A database restart also cuts the session an idle drain LISTENs on; the run goes on
    polling and still takes what arrives."""

    def cut_listener() -> int:
        with pg_engine.connect() as conn:
            return len(
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND query LIKE 'LISTEN%' "
                        "AND pid <> pg_backend_pid()"
                    )
                ).all()
            )

    async def scenario() -> DrainStats:
        async with ZuoraClient(
            sandbox.base_url, sandbox.client_id, sandbox.client_secret, limiter=AdaptiveLimiter(2)
        ) as zuora:
            options = DrainOptions(window_seconds=4, idle_poll_seconds=0.2)
            running = asyncio.create_task(Drainer(pg_engine, zuora, options).run())
            await asyncio.sleep(1)
            assert await asyncio.to_thread(cut_listener) == 1
            await asyncio.sleep(0.5)
            await asyncio.to_thread(callouts, pg_engine, ["A-S00000001"], prefix="after")
            return await running

    stats = asyncio.run(scenario())
    assert stats.completed == 1 and statuses(pg_engine) == {"done": 1}


def test_rows_waiting_their_turn_keep_their_lease(pg_engine: Engine, sandbox_factory: Any) -> None:
    """A run holds more subscriptions than the tenant lets it fetch at once; the ones still
    waiting for a slot after a lease's length must not be claimed again (which would spend
    an attempt on them each time, until healthy rows went dead)."""
    sandbox = sandbox_factory(subscriptions=8)
    sandbox.admin.set_faults(latency_ms=300)
    callouts(pg_engine, [f"A-S{i:08d}" for i in range(1, 9)])

    async def run() -> DrainStats:
        async with ZuoraClient(
            sandbox.base_url, sandbox.client_id, sandbox.client_secret, limiter=AdaptiveLimiter(1)
        ) as zuora:  # one at a time: the last one waits about 2.4 s, more than two leases
            options = DrainOptions(lease=timedelta(seconds=1), idle_poll_seconds=0.2)
            return await Drainer(pg_engine, zuora, options).run()

    stats = asyncio.run(run())
    assert (stats.claimed, stats.fetched, stats.completed, stats.lost_leases) == (8, 8, 8, 0)
    with pg_engine.connect() as conn:
        assert conn.execute(select(func.max(inbox_table.c.attempts))).scalar_one() == 1
    assert statuses(pg_engine) == {"done": 8}
