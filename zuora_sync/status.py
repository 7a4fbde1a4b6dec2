"""`zuora-sync status`: the health of the sync in one look, for people and for alerting."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from warehouse import inbox, runs
from warehouse.db import read_only
from warehouse.inbox import utcnow


def _run(row: Any, now: datetime) -> dict[str, Any] | None:
    if row is None:
        return None
    ended = row.finished_at
    return {
        "id": row.id,
        "mode": row.mode,
        "status": row.status,
        "started_at": row.started_at.isoformat(),
        "finished_at": ended.isoformat() if ended else None,
        "age_seconds": round((now - (ended or row.started_at)).total_seconds(), 1),
        "counts": row.counts or {},
        "drift": row.drift,
        "error": row.error,
    }


def collect(
    engine: Engine,
    *,
    max_oldest_pending: float,
    max_dead: int,
    max_drain_age: float,
    max_reconcile_age: float,
) -> dict[str, Any]:
    """Read the inbox and the run log, and list every threshold crossed.

    A warehouse that cannot be read is an alert like any other, in the same report shape,
    so a cron job or an alerting probe gets one line and exit 1 rather than a traceback.
    """
    now = utcnow()
    try:
        with read_only(engine) as conn:
            queue = inbox.stats(conn, now=now)
            last_drain = _run(runs.last_run(conn, "drain"), now)
            good_drain = _run(runs.last_run(conn, "drain", succeeded_only=True), now)
            last_reconcile = _run(runs.last_run(conn, "reconcile"), now)
            good_reconcile = _run(runs.last_run(conn, "reconcile", succeeded_only=True), now)
    except DBAPIError as exc:
        # The driver's own first line says what failed (refused, timeout, auth) without the
        # statement or the URL's password.
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        return {
            "inbox": None,
            "last_drain": None,
            "last_successful_drain": None,
            "last_reconcile": None,
            "last_successful_reconcile": None,
            "alerts": [f"the warehouse cannot be read: {reason}"],
        }
    alerts: list[str] = []
    oldest = queue.oldest_pending_age_seconds
    if oldest is not None and oldest > max_oldest_pending:
        alerts.append(
            f"oldest pending callout is {oldest:.0f} s old (limit {max_oldest_pending:.0f} s)"
        )
    if queue.counts["dead"] > max_dead:
        alerts.append(f"{queue.counts['dead']} dead row(s) in the inbox (limit {max_dead})")
    for kind, good, limit in (
        ("drain", good_drain, max_drain_age),
        ("reconcile", good_reconcile, max_reconcile_age),
    ):
        if good is None:
            alerts.append(f"no successful {kind} yet")
        elif good["age_seconds"] > limit:
            age = good["age_seconds"]
            alerts.append(f"last successful {kind} ended {age:.0f} s ago (limit {limit:.0f} s)")
    return {
        "inbox": {
            "counts": queue.counts,
            "depth": queue.depth,
            "oldest_pending_age_seconds": oldest,
            "expired_leases": queue.expired_leases,
        },
        "last_drain": last_drain,
        "last_successful_drain": good_drain,
        "last_reconcile": last_reconcile,
        "last_successful_reconcile": good_reconcile,
        "alerts": alerts,
    }


def _describe_run(run: dict[str, Any] | None) -> str:
    if run is None:
        return "never"
    when = (
        f"{run['status']}, ended {run['age_seconds']:.0f} s ago"
        if run["finished_at"]
        else (f"running for {run['age_seconds']:.0f} s")
    )
    counts = run["counts"] or {}
    shown = ", ".join(f"{k} {v}" for k, v in counts.items() if isinstance(v, int) and v)
    return f"#{run['id']} {run['mode'] or ''} {when}{'; ' + shown if shown else ''}".replace(
        "  ", " "
    )


def render(report: dict[str, Any]) -> str:
    queue = report["inbox"]
    if queue is None:
        return "\n".join(f"ALERT        {alert}" for alert in report["alerts"])
    oldest = queue["oldest_pending_age_seconds"]
    lines = [
        f"inbox        depth {queue['depth']} (pending {queue['counts']['pending']}, "
        f"processing {queue['counts']['processing']}), dead {queue['counts']['dead']}, "
        f"done {queue['counts']['done']}",
        f"oldest       {'-' if oldest is None else f'{oldest:.1f} s'}",
        f"drain        {_describe_run(report['last_drain'])}",
        f"reconcile    {_describe_run(report['last_reconcile'])}",
    ]
    drift = (report["last_reconcile"] or {}).get("drift")
    if drift:
        lines.append(
            "  drift      "
            + ", ".join(f"{k} {v}" for k, v in drift.items() if not isinstance(v, dict | list))
        )
    lines += [f"ALERT        {alert}" for alert in report["alerts"]] or [
        "ok           no threshold crossed"
    ]
    return "\n".join(lines)
