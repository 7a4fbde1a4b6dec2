"""Data Query end to end: submit, poll, download; formats, limits, refusals."""

from __future__ import annotations

import csv
import gzip
import io
import json
import time
from typing import Any

import httpx

from tests.fixtures.sandbox import SandboxFactory, authorized_client
from zuora.sandbox.server import RunningSandbox

LATEST = (
    "select s.name, s.id, s.version, s.status, s.accountid, s.updateddate, s.supporttier__c, "
    "s.seatoverride__c, s.contractowner__c from subscription s join "
    "(select name, max(version) as v from subscription group by name) m "
    "on s.name = m.name and s.version = m.v"
)


def submit(
    http: httpx.Client, sql: str, fmt: str = "JSON", compression: str = "NONE", **extra: Any
) -> httpx.Response:
    return http.post(
        "/query/jobs",
        json={
            "query": sql,
            "outputFormat": fmt,
            "compression": compression,
            "output": {"target": "S3"},
            **extra,
        },
    )


def wait(http: httpx.Client, job_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = http.get(f"/query/jobs/{job_id}").json()["data"]
        if job["queryStatus"] in ("completed", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def rows_of(job: dict[str, Any], fmt: str, compression: str) -> list[dict[str, Any]]:
    response = httpx.get(job["dataFile"])  # a pre-signed URL: no bearer token
    assert response.status_code == 200
    raw = gzip.decompress(response.content) if compression == "GZIP" else response.content
    text = raw.decode()
    if fmt == "JSON":
        return [json.loads(line) for line in text.splitlines() if line]
    return list(csv.DictReader(io.StringIO(text)))


def test_latest_version_query_agrees_with_get(
    shared_sandbox: RunningSandbox, shared_http: httpx.Client
) -> None:
    response = submit(shared_http, LATEST)
    assert response.status_code == 200
    submitted = response.json()["data"]
    assert submitted["queryStatus"] == "accepted" and len(submitted["id"]) == 36
    assert submitted["createdOn"].endswith("Z")
    job = wait(shared_http, submitted["id"])
    assert job["queryStatus"] == "completed"
    assert job["outputRows"] == 1000 and isinstance(job["processingTime"], int)
    rows = rows_of(job, "JSON", "NONE")
    assert len(rows) == 1000
    assert set(rows[0]) == {
        "name",
        "id",
        "version",
        "status",
        "accountid",
        "updateddate",
        "supporttier__c",
        "seatoverride__c",
        "contractowner__c",
    }
    by_number = {r["name"]: r for r in rows}
    # Every subscription against the export (exactly what GET returns), and a sample
    # against real GETs.
    exported = {s["subscriptionNumber"]: s for s in shared_sandbox.admin.export()}
    assert set(exported) == set(by_number)
    sample = set(sorted(by_number)[::25])
    for number, row in by_number.items():
        got = exported[number]
        if number in sample:
            assert shared_http.get(f"/v1/subscriptions/{number}").json() == got
        assert (row["id"], row["version"], row["status"], row["accountid"]) == (
            got["id"],
            got["version"],
            got["status"],
            got["accountId"],
        )
        for field in ("SupportTier__c", "SeatOverride__c", "ContractOwner__c"):
            assert row[field.lower()] == got[field]


def test_csv_with_gzip_and_tsv(shared_http: httpx.Client) -> None:
    sql = "select accountnumber, balance, autopay from account order by accountnumber limit 7"
    job = wait(shared_http, submit(shared_http, sql, "CSV", "GZIP").json()["data"]["id"])
    assert job["dataFile"].endswith(".csv.gz")
    rows = rows_of(job, "CSV", "GZIP")
    assert len(rows) == 7 and list(rows[0]) == ["accountnumber", "balance", "autopay"]
    assert rows[0]["autopay"] in ("true", "false")
    tsv = wait(shared_http, submit(shared_http, sql, "TSV").json()["data"]["id"])
    text = httpx.get(tsv["dataFile"]).text
    assert text.splitlines()[0] == "accountnumber\tbalance\tautopay"
    jsonl = wait(shared_http, submit(shared_http, sql, "JSON", "GZIP").json()["data"]["id"])
    first = rows_of(jsonl, "JSON", "GZIP")[0]
    assert isinstance(first["balance"], float) and isinstance(first["autopay"], bool)


def test_data_file_urls_are_unguessable(shared_http: httpx.Client) -> None:
    job = wait(
        shared_http, submit(shared_http, "select id from account limit 1").json()["data"]["id"]
    )
    url = job["dataFile"]
    token = url.split("/query-results/")[1].split("/")[0]
    assert len(token) == 32
    forged = url.replace(token, "0" * 32)
    assert httpx.get(forged).status_code == 404


def test_trino_timestamp_literals_work(shared_http: httpx.Client) -> None:
    sql = (
        "select count(*) as n from subscription where updateddate >= "
        "TIMESTAMP '2026-01-01 00:00:00'"
    )
    job = wait(shared_http, submit(shared_http, sql).json()["data"]["id"])
    assert job["queryStatus"] == "completed"
    assert rows_of(job, "JSON", "NONE")[0]["n"] > 0


def test_trino_zoned_timestamp_literals_mean_the_same_instant(shared_http: httpx.Client) -> None:
    counts = []
    for literal in (
        "TIMESTAMP '2026-01-01 00:00:00'",
        "TIMESTAMP '2026-01-01 00:00:00.000 UTC'",
        "TIMESTAMP '2026-01-01 01:00:00 +01:00'",
    ):
        sql = f"select count(*) as n from subscription where updateddate >= {literal}"
        job = wait(shared_http, submit(shared_http, sql).json()["data"]["id"])
        assert job["queryStatus"] == "completed", literal
        counts.append(rows_of(job, "JSON", "NONE")[0]["n"])
    assert counts[0] > 0 and counts == [counts[0]] * 3


def test_only_a_single_select_is_accepted(shared_http: httpx.Client) -> None:
    for sql in (
        "delete from subscription",
        "select 1; drop table subscription",
        "update account set name = 'x'",
        "pragma table_info(account)",
        "select nope from subscription",
        "attach database 'x' as y",
    ):
        response = submit(shared_http, sql)
        assert response.status_code == 400, sql
        body = response.json()
        assert body["code"] == 400 and body["message"]
    not_json = shared_http.post(
        "/query/jobs",
        content=b"query=select 1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert not_json.status_code == 415
    assert not_json.json() == {"code": 415, "message": "HTTP 415 Unsupported Media Type"}
    bad_format = shared_http.post(
        "/query/jobs",
        json={
            "query": "select 1",
            "outputFormat": "XML",
            "compression": "NONE",
            "output": {"target": "S3"},
        },
    )
    assert bad_format.status_code == 400


def test_output_cap_fails_the_job(sandbox_factory: SandboxFactory) -> None:
    sb = sandbox_factory(dataquery_max_output_rows=10)
    with authorized_client(sb) as http:
        job = wait(http, submit(http, "select id from subscription").json()["data"]["id"])
        assert job["queryStatus"] == "failed"
        assert "more than 10 rows" in job["errorMessage"]
        assert "dataFile" not in job
        ok = wait(http, submit(http, "select id from subscription limit 10").json()["data"]["id"])
        assert ok["queryStatus"] == "completed" and ok["outputRows"] == 10


def test_five_run_ten_queue_and_the_sixteenth_is_refused(
    sandbox_factory: SandboxFactory,
) -> None:
    sb = sandbox_factory(dataquery_min_seconds=3.0)
    with authorized_client(sb) as http:
        ids = []
        for _ in range(15):
            response = submit(http, "select id from account limit 1")
            assert response.status_code == 200
            ids.append(response.json()["data"]["id"])
        statuses = [http.get(f"/query/jobs/{i}").json()["data"]["queryStatus"] for i in ids]
        assert statuses[:5] == ["in_progress"] * 5
        assert statuses[5:] == ["accepted"] * 10
        refused = submit(http, "select id from account limit 1")
        assert refused.status_code == 429
        assert "Too many queries" in refused.json()["message"]
        listed = http.get("/query/jobs", params={"queryStatus": "accepted"}).json()["data"]
        assert len(listed) == 10 and listed[0]["id"] == ids[-1]  # newest first
        cancelled = http.delete(f"/query/jobs/{ids[-1]}").json()["data"]
        assert cancelled["queryStatus"] == "cancelled"
        assert http.get(f"/query/jobs/{'0' * 8}-0000-0000-0000-{'0' * 12}").status_code == 404
        assert wait(http, ids[5], timeout=30)["queryStatus"] == "completed"


def test_jobs_see_changes_made_through_the_api(sandbox: Any, zuora_http: httpx.Client) -> None:
    sandbox.admin.edit_custom_fields("A-S00000001", {"SupportTier__c": "Changed"})
    sandbox.admin.delete("A-S00000002")
    job = wait(
        zuora_http,
        submit(
            zuora_http, "select name, supporttier__c from subscription where status != 'Expired'"
        ).json()["data"]["id"],
    )
    rows = {r["name"]: r for r in rows_of(job, "JSON", "NONE")}
    assert rows["A-S00000001"]["supporttier__c"] == "Changed"
    assert "A-S00000002" not in rows
