"""prefect.yaml deployed to a throwaway Prefect server, and ad-hoc runs through a worker.

The module starts what `make prefect-up` starts, with the same code (a server with its own
PREFECT_HOME on a free port, the `zuora-sync` process pool, `prefect deploy`, a worker),
pointed at a fresh PostgreSQL database and a sandbox tenant through the worker's environment.
The server's scheduler is off so that only the runs a test creates are run.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy import Engine, select

from tests.conftest import drop_pg_database, new_pg_database
from tests.flows.test_drain import callouts, statuses
from warehouse.db import make_engine
from warehouse.models import sync_runs
from zuora.sandbox.config import SandboxConfig
from zuora.sandbox.server import RunningSandbox, running_sandbox
from zuora_sync.prefect_local import POOL, PROJECT, LocalPrefect

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

RUN_TIMEOUT = 300.0  # a guard against a run that never ends, not a speed requirement


@dataclass
class Deployed:
    prefect: LocalPrefect
    engine: Engine
    sandbox: RunningSandbox

    def client(self) -> Any:
        from prefect.client.orchestration import get_client

        return get_client(sync_client=True)

    def api(self) -> Any:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        return temporary_settings(updates={PREFECT_API_URL: self.prefect.url})

    def deployment(self, name: str) -> Any:
        with self.api(), self.client() as client:
            return client.read_deployment_by_name(name)

    def run(self, name: str, parameters: dict[str, Any]) -> Any:
        """Create an ad-hoc run of a deployment and wait for the worker to finish it."""
        with self.api(), self.client() as client:
            created = client.create_flow_run_from_deployment(
                self.deployment(name).id, parameters=parameters
            )
            deadline = time.monotonic() + RUN_TIMEOUT
            while True:
                found = client.read_flow_run(created.id)
                if found.state is not None and found.state.is_final():
                    return found
                if time.monotonic() > deadline:
                    log = self.prefect.log_file("worker").read_text()[-3000:]
                    pytest.fail(f"run {created.id} still {found.state_name}; worker log:\n{log}")
                time.sleep(0.5)

    def artifacts(self, key: str, flow_run_id: UUID) -> list[Any]:
        from prefect.client.schemas.filters import (
            ArtifactFilter,
            ArtifactFilterFlowRunId,
            ArtifactFilterKey,
        )

        with self.api(), self.client() as client:
            return list(
                client.read_artifacts(
                    artifact_filter=ArtifactFilter(
                        key=ArtifactFilterKey(any_=[key]),
                        flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
                    )
                )
            )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def deployed(pg_template: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    url = new_pg_database(pg_template)
    engine = make_engine(url, pool_size=2)
    config = SandboxConfig(subscriptions=20, callout_retry_interval_s=0.2)
    with running_sandbox(config) as sandbox:
        prefect = LocalPrefect(
            state=Path(tmp_path_factory.mktemp("prefect-local")),
            port=_free_port(),
            scheduler=False,
            # Settings reach the flow runs only through the worker's environment.
            extra_env={**sandbox.env(), "DATABASE_URL": url, "PREFECT_WORKER_QUERY_SECONDS": "1"},
        )
        try:
            prefect.up((), echo=lambda _: None)
            yield Deployed(prefect, engine, sandbox)
        finally:
            prefect.down(echo=lambda _: None)
            engine.dispose()
            drop_pg_database(url)


def test_drain_callouts_runs_every_minute_one_at_a_time_with_its_schema_enforced(
    deployed: Deployed,
) -> None:
    found = deployed.deployment("drain-callouts/drain-callouts")
    assert (
        found.work_pool_name == POOL
        and found.entrypoint == "flows/drain_callouts.py:drain_callouts"
    )
    (schedule,) = found.schedules
    assert schedule.active and schedule.schedule.interval == timedelta(minutes=1)
    assert found.global_concurrency_limit.limit == 1
    assert found.concurrency_options.collision_strategy == "CANCEL_NEW"
    assert found.parameters == {"batch_size": 500, "window_seconds": 50}
    # The code runs in place: the worker changes into this checkout, nothing is cloned.
    assert found.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(PROJECT)}}
    ]
    assert found.enforce_parameter_schema
    with deployed.api(), deployed.client() as client, pytest.raises(Exception, match="batch_size"):
        client.create_flow_run_from_deployment(found.id, parameters={"batch_size": 0})


def test_the_reconcile_deployments_run_hourly_and_nightly_with_their_schema_enforced(
    deployed: Deployed,
) -> None:
    hourly = deployed.deployment("reconcile-subscriptions/reconcile-incremental")
    nightly = deployed.deployment("reconcile-subscriptions/reconcile-full")
    for found, mode, cron in (
        (hourly, "incremental", "15 * * * *"),
        (nightly, "full", "30 2 * * *"),
    ):
        assert found.entrypoint == "flows/reconcile_subscriptions.py:reconcile_subscriptions"
        assert found.parameters == {"mode": mode} and found.enforce_parameter_schema
        (schedule,) = found.schedules
        assert (schedule.schedule.cron, schedule.schedule.timezone) == (cron, "UTC")
        assert found.global_concurrency_limit.limit == 1
        schema = found.parameter_openapi_schema["properties"]
        assert set(schema) == {"mode", "since", "dry_run", "heal", "drain"}
    with deployed.api(), deployed.client() as client:
        # (A `since` that is a string but no date passes here and fails the run as it starts:
        # the API does not check JSON Schema formats.)
        for wrong in ({"mode": "sideways"}, {"dry_run": "perhaps"}, {"heal": [1]}):
            with pytest.raises(Exception, match=next(iter(wrong))):
                client.create_flow_run_from_deployment(nightly.id, parameters=wrong)


def test_an_ad_hoc_drain_through_its_deployment_fills_the_cache(deployed: Deployed) -> None:
    numbers = [f"A-S{i:08d}" for i in range(1, 6)]
    callouts(deployed.engine, numbers * 2, prefix="adhoc-drain")

    run = deployed.run("drain-callouts/drain-callouts", {"window_seconds": 0})

    assert run.state.is_completed(), run.state
    assert statuses(deployed.engine).get("done", 0) >= 10
    assert not statuses(deployed.engine).get("pending")
    with deployed.engine.connect() as conn:
        recorded = conn.execute(
            select(sync_runs).where(sync_runs.c.flow_run_id == str(run.id))
        ).one()
    assert (recorded.kind, recorded.status, recorded.counts["claimed"]) == (
        "drain",
        "succeeded",
        10,
    )
    (summary,) = deployed.artifacts("drain-summary", run.id)
    rows = json.loads(summary.data) if isinstance(summary.data, str) else summary.data
    assert {"figure": "fetched", "value": 5} in rows


def test_an_ad_hoc_reconcile_through_its_deployment_completes_and_reports(
    deployed: Deployed,
) -> None:
    run = deployed.run("reconcile-subscriptions/reconcile-full", {"mode": "full"})

    assert run.state.is_completed(), run.state
    assert deployed.artifacts("reconcile-report", run.id)
    with deployed.engine.connect() as conn:
        recorded = conn.execute(
            select(sync_runs).where(sync_runs.c.flow_run_id == str(run.id))
        ).one()
    assert (recorded.kind, recorded.mode, recorded.status) == ("reconcile", "full", "succeeded")
