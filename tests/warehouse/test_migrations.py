"""`alembic upgrade head` on an empty database must equal the models, on both backends."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from warehouse import migrate
from warehouse.db import make_engine
from warehouse.models import Base

TABLES = {
    "callout_inbox",
    "zuora_subscriptions",
    "zuora_rate_plans",
    "zuora_rate_plan_charges",
    "sync_runs",
}


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "postgresql":
        yield str(request.getfixturevalue("empty_pg_url"))
    else:
        yield f"sqlite:///{os.path.join(tmp_path, 'empty.db')}"


@pytest.fixture
def empty_engine(empty_url: str) -> Iterator[Engine]:
    engine = make_engine(empty_url, pool_size=1)
    yield engine
    engine.dispose()


def schema_drift(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def test_upgrade_head_on_an_empty_database_equals_the_models(
    empty_url: str, empty_engine: Engine
) -> None:
    migrate.upgrade(empty_url)
    assert set(inspect(empty_engine).get_table_names()) >= TABLES
    assert migrate.current_revision(empty_engine) == migrate.head_revision(empty_url)
    assert schema_drift(empty_engine) == []


def test_downgrade_to_base_and_up_again(empty_url: str, empty_engine: Engine) -> None:
    migrate.upgrade(empty_url)
    migrate.downgrade(empty_url, "base")
    assert not TABLES & set(inspect(empty_engine).get_table_names())
    migrate.upgrade(empty_url)
    assert schema_drift(empty_engine) == []


def test_the_drift_check_can_fail(empty_url: str, empty_engine: Engine) -> None:
    """A database lacking what the models declare is reported: the check above can fail."""
    migrate.upgrade(empty_url)
    with empty_engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_zuora_subscriptions_zuora_id")
    drift = schema_drift(empty_engine)
    assert drift and "ix_zuora_subscriptions_zuora_id" in repr(drift)
