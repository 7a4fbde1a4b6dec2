"""Engines for the warehouse, tuned per backend.

PostgreSQL is the production store. SQLite is the embedded default for the demo and for
trying things out; to keep its single-writer model safe, every SQLite transaction starts with
`BEGIN IMMEDIATE` (take the write lock up front, wait for it politely) unless the caller asks
for a read-only one, so read-then-write code can never fail halfway on a lock upgrade.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url

SQLITE_BUSY_TIMEOUT_MS = 30_000

#: Execution option for a SQLite transaction that only reads (does not take the write lock).
READ_ONLY = {"zs_read_only": True}


def make_engine(url: str, *, pool_size: int = 10, echo: bool = False, **kwargs: Any) -> Engine:
    """Create an engine for `url` (already normalised by the settings)."""
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url, echo=echo, **kwargs)
    return create_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,  # survive a PostgreSQL restart without a failed request
        pool_recycle=1800,
        connect_args={"connect_timeout": 5, "application_name": "zuora-sync"},
        **kwargs,
    )


def _sqlite_engine(url: str, *, echo: bool, **kwargs: Any) -> Engine:
    engine = create_engine(
        url,
        echo=echo,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        **kwargs,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide where transactions begin.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        if make_url(url).database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        read_only = conn.get_execution_options().get("zs_read_only", False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def is_postgres(conn: Connection | Engine) -> bool:
    return conn.dialect.name == "postgresql"


@contextmanager
def read_only(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that only reads, rolled back at the end."""
    with engine.connect() as conn:
        conn = conn.execution_options(**READ_ONLY)
        with conn.begin():
            yield conn


def ping(engine: Engine) -> None:
    """Raise unless the database answers."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
