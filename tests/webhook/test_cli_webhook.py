"""`zuora-sync webhook` as an operator runs it: a real process, its exit codes, its workers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .conftest import AUTH, CALLOUT, PASSWORD, USER


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zuora_sync", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=timeout,
        check=False,
    )


def received_by_process(metrics_dir: Path) -> dict[str, float]:
    """Callouts each worker counted, from prometheus-client's per-process files."""
    from prometheus_client.mmap_dict import MmapedDict

    counts: dict[str, float] = {}
    for path in metrics_dir.glob("counter_*.db"):
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):
            if '"zuora_sync_callouts_received_total"' in key:
                counts[path.stem] = counts.get(path.stem, 0.0) + value
    return counts


def test_refuses_to_start_without_credentials_outside_dev(pg_url: str) -> None:
    result = cli(
        "webhook",
        "--port",
        str(free_port()),
        env={"DATABASE_URL": pg_url, "ZUORA_SYNC_ENV": "production"},
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "CALLOUT_USERNAME and CALLOUT_PASSWORD must be set" in line


def test_refuses_to_start_on_a_database_without_the_schema(empty_pg_url: str) -> None:
    result = cli(
        "webhook",
        "--port",
        str(free_port()),
        env={"DATABASE_URL": empty_pg_url, "CALLOUT_USERNAME": USER, "CALLOUT_PASSWORD": PASSWORD},
    )
    assert result.returncode == 2
    assert "zuora-sync db upgrade" in result.stderr.strip().splitlines()[-1]
    assert PASSWORD not in result.stderr


def test_refuses_to_start_on_a_missing_sqlite_file(tmp_path: Path) -> None:
    result = cli(
        "webhook",
        env={
            "DATABASE_URL": f"sqlite:///{tmp_path / 'nope.db'}",
            "CALLOUT_USERNAME": USER,
            "CALLOUT_PASSWORD": PASSWORD,
        },
    )
    assert result.returncode == 2
    assert "zuora-sync db upgrade" in result.stderr


def test_rejects_a_colon_in_the_username(pg_url: str) -> None:
    result = cli(
        "webhook",
        env={"DATABASE_URL": pg_url, "CALLOUT_USERNAME": "a:b", "CALLOUT_PASSWORD": PASSWORD},
    )
    assert result.returncode == 2
    assert "CALLOUT_USERNAME" in result.stderr and "colon" in result.stderr


@pytest.mark.slow
def test_two_workers__callouts_stored_metrics_add_up_and_the_row_is_listed(
    pg_url: str, tmp_path: Path
) -> None:
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    (metrics_dir).mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"stale file from an earlier run")
    env = {
        **os.environ,
        "DATABASE_URL": pg_url,
        "CALLOUT_USERNAME": USER,
        "CALLOUT_PASSWORD": PASSWORD,
        "ZUORA_SYNC_ENV": "production",
        "LOG_FORMAT": "json",
    }
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    proc = subprocess.Popen(
        [sys.executable, "-m", "zuora_sync", "webhook", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the webhook did not become ready"
            time.sleep(0.2)

        assert not (metrics_dir / "counter_1.db").exists()  # an earlier run's counts are gone
        # Fresh connections each time, until both workers have taken some (the kernel, not
        # we, decides which worker accepts a connection).
        sent = 0
        while sent < 40 or not all(received_by_process(metrics_dir).values()):
            response = httpx.post(
                base + CALLOUT,
                auth=AUTH,
                json={"SubscriptionNumber": f"A-S{sent:08d}"},
                headers={"Zuora-Notification-Id": f"cli-{sent}"},
            )
            assert response.status_code == 200
            sent += 1
            assert sent < 1000, "one worker never took a connection"
        assert httpx.post(base + CALLOUT, json={"SubscriptionNumber": "x"}).status_code == 401

        received = received_by_process(metrics_dir)
        assert len(received) == 2 and sum(received.values()) == sent + 1, received
        # Whichever worker answers the scrape, the counts are the whole server's.
        for _ in range(6):
            text = httpx.get(base + "/metrics").text
            assert f"zuora_sync_callouts_received_total {sent + 1}.0" in text
            assert f"zuora_sync_callouts_stored_total {sent}.0" in text
            assert 'zuora_sync_callouts_rejected_total{reason="unauthorized"} 1.0' in text
            assert f'zuora_sync_inbox_depth{{status="pending"}} {sent}.0' in text

        listing = subprocess.run(
            [sys.executable, "-m", "zuora_sync", "inbox", "list", "--limit", "5"],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout
        assert f"A-S{sent - 1:08d}" in listing and "pending" in listing
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert PASSWORD not in output
    assert output.count('"event":"webhook.stopped"') == 2  # both workers shut down cleanly
