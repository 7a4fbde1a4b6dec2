"""The Prefect flow `reconcile-subscriptions` on the session's throwaway Prefect API."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from sqlalchemy import Engine, select

from tests.flows.test_reconcile import fill_cache
from warehouse.models import sync_runs
from zuora.sandbox.server import RunningSandbox

pytestmark = pytest.mark.prefect


def test_the_flow_heals_records_the_run_and_publishes_its_report(
    prefect_harness: None,
    flow_environment: None,
    pg_engine: Engine,
    sandbox: RunningSandbox,
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.reconcile_subscriptions import reconcile_subscriptions

    fill_cache(pg_engine, sandbox)
    sandbox.admin.edit_custom_fields("A-S00000002", {"ContractOwner__c": "flow@example.com"})

    summary = asyncio.run(reconcile_subscriptions(mode="full"))

    assert (summary["stale"], summary["healed"], summary["ok"]) == (1, 1, True)
    assert summary["fields"] == {"ContractOwner__c": 1}
    with pg_engine.connect() as conn:
        run = conn.execute(select(sync_runs).where(sync_runs.c.kind == "reconcile")).one()
    assert (run.mode, run.status) == ("full", "succeeded") and run.flow_run_id

    async def artifacts() -> dict[str, Any]:
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=["reconcile-report", "reconcile-drift"])
                )
            )
        return {a.key: a for a in found}

    found = asyncio.run(artifacts())
    report = found["reconcile-report"]
    assert str(report.flow_run_id) == run.flow_run_id
    assert "A-S00000002" in report.data and "`flow@example.com`" in report.data
    rows = found["reconcile-drift"].data
    rows = json.loads(rows) if isinstance(rows, str) else rows
    assert {"kind": "stale", "field": "ContractOwner__c", "subscriptions": 1} in rows
    assert "flow@example.com" not in json.dumps(summary)  # values stay out of the summary

    # The flow's default is incremental: it now starts from the full run's watermark.
    summary = asyncio.run(reconcile_subscriptions())
    assert summary["mode"] == "incremental" and summary["drift_total"] == 0


def test_unknown_parameters_are_refused_before_anything_runs(prefect_harness: None) -> None:
    from flows.reconcile_subscriptions import reconcile_subscriptions

    with pytest.raises(Exception, match="mode"):
        asyncio.run(reconcile_subscriptions(mode="sideways"))  # type: ignore[arg-type]
