"""Enqueue in detail, on PostgreSQL and SQLite: batches, content keys, NOTIFY, the backlog."""

from __future__ import annotations

import select
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest
from sqlalchemy import Engine, update
from sqlalchemy import select as sql_select
from sqlalchemy.engine import make_url

from warehouse import inbox
from warehouse.inbox import NOTIFY_CHANNEL, NewItem
from warehouse.models import inbox as inbox_table

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)


def content(key: str, number: str = "A-S1") -> NewItem:
    return NewItem(
        source="callout",
        dedup_key=key,
        subscription_number=number,
        payload={"k": key},
        dedup="while_pending",
    )


def keys(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sql_select(inbox_table.c.dedup_key, inbox_table.c.status).order_by(inbox_table.c.id)
        )
        return [(k, s) for k, s in rows]


def test_enqueue__a_large_batch_maps_every_result_to_its_item(engine: Engine) -> None:
    with engine.begin() as conn:
        inbox.enqueue(conn, [NewItem("callout", "k-7", "A-S7"), NewItem("callout", "k-9", "A")])
    batch = [
        NewItem("callout", f"k-{i % 300}", f"A-S{i}", payload={"i": i, "nested": [i, {"x": None}]})
        for i in range(450)
    ]
    with engine.begin() as conn:
        results = inbox.enqueue(conn, batch, now=T0)
    assert [r.dedup_key for r in results] == [item.dedup_key for item in batch]
    stored = [r for r in results if not r.duplicate]
    assert len(stored) == 298  # 300 distinct keys, two of them already there
    assert results[7].duplicate and results[9].duplicate and results[307].duplicate
    with engine.connect() as conn:
        row = conn.execute(sql_select(inbox_table).where(inbox_table.c.id == results[1].id)).one()
    assert (row.dedup_key, row.subscription_number, row.payload) == (
        "k-1",
        "A-S1",
        {"i": 1, "nested": [1, {"x": None}]},
    )
    assert (row.status, row.attempts, row.received_at, row.available_at) == ("pending", 0, T0, T0)


def test_while_pending__a_copy_still_pending_is_a_duplicate(engine: Engine) -> None:
    with engine.begin() as conn:
        first = inbox.enqueue(conn, [content("c1"), content("c1")])
    with engine.begin() as conn:
        again = inbox.enqueue(conn, [content("c1")])
    assert [r.duplicate for r in first] == [False, True]
    assert again[0].duplicate
    assert keys(engine) == [("c1", "pending")]


@pytest.mark.parametrize("taken_to", ["processing", "done", "dead"])
def test_while_pending__once_the_copy_was_taken_an_identical_item_is_stored(
    engine: Engine, taken_to: str
) -> None:
    with engine.begin() as conn:
        (first,) = inbox.enqueue(conn, [content("c1")])
        inbox.claim(conn, worker="w", limit=1, lease=LEASE)
        if taken_to != "processing":
            conn.execute(update(inbox_table).values(status=taken_to))
    with engine.begin() as conn:
        (second,) = inbox.enqueue(conn, [content("c1"), content("c1")])[:1]
    assert not second.duplicate and second.id != first.id
    assert keys(engine) == [(f"c1#{first.id}", taken_to), ("c1", "pending")]


def test_while_pending__does_not_touch_keys_that_always_dedup(engine: Engine) -> None:
    with engine.begin() as conn:
        inbox.enqueue(conn, [NewItem("callout", "n1", "A-S1")])
        inbox.claim(conn, worker="w", limit=1, lease=LEASE)
        conn.execute(update(inbox_table).values(status="done"))
    with engine.begin() as conn:
        (again,) = inbox.enqueue(conn, [NewItem("callout", "n1", "A-S1")])
    assert again.duplicate  # a notification id names one event, forever
    assert keys(engine) == [("n1", "done")]


def test_while_pending__keys_must_leave_room_to_retire() -> None:
    content("k" * 200)
    with pytest.raises(ValueError, match="at most 200"):
        content("k" * 201)
    with pytest.raises(ValueError, match="unknown dedup scope"):
        NewItem("callout", "k", "A-S1", dedup="sometimes")  # type: ignore[arg-type]


