"""The callout inbox: a work queue in a table, with every state change in one place.

Life of a row::

    enqueue -> pending --claim--> processing --complete--> done
                  ^                   |   \\--fail (budget left)--> pending, later available_at
                  |                   |    \\--fail (budget spent)--> dead
                  |                   \\--lease expires--> claimable again (a dead worker's rows)
                  \\-------- replay (a new row, source 'replay') <-- dead | done

Each operation is a single SQL statement where the database allows it, and runs inside the
caller's transaction, so the drain can complete rows in the same transaction that writes the
cache (the inbox pattern). On PostgreSQL the claim uses `FOR UPDATE SKIP LOCKED`, so many
workers can claim at once without waiting on each other; on SQLite the claim is one
`UPDATE ... RETURNING` under the database's single write lock, which is just as safe.

Times come from the caller's clock (`now=`, default the wall clock in UTC), which keeps
lease and backoff arithmetic testable without sleeping.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
from sqlalchemy import (
    Connection,
    String,
    Text,
    and_,
    bindparam,
    case,
    cast,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from warehouse.models import INBOX_SOURCES, INBOX_STATUSES, inbox
from warehouse.types import UTCDateTime

#: PostgreSQL channel a waiting drain LISTENs on; the webhook NOTIFYs it after a commit.
NOTIFY_CHANNEL = "callout_inbox"

MAX_ERROR_LENGTH = 4000

#: Longest dedup key of an item deduplicated only while pending: room is left to retire the
#: key of an earlier copy by appending `#<row id>` (the column holds 255 characters).
MAX_PENDING_KEY_LENGTH = 200

#: How long an item's dedup key holds (see `NewItem.dedup`).
DedupScope = Literal["always", "while_pending"]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class NewItem:
    """Something to put in the inbox. At least one of the subscription keys is required.

    `dedup` says what the dedup key stands for:

    - ``"always"`` (the default): the key names one event, such as a Zuora notification id.
      Any later item with the same key is a redelivery of that event and stores nothing.
    - ``"while_pending"``: the key names *content*, e.g. a hash of a callout that came
      without a notification id. An identical item is a duplicate only while the earlier copy
      is still pending (the drain will read the subscription after both arrived). Once that
      copy has been claimed, an identical item may be a genuinely new change (a field toggled
      A -> B -> A) and gets a row of its own; the earlier row keeps its history under the
      retired key ``<key>#<row id>``.
    """

    source: str
    dedup_key: str
    subscription_number: str | None = None
    subscription_id: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    dedup: DedupScope = "always"

    def __post_init__(self) -> None:
        if self.source not in INBOX_SOURCES:
            raise ValueError(f"unknown inbox source {self.source!r}")
        if not self.dedup_key or len(self.dedup_key) > 255:
            raise ValueError("dedup_key must be 1 to 255 characters")
        if self.dedup == "while_pending" and len(self.dedup_key) > MAX_PENDING_KEY_LENGTH:
            raise ValueError(
                f"a dedup_key kept only while pending must be at most {MAX_PENDING_KEY_LENGTH} "
                "characters"
            )
        if self.dedup not in ("always", "while_pending"):
            raise ValueError(f"unknown dedup scope {self.dedup!r}")
        if not (self.subscription_number or self.subscription_id):
            raise ValueError("an inbox item needs a subscription number or id")


@dataclass(frozen=True)
class Enqueued:
    dedup_key: str
    id: int | None  # None: the key was already in the inbox, nothing was stored

    @property
    def duplicate(self) -> bool:
        return self.id is None


@dataclass(frozen=True)
class Claimed:
    """A row handed to a worker, with the lease it now holds."""

    id: int
    source: str
    dedup_key: str
    subscription_number: str | None
    subscription_id: str | None
    payload: dict[str, Any]
    attempts: int
    received_at: datetime
    lease_expires_at: datetime


@dataclass(frozen=True)
class RetryPolicy:
    """How failures are retried: exponential backoff with jitter, then the dead letter."""

    max_attempts: int = 12
    base_seconds: float = 2.0
    max_seconds: float = 600.0
    jitter: float = 0.5  # each delay is drawn from [(1 - jitter) * d, d]

    def delay(self, attempts: int, rng: random.Random | None = None) -> timedelta:
        capped = min(self.max_seconds, self.base_seconds * 2 ** max(0, attempts - 1))
        low = capped * (1 - self.jitter)
        return timedelta(seconds=(rng or random).uniform(low, capped))


@dataclass(frozen=True)
class FailOutcome:
    retried: list[int]
    dead: list[int]


@dataclass(frozen=True)
class InboxStats:
    counts: dict[str, int]
    oldest_pending_at: datetime | None
    oldest_pending_age_seconds: float | None
    expired_leases: int

    @property
    def depth(self) -> int:
        return self.counts.get("pending", 0) + self.counts.get("processing", 0)


def _insert(conn: Connection) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(inbox)


_ENQUEUED_COLUMNS = ("source", "dedup_key", "subscription_number", "subscription_id", "payload")


def _pg_enqueue_statement() -> Any:
    """One INSERT whose rows arrive as arrays, one per column.

    Its text never changes with the number of rows, so SQLAlchemy compiles it once and the
    driver only renders five arrays; a multi-row VALUES list is recompiled for every batch
    size and costs several times more per row in Python (measured: ~60 vs ~350 us per row).
    The webhook's writer thread puts every callout through here.
    """
    rows = (
        func.unnest(
            *(bindparam(name, type_=postgresql.ARRAY(String)) for name in _ENQUEUED_COLUMNS[:-1]),
            bindparam("payload", type_=postgresql.ARRAY(Text)),
        )
        .table_valued(*_ENQUEUED_COLUMNS)
        .render_derived()
    )
    now = bindparam("now", type_=UTCDateTime())
    chosen = select(
        rows.c.source,
        rows.c.dedup_key,
        rows.c.subscription_number,
        rows.c.subscription_id,
        cast(rows.c.payload, postgresql.JSONB),
        literal("pending"),
        literal(0),
        now,
        now,
    )
    columns = [*_ENQUEUED_COLUMNS, "status", "attempts", "available_at", "received_at"]
    return (
        postgresql.insert(inbox)
        .from_select(columns, chosen)
        .on_conflict_do_nothing(index_elements=["dedup_key"])
        .returning(inbox.c.id, inbox.c.dedup_key)
    )


def _with_notify(statement: Any) -> Any:
    """The same INSERT, also NOTIFYing when it stored a row, in the same round trip.

    `pg_notify` runs once per stored row, but PostgreSQL folds identical notifications of
    one transaction into one, and sends it at commit, as `NOTIFY` would.
    """
    stored = statement.cte("stored")
    return select(
        stored.c.id, stored.c.dedup_key, func.pg_notify(literal(NOTIFY_CHANNEL), literal(""))
    )


_PG_ENQUEUE = _pg_enqueue_statement()
_PG_ENQUEUE_NOTIFY = _with_notify(_PG_ENQUEUE)


_RETIRE_FILTER = inbox.c.status != "pending"
_RETIRED_KEY = inbox.c.dedup_key + "#" + cast(inbox.c.id, String)
#: PostgreSQL form: one array parameter, so the text is the same for any number of keys.
_PG_RETIRE = (
    update(inbox)
    .where(
        inbox.c.dedup_key == func.any(bindparam("keys", type_=postgresql.ARRAY(String))),
        _RETIRE_FILTER,
    )
    .values(dedup_key=_RETIRED_KEY)
)


def _retire_processed_keys(conn: Connection, keys: list[str]) -> None:
    """Free content keys whose row is no longer pending, so an identical item can be stored.

    Under READ COMMITTED two writers retiring the same key serialise on the row lock; the
    second finds the key already changed, and its INSERT then meets the first one's new
    pending row: a duplicate, as it should be.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(_PG_RETIRE, {"keys": keys})
        return
    conn.execute(
        update(inbox)
        .where(inbox.c.dedup_key.in_(keys), _RETIRE_FILTER)
        .values(dedup_key=_RETIRED_KEY)
    )


