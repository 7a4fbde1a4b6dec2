"""Run a drain with everything around it: engine, Zuora client, and the run log.

Shared by the Prefect flow and by `zuora-sync drain` when no Prefect server is configured,
so both record the same row in `sync_runs` and print the same summary.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from flows.drain import DrainAborted, Drainer, DrainOptions, DrainStats
from warehouse import inbox, runs
from warehouse.db import make_engine
from zuora.client import ZuoraClient

BatchHook = Callable[[DrainStats, int], Awaitable[None]]


async def run_drain(
    settings: Any,
    options: DrainOptions,
    *,
    flow_run_id: str | None = None,
    on_batch: BatchHook | None = None,
) -> DrainStats:
    """One drain run, recorded in `sync_runs`; raises `DrainAborted` if the database failed."""
    engine = make_engine(settings.DATABASE_URL, pool_size=8)
    try:
        with engine.begin() as conn:
            depth = inbox.stats(conn).depth
            run_id = runs.start_run(
                conn,
                "drain",
                params={"batch_size": options.batch_size, "window_seconds": options.window_seconds},
                flow_run_id=str(flow_run_id) if flow_run_id else None,
            )

        async def batch_seen(stats: DrainStats) -> None:
            if on_batch is not None:
                await on_batch(stats, max(depth, stats.claimed))

        async with ZuoraClient.from_settings(settings) as zuora:
            drainer = Drainer(engine, zuora, options, on_batch=batch_seen)
            try:
                stats = await drainer.run()
            except DrainAborted as exc:
                _finish(engine, run_id, drainer.stats, error=str(exc))
                raise
        _finish(engine, run_id, stats, error=None)
        return stats
    finally:
        engine.dispose()


def _finish(engine: Any, run_id: int, stats: DrainStats, *, error: str | None) -> None:
    try:
        with engine.begin() as conn:
            runs.finish_run(
                conn, run_id, succeeded=error is None, counts=stats.as_dict(), error=error
            )
    except Exception:
        if error is None:
            raise
        # The database is what failed: the run row stays 'running' and says so by its age.
