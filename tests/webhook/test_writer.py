"""The group-commit writers against real databases: batches, a bad row among good ones,
waiting on a lock, an outage."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy import Engine, text

from warehouse.inbox import Enqueued, NewItem
from webhook import receiver
from webhook.writer import AsyncPgWriter, InboxWriter, StoreError, ThreadWriter

from .conftest import Live

WRITERS: dict[str, Callable[[Engine], InboxWriter]] = {
    "asyncpg": lambda engine: AsyncPgWriter(engine),
    "thread": lambda engine: ThreadWriter(engine),
}


def item(key: str, **payload: object) -> NewItem:
    return NewItem("callout", key, "A-S1", payload=dict(payload))


async def store_all(writer: InboxWriter, items: list[NewItem]) -> list[Enqueued | BaseException]:
    writer.start(asyncio.get_running_loop())
    try:
        futures = [writer.submit(i) for i in items]
        return list(await asyncio.gather(*futures, return_exceptions=True))
    finally:
        await writer.stop()


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_writer__concurrent_items_share_commits_and_each_gets_its_answer(
    pg_engine: Engine, kind: str
) -> None:
    sizes: list[int] = []
    writer = WRITERS[kind](pg_engine)
    writer.on_batch = sizes.append
    items = [item(f"k{i % 150}", i=i) for i in range(300)]
    results = asyncio.run(store_all(writer, items))
    answers = [r for r in results if isinstance(r, Enqueued)]
    assert len(answers) == 300
    # Each key stored by exactly one of its two items (which one depends on the batching).
    stored = sorted(r.dedup_key for r in answers if not r.duplicate)
    assert stored == sorted(f"k{i}" for i in range(150))
    assert sum(sizes) == 300 and len(sizes) < 300  # batched, not one commit per item
    with pg_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM callout_inbox")).scalar_one() == 150


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_writer__a_bad_row_fails_alone(pg_engine: Engine, kind: str) -> None:
    # PostgreSQL's JSONB refuses U+0000: the receiver never lets one through, but if a row
    # ever failed like this, its neighbours in the batch must still be stored.
    items = [item("good-1"), item("bad", text="nul \x00 here"), item("good-2")]
    results = asyncio.run(store_all(WRITERS[kind](pg_engine), items))
    good_1, bad, good_2 = results
    assert isinstance(good_1, Enqueued) and isinstance(good_2, Enqueued)
    assert isinstance(bad, StoreError) and not bad.unavailable
    with pg_engine.connect() as conn:
        keys = conn.execute(text("SELECT dedup_key FROM callout_inbox")).scalars()
        assert sorted(keys) == ["good-1", "good-2"]  # batches may commit in either order


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_writer__an_unreachable_database_fails_fast_and_says_unavailable(kind: str) -> None:
    from warehouse.db import make_engine

    engine = make_engine("postgresql+psycopg2://postgres@127.0.0.1:1/nowhere")
    started = time.monotonic()
    results = asyncio.run(store_all(WRITERS[kind](engine), [item("a"), item("b")]))
    assert all(isinstance(r, StoreError) and r.unavailable for r in results)
    assert time.monotonic() - started < 5
    engine.dispose()


def test_a_commit_slower_than_the_answer__503_then_the_retry_is_a_duplicate(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A table lock makes the INSERT wait longer than the request may. The caller is told
    # 503 (Zuora retries); the row lands once the lock goes; the retry finds it: 200.
    monkeypatch.setattr(receiver, "STORE_TIMEOUT_SECONDS", 0.3)
    locked = threading.Event()
    release = threading.Event()

    def hold_lock() -> None:
        with live.engine.begin() as conn:
            conn.execute(text("LOCK TABLE callout_inbox IN ACCESS EXCLUSIVE MODE"))
            locked.set()
            release.wait(10)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    assert locked.wait(10)
    try:
        slow = live.post(json={"SubscriptionNumber": "A-S1"}, notification="slow-1")
        assert slow.status_code == 503 and slow.headers["Retry-After"]
    finally:
        release.set()
        holder.join()
    deadline = time.monotonic() + 10
    while not live.rows():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    retry = live.post(json={"SubscriptionNumber": "A-S1"}, notification="slow-1")
    assert retry.json() == {"success": True, "status": "duplicate", "id": None}
    assert len(live.rows()) == 1