def _pg_params(items: Sequence[NewItem], now: datetime) -> dict[str, Any]:
    return {
        "source": [item.source for item in items],
        "dedup_key": [item.dedup_key for item in items],
        "subscription_number": [item.subscription_number for item in items],
        "subscription_id": [item.subscription_id for item in items],
        "payload": [orjson.dumps(item.payload).decode() for item in items],
        "now": now,
    }


def _results(items: Sequence[NewItem], stored_rows: Iterable[Sequence[Any]]) -> list[Enqueued]:
    stored = {row[1]: row[0] for row in stored_rows}
    results: list[Enqueued] = []
    for item in items:
        # A key repeated inside one batch is stored once; later repeats are duplicates.
        results.append(Enqueued(item.dedup_key, stored.pop(item.dedup_key, None)))
    return results


def enqueue(
    conn: Connection,
    items: Sequence[NewItem],
    *,
    now: datetime | None = None,
    notify: bool = False,
) -> list[Enqueued]:
    """Insert items, skipping any whose dedup key is already present (also within `items`).

    Returns one result per item, in order: the new row id, or `None` for a duplicate.
    Items deduplicated only while pending (`NewItem.dedup`) first retire the key of an
    earlier copy that a drain has already claimed. `notify=True` does what `notify()` does
    when at least one row was stored, within the same statement (PostgreSQL; SQLite has no
    NOTIFY). Nothing here needs a transaction of its own: in autocommit mode the statement
    commits by itself, and a retired key is harmless even if the INSERT after it fails.
    """
    if not items:
        return []
    now = now or utcnow()
    while_pending = [item.dedup_key for item in items if item.dedup == "while_pending"]
    if while_pending:
        _retire_processed_keys(conn, while_pending)
    if conn.dialect.name == "postgresql":
        statement = _PG_ENQUEUE_NOTIFY if notify else _PG_ENQUEUE
        return _results(items, conn.execute(statement, _pg_params(items, now)))
    rows = [
        {
            "source": item.source,
            "dedup_key": item.dedup_key,
            "subscription_number": item.subscription_number,
            "subscription_id": item.subscription_id,
            "payload": item.payload,
            "status": "pending",
            "attempts": 0,
            "available_at": now,
            "received_at": now,
        }
        for item in items
    ]
    stmt = (
        _insert(conn)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["dedup_key"])
        .returning(inbox.c.id, inbox.c.dedup_key)
    )
    return _results(items, conn.execute(stmt))


