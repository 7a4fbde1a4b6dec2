"""The drain: claim inbox rows, fetch each subscription from Zuora once, write the cache.

This module is the engine; `flows/drain_flow.py` wraps it as the Prefect flow
`drain-callouts`. The engine is plain asyncio so that it can fetch hundreds of subscriptions
concurrently (bounded by the tenant-wide limiter of the Zuora client) and be tested without
an orchestrator.

How a run works:
- It claims `batch_size` subscriptions at a time, each with every callout it has waiting
  (a lease, `FOR UPDATE SKIP LOCKED`), and claims more while fewer than `prefetch`
  subscriptions are in flight, so fetches never wait on a batch boundary.
- Rows are grouped by subscription: 100 callouts for one subscription are one fetch. A row
  that arrives for a subscription whose fetch is already under way waits for it and then
  triggers one more fetch, because its change may have landed after the first fetch began.
- Each group's outcome is written in one transaction with the completion of its rows: the
  upsert (guarded by version and fetch time, see `warehouse/cache.py`) or, when Zuora
  answers 404, `deleted_at`. Transient Zuora errors put the rows back with backoff; other
  errors too, until the attempt budget sends them to `dead`. One bad subscription never
  blocks the batch.
- With `window_seconds=0` the run ends when nothing is claimable; otherwise it keeps
  draining until the window closes, waking at once on PostgreSQL NOTIFY (polling on SQLite).
- A database failure ends the run with `DrainAborted`; rows it held come back to the queue
  when their lease expires, so the next run carries on and nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import os
import select
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from warehouse import inbox
from warehouse.cache import InvalidSubscription, UpsertResult, mark_deleted, upsert_subscription
from warehouse.inbox import Claimed, RetryPolicy, utcnow
from zuora.client import ZuoraClient
from zuora.errors import ZuoraError, ZuoraNotFound
from zuora_sync.logs import fields

log = logging.getLogger("flows.drain")


class DrainAborted(Exception):
    """The run could not go on (the database failed); claimed rows return after their lease."""


def _one_line(exc: BaseException) -> str:
    """The driver's own first line: SQLAlchemy's text adds the statement and a link on
    further lines, and the CLI, the run log and the logs want one line."""
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    return lines[0] if lines else type(orig).__name__


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class DrainOptions:
    batch_size: int = 500
    window_seconds: float = 0.0
    lease: timedelta = timedelta(seconds=120)
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    prefetch: int = 200  # subscriptions in flight before claiming more
    idle_poll_seconds: float = 1.0  # how often an idle run looks again when nothing wakes it
    worker: str = field(default_factory=default_worker_name)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.window_seconds < 0:
            raise ValueError("window_seconds must be 0 (until empty) or more")

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> DrainOptions:
        values: dict[str, Any] = {
            "lease": timedelta(seconds=settings.INBOX_LEASE_SECONDS),
            "policy": RetryPolicy(
                max_attempts=settings.INBOX_MAX_ATTEMPTS,
                base_seconds=settings.INBOX_RETRY_BASE_SECONDS,
                max_seconds=settings.INBOX_RETRY_MAX_SECONDS,
            ),
            "prefetch": max(50, 5 * settings.ZUORA_MAX_CONCURRENCY),
        }
        values.update(overrides)
        return cls(**values)


@dataclass
class DrainStats:
    """What a run did; the run summary in `sync_runs`, the artifact and the CLI."""

    claimed: int = 0
    batches: int = 0
    subscriptions: int = 0  # distinct subscriptions the claimed rows coalesced into
    fetched: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    stale: int = 0
    deleted: int = 0
    retried: int = 0
    dead: int = 0
    completed: int = 0
    lost_leases: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    lags: list[float] = field(default_factory=list)
    started_at: datetime = field(default_factory=utcnow)
    finished_at: datetime | None = None

    @property
    def upserted(self) -> int:
        return self.inserted + self.updated

    def lag(self, quantile: float) -> float | None:
        if not self.lags:
            return None
        ordered = sorted(self.lags)
        index = min(len(ordered) - 1, max(0, round(quantile * (len(ordered) - 1))))
        return ordered[index]

    def as_dict(self) -> dict[str, Any]:
        elapsed = ((self.finished_at or utcnow()) - self.started_at).total_seconds()
        p50, p95 = self.lag(0.50), self.lag(0.95)
        return {
            "claimed": self.claimed,
            "batches": self.batches,
            "subscriptions": self.subscriptions,
            "fetched": self.fetched,
            "upserted": self.upserted,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "stale": self.stale,
            "deleted": self.deleted,
            "failed": self.retried,
            "dead": self.dead,
            "completed": self.completed,
            "lost_leases": self.lost_leases,
            "errors": dict(self.errors),
            "freshness_p50_s": round(p50, 3) if p50 is not None else None,
            "freshness_p95_s": round(p95, 3) if p95 is not None else None,
            "elapsed_s": round(elapsed, 3),
        }


def group_key(row: Claimed) -> str:
    """Rows about one subscription share a key: its number, or failing that its id."""
    return row.subscription_number or row.subscription_id or ""


class _Wakeup:
    """Waits for new inbox rows: PostgreSQL LISTEN/NOTIFY, or a plain sleep on SQLite."""

    def __init__(self, engine: Engine) -> None:
        self._conn: Any = None
        if engine.dialect.name == "postgresql":
            try:
                # A connection of its own, outside the engine's pool: it sits in LISTEN.
                cargs, cparams = engine.dialect.create_connect_args(engine.url)
                self._conn = engine.dialect.loaded_dbapi.connect(*cargs, **cparams)
                self._conn.autocommit = True
                with self._conn.cursor() as cursor:
                    cursor.execute(f"LISTEN {inbox.NOTIFY_CHANNEL}")
            except Exception:  # polling still works; LISTEN only makes it prompt
                log.warning("drain.listen_unavailable", exc_info=True)
                self._conn = None

    async def wait(self, timeout: float) -> None:
        if self._conn is None:
            await asyncio.sleep(timeout)
            return
        try:
            await asyncio.to_thread(self._wait_notify, timeout)
        except Exception as exc:
            # The LISTEN session died (a database restart, a terminated backend). Waking up
            # is all it was for: the rest of the run polls, and the next run listens again.
            # Whether the database itself is back is for the next claim to find out.
            log.warning("drain.listen_lost", extra=fields(error=_one_line(exc)))
            self.close()
            self._conn = None

    def _wait_notify(self, timeout: float) -> None:
        if not self._conn.notifies:
            select.select([self._conn], [], [], timeout)
        self._conn.poll()
        self._conn.notifies.clear()

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()


class Drainer:
    """One drain run. Not reusable: create one per run."""

    def __init__(
        self,
        engine: Engine,
        zuora: ZuoraClient,
        options: DrainOptions | None = None,
        *,
        on_batch: Callable[[DrainStats], Awaitable[None] | None] | None = None,
    ) -> None:
        self.engine = engine
        self.zuora = zuora
        self.options = options or DrainOptions()
        self.stats = DrainStats()
        self._on_batch = on_batch
        self._running: dict[str, asyncio.Task[None]] = {}
        self._waiting: dict[str, list[Claimed]] = {}
        self._failure: BaseException | None = None
        self._progress = asyncio.Event()
        # Rows wait in memory for a free slot under the tenant's concurrency limit (up to
        # `prefetch` subscriptions), which can take longer than a lease; unrenewed, their
        # leases would run out, other workers (or this one) would claim them again, and
        # each claim spends an attempt until healthy rows went dead.
        self._renew_every = self.options.lease.total_seconds() / 3
        self._renew_at = time.monotonic() + self._renew_every

    async def run(self) -> DrainStats:
        opts = self.options
        deadline = time.monotonic() + opts.window_seconds
        wakeup = _Wakeup(self.engine)
        log.info(
            "drain.start",
            extra=fields(
                worker=opts.worker, batch_size=opts.batch_size, window_s=opts.window_seconds
            ),
        )
        try:
            while self._failure is None:
                # Cleared before looking, so a subscription finishing after the look wakes
                # the wait below instead of being missed.
                self._progress.clear()
                await self._renew_leases()
                window_open = opts.window_seconds == 0 or time.monotonic() < deadline
                if window_open and len(self._running) < opts.prefetch:
                    rows = await self._claim()
                    if rows:
                        self._dispatch(rows)
                        continue
                if not self._running:
                    if opts.window_seconds == 0 or time.monotonic() >= deadline:
                        break
                    await wakeup.wait(min(opts.idle_poll_seconds, deadline - time.monotonic()))
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._progress.wait(), min(opts.idle_poll_seconds, self._renew_every)
                    )
        except BaseException:
            await self._stop()
            raise
        finally:
            wakeup.close()
            self.stats.finished_at = utcnow()
        if self._failure is not None:
            await self._stop()
            raise DrainAborted(f"the drain stopped: {_one_line(self._failure)}") from self._failure
        log.info("drain.finish", extra=fields(**self.stats.as_dict()))
        return self.stats

    # --- claiming and dispatching -----------------------------------------------------------

    async def _renew_leases(self) -> None:
        if not self._running or time.monotonic() < self._renew_at:
            return
        self._renew_at = time.monotonic() + self._renew_every

        def renew() -> int:
            with self.engine.begin() as conn:
                return inbox.renew(conn, worker=self.options.worker, lease=self.options.lease)

        try:
            await asyncio.to_thread(renew)
        except SQLAlchemyError as exc:
            self._failure = self._failure or exc

    async def _claim(self) -> list[Claimed]:
        def claim() -> list[Claimed]:
            with self.engine.begin() as conn:
                inbox.reap_expired(conn, max_attempts=self.options.policy.max_attempts)
                return inbox.claim(
                    conn,
                    worker=self.options.worker,
                    limit=self.options.batch_size,
                    lease=self.options.lease,
                    max_attempts=self.options.policy.max_attempts,
                    whole_subscriptions=True,
                )

        try:
            rows = await asyncio.to_thread(claim)
        except SQLAlchemyError as exc:
            self._failure = exc
            return []
        if rows:
            self.stats.claimed += len(rows)
            self.stats.batches += 1
            await self._report()
        return rows

    async def _report(self) -> None:
        if self._on_batch is None:
            return
        try:
            result = self._on_batch(self.stats)
            if inspect.isawaitable(result):
                await result
        except Exception:  # progress reporting must never stop the drain
            log.warning("drain.progress_report_failed", exc_info=True)

    def _dispatch(self, rows: Iterable[Claimed]) -> None:
        groups: dict[str, list[Claimed]] = {}
        for row in rows:
            groups.setdefault(group_key(row), []).append(row)
        for key, members in groups.items():
            if key in self._running:
                self._waiting.setdefault(key, []).extend(members)
            else:
                self._start(key, members)

    def _start(self, key: str, rows: list[Claimed]) -> None:
        self.stats.subscriptions += 1
        task = asyncio.create_task(self._sync(key, rows), name=f"sync:{key}")
        self._running[key] = task
        task.add_done_callback(functools.partial(self._finished, key))

    def _finished(self, key: str, _task: asyncio.Task[None]) -> None:
        self._running.pop(key, None)
        self._progress.set()
        follow_up = self._waiting.pop(key, None)
        if follow_up and self._failure is None:
            self._start(key, follow_up)

    async def _stop(self) -> None:
        """Cancel what is in flight and hand back rows that never started."""
        for task in list(self._running.values()):
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*self._running.values(), return_exceptions=True)
        unstarted = [row.id for rows in self._waiting.values() for row in rows]
        self._waiting.clear()
        if unstarted:
            with contextlib.suppress(SQLAlchemyError), self.engine.begin() as conn:
                inbox.release(conn, unstarted, worker=self.options.worker)

    # --- one subscription -------------------------------------------------------------------

    async def _sync(self, key: str, rows: list[Claimed]) -> None:
        fetched_at = utcnow()
        payload: dict[str, Any] | None = None
        error: Exception | None = None
        gone = False
        try:
            payload = await self.zuora.get_subscription(
                key, track_id=f"zuora-sync-drain-{rows[0].id}"
            )
            self.stats.fetched += 1
        except ZuoraNotFound:
            gone = True
        except asyncio.CancelledError:
            self._release(rows)
            raise
        except Exception as exc:  # a Zuora error, or anything unexpected: the rows' budget decides
            error = exc
        try:
            await asyncio.to_thread(self._apply, key, rows, payload, gone, error, fetched_at)
        except SQLAlchemyError as exc:
            self._failure = self._failure or exc
        except asyncio.CancelledError:
            self._release(rows)
            raise

    def _release(self, rows: list[Claimed]) -> None:
        # Shutting down: hand the rows back now rather than after their lease.
        with contextlib.suppress(SQLAlchemyError), self.engine.begin() as conn:
            inbox.release(conn, [row.id for row in rows], worker=self.options.worker)

    def _apply(
        self,
        key: str,
        rows: list[Claimed],
        payload: dict[str, Any] | None,
        gone: bool,
        error: Exception | None,
        fetched_at: datetime,
    ) -> None:
        ids = [row.id for row in rows]
        if payload is not None:
            try:
                with self.engine.begin() as conn:
                    result = upsert_subscription(conn, payload, fetched_at=fetched_at)
                    done = inbox.complete(conn, ids, worker=self.options.worker)
                self._record(result, rows, done)
                return
            except InvalidSubscription as exc:
                self._fail(key, rows, f"invalid subscription payload: {exc}", kind="invalid")
                return
        if gone:
            with self.engine.begin() as conn:
                number = next((r.subscription_number for r in rows if r.subscription_number), None)
                mark_deleted(
                    conn,
                    subscription_number=number,
                    zuora_id=None if number else key,
                )
                done = inbox.complete(conn, ids, worker=self.options.worker)
            self.stats.deleted += 1
            self._completed(rows, done)
            log.info("drain.deleted", extra=fields(subscription=key, rows=len(ids)))
            return
        assert error is not None
        message = (
            str(error) if isinstance(error, ZuoraError) else f"{type(error).__name__}: {error}"
        )
        self._fail(key, rows, message, kind=type(error).__name__)

    def _record(self, result: UpsertResult, rows: list[Claimed], done: int) -> None:
        # The outcome names the counter: inserted, updated, unchanged or stale.
        setattr(self.stats, result.outcome, getattr(self.stats, result.outcome) + 1)
        self._completed(rows, done)

    def _completed(self, rows: list[Claimed], done: int) -> None:
        self.stats.completed += done
        self.stats.lost_leases += len(rows) - done
        written = utcnow()
        self.stats.lags.extend(
            (written - row.received_at).total_seconds() for row in rows if row.source == "callout"
        )

    def _fail(self, key: str, rows: list[Claimed], message: str, *, kind: str) -> None:
        with self.engine.begin() as conn:
            outcome = inbox.fail(
                conn, [row.id for row in rows], worker=self.options.worker,
                error=message, policy=self.options.policy,
            )  # fmt: skip
        self.stats.retried += len(outcome.retried)
        self.stats.dead += len(outcome.dead)
        self.stats.errors[kind] = self.stats.errors.get(kind, 0) + 1
        level = logging.WARNING if outcome.dead else logging.INFO
        log.log(
            level,
            "drain.failed",
            extra=fields(
                subscription=key,
                error=message[:300],
                retried=len(outcome.retried),
                dead=len(outcome.dead),
            ),
        )


async def drain_once(
    engine: Engine,
    zuora: ZuoraClient,
    options: DrainOptions | None = None,
    *,
    on_batch: Callable[[DrainStats], Awaitable[None] | None] | None = None,
) -> DrainStats:
    """Run one drain with the given client and options."""
    return await Drainer(engine, zuora, options, on_batch=on_batch).run()
