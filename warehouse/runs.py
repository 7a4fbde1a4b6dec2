"""The run log (`sync_runs`): one row per drain or reconcile run."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from warehouse.models import sync_runs

KINDS = ("drain", "reconcile")


def start_run(
    conn: Connection,
    kind: str,
    *,
    mode: str | None = None,
    params: Mapping[str, Any] | None = None,
    flow_run_id: str | None = None,
    now: datetime | None = None,
) -> int:
    if kind not in KINDS:
        raise ValueError(f"unknown run kind {kind!r}")
    stmt = (
        insert(sync_runs)
        .values(
            kind=kind,
            mode=mode,
            status="running",
            started_at=now or datetime.now(UTC),
            params=dict(params or {}),
            counts={},
            flow_run_id=flow_run_id,
        )
        .returning(sync_runs.c.id)
    )
    return int(conn.execute(stmt).scalar_one())


def finish_run(
    conn: Connection,
    run_id: int,
    *,
    succeeded: bool,
    counts: Mapping[str, Any] | None = None,
    drift: Mapping[str, Any] | None = None,
    watermark: datetime | None = None,
    error: str | None = None,
    now: datetime | None = None,
) -> None:
    values: dict[str, Any] = {
        "status": "succeeded" if succeeded else "failed",
        "finished_at": now or datetime.now(UTC),
        "error": error[:4000] if error else None,
    }
    if counts is not None:
        values["counts"] = dict(counts)
    if drift is not None:
        values["drift"] = dict(drift)
    if watermark is not None:
        values["watermark"] = watermark
    conn.execute(update(sync_runs).where(sync_runs.c.id == run_id).values(**values))


def last_run(
    conn: Connection, kind: str, *, mode: str | None = None, succeeded_only: bool = False
) -> Any | None:
    """The newest run of a kind (and mode), or None."""
    query = select(sync_runs).where(sync_runs.c.kind == kind)
    if mode is not None:
        query = query.where(sync_runs.c.mode == mode)
    if succeeded_only:
        query = query.where(sync_runs.c.status == "succeeded")
    return conn.execute(
        query.order_by(sync_runs.c.started_at.desc(), sync_runs.c.id.desc()).limit(1)
    ).first()
