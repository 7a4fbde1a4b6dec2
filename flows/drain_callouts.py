"""Prefect flow `drain-callouts`: callout_inbox -> Zuora -> cache.

Scheduled every minute with a window a little under that, so a callout reaches the cache
within seconds: the run keeps draining, woken by NOTIFY, until its window closes. A run the
scheduler created counts its window from its scheduled start, not from when a worker got to
it, so a run that starts late ends on time and the runs chain about once a minute instead of
overlapping (the deployment cancels a newcomer while one is still running). The work
itself is `flows.drain.Drainer`; this module adds what an operator sees: the run in
`sync_runs`, a summary table artifact, a progress artifact on long runs, and logs through
Prefect's run logger.

A task per subscription would cost Prefect API calls per subscription (hundreds a second);
the engine's own concurrency and the inbox's own retries cover that level instead. Prefect
retries are used where nothing else retries: recording the run.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)
from prefect.client.schemas.objects import FlowRun
from prefect.context import FlowRunContext
from prefect.runtime import flow_run
from pydantic import Field

from flows.drain import DrainOptions, DrainStats
from flows.runner import run_drain
from zuora_sync import logs

DEFAULT_WINDOW_SECONDS = 50.0
# A run whose window has already passed when it starts still takes one short look, so a
# backlog never waits on a worker that keeps starting late.
MIN_LATE_WINDOW_SECONDS = 1.0


def window_left(window_seconds: float, scheduled_start: datetime | None, now: datetime) -> float:
    """The part of a window that counts from `scheduled_start` still left at `now`.

    0 (drain until empty) and runs without a scheduled start keep the whole window.
    """
    if window_seconds == 0 or scheduled_start is None:
        return window_seconds
    left = window_seconds - (now - scheduled_start).total_seconds()
    return min(window_seconds, max(MIN_LATE_WINDOW_SECONDS, left))


def scheduled_start(run: FlowRun | None) -> datetime | None:
    """When the scheduler meant this run to start; None for ad-hoc runs and direct calls,
    which may have waited for a worker on purpose and get their whole window."""
    if run is None or not run.auto_scheduled:
        return None
    return run.expected_start_time


@task(name="record-drain-summary", retries=3, retry_delay_seconds=[1, 5, 15])
async def publish_summary(summary: dict[str, Any]) -> None:
    rows = [{"figure": key, "value": value} for key, value in summary.items() if key != "errors"]
    rows += [
        {"figure": f"error: {kind}", "value": count} for kind, count in summary["errors"].items()
    ]
    await acreate_table_artifact(
        table=rows,
        key="drain-summary",
        description="What this drain run claimed, fetched, wrote and failed, with freshness lag.",
    )


@flow(
    name="drain-callouts",
    description="Claim callout_inbox rows, fetch each subscription from Zuora, upsert the cache.",
    log_prints=True,
)
async def drain_callouts(
    batch_size: Annotated[int, Field(ge=1, le=5000)] = 500,
    window_seconds: Annotated[float, Field(ge=0, le=3600)] = DEFAULT_WINDOW_SECONDS,
) -> dict[str, Any]:
    """Drain the callout inbox for up to `window_seconds` (0: until it is empty)."""
    logger = get_run_logger()
    _forward_logs(logger)
    progress: dict[str, Any] = {}

    async def on_batch(stats: DrainStats, depth: int) -> None:
        done = stats.claimed / max(1, depth) * 100
        if "id" not in progress and stats.batches >= 3:
            progress["id"] = await acreate_progress_artifact(
                progress=min(99.0, done), key="drain-progress", description="rows claimed so far"
            )
        elif "id" in progress:
            await aupdate_progress_artifact(progress["id"], min(99.0, done))

    from zuora_sync.settings import get_settings

    settings = get_settings()
    window = window_left(window_seconds, scheduled_start(_current_run()), datetime.now(UTC))
    if window != window_seconds:
        logger.info(
            "window %.1f s of %.1f s left: counted from the scheduled start", window, window_seconds
        )
    options = DrainOptions.from_settings(settings, batch_size=batch_size, window_seconds=window)
    stats = await run_drain(settings, options, flow_run_id=flow_run.get_id(), on_batch=on_batch)
    summary = stats.as_dict()
    if "id" in progress:
        await aupdate_progress_artifact(progress["id"], 100.0)
    await publish_summary(summary)
    logger.info(
        "drain finished: %s claimed, %s fetched, %s upserted, %s deleted, %s failed, %s dead",
        summary["claimed"], summary["fetched"], summary["upserted"], summary["deleted"],
        summary["failed"], summary["dead"],
    )  # fmt: skip
    return summary


def _current_run() -> FlowRun | None:
    context = FlowRunContext.get()
    return None if context is None else context.flow_run


def _forward_logs(run_logger: Any) -> None:
    """Send the engine's own log events to the run's log in the Prefect UI too."""
    handler = _RunLogHandler(run_logger)
    for name in ("flows", "zuora", "warehouse"):
        target = logging.getLogger(name)
        for old in [h for h in target.handlers if isinstance(h, _RunLogHandler)]:
            target.removeHandler(old)  # a previous run's logger, in a long-lived process
        target.addHandler(handler)


class _RunLogHandler(logging.Handler):
    def __init__(self, run_logger: Any) -> None:
        super().__init__(logging.INFO)
        self.run_logger = run_logger

    def emit(self, record: logging.LogRecord) -> None:
        self.run_logger.log(record.levelno, logs.one_line(record))
