"""The run log: start, finish and find the last successful run of a kind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from warehouse import runs

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_runs_are_logged_and_the_last_success_is_found(engine: Engine) -> None:
    with engine.begin() as conn:
        first = runs.start_run(conn, "reconcile", mode="full", params={"dry_run": False}, now=T0)
        runs.finish_run(
            conn, first, succeeded=True, counts={"missing": 2}, drift={"stale": 1},
            watermark=T0, now=T0 + timedelta(seconds=3),
        )  # fmt: skip
        second = runs.start_run(conn, "reconcile", mode="full", now=T0 + timedelta(hours=1))
        runs.finish_run(
            conn, second, succeeded=False, error="Zuora 503", now=T0 + timedelta(hours=1)
        )
        runs.start_run(conn, "drain", now=T0 + timedelta(hours=2))
    with engine.connect() as conn:
        latest = runs.last_run(conn, "reconcile")
        good = runs.last_run(conn, "reconcile", mode="full", succeeded_only=True)
        drain = runs.last_run(conn, "drain")
        assert runs.last_run(conn, "reconcile", mode="incremental") is None
    assert (latest.id, latest.status, latest.error) == (second, "failed", "Zuora 503")
    assert (good.id, good.counts, good.drift, good.watermark) == (
        first,
        {"missing": 2},
        {"stale": 1},
        T0,
    )
    assert good.params == {"dry_run": False}
    assert (drain.status, drain.finished_at) == ("running", None)


def test_unknown_kind_is_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match="unknown run kind"), engine.begin() as conn:
        runs.start_run(conn, "backfill")