def test_notify__sent_with_the_insert_only_when_a_row_was_stored(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        with engine.begin() as conn:  # SQLite has no NOTIFY: the flag is simply ignored
            assert not inbox.enqueue(conn, [NewItem("callout", "n1", "A")], notify=True)[
                0
            ].duplicate
        return
    parts = make_url(str(engine.url.render_as_string(hide_password=False)))
    listener = psycopg2.connect(
        host=parts.host, port=parts.port, user=parts.username, dbname=parts.database
    )
    listener.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
    try:
        listener.cursor().execute(f"LISTEN {NOTIFY_CHANNEL}")
        with engine.connect() as conn:
            auto = conn.execution_options(isolation_level="AUTOCOMMIT")
            inbox.enqueue(auto, [NewItem("callout", f"n{i}", "A") for i in range(5)], notify=True)
            assert select.select([listener], [], [], 5) != ([], [], [])
            listener.poll()
            assert len(listener.notifies) == 1  # one per transaction, however many rows
            listener.notifies.clear()
            inbox.enqueue(auto, [NewItem("callout", "n1", "A")], notify=True)  # a duplicate
            assert select.select([listener], [], [], 0.3) == ([], [], [])
    finally:
        listener.close()


def test_backlog__live_rows_and_the_oldest_of_them(engine: Engine) -> None:
    with engine.connect() as conn:
        empty = inbox.backlog(conn, now=T0)
    assert (empty.pending, empty.processing, empty.oldest_age_seconds) == (0, 0, None)
    with engine.begin() as conn:
        inbox.enqueue(conn, [NewItem("callout", "a", "A")], now=T0)
        inbox.enqueue(conn, [NewItem("callout", "b", "A")], now=T0 + timedelta(minutes=1))
        inbox.enqueue(conn, [NewItem("callout", "c", "A")], now=T0 + timedelta(minutes=2))
        inbox.claim(conn, worker="w", limit=1, lease=LEASE, now=T0 + timedelta(minutes=3))
        conn.execute(
            update(inbox_table).where(inbox_table.c.dedup_key == "b").values(status="done")
        )
    with engine.connect() as conn:
        found = inbox.backlog(conn, now=T0 + timedelta(minutes=10))
    assert (found.pending, found.processing, found.depth) == (1, 1, 2)
    assert found.oldest_received_at == T0  # the claimed one is still waiting to be done
    assert found.oldest_age_seconds == 600


def test_enqueue_statements__the_same_answer_through_asyncpg(pg_engine: Engine) -> None:
    import asyncio

    import asyncpg

    with pg_engine.begin() as conn:
        _, earlier = inbox.enqueue(conn, [NewItem("callout", "old", "A-S0"), content("c1")])
        inbox.claim(conn, worker="w", limit=5, lease=LEASE)
    batch = [
        NewItem("callout", "new", "A-S1", payload={"p": [1, "x"]}),
        NewItem("callout", "old", "A-S0"),
        NewItem("callout", "new", "A-S1"),
        content("c1"),
    ]
    dsn = pg_engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

    async def run() -> list[inbox.Enqueued]:
        conn = await asyncpg.connect(dsn)
        try:
            rows: list[object] = []
            for statement in inbox.enqueue_statements(batch, now=T0, notify=True):
                rows = await conn.fetch(statement.sql, *statement.args)
            return inbox.enqueue_results(batch, rows)  # type: ignore[arg-type]
        finally:
            await conn.close()

    results = asyncio.run(run())
    assert [r.duplicate for r in results] == [False, True, True, False]
    with pg_engine.connect() as conn:
        stored = conn.execute(
            sql_select(inbox_table).where(inbox_table.c.id == results[0].id)
        ).one()
    assert (stored.dedup_key, stored.payload, stored.received_at) == ("new", {"p": [1, "x"]}, T0)
    assert [k for k, _ in keys(pg_engine)] == ["old", f"c1#{earlier.id}", "new", "c1"]
    assert inbox.enqueue_statements([]) == []
