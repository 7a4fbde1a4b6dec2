"""The Prefect flow `drain-callouts` on a throwaway Prefect API: run log, artifact, summary."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from sqlalchemy import Engine, select

from tests.flows.test_drain import callouts, numbers, statuses
from warehouse.models import sync_runs
from zuora.sandbox.server import RunningSandbox

pytestmark = pytest.mark.prefect


def test_the_flow_drains_records_the_run_and_publishes_its_summary(
    prefect_harness: None,
    flow_environment: None,
    pg_engine: Engine,
    sandbox: RunningSandbox,
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.drain_callouts import drain_callouts

    callouts(pg_engine, numbers(sandbox, 5) * 2)

    summary = asyncio.run(drain_callouts(batch_size=20, window_seconds=0))

    assert (summary["claimed"], summary["fetched"], summary["dead"]) == (10, 5, 0)
    assert statuses(pg_engine) == {"done": 10}
    with pg_engine.connect() as conn:
        run = conn.execute(select(sync_runs)).one()
    assert (run.kind, run.status, run.counts["claimed"]) == ("drain", "succeeded", 10)
    assert run.flow_run_id  # the row points at the Prefect flow run

    async def artifact() -> Any:
        async with get_client() as client:
            (found,) = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["drain-summary"]))
            )
        return found

    table = asyncio.run(artifact())
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert str(table.flow_run_id) == run.flow_run_id
    assert {"figure": "claimed", "value": 10} in rows and {"figure": "fetched", "value": 5} in rows


def test_a_wrong_parameter_is_refused_before_anything_runs(prefect_harness: None) -> None:
    from flows.drain_callouts import drain_callouts

    with pytest.raises(Exception, match="batch_size"):
        asyncio.run(drain_callouts(batch_size=0))
