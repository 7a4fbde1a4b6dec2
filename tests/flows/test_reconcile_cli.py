"""`zuora-sync reconcile` as an operator runs it: a real process, the sandbox, PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, func, select

from tests.flows.test_reconcile import fill_cache
from tests.test_cli import run
from warehouse.models import sync_runs
from zuora.sandbox.server import RunningSandbox


def env_for(sandbox: RunningSandbox, url: str) -> dict[str, str]:
    return {**sandbox.env(), "DATABASE_URL": url, "PREFECT_API_URL": ""}


def test_full_reconcile_prints_the_drift_heals_it_and_the_next_run_prints_none(
    pg_engine: Engine, pg_url: str, sandbox: RunningSandbox
) -> None:
    fill_cache(pg_engine, sandbox)
    sandbox.admin.edit_custom_fields("A-S00000004", {"SupportTier__c": "Platinum"})
    env = env_for(sandbox, pg_url)

    dry = run("reconcile", "--full", "--dry-run", env=env)
    assert dry.returncode == 1, dry.stderr
    assert "drift: 1 subscriptions (missing 0, stale 1, deleted 0)" in dry.stdout
    assert "A-S00000004 SupportTier__c" in dry.stdout and "'Platinum'" in dry.stdout

    healed = run("reconcile", "--full", env=env)
    assert healed.returncode == 0, healed.stdout + healed.stderr
    assert "healed 1: 1 enqueued" in healed.stdout

    again = run("reconcile", "--full", env=env)
    assert again.returncode == 0
    assert "drift: 0, the cache matches Zuora" in again.stdout


def test_a_clean_ad_hoc_run_leaves_the_watermark_the_next_incremental_run_uses(
    pg_engine: Engine, pg_url: str, sandbox: RunningSandbox
) -> None:
    fill_cache(pg_engine, sandbox)
    result = run("reconcile", "--since", "2019-01-01", "--no-heal", env=env_for(sandbox, pg_url))
    assert result.returncode == 0, result.stderr
    assert "incremental" in result.stdout and "drift: 0" in result.stdout
    plain = run("reconcile", env=env_for(sandbox, pg_url))
    assert plain.returncode == 0 and "no watermark from an earlier clean run" not in plain.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--full", "--since", "2026-01-01T00:00:00Z"), "exclude each other"),
        (("--since", "yesterday"), "not an ISO 8601 time"),
        (("--since", "2999-01-01T00:00:00Z"), "in the future"),
    ],
)
def test_bad_usage_is_one_line_exit_2_and_records_nothing(
    pg_engine: Engine, pg_url: str, args: tuple[str, ...], expected: str
) -> None:
    result = run("reconcile", *args, env={"DATABASE_URL": pg_url})
    assert result.returncode == 2
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1
    with pg_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(sync_runs)).scalar() == 0


def test_a_hostile_tracked_field_is_refused_with_exit_2(pg_url: str) -> None:
    result = run(
        "reconcile",
        "--full",
        env={"DATABASE_URL": pg_url, "ZUORA_TRACKED_FIELDS": "Tier__c,x__c from account --"},
    )
    assert result.returncode == 2
    assert "ZUORA_TRACKED_FIELDS" in result.stderr and "Traceback" not in result.stderr