@dataclass(frozen=True)
class DriverStatement:
    """SQL with positional `$n` placeholders, and its arguments in order."""

    sql: str
    args: tuple[Any, ...]


class _Positional:
    """A statement compiled once for asyncpg's `$n` placeholders."""

    def __init__(self, statement: Any) -> None:
        from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect

        self.compiled = statement.compile(dialect=asyncpg_dialect.dialect())  # type: ignore[no-untyped-call]
        self.sql = str(self.compiled)
        self.order = tuple(self.compiled.positiontup or ())

    def bind(self, values: dict[str, Any]) -> DriverStatement:
        params = self.compiled.construct_params(values)
        return DriverStatement(self.sql, tuple(params[name] for name in self.order))


_DRIVER_RETIRE = _Positional(_PG_RETIRE)
_DRIVER_ENQUEUE = {False: _Positional(_PG_ENQUEUE), True: _Positional(_PG_ENQUEUE_NOTIFY)}


def enqueue_statements(
    items: Sequence[NewItem], *, now: datetime | None = None, notify: bool = False
) -> list[DriverStatement]:
    """What `enqueue` runs on PostgreSQL, for a driver that takes `$n` placeholders (asyncpg).

    For callers that talk to the driver directly to skip SQLAlchemy's per-statement cost
    (the webhook's writer, measured ~0.2 ms per batch). Run the statements in order, in
    one transaction or in autocommit mode; the last one returns `(id, dedup_key)` rows,
    which `enqueue_results` turns into the same answer `enqueue` gives.
    """
    if not items:
        return []
    now = now or utcnow()
    statements = []
    while_pending = [item.dedup_key for item in items if item.dedup == "while_pending"]
    if while_pending:
        statements.append(_DRIVER_RETIRE.bind({"keys": while_pending}))
    statements.append(_DRIVER_ENQUEUE[notify].bind(_pg_params(items, now)))
    return statements


def enqueue_results(
    items: Sequence[NewItem], stored_rows: Iterable[Sequence[Any]]
) -> list[Enqueued]:
    """`enqueue`'s answer from the rows the last of `enqueue_statements` returned."""
    return _results(items, stored_rows)


