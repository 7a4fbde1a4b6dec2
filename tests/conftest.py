"""Shared fixtures: a fresh, migrated database per test, on PostgreSQL and on SQLite.

PostgreSQL databases are cloned from a template migrated once per session
(`CREATE DATABASE ... TEMPLATE ...`, ~50 ms), so no two tests ever share one. The server is
the one at ZS_TEST_PG_URL (default: the machine's local PostgreSQL, trust auth).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

# Tests configure themselves; nothing from the developer's shell or .env may leak in.
for _name in list(os.environ):
    if _name.startswith(("ZUORA_", "CALLOUT_", "INBOX_", "DATABASE_URL", "LOG_")):
        del os.environ[_name]
os.environ["ZUORA_SYNC_ENV"] = "test"
# Prefect, wherever a test starts it, writes into a throwaway home and sends nothing out.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="zs-prefect-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"

from warehouse import migrate  # noqa: E402
from warehouse.db import make_engine  # noqa: E402
from zuora_sync.settings import get_settings  # noqa: E402

PG_ADMIN_URL = os.environ.get(
    "ZS_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)

pytest_plugins: list[str] = ["tests.fixtures.sandbox"]


def _admin() -> Engine:
    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")


@pytest.fixture(autouse=True)
def _fresh_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Settings are re-read in every test, from the test's own environment, not from a .env."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One throwaway Prefect API for the whole session (it costs ~10 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated template database for this session; removed at the end."""
    name = f"zs_tmpl_{uuid.uuid4().hex[:10]}"
    admin = _admin()
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.exit(f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {exc}", returncode=3)
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    # A template must have no open connections when it is cloned.
    yield name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def new_pg_database(template: str | None) -> str:
    name = f"zs_test_{uuid.uuid4().hex[:12]}"
    admin = _admin()
    with admin.connect() as conn:
        clause = f' TEMPLATE "{template}"' if template else ""
        conn.execute(text(f'CREATE DATABASE "{name}"{clause}'))
    admin.dispose()
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(url: str) -> None:
    name = make_url(url).database
    admin = _admin()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test only."""
    url = new_pg_database(pg_template)
    yield url
    drop_pg_database(url)


@pytest.fixture
def empty_pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database with no schema at all."""
    url = new_pg_database(None)
    yield url
    drop_pg_database(url)


@pytest.fixture
def sqlite_url(tmp_path: os.PathLike[str]) -> str:
    """A fresh, migrated SQLite database file for this test only."""
    url = f"sqlite:///{os.path.join(tmp_path, 'warehouse.db')}"
    migrate.upgrade(url)
    return url


@pytest.fixture(params=["postgresql", "sqlite"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test that takes this runs once on PostgreSQL and once on SQLite."""
    fixture = "pg_url" if request.param == "postgresql" else "sqlite_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url, pool_size=5)
    yield eng
    eng.dispose()


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    eng = make_engine(pg_url, pool_size=10)
    yield eng
    eng.dispose()
