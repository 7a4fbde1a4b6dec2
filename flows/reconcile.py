"""The reconcile engine: diff the cache against Zuora's query API, report drift, heal it.

Callouts can be lost and Zuora does not bump `UpdatedDate` for every change, so this is the
backstop that proves the cache right, by value. A run:

1. pulls the latest version of every subscription (`full`), or of those updated since the
   last clean run's watermark minus `OVERLAP` (`incremental`) or since a given time, through
   Data Query or ZOQL (`zuora/pull.py`), and at the same time reads the cache's side in one
   streaming query (`warehouse/snapshot.py`);
2. diffs them with pandas (`flows/diff.py`): missing, stale (with the fields that differ),
   and, on full runs, deleted, which is confirmed with a GET per subscription (404);
3. heals, unless told not to: every missing or stale subscription goes into `callout_inbox`
   with source `reconcile` and the dedup key `reconcile:<number>:<hash of Zuora's values>`,
   so two runs over the same drift queue it once while a later, different drift queues
   again; confirmed deletions are marked in the cache. With `drain` the inbox is then
   drained at once (the drain is the one code path that writes subscriptions);
4. records the run in `sync_runs` (counts, per-field drift, examples) with the watermark
   the next incremental run starts from, set only when no drift was left unhealed.

`run_reconcile` is plain asyncio, usable without Prefect; `flows/reconcile_subscriptions.py`
wraps it as the `reconcile-subscriptions` flow, `zuora-sync reconcile` prints its report.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pandas as pd
from sqlalchemy import Engine, select

from flows.diff import Diff, compute
from warehouse import inbox, runs
from warehouse.cache import mark_deleted
from warehouse.db import make_engine
from warehouse.inbox import NewItem
from warehouse.models import sync_runs
from warehouse.snapshot import read_cache
from zuora.client import ZuoraClient
from zuora.errors import ZuoraNotFound
from zuora.pull import COLUMNS, PullStats, QueryApi, pull, tracked_fields
from zuora_sync.logs import fields as log_fields

log = logging.getLogger("flows.reconcile")

Mode = Literal["full", "incremental"]

#: How far before the last watermark an incremental run looks again: covers clock skew
#: between us and Zuora and changes committed while the previous run was pulling.
OVERLAP = timedelta(minutes=15)
#: Above this many changed subscriptions, an incremental run reads the whole cache once
#: instead of looking numbers up.
LOOKUP_LIMIT = 100_000
#: Concurrent GETs that confirm deletions (the client's limiter still bounds the tenant).
CONFIRM_CONCURRENCY = 20
ENQUEUE_BATCH = 1_000
EXAMPLES = 20


class ReconcileError(Exception):
    """The reconcile could not run (bad parameters); nothing was changed."""


@dataclass
class ReconcileReport:
    mode: Mode
    requested_mode: Mode
    since: datetime | None
    query_api: QueryApi
    dry_run: bool
    heal: bool
    drain: bool
    counts: dict[str, int] = field(default_factory=lambda: {"missing": 0, "stale": 0, "deleted": 0})
    field_counts: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    remote_subscriptions: int = 0
    cache_subscriptions: int = 0
    enqueued: int = 0  # new inbox rows
    already_queued: int = 0  # drift whose identical heal was still pending
    marked_deleted: int = 0
    unconfirmed_deleted: int = 0  # absent from the pull but a GET still finds them
    drain_summary: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    watermark: datetime | None = None
    run_id: int | None = None

    @property
    def drift_total(self) -> int:
        return sum(self.counts.values())

    @property
    def healed(self) -> int:
        """Drifted subscriptions now taken care of: queued for the drain, or marked deleted."""
        return self.enqueued + self.already_queued + self.marked_deleted

    @property
    def unhealed(self) -> int:
        return max(0, self.drift_total - self.healed)

    @property
    def drain_dead(self) -> int:
        return int((self.drain_summary or {}).get("dead", 0))

    @property
    def ok(self) -> bool:
        """No drift, or all of it healed (and the drain sent nothing to the dead letter)."""
        return self.unhealed == 0 and self.drain_dead == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "since": self.since.isoformat() if self.since else None,
            "query_api": self.query_api,
            "dry_run": self.dry_run,
            "remote_subscriptions": self.remote_subscriptions,
            "cache_subscriptions": self.cache_subscriptions,
            "drift_total": self.drift_total,
            **self.counts,
            "healed": self.healed,
            "enqueued": self.enqueued,
            "already_queued": self.already_queued,
            "marked_deleted": self.marked_deleted,
            "unhealed": self.unhealed,
        }

    def drift_summary(self) -> dict[str, Any]:
        return {
            # Scalars first: `zuora-sync status` shows the top-level numbers of the last run.
            "total": self.drift_total,
            **self.counts,
            "unhealed": self.unhealed,
            "counts": dict(self.counts),
            "fields": dict(self.field_counts),
            "examples": self.examples,
            "unconfirmed_deleted": self.unconfirmed_deleted,
        }

    def _heading(self) -> str:
        scope = "every subscription" if self.mode == "full" else f"updated since {self.since}"
        return f"reconcile ({self.mode}, {self.query_api}): {scope}"

    def render_text(self) -> str:
        lines = [self._heading()]
        lines += [f"  note: {note}" for note in self.notes]
        lines.append(
            f"  Zuora {self.remote_subscriptions:,} subscriptions, "
            f"cache {self.cache_subscriptions:,}"
        )
        if not self.drift_total:
            lines.append("  drift: 0, the cache matches Zuora")
        else:
            lines.append(
                f"  drift: {self.drift_total:,} subscriptions ("
                + ", ".join(f"{k} {v:,}" for k, v in self.counts.items())
                + ")"
            )
            for name, count in sorted(self.field_counts.items(), key=lambda kv: -kv[1]):
                lines.append(f"    {name:<24} {count:,}")
            if self.examples:
                lines.append("  examples:")
                for ex in self.examples:
                    where = f" {ex['field']}" if ex["field"] else ""
                    lines.append(
                        f"    {ex['kind']:<8} {ex['subscription']}{where}: "
                        f"cache {_show(ex['cache'])}, Zuora {_show(ex['zuora'])}"
                    )
        if self.unconfirmed_deleted:
            lines.append(
                f"  {self.unconfirmed_deleted} subscription(s) absent from the query but "
                "found by GET: not deleted"
            )
        lines.append("  " + self._outcome())
        if self.timings:
            lines.append("  time: " + ", ".join(f"{k} {v:.2f}s" for k, v in self.timings.items()))
        return "\n".join(lines)

    def _outcome(self) -> str:
        if self.dry_run:
            return f"dry run: nothing enqueued or marked ({self.drift_total:,} to heal)"
        if not self.drift_total:
            return "nothing to heal"
        if not self.heal:
            return f"not healed (--no-heal): {self.drift_total:,} left"
        text = (
            f"healed {self.healed:,}: {self.enqueued:,} enqueued, "
            f"{self.already_queued:,} already queued, {self.marked_deleted:,} marked deleted"
        )
        if self.drain_summary is not None:
            d = self.drain_summary
            text += (
                f"; drained {d.get('subscriptions', 0):,} subscriptions "
                f"({d.get('upserted', 0):,} written, {d.get('dead', 0):,} dead)"
            )
        elif self.enqueued:
            text += "; left to the scheduled drain"
        return text

    def to_markdown(self) -> str:
        lines = [f"# Reconcile: {self.drift_total:,} drifted", "", f"*{self._heading()}*", ""]
        lines += [f"> {note}" for note in self.notes]
        lines += [
            "",
            "| kind | subscriptions |",
            "|---|---:|",
            *(f"| {k} | {v:,} |" for k, v in self.counts.items()),
            f"| **total** | **{self.drift_total:,}** |",
            "",
            f"Zuora: {self.remote_subscriptions:,} subscriptions; "
            f"cache: {self.cache_subscriptions:,}.",
            "",
        ]
        if self.field_counts:
            lines += ["| field | stale subscriptions |", "|---|---:|"]
            lines += [
                f"| `{name}` | {count:,} |"
                for name, count in sorted(self.field_counts.items(), key=lambda kv: -kv[1])
            ]
            lines.append("")
        if self.examples:
            lines += ["| kind | subscription | field | cache | Zuora |", "|---|---|---|---|---|"]
            lines += [
                f"| {ex['kind']} | {ex['subscription']} | {ex['field'] or ''} | "
                f"{_md(ex['cache'])} | {_md(ex['zuora'])} |"
                for ex in self.examples
            ]
            lines.append("")
        lines.append(f"**Outcome:** {self._outcome()}")
        return "\n".join(lines)

    def table_rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = [
            {"kind": kind, "field": "", "subscriptions": count}
            for kind, count in self.counts.items()
        ]
        rows += [
            {"kind": "stale", "field": name, "subscriptions": count}
            for name, count in self.field_counts.items()
        ]
        return rows


def _show(value: Any) -> str:
    return "null" if value is None else repr(value)


def _md(value: Any) -> str:
    return "*null*" if value is None else "`" + str(value).replace("|", "\\|")[:80] + "`"


def _heal_key(number: str, digest: int) -> str:
    return f"reconcile:{number}:{digest & 0xFFFFFFFFFFFF:012x}"


def heal_items(frame: pd.DataFrame, kind: str, fields: Sequence[str]) -> list[NewItem]:
    """Inbox items for drifted subscriptions, keyed by number and Zuora's values."""
    if frame.empty:
        return []
    values = frame[[*COLUMNS[:-1], *fields]].astype(object)
    values = values.where(values.notna(), None)
    digests = pd.util.hash_pandas_object(values.astype(str), index=False).to_numpy()
    items = []
    drift_fields = frame["drift_fields"].tolist() if "drift_fields" in frame else None
    for i, row in enumerate(values.itertuples(index=False)):
        number = row[0]
        payload: dict[str, Any] = {"reason": kind, "version": row[2]}
        if drift_fields is not None:
            payload["fields"] = drift_fields[i]
        items.append(
            NewItem(
                source="reconcile",
                dedup_key=_heal_key(number, int(digests[i])),
                subscription_number=number,
                subscription_id=row[1],
                payload=payload,
                # Deduplicated while pending: the same drift found again is one row, but once
                # a drain took it, the same values drifting again must be queued again.
                dedup="while_pending",
            )
        )
    return items


