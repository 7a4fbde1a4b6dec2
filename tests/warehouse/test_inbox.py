"""The inbox queue on real PostgreSQL and SQLite: dedup, claim, leases, backoff, dead, replay."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select, text

from warehouse import inbox
from warehouse.inbox import NewItem, RetryPolicy
from warehouse.models import inbox as inbox_table

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)


def item(key: str, number: str = "A-S1", source: str = "callout") -> NewItem:
    return NewItem(source=source, dedup_key=key, subscription_number=number, payload={"k": key})


def fill(engine: Engine, count: int, *, now: datetime = T0) -> None:
    with engine.begin() as conn:
        inbox.enqueue(conn, [item(f"n{i}", f"A-S{i % 97}") for i in range(count)], now=now)


def status_of(engine: Engine) -> dict[int, str]:
    with engine.connect() as conn:
        return dict(conn.execute(select(inbox_table.c.id, inbox_table.c.status)).all())


def test_enqueue__second_copy_of_a_key_stores_nothing_and_says_so(engine: Engine) -> None:
    with engine.begin() as conn:
        first = inbox.enqueue(conn, [item("n1"), item("n2"), item("n1")], now=T0)
    with engine.begin() as conn:
        again = inbox.enqueue(conn, [item("n2"), item("n3")], now=T0)
    assert [r.duplicate for r in first] == [False, False, True]
    assert [r.duplicate for r in again] == [True, False]
    with engine.connect() as conn:
        keys = conn.execute(select(inbox_table.c.dedup_key).order_by("id")).scalars().all()
    assert keys == ["n1", "n2", "n3"]


def test_enqueue__rejects_an_item_without_a_subscription_key() -> None:
    with pytest.raises(ValueError, match="subscription number or id"):
        NewItem(source="callout", dedup_key="x")
    with pytest.raises(ValueError, match="unknown inbox source"):
        NewItem(source="email", dedup_key="x", subscription_number="A-S1")


def test_claim__leases_oldest_first_and_counts_the_attempt(engine: Engine) -> None:
    fill(engine, 5)
    with engine.begin() as conn:
        batch = inbox.claim(conn, worker="w1", limit=3, lease=LEASE, now=T0)
    assert [c.dedup_key for c in batch] == ["n0", "n1", "n2"]
    assert {c.attempts for c in batch} == {1}
    assert {c.lease_expires_at for c in batch} == {T0 + LEASE}
    with engine.begin() as conn:
        rest = inbox.claim(conn, worker="w2", limit=10, lease=LEASE, now=T0)
    assert [c.dedup_key for c in rest] == ["n3", "n4"]


def test_claim__skips_rows_whose_backoff_has_not_elapsed(engine: Engine) -> None:
    fill(engine, 1)
    with engine.begin() as conn:
        (row,) = inbox.claim(conn, worker="w", limit=1, lease=LEASE, now=T0)
        policy = RetryPolicy(max_attempts=5, base_seconds=10, max_seconds=100, jitter=0)
        outcome = inbox.fail(conn, [row.id], worker="w", error="boom", policy=policy, now=T0)
    assert outcome.retried == [row.id]
    with engine.begin() as conn:
        assert (
            inbox.claim(conn, worker="w", limit=1, lease=LEASE, now=T0 + timedelta(seconds=9)) == []
        )
        again = inbox.claim(conn, worker="w", limit=1, lease=LEASE, now=T0 + timedelta(seconds=10))
    assert [(r.id, r.attempts) for r in again] == [(row.id, 2)]


def test_lease__a_dead_workers_rows_are_claimed_again_after_expiry(engine: Engine) -> None:
    fill(engine, 3)
    with engine.begin() as conn:
        taken = inbox.claim(conn, worker="crashed", limit=3, lease=LEASE, now=T0)
    # The worker "dies": it never completes. Before the lease ends nobody else gets the rows.
    with engine.begin() as conn:
        assert inbox.claim(conn, worker="w2", limit=3, lease=LEASE, now=T0 + LEASE / 2) == []
    with engine.begin() as conn:
        rescued = inbox.claim(conn, worker="w2", limit=3, lease=LEASE, now=T0 + LEASE)
        assert inbox.complete(conn, [r.id for r in rescued], worker="w2") == 3
    assert sorted(r.id for r in rescued) == sorted(r.id for r in taken)
    assert {r.attempts for r in rescued} == {2}
    # The crashed worker, should it wake up, can no longer complete what it lost.
    with engine.begin() as conn:
        assert inbox.complete(conn, [r.id for r in taken], worker="crashed") == 0
    assert set(status_of(engine).values()) == {"done"}


def test_fail__exponential_backoff_with_jitter_then_dead_keeping_the_error(engine: Engine) -> None:
    fill(engine, 1)
    policy = RetryPolicy(max_attempts=4, base_seconds=1, max_seconds=3, jitter=0.5)
    now = T0
    delays = []
    for attempt in range(1, 5):
        with engine.begin() as conn:
            (row,) = inbox.claim(conn, worker="w", limit=1, lease=LEASE, now=now)
            assert row.attempts == attempt
            outcome = inbox.fail(
                conn, [row.id], worker="w", error=f"HTTP 500 #{attempt}", policy=policy, now=now
            )
            available = conn.execute(select(inbox_table.c.available_at)).scalar_one()
        if attempt < 4:
            assert outcome.retried == [row.id]
            delays.append((available - now).total_seconds())
            now = available
        else:
            assert outcome.dead == [row.id]
    # 1, 2, then capped at 3 seconds, each drawn from [50%, 100%] of its step.
    for delay, step in zip(delays, [1, 2, 3], strict=True):
        assert step * 0.5 <= delay <= step
    with engine.connect() as conn:
        dead = conn.execute(select(inbox_table)).one()
    assert (dead.status, dead.attempts, dead.last_error) == ("dead", 4, "HTTP 500 #4")
    assert dead.processed_at == now


def test_fail__jitter_spreads_retries(engine: Engine) -> None:
    policy = RetryPolicy(max_attempts=9, base_seconds=8, max_seconds=8, jitter=0.5)
    draws = {policy.delay(1, random.Random(seed)).total_seconds() for seed in range(20)}
    assert len(draws) == 20 and min(draws) >= 4 and max(draws) <= 8


def test_fail__dead_now_skips_the_remaining_budget(engine: Engine) -> None:
    fill(engine, 2)
    with engine.begin() as conn:
        rows = inbox.claim(conn, worker="w", limit=2, lease=LEASE, now=T0)
        outcome = inbox.fail(
            conn,
            [rows[0].id],
            worker="w",
            error="HTTP 400",
            policy=RetryPolicy(),
            dead_now=True,
            now=T0,
        )
    assert outcome.dead == [rows[0].id] and outcome.retried == []


def test_reap_expired__a_row_that_keeps_killing_workers_goes_dead(engine: Engine) -> None:
    fill(engine, 1)
    now = T0
    for _ in range(3):
        with engine.begin() as conn:
            assert inbox.reap_expired(conn, max_attempts=3, now=now) == 0
            assert (
                len(inbox.claim(conn, worker="w", limit=1, lease=LEASE, max_attempts=3, now=now))
                == 1
            )
        now += LEASE
    with engine.begin() as conn:
        assert inbox.claim(conn, worker="w", limit=1, lease=LEASE, max_attempts=3, now=now) == []
        assert inbox.reap_expired(conn, max_attempts=3, now=now) == 1
        row = conn.execute(select(inbox_table)).one()
    assert row.status == "dead" and "lease expired" in row.last_error


def test_release__gives_rows_back_without_spending_an_attempt(engine: Engine) -> None:
    fill(engine, 1)
    with engine.begin() as conn:
        (row,) = inbox.claim(conn, worker="w", limit=1, lease=LEASE, now=T0)
        assert inbox.release(conn, [row.id], worker="w") == 1
        (again,) = inbox.claim(conn, worker="w", limit=1, lease=LEASE, now=T0)
    assert again.attempts == 1


def test_replay__dead_rows_come_back_as_replay_rows_and_the_originals_say_so(
    engine: Engine,
) -> None:
    fill(engine, 3)
    with engine.begin() as conn:
        rows = inbox.claim(conn, worker="w", limit=3, lease=LEASE, now=T0)
        inbox.fail(
            conn,
            [rows[0].id, rows[1].id],
            worker="w",
            error="gone wrong",
            policy=RetryPolicy(),
            dead_now=True,
            now=T0,
        )
        inbox.complete(conn, [rows[2].id], worker="w", now=T0)
    with engine.begin() as conn:
        new_ids = inbox.replay(conn, all_dead=True, now=T0 + LEASE)
        assert inbox.replay(conn, all_dead=True, now=T0 + LEASE) == []  # nothing dead left
        done_again = inbox.replay(conn, [rows[2].id], now=T0 + LEASE)
        assert inbox.replay(conn, [rows[2].id], now=T0 + LEASE) == []  # replayed once only
        everything = {r.id: r for r in conn.execute(select(inbox_table))}
    assert len(new_ids) == 2 and len(done_again) == 1
    for new_id in [*new_ids, *done_again]:
        new = everything[new_id]
        original = everything[new.replay_of]
        assert (new.source, new.status, new.attempts) == ("replay", "pending", 0)
        assert new.payload == original.payload
        assert new.subscription_number == original.subscription_number
        assert original.replayed_as == new_id and original.status == "done"
    assert everything[rows[0].id].last_error == "gone wrong"  # the record of what happened stays
    with engine.begin() as conn:
        stats = inbox.stats(conn, now=T0 + LEASE)
    assert stats.counts == {"pending": 3, "processing": 0, "done": 3, "dead": 0}


def test_stats__counts_and_oldest_pending_age(engine: Engine) -> None:
    fill(engine, 2, now=T0)
    fill_later = [item("late")]
    with engine.begin() as conn:
        inbox.enqueue(conn, fill_later, now=T0 + timedelta(minutes=5))
        inbox.claim(conn, worker="w", limit=1, lease=LEASE, now=T0 + timedelta(minutes=5))
    with engine.connect() as conn:
        stats = inbox.stats(conn, now=T0 + timedelta(minutes=10))
    assert stats.counts == {"pending": 2, "processing": 1, "done": 0, "dead": 0}
    assert stats.depth == 3
    assert stats.oldest_pending_at == T0
    assert stats.oldest_pending_age_seconds == 600
    assert stats.expired_leases == 1


def test_list_rows__filters(engine: Engine) -> None:
    with engine.begin() as conn:
        inbox.enqueue(conn, [item("a", "A-S1"), item("b", "A-S2", source="reconcile")], now=T0)
        assert [r.dedup_key for r in inbox.list_rows(conn)] == ["b", "a"]
        assert [r.dedup_key for r in inbox.list_rows(conn, source="reconcile")] == ["b"]
        assert [r.dedup_key for r in inbox.list_rows(conn, subscription="A-S1")] == ["a"]
        with pytest.raises(ValueError, match="unknown status"):
            inbox.list_rows(conn, status="lost")


def _worker(engine: Engine, name: str, errors: list[BaseException]) -> None:
    try:
        while True:
            with engine.begin() as conn:
                batch = inbox.claim(conn, worker=name, limit=7, lease=timedelta(minutes=5))
                if not batch:
                    return
                conn.execute(
                    text("INSERT INTO applied (inbox_id, worker) VALUES (:id, :worker)"),
                    [{"id": row.id, "worker": name} for row in batch],
                )
                assert inbox.complete(conn, [row.id for row in batch], worker=name) == len(batch)
    except BaseException as exc:  # surfaced by the test thread
        errors.append(exc)


@pytest.mark.parametrize(("workers", "rows"), [(8, 2000)])
def test_concurrency__n_workers_process_every_row_exactly_once(
    engine: Engine, workers: int, rows: int
) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE applied (inbox_id BIGINT NOT NULL, worker TEXT NOT NULL)"))
    fill(engine, rows, now=datetime.now(UTC) - timedelta(seconds=1))
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=_worker, args=(engine, f"w{i}", errors)) for i in range(workers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    with engine.connect() as conn:
        applied, distinct, busy = conn.execute(
            text("SELECT count(*), count(DISTINCT inbox_id), count(DISTINCT worker) FROM applied")
        ).one()
        left = conn.execute(
            text("SELECT count(*) FROM callout_inbox WHERE status <> 'done'")
        ).scalar_one()
    print(f"{workers} workers x {rows} rows: {applied} applied, {distinct} distinct, {left} left")
    assert (applied, distinct, left) == (rows, rows, 0)  # 0 lost, 0 processed twice
    if engine.dialect.name == "postgresql":
        assert busy > 1  # SKIP LOCKED let workers claim side by side


def test_claim_whole_subscriptions__takes_every_waiting_callout_of_the_oldest(
    engine: Engine,
) -> None:
    keys = ["A-S1", "A-S2", "A-S1", "A-S3", "A-S1", "A-S2"]
    with engine.begin() as conn:
        inbox.enqueue(conn, [item(f"k{i}", key) for i, key in enumerate(keys)], now=T0)
        inbox.enqueue(conn, [NewItem("callout", "by-id", subscription_id="8a8082c4")], now=T0)
        first = inbox.claim(
            conn, worker="w", limit=1, lease=LEASE, whole_subscriptions=True, now=T0
        )
        second = inbox.claim(
            conn, worker="w", limit=2, lease=LEASE, whole_subscriptions=True, now=T0
        )
        capped = inbox.claim(
            conn, worker="w", limit=5, lease=LEASE, whole_subscriptions=True, max_rows=1, now=T0
        )
        last = inbox.claim(conn, worker="w", limit=5, lease=LEASE, whole_subscriptions=True, now=T0)
    assert [r.dedup_key for r in first] == ["k0", "k2", "k4"]  # all of A-S1, one claim
    assert [r.dedup_key for r in second] == ["k1", "k3", "k5"]  # A-S2 and A-S3
    assert [r.dedup_key for r in capped] == ["by-id"]  # keyed by id when there is no number
    assert last == []
