"""The `zuora-sync` command line as a user runs it: a real process, real exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from warehouse import inbox
from warehouse.db import make_engine
from warehouse.inbox import NewItem, RetryPolicy


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zuora_sync", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=120,
        check=False,
    )


def test_help_lists_every_command() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("webhook", "drain", "reconcile", "sandbox", "demo", "db", "inbox", "zuora"):
        assert command in result.stdout


def test_db_upgrade_migrates_then_says_there_is_nothing_to_do(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    first = run("db", "upgrade", env={"DATABASE_URL": url})
    second = run("db", "upgrade", env={"DATABASE_URL": url})
    assert first.returncode == 0, first.stderr
    assert "migrated from an empty database to" in first.stdout
    assert "already at revision" in second.stdout
    assert "callout_inbox" in inspect(create_engine(url)).get_table_names()


def test_db_upgrade_on_postgres(empty_pg_url: str) -> None:
    result = run("db", "upgrade", env={"DATABASE_URL": empty_pg_url})
    assert result.returncode == 0, result.stderr
    assert "migrated from an empty database" in result.stdout
    engine = create_engine(empty_pg_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM callout_inbox")).scalar_one() == 0
    engine.dispose()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"DATABASE_URL": "::nonsense::"}, "invalid setting DATABASE_URL"),
        ({"ZUORA_MAX_CONCURRENCY": "many"}, "invalid setting ZUORA_MAX_CONCURRENCY"),
        ({"DATABASE_URL": "sqlite:////no/such/dir/w.db"}, "does not exist"),
    ],
)
def test_bad_configuration_is_one_line_and_exit_code_2(env: dict[str, str], expected: str) -> None:
    result = run("db", "upgrade", env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("zuora-sync: ") and expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_bad_usage_is_exit_code_2() -> None:
    assert run("drain", "--batch-size", "0").returncode == 2
    assert run("no-such-command").returncode == 2
    result = run("reconcile", "--full", "--since", "2026-01-01T00:00:00Z")
    assert result.returncode == 2 and "exclude each other" in result.stderr


def test_inbox_commands_show_and_replay_dead_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    env = {"DATABASE_URL": url}
    assert run("db", "upgrade", env=env).returncode == 0
    engine = make_engine(url)
    with engine.begin() as conn:
        inbox.enqueue(conn, [NewItem("callout", f"k{i}", f"A-S{i}") for i in range(3)])
        rows = inbox.claim(conn, worker="w", limit=1, lease=timedelta(minutes=1))
        inbox.fail(
            conn,
            [rows[0].id],
            worker="w",
            error="HTTP 400 bad",
            policy=RetryPolicy(),
            dead_now=True,
        )
    engine.dispose()

    stats = run("inbox", "stats", env=env)
    assert stats.returncode == 0
    assert "pending     2" in stats.stdout and "dead        1" in stats.stdout

    listed = run("inbox", "list", "--status", "dead", env=env)
    assert listed.returncode == 0 and "HTTP 400 bad" in listed.stdout and "A-S0" in listed.stdout
    assert run("inbox", "list", "--status", "lost", env=env).returncode == 2

    assert run("inbox", "replay", env=env).returncode == 2
    replayed = run("inbox", "replay", "--dead", env=env)
    assert replayed.returncode == 0 and "queued 1 replay row" in replayed.stdout
    assert '"dead": 0' in run("inbox", "stats", "--json", env=env).stdout