def last_watermark(engine: Engine) -> datetime | None:
    """Where the next incremental run starts: the newest clean run's watermark."""
    with engine.connect() as conn:
        found = conn.execute(
            select(sync_runs.c.watermark)
            .where(
                sync_runs.c.kind == "reconcile",
                sync_runs.c.status == "succeeded",
                sync_runs.c.watermark.is_not(None),
            )
            .order_by(sync_runs.c.watermark.desc())
            .limit(1)
        ).scalar()
    return found


async def _confirm_deleted(
    zuora: ZuoraClient, numbers: Sequence[str]
) -> tuple[list[str], list[str]]:
    """Split numbers into those Zuora answers 404 for, and those it still has."""
    gate = asyncio.Semaphore(CONFIRM_CONCURRENCY)

    async def one(number: str) -> bool:
        async with gate:
            try:
                await zuora.get_subscription(number)
            except ZuoraNotFound:
                return True
            return False

    gone = await asyncio.gather(*(one(n) for n in numbers))
    confirmed = [n for n, g in zip(numbers, gone, strict=True) if g]
    return confirmed, [n for n, g in zip(numbers, gone, strict=True) if not g]


async def run_reconcile(
    settings: Any,
    *,
    mode: Mode = "full",
    since: datetime | None = None,
    dry_run: bool = False,
    heal: bool = True,
    drain: bool = True,
    flow_run_id: str | None = None,
) -> ReconcileReport:
    """One reconcile run, recorded in `sync_runs`; see the module docstring."""
    if mode not in ("full", "incremental"):
        raise ReconcileError(f"mode must be full or incremental, not {mode!r}")
    if mode == "full" and since is not None:
        raise ReconcileError("a full reconcile takes no since time")
    if since is not None and since.tzinfo is None:
        raise ReconcileError("since must carry a time zone (e.g. 2026-11-25T10:00:00Z)")
    fields = tracked_fields(settings.ZUORA_TRACKED_FIELDS)
    api = settings.ZUORA_QUERY_API
    engine = make_engine(settings.DATABASE_URL, pool_size=4)
    started = time.perf_counter()
    try:
        report = ReconcileReport(
            mode=mode, requested_mode=mode, since=since, query_api=api,
            dry_run=dry_run, heal=heal, drain=drain,
        )  # fmt: skip
        if mode == "incremental" and since is None:
            mark = last_watermark(engine)
            if mark is None:
                report.mode = "full"
                report.notes.append("no watermark from an earlier clean run: running full")
            else:
                since = mark - OVERLAP
                report.since = since
        pulled_at = datetime.now(UTC)
        with engine.begin() as conn:
            run_id = runs.start_run(
                conn,
                "reconcile",
                mode=report.mode,
                params={
                    "mode": report.mode, "requested_mode": mode, "query_api": api,
                    "since": since.isoformat() if since else None,
                    "dry_run": dry_run, "heal": heal, "drain": drain,
                },
                flow_run_id=str(flow_run_id) if flow_run_id else None,
            )  # fmt: skip
        report.run_id = run_id
        try:
            await _run(settings, engine, report, fields, since)
        except BaseException as exc:
            _finish(engine, report, error=f"{type(exc).__name__}: {exc}")
            raise
        clean = not dry_run and report.ok and (heal or not report.drift_total)
        report.watermark = pulled_at if clean else None
        report.timings["total"] = time.perf_counter() - started
        _finish(engine, report, error=None)
        log.info(
            "reconcile.done",
            extra=log_fields(run_id=run_id, **report.as_dict()),
        )
        return report
    finally:
        engine.dispose()


