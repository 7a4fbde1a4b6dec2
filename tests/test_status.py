"""`zuora-sync status`: what it reports and when it raises the alarm (exit 1)."""

from __future__ import annotations

import json
import socket
from datetime import timedelta
from pathlib import Path

from tests.test_cli import run
from warehouse import inbox, runs
from warehouse.db import make_engine
from warehouse.inbox import NewItem, RetryPolicy, utcnow


def test_status_is_quiet_when_healthy_and_alerts_past_each_threshold(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    env = {"DATABASE_URL": url}
    assert run("db", "upgrade", env=env).returncode == 0

    fresh = run("status", env=env)
    assert fresh.returncode == 1  # nothing has ever run: that is worth an alert
    assert (
        "no successful drain yet" in fresh.stdout and "no successful reconcile yet" in fresh.stdout
    )

    engine = make_engine(url)
    now = utcnow()
    with engine.begin() as conn:
        for kind in ("drain", "reconcile"):
            run_id = runs.start_run(conn, kind, mode="full" if kind == "reconcile" else None)
            runs.finish_run(
                conn,
                run_id,
                succeeded=True,
                counts={"claimed": 3},
                drift={"stale": 2} if kind == "reconcile" else None,
            )
    healthy = run("status", env=env)
    assert healthy.returncode == 0, healthy.stdout
    assert "no threshold crossed" in healthy.stdout and "drift      stale 2" in healthy.stdout

    with engine.begin() as conn:
        inbox.enqueue(
            conn,
            [NewItem("callout", "a", "A-S1"), NewItem("callout", "b", "A-S2")],
            now=now - timedelta(minutes=10),
        )
        (row,) = inbox.claim(conn, worker="w", limit=1, lease=timedelta(minutes=1))
        inbox.fail(conn, [row.id], worker="w", error="x", policy=RetryPolicy(), dead_now=True)
    engine.dispose()
    unhealthy = run("status", "--json", env=env)
    assert unhealthy.returncode == 1
    report = json.loads(unhealthy.stdout)
    assert report["inbox"]["counts"]["dead"] == 1 and report["inbox"]["depth"] == 1
    assert any("oldest pending callout" in a for a in report["alerts"])
    assert any("1 dead row" in a for a in report["alerts"])
    relaxed = run("status", "--max-oldest-pending", "3600", "--max-dead", "5", env=env)
    assert relaxed.returncode == 0, relaxed.stdout


def test_status_reports_an_unreachable_warehouse_as_one_alert() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        env = {"DATABASE_URL": f"postgresql://zs:hunter2-secret@127.0.0.1:{port}/warehouse"}
        down = run("status", env=env)
        as_json = run("status", "--json", env=env)
    assert down.returncode == 1 and as_json.returncode == 1
    (line,) = down.stdout.splitlines()
    assert line.startswith("ALERT") and "cannot be read" in line and "refused" in line
    assert json.loads(as_json.stdout)["alerts"] == [line.removeprefix("ALERT").strip()]
    for output in (down.stdout, down.stderr, as_json.stdout, as_json.stderr):
        assert "Traceback" not in output and "hunter2" not in output


def test_inbox_commands_report_an_unreachable_warehouse_in_one_line() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        env = {"DATABASE_URL": f"postgresql://zs:hunter2-secret@127.0.0.1:{port}/warehouse"}
        results = [
            run("inbox", "stats", env=env),
            run("inbox", "list", env=env),
            run("inbox", "replay", "--dead", env=env),
        ]
    for result in results:
        assert result.returncode == 1, result.stderr
        (line,) = result.stderr.splitlines()
        assert line.startswith("zuora-sync: the warehouse cannot be reached:") and "refused" in line
        assert "hunter2" not in result.stdout + result.stderr