def notify(conn: Connection) -> None:
    """Wake drains waiting on LISTEN (PostgreSQL only; delivered when the transaction commits)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"NOTIFY {NOTIFY_CHANNEL}")


def _claimable(now: datetime, max_attempts: int) -> Any:
    return or_(
        and_(inbox.c.status == "pending", inbox.c.available_at <= now),
        # A worker that died keeps its lease until it runs out; then anyone may take the row,
        # unless the row has already used its whole budget (see `reap_expired`).
        and_(
            inbox.c.status == "processing",
            inbox.c.lease_expires_at <= now,
            inbox.c.attempts < max_attempts,
        ),
    )


def claim(
    conn: Connection,
    *,
    worker: str,
    limit: int,
    lease: timedelta,
    max_attempts: int = RetryPolicy.max_attempts,
    whole_subscriptions: bool = False,
    max_rows: int | None = None,
    now: datetime | None = None,
) -> list[Claimed]:
    """Lease claimable rows to `worker`, oldest first; each row's attempts count up by one.

    By default up to `limit` rows. With `whole_subscriptions`, the subscriptions of the
    `limit` oldest rows are taken with every claimable row they have (up to `max_rows`,
    default 20 x `limit`), so that a backlog of many callouts per subscription costs one
    fetch per subscription rather than one per batch it happens to fall in.
    """
    if limit < 1:
        return []
    now = now or utcnow()
    expires = now + lease
    claimable = _claimable(now, max_attempts)
    if whole_subscriptions:
        seed = (
            select(inbox.c.subscription_number, inbox.c.subscription_id)
            .where(claimable)
            .order_by(inbox.c.available_at, inbox.c.id)
            .limit(limit)
            .cte("seed")
        )
        same_subscription = or_(
            inbox.c.subscription_number.in_(
                select(seed.c.subscription_number).where(seed.c.subscription_number.is_not(None))
            ),
            and_(
                inbox.c.subscription_number.is_(None),
                inbox.c.subscription_id.in_(
                    select(seed.c.subscription_id).where(seed.c.subscription_number.is_(None))
                ),
            ),
        )
        candidates = (
            select(inbox.c.id)
            .where(claimable, same_subscription)
            .order_by(inbox.c.id)
            .limit(max_rows or 20 * limit)
        )
    else:
        candidates = (
            select(inbox.c.id)
            .where(claimable)
            .order_by(inbox.c.available_at, inbox.c.id)
            .limit(limit)
        )
    if conn.dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    stmt = (
        update(inbox)
        .where(inbox.c.id.in_(candidates.scalar_subquery()))
        .values(
            status="processing",
            attempts=inbox.c.attempts + 1,
            lease_owner=worker,
            lease_expires_at=expires,
        )
        .returning(
            inbox.c.id,
            inbox.c.source,
            inbox.c.dedup_key,
            inbox.c.subscription_number,
            inbox.c.subscription_id,
            inbox.c.payload,
            inbox.c.attempts,
            inbox.c.received_at,
        )
    )
    claimed = [
        Claimed(
            id=r.id,
            source=r.source,
            dedup_key=r.dedup_key,
            subscription_number=r.subscription_number,
            subscription_id=r.subscription_id,
            payload=r.payload or {},
            attempts=r.attempts,
            received_at=r.received_at,
            lease_expires_at=expires,
        )
        for r in conn.execute(stmt)
    ]
    claimed.sort(key=lambda c: c.id)
    return claimed


def _held_by(ids: Iterable[int], worker: str) -> Any:
    return and_(
        inbox.c.id.in_(list(ids)),
        inbox.c.status == "processing",
        inbox.c.lease_owner == worker,
    )


def renew(conn: Connection, *, worker: str, lease: timedelta, now: datetime | None = None) -> int:
    """Extend every lease `worker` still holds to `lease` from now (its heartbeat); returns
    how many. A lease that already ran out is left alone: another worker may be taking it."""
    now = now or utcnow()
    stmt = (
        update(inbox)
        .where(
            inbox.c.status == "processing",
            inbox.c.lease_owner == worker,
            inbox.c.lease_expires_at > now,
        )
        .values(lease_expires_at=now + lease)
    )
    return conn.execute(stmt).rowcount


def complete(
    conn: Connection, ids: Iterable[int], *, worker: str, now: datetime | None = None
) -> int:
    """Mark rows done. Only rows whose lease `worker` still holds change; returns how many."""
    ids = list(ids)
    if not ids:
        return 0
    stmt = (
        update(inbox)
        .where(_held_by(ids, worker))
        .values(
            status="done",
            processed_at=now or utcnow(),
            lease_owner=None,
            lease_expires_at=None,
            last_error=None,
        )
    )
    return conn.execute(stmt).rowcount


def fail(
    conn: Connection,
    ids: Iterable[int],
    *,
    worker: str,
    error: str,
    policy: RetryPolicy,
    dead_now: bool = False,
    now: datetime | None = None,
    rng: random.Random | None = None,
) -> FailOutcome:
    """Record a failure: back to pending after a backoff, or `dead` once the budget is spent.

    `dead_now` sends the rows straight to the dead letter (an error no retry can fix).
    Only rows whose lease `worker` still holds change.
    """
    ids = list(ids)
    if not ids:
        return FailOutcome([], [])
    now = now or utcnow()
    # Each row's delay grows with its own attempt count; the table of delays by attempt is
    # drawn here so that the whole batch is one statement.
    retry_at = {
        attempt: now + policy.delay(attempt, rng) for attempt in range(1, policy.max_attempts)
    }
    goes_dead = or_(literal(dead_now), inbox.c.attempts >= policy.max_attempts)
    stmt = (
        update(inbox)
        .where(_held_by(ids, worker))
        .values(
            status=case((goes_dead, "dead"), else_="pending"),
            last_error=error[:MAX_ERROR_LENGTH],
            lease_owner=None,
            lease_expires_at=None,
            available_at=case((goes_dead, inbox.c.available_at), else_=_lookup(retry_at, now)),
            processed_at=case((goes_dead, literal(now, UTCDateTime())), else_=None),
        )
        .returning(inbox.c.id, inbox.c.status)
    )
    outcome = conn.execute(stmt).all()
    return FailOutcome(
        retried=sorted(i for i, status in outcome if status == "pending"),
        dead=sorted(i for i, status in outcome if status == "dead"),
    )


def _lookup(retry_at: dict[int, datetime], default: datetime) -> Any:
    if not retry_at:
        return literal(default, UTCDateTime())
    return case(
        {attempt: literal(at, UTCDateTime()) for attempt, at in retry_at.items()},
        value=inbox.c.attempts,
        else_=literal(default, UTCDateTime()),
    )


def release(conn: Connection, ids: Iterable[int], *, worker: str) -> int:
    """Give rows back untouched (e.g. on shutdown): pending now, the attempt not counted."""
    ids = list(ids)
    if not ids:
        return 0
    stmt = (
        update(inbox)
        .where(_held_by(ids, worker))
        .values(
            status="pending",
            attempts=func.max(inbox.c.attempts - 1, 0)
            if conn.dialect.name == "sqlite"
            else func.greatest(inbox.c.attempts - 1, 0),
            lease_owner=None,
            lease_expires_at=None,
        )
    )
    return conn.execute(stmt).rowcount


def reap_expired(
    conn: Connection,
    *,
    max_attempts: int = RetryPolicy.max_attempts,
    now: datetime | None = None,
) -> int:
    """Send to `dead` the rows whose lease ran out on their last allowed attempt.

    Such a row has crashed or hung every worker that took it; claiming it again would only
    crash the next one.
    """
    now = now or utcnow()
    stmt = (
        update(inbox)
        .where(
            inbox.c.status == "processing",
            inbox.c.lease_expires_at <= now,
            inbox.c.attempts >= max_attempts,
        )
        .values(
            status="dead",
            last_error=func.coalesce(inbox.c.last_error + " | ", "")
            + f"lease expired on the last of {max_attempts} attempts",
            processed_at=now,
            lease_owner=None,
            lease_expires_at=None,
        )
    )
    return conn.execute(stmt).rowcount


def replay(
    conn: Connection,
    ids: Sequence[int] = (),
    *,
    all_dead: bool = False,
    now: datetime | None = None,
) -> list[int]:
    """Queue dead or done rows again, as new `replay` rows pointing back at the originals.

    The original keeps its payload and last error for the record, is marked `done` and
    points at its replay (`replayed_as`), so the dead letter empties and history stays.
    Returns the new row ids. Pending or processing rows, and rows already replayed, are
    left alone.
    """
    if not ids and not all_dead:
        return []
    now = now or utcnow()
    chosen = select(inbox.c.id).where(
        inbox.c.replayed_as.is_(None), inbox.c.status.in_(("dead", "done"))
    )
    if all_dead:
        chosen = chosen.where(inbox.c.status == "dead")
    if ids:
        chosen = chosen.where(inbox.c.id.in_(list(ids)))
    original = inbox.alias("original")
    copies = select(
        literal("replay"),
        literal(f"replay:{now.isoformat()}:") + cast(original.c.id, String),
        original.c.subscription_number,
        original.c.subscription_id,
        original.c.payload,
        literal("pending"),
        literal(0),
        literal(now, UTCDateTime()),
        literal(now, UTCDateTime()),
        original.c.id,
    ).where(original.c.id.in_(chosen.scalar_subquery()))
    columns = [
        "source", "dedup_key", "subscription_number", "subscription_id", "payload",
        "status", "attempts", "available_at", "received_at", "replay_of",
    ]  # fmt: skip
    inserted = conn.execute(
        insert(inbox).from_select(columns, copies).returning(inbox.c.id, inbox.c.replay_of)
    ).all()
    if inserted:
        conn.execute(
            update(inbox)
            .where(inbox.c.id.in_([old for _, old in inserted]))
            .values(
                status="done",
                processed_at=now,
                replayed_as=case({old: new for new, old in inserted}, value=inbox.c.id),
            )
        )
    return sorted(new for new, _ in inserted)


def stats(conn: Connection, *, now: datetime | None = None) -> InboxStats:
    """Counts by status, the age of the oldest pending row and leases past their expiry."""
    now = now or utcnow()
    counts = dict.fromkeys(INBOX_STATUSES, 0)
    for status, count in conn.execute(
        select(inbox.c.status, func.count()).group_by(inbox.c.status)
    ):
        counts[status] = count
    oldest = conn.execute(
        select(func.min(inbox.c.received_at)).where(inbox.c.status.in_(("pending", "processing")))
    ).scalar_one()
    expired = conn.execute(
        select(func.count()).where(inbox.c.status == "processing", inbox.c.lease_expires_at <= now)
    ).scalar_one()
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)  # min() on SQLite bypasses the column type
    if isinstance(oldest, str):
        oldest = datetime.fromisoformat(oldest).replace(tzinfo=UTC)
    age = (now - oldest).total_seconds() if oldest is not None else None
    return InboxStats(counts, oldest, age, expired)


@dataclass(frozen=True)
class Backlog:
    """What is waiting: rows pending or processing, and when the oldest of them arrived."""

    pending: int
    processing: int
    oldest_received_at: datetime | None
    oldest_age_seconds: float | None

    @property
    def depth(self) -> int:
        return self.pending + self.processing


def backlog(conn: Connection, *, now: datetime | None = None) -> Backlog:
    """The queue's depth and the age of its oldest live row, for metrics scraped often.

    Unlike `stats` it reads only live rows (through the partial index that the claim uses),
    so it stays cheap however many done rows the table keeps.
    """
    now = now or utcnow()
    live = conn.execute(
        select(inbox.c.status, func.count(), func.min(inbox.c.received_at))
        .where(inbox.c.status.in_(("pending", "processing")))
        .group_by(inbox.c.status)
    ).all()
    counts = {status: count for status, count, _ in live}
    oldest = min((_as_utc(first) for _, _, first in live if first is not None), default=None)
    age = (now - oldest).total_seconds() if oldest is not None else None
    return Backlog(counts.get("pending", 0), counts.get("processing", 0), oldest, age)


def _as_utc(value: datetime | str) -> datetime:
    # min() on SQLite bypasses the column type and hands back naive text.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def list_rows(
    conn: Connection,
    *,
    status: str | None = None,
    source: str | None = None,
    subscription: str | None = None,
    limit: int = 50,
) -> list[Any]:
    """The newest rows first, filtered; for the `inbox list` command and dashboards."""
    query = select(inbox).order_by(inbox.c.id.desc()).limit(limit)
    if status is not None:
        if status not in INBOX_STATUSES:
            raise ValueError(f"unknown status {status!r}; one of {', '.join(INBOX_STATUSES)}")
        query = query.where(inbox.c.status == status)
    if source is not None:
        query = query.where(inbox.c.source == source)
    if subscription is not None:
        query = query.where(
            or_(
                inbox.c.subscription_number == subscription,
                inbox.c.subscription_id == subscription,
            )
        )
    return list(conn.execute(query).all())