async def _run(
    settings: Any,
    engine: Engine,
    report: ReconcileReport,
    fields: Sequence[str],
    since: datetime | None,
) -> None:
    full = report.mode == "full"
    async with ZuoraClient.from_settings(settings) as zuora:
        t0 = time.perf_counter()
        if full:
            # The two reads overlap: the pull mostly waits on Zuora, the cache read on the
            # database, and pyarrow releases the GIL while it parses.
            cache_task = asyncio.create_task(asyncio.to_thread(read_cache, engine, fields))
            try:
                remote, stats = await pull(zuora, fields, api=report.query_api, since=None)
            except BaseException:
                await asyncio.gather(cache_task, return_exceptions=True)
                raise
            cache = await cache_task
        else:
            remote, stats = await pull(zuora, fields, api=report.query_api, since=since)
            numbers = remote["subscription_number"].to_pylist()
            lookup = numbers if len(numbers) <= LOOKUP_LIMIT else None
            cache = await asyncio.to_thread(read_cache, engine, fields, lookup)
        report.timings["reads"] = time.perf_counter() - t0
        _log_pull(stats)

        t1 = time.perf_counter()
        diff = await asyncio.to_thread(compute, remote, cache, fields, full=full)
        del remote, cache
        report.timings["diff"] = time.perf_counter() - t1
        report.remote_subscriptions = diff.remote_rows
        report.cache_subscriptions = diff.cache_rows
        report.field_counts = diff.field_counts
        report.examples = diff.examples[:EXAMPLES]

        confirmed: list[str] = []
        if diff.deleted:
            t2 = time.perf_counter()
            confirmed, still_there = await _confirm_deleted(zuora, diff.deleted)
            report.unconfirmed_deleted = len(still_there)
            report.timings["confirm"] = time.perf_counter() - t2
            report.examples += [
                {"kind": "deleted", "subscription": n, "field": None,
                 "cache": "present", "zuora": None}
                for n in confirmed[:EXAMPLES]
            ]  # fmt: skip
        report.counts = {
            "missing": len(diff.missing),
            "stale": len(diff.stale),
            "deleted": len(confirmed),
        }
        if report.dry_run or not report.heal or not report.drift_total:
            return
        t3 = time.perf_counter()
        await asyncio.to_thread(_heal, engine, report, diff, fields, confirmed)
        report.timings["heal"] = time.perf_counter() - t3

    if report.drain and report.enqueued + report.already_queued:
        from flows.drain import DrainOptions
        from flows.runner import run_drain

        t4 = time.perf_counter()
        options = DrainOptions.from_settings(settings, window_seconds=0)
        report.drain_summary = (await run_drain(settings, options)).as_dict()
        report.timings["drain"] = time.perf_counter() - t4


