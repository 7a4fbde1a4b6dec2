"""ZOQL over `/v1/action/query` and `/queryMore`: paging, shape, expiry, errors."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.fixtures.sandbox import SandboxFactory, authorized_client
from zuora.sandbox.server import RunningSandbox


def query(http: httpx.Client, zoql: str, batch: int | None = None) -> httpx.Response:
    body: dict[str, object] = {"queryString": zoql}
    if batch is not None:
        body["conf"] = {"batchSize": batch}
    return http.post("/v1/action/query", json=body)


def test_paging_over_several_batches_returns_every_record_once(shared_http: httpx.Client) -> None:
    zoql = "select Id, Name, Version, Status, UpdatedDate, SupportTier__c from Subscription"
    first = query(shared_http, zoql, batch=400).json()
    total = first["size"]
    assert total > 1000  # one row per version
    assert first["done"] is False and len(first["records"]) == 400
    ident, offset = first["queryLocator"].rsplit("-", 1)
    assert len(ident) == 32 and int(ident, 16) >= 0 and offset == "400"
    records = list(first["records"])
    page = first
    pages = 1
    while not page["done"]:
        page = shared_http.post(
            "/v1/action/queryMore",
            json={"queryLocator": page["queryLocator"], "conf": {"batchSize": 400}},
        ).json()
        assert page["size"] == total
        records.extend(page["records"])
        pages += 1
    assert "queryLocator" not in page
    assert pages == -(-total // 400)
    assert len(records) == total == len({r["Id"] for r in records})
    assert len({r["Name"] for r in records}) == 1000
    sample = records[0]
    assert set(sample) <= {"Id", "Name", "Version", "Status", "UpdatedDate", "SupportTier__c"}
    assert isinstance(sample["Version"], int)
    assert sample["UpdatedDate"][10] == "T" and sample["UpdatedDate"].endswith("+00:00")


def test_nulls_are_left_out_and_id_is_always_there(shared_http: httpx.Client) -> None:
    body = query(
        shared_http,
        "select Name, SeatOverride__c from Subscription where SeatOverride__c = null",
        batch=50,
    ).json()
    assert body["size"] > 0
    for record in body["records"]:
        assert set(record) == {"Id", "Name"}


def test_where_clauses(shared_http: httpx.Client) -> None:
    all_versions = query(shared_http, "select Id from Subscription").json()["size"]
    active = query(shared_http, "select Id from Subscription where Status = 'Active'").json()
    not_active = query(shared_http, "select Id from Subscription where Status != 'Active'").json()
    assert active["size"] + not_active["size"] == all_versions
    mixed = query(
        shared_http,
        "select Id, Version, Status from Subscription where "
        "(Status = 'Active' or Status = 'Cancelled') and Version >= 2",
    ).json()
    for record in mixed["records"]:
        assert record["Status"] in ("Active", "Cancelled") and record["Version"] >= 2
    one = query(
        shared_http, "select Id, Name from Subscription where Name = 'A-S00000001' and Version > 0"
    ).json()
    assert {r["Name"] for r in one["records"]} == {"A-S00000001"}
    since = query(
        shared_http,
        "select Id, UpdatedDate from Subscription where UpdatedDate >= '2026-01-01T00:00:00Z'",
    ).json()
    assert all(r["UpdatedDate"] >= "2026-01-01" for r in since["records"])
    for zoql in (
        "select Id, Name, AccountNumber from Account where AutoPay = true",
        "select Id, Name, SubscriptionId from RatePlan",
        "select Id, ChargeNumber, ChargeType, MRR from RatePlanCharge "
        "where ChargeType = 'Recurring'",
    ):
        result = query(shared_http, zoql, batch=5).json()
        assert result["size"] > 5 and len(result["records"]) == 5, zoql


def test_a_query_locator_expires_when_idle(sandbox_factory: SandboxFactory) -> None:
    sb = sandbox_factory(zoql_locator_idle_s=0.3)
    with authorized_client(sb) as http:
        first = query(http, "select Id from Subscription", batch=5).json()
        time.sleep(0.5)
        late = http.post("/v1/action/queryMore", json={"queryLocator": first["queryLocator"]})
        assert late.status_code == 400
        assert late.json()["faultcode"] == "fns:INVALID_QUERY_LOCATOR"
        garbage = http.post("/v1/action/queryMore", json={"queryLocator": "abc-1"})
        assert garbage.status_code == 400


@pytest.mark.parametrize(
    ("zoql", "fault"),
    [
        ("select Id from", "MALFORMED_QUERY"),
        ("select from Subscription", "MALFORMED_QUERY"),
        ("SELECT Id FROM Subscription", "MALFORMED_QUERY"),
        ("select * from Subscription", "MALFORMED_QUERY"),
        ("select Id from Subscription where Status = ", "MALFORMED_QUERY"),
        ("select Id from Subscription where Status ~ 'x'", "MALFORMED_QUERY"),
        ("select Id, TaxMessage from Subscription", "INVALID_FIELD"),
        ("select Id from Subscription where Nope = 1", "INVALID_FIELD"),
        ("select Id from Invoice2", "INVALID_TYPE"),
        ("select Id from Subscription where Version = 'x'", "INVALID_VALUE"),
    ],
)
def test_malformed_zoql_gets_zuoras_fault_body(
    shared_http: httpx.Client, zoql: str, fault: str
) -> None:
    response = query(shared_http, zoql)
    assert response.status_code == 400
    body = response.json()
    assert body["faultcode"] == f"fns:{fault}"
    assert body["faultstring"]
    assert body["detail"]["MalformedQueryFault"]["FaultCode"] == fault


def test_batch_size_is_capped_at_2000(shared_http: httpx.Client) -> None:
    body = query(shared_http, "select Id from RatePlan", batch=5000).json()
    assert len(body["records"]) == 2000 and body["size"] > 2000
    bad = query(shared_http, "select Id from RatePlan", batch=0)
    assert bad.status_code == 400


def test_zoql_sees_changes_and_deletions(sandbox: RunningSandbox, zuora_http: httpx.Client) -> None:
    zoql = "select Id, Name, Version, Status, SupportTier__c from Subscription"
    before = query(zuora_http, zoql).json()
    versions_of_2 = sum(r["Name"] == "A-S00000002" for r in before["records"])
    sandbox.admin.amend("A-S00000001", {"SupportTier__c": "Zoql"})
    sandbox.admin.delete("A-S00000002")
    after = query(zuora_http, zoql).json()
    assert after["size"] == before["size"] + 1 - versions_of_2 == len(after["records"])
    ones = [r for r in after["records"] if r["Name"] == "A-S00000001"]
    assert sorted(r["Version"] for r in ones)[-1] == max(r["Version"] for r in ones)
    latest = max(ones, key=lambda r: r["Version"])
    assert latest["SupportTier__c"] == "Zoql" and latest["Status"] != "Expired"
    assert all(r["Status"] == "Expired" for r in ones if r is not latest)
    assert not any(r["Name"] == "A-S00000002" for r in after["records"])
    expired = query(
        zuora_http, "select Id from Subscription where Name = 'A-S00000001' and Status = 'Expired'"
    ).json()
    assert expired["size"] == len(ones) - 1
