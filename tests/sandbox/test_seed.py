"""The seeded data set: the same however it is built, cached once, queryable at size."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from tests.fixtures.sandbox import authorized_client
from zuora.sandbox import seed
from zuora.sandbox.config import SandboxConfig
from zuora.sandbox.server import running_sandbox
from zuora_sync.settings import SANDBOX_CUSTOM_FIELDS

FIELDS = SANDBOX_CUSTOM_FIELDS


def dump(path: Path) -> dict[str, list[tuple[object, ...]]]:
    con = sqlite3.connect(path)
    try:
        return {
            table: con.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
            for table in ("account", "subscription", "rateplan", "rateplancharge")
        }
    finally:
        con.close()


def test_parallel_and_sequential_builds_are_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed.build_base(tmp_path / "one.sqlite", 2100, 5, FIELDS, "+00:00")
    monkeypatch.setattr(seed, "PARALLEL_FROM", 1000)  # worker processes, chunk by chunk
    seed.build_base(tmp_path / "two.sqlite", 2100, 5, FIELDS, "+00:00")
    first, second = dump(tmp_path / "one.sqlite"), dump(tmp_path / "two.sqlite")
    assert first == second
    assert len(first["subscription"]) > 2100  # versions
    for table, rows in first.items():
        parquet = pq.read_table(seed.parquet_path(tmp_path / "one.sqlite", table))
        assert parquet.num_rows == len(rows)


def test_a_built_base_is_reused(tmp_path: Path) -> None:
    path = seed.ensure_base(tmp_path, 50, 1, FIELDS, "+00:00")
    built = path.stat().st_mtime_ns
    assert seed.ensure_base(tmp_path, 50, 1, FIELDS, "+00:00") == path
    assert path.stat().st_mtime_ns == built
    other = seed.ensure_base(tmp_path, 50, 2, FIELDS, "+00:00")
    assert other != path and other.exists()
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.slow
def test_latest_version_data_query_at_size() -> None:
    """Bounded by default; ZS_FULL=1 runs it on 1,000,000 subscriptions (built once)."""
    full = os.environ.get("ZS_FULL") == "1"
    n = 1_000_000 if full else 3_000
    config = SandboxConfig.from_settings(
        subscriptions=n,
        custom_fields=FIELDS,
        rate_limit_per_window=0,
        cache_min_subscriptions=0 if full else 10**9,
    )
    sql = (
        "select name, id, version, status from (select *, row_number() over "
        "(partition by name order by version desc) as rn from subscription) where rn = 1"
    )
    with running_sandbox(config, startup_timeout=1800) as sb, authorized_client(sb) as http:
        job = http.post(
            "/query/jobs",
            json={
                "query": sql,
                "outputFormat": "CSV",
                "compression": "GZIP",
                "output": {"target": "S3"},
            },
        ).json()["data"]
        for _ in range(6000):
            job = http.get(f"/query/jobs/{job['id']}").json()["data"]
            if job["queryStatus"] in ("completed", "failed"):
                break
            time.sleep(0.1)
        expected_rows = min(n, config.dataquery_max_output_rows)
        if n > config.dataquery_max_output_rows:
            assert job["queryStatus"] == "failed"  # over Zuora's 500,000-row cap
            return
        assert job["queryStatus"] == "completed" and job["outputRows"] == expected_rows
        assert httpx.get(job["dataFile"]).status_code == 200