def _heal(
    engine: Engine,
    report: ReconcileReport,
    diff: Diff,
    fields: Sequence[str],
    confirmed: Sequence[str],
) -> None:
    items = heal_items(diff.missing, "missing", fields) + heal_items(diff.stale, "stale", fields)
    for start in range(0, len(items), ENQUEUE_BATCH):
        batch = items[start : start + ENQUEUE_BATCH]
        with engine.begin() as conn:
            results = inbox.enqueue(conn, batch, notify=True)
        stored = sum(1 for r in results if not r.duplicate)
        report.enqueued += stored
        report.already_queued += len(batch) - stored
    now = datetime.now(UTC)
    for start in range(0, len(confirmed), ENQUEUE_BATCH):
        with engine.begin() as conn:
            for number in confirmed[start : start + ENQUEUE_BATCH]:
                if mark_deleted(conn, subscription_number=number, now=now):
                    report.marked_deleted += 1


def _finish(engine: Engine, report: ReconcileReport, *, error: str | None) -> None:
    if report.run_id is None:
        return
    try:
        with engine.begin() as conn:
            runs.finish_run(
                conn,
                report.run_id,
                succeeded=error is None,
                counts=report.as_dict(),
                drift=report.drift_summary(),
                watermark=report.watermark,
                error=error,
            )
    except Exception:
        if error is None:
            raise
        # The database is what failed: the run row stays 'running' and says so by its age.


def _log_pull(stats: PullStats) -> None:
    log.info(
        "reconcile.pulled",
        extra=log_fields(
            api=stats.api, rows=stats.rows, subscriptions=stats.subscriptions,
            jobs=stats.jobs, pages=stats.pages, seconds=round(stats.seconds, 2),
        ),
    )  # fmt: skip
