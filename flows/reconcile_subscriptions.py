"""Prefect flow `reconcile-subscriptions`: the cache against Zuora's query API, healed.

Deployed as `reconcile-incremental` (hourly) and `reconcile-full` (nightly); run ad hoc with
parameters. The work is `flows.reconcile.run_reconcile`; this module adds what an operator
sees: the run in `sync_runs` (linked to the flow run), the drift report as a markdown
artifact (`reconcile-report`), the counts as a table artifact (`reconcile-drift`), and the
engine's logs in the run's log. Drift that was found and not healed does not fail the run:
the run did its job and says so in its report and summary (`ok: false`); the CLI turns
that into exit code 1.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.runtime import flow_run

from flows.drain_callouts import _forward_logs
from flows.reconcile import ReconcileReport, run_reconcile


@task(name="publish-reconcile-report", retries=3, retry_delay_seconds=[1, 5, 15])
async def publish_report(markdown: str, rows: list[dict[str, Any]], drift: int) -> None:
    await acreate_markdown_artifact(
        markdown=markdown,
        key="reconcile-report",
        description=f"Drift between the cache and Zuora: {drift} subscription(s).",
    )
    await acreate_table_artifact(
        table=rows,
        key="reconcile-drift",
        description="Drifted subscriptions by kind, and stale ones by field.",
    )


def summary_of(report: ReconcileReport) -> dict[str, Any]:
    return {
        **report.as_dict(),
        "ok": report.ok,
        "fields": dict(report.field_counts),
        "run_id": report.run_id,
    }


@flow(
    name="reconcile-subscriptions",
    description="Diff the cache against Zuora's query API by value, report drift, heal it.",
    log_prints=True,
)
async def reconcile_subscriptions(
    mode: Literal["full", "incremental"] = "incremental",
    since: datetime | None = None,
    dry_run: bool = False,
    heal: bool = True,
    drain: bool = True,
) -> dict[str, Any]:
    """Reconcile once; `since` (with a time zone) overrides the incremental watermark."""
    logger = get_run_logger()
    _forward_logs(logger)
    from zuora_sync.settings import get_settings

    report = await run_reconcile(
        get_settings(),
        mode=mode,
        since=since,
        dry_run=dry_run,
        heal=heal,
        drain=drain,
        flow_run_id=flow_run.get_id(),
    )
    await publish_report(report.to_markdown(), report.table_rows(), report.drift_total)
    logger.info(report.render_text())
    return summary_of(report)
