"""Subscriptions over REST: versions, amendments, custom-field edits, cancel, 404, export."""

from __future__ import annotations

import re

import httpx

from tests.fixtures.sandbox import SandboxFactory, authorized_client
from zuora.sandbox.server import RunningSandbox

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def first_multi_version(http: httpx.Client, limit: int = 20) -> dict:  # type: ignore[type-arg]
    for i in range(1, limit + 1):
        body = http.get(f"/v1/subscriptions/A-S{i:08d}").json()
        if body["version"] > 1:
            return body  # type: ignore[no-any-return]
    raise AssertionError("the seeded data has no subscription with several versions")


def test_get_by_number_has_zuoras_shape(zuora_http: httpx.Client) -> None:
    response = zuora_http.get("/v1/subscriptions/A-S00000001")
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["subscriptionNumber"] == "A-S00000001"
    assert HEX32.match(body["id"]) and HEX32.match(body["accountId"])
    assert isinstance(body["version"], int) and body["status"] in (
        "Active",
        "Cancelled",
        "Suspended",
        "Pending Activation",
        "Pending Acceptance",
        "Draft",
        "Expired",
    )
    assert body["termType"] in ("TERMED", "EVERGREEN")
    for name in ("SupportTier__c", "SeatOverride__c", "ContractOwner__c"):
        assert name in body  # custom fields are top-level keys, null included
    assert 1 <= len(body["ratePlans"]) <= 4
    for plan in body["ratePlans"]:
        assert HEX32.match(plan["id"]) and plan["productRatePlanId"] and plan["ratePlanName"]
        assert 1 <= len(plan["ratePlanCharges"]) <= 3
        for charge in plan["ratePlanCharges"]:
            assert HEX32.match(charge["id"]) and charge["number"].startswith("C-")
            assert charge["type"] in ("Recurring", "OneTime", "Usage")
            assert "price" in charge and "quantity" in charge
    assert response.headers["content-type"] == "application/json"
    assert len(response.headers["zuora-request-id"]) == 36


def test_get_by_any_version_id_answers_the_latest(zuora_http: httpx.Client) -> None:
    latest = first_multi_version(zuora_http)
    number, version = latest["subscriptionNumber"], latest["version"]
    first = zuora_http.get(f"/v1/subscriptions/{number}/versions/1").json()
    assert first["version"] == 1 and first["status"] == "Expired"
    assert first["id"] != latest["id"]
    by_old_id = zuora_http.get(f"/v1/subscriptions/{first['id']}").json()
    assert by_old_id["id"] == latest["id"] and by_old_id["version"] == version
    by_latest_id = zuora_http.get(f"/v1/subscriptions/{latest['id']}").json()
    assert by_latest_id == latest | {"success": True}
    # Charges keep their original id and number across versions; rate plan ids do not.
    first_charges = {c["number"]: c for p in first["ratePlans"] for c in p["ratePlanCharges"]}
    for plan in latest["ratePlans"]:
        for charge in plan["ratePlanCharges"]:
            if charge["number"] in first_charges:
                assert (
                    charge["originalChargeId"]
                    == first_charges[charge["number"]]["originalChargeId"]
                )
                assert charge["id"] != first_charges[charge["number"]]["id"]


def test_old_id_can_be_configured_to_answer_its_own_version(
    sandbox_factory: SandboxFactory,
) -> None:
    sb = sandbox_factory(old_id_returns_latest=False)
    with authorized_client(sb) as http:
        latest = first_multi_version(http)
        first = http.get(f"/v1/subscriptions/{latest['subscriptionNumber']}/versions/1").json()
        assert http.get(f"/v1/subscriptions/{first['id']}").json()["version"] == 1


def test_unknown_keys_get_zuoras_404_body(zuora_http: httpx.Client) -> None:
    for path in (
        "/v1/subscriptions/A-S99999999",
        "/v1/subscriptions/" + "0" * 32,
        "/v1/subscriptions/A-S00000001/versions/99",
    ):
        response = zuora_http.get(path)
        assert response.status_code == 404
        body = response.json()
        assert body["success"] is False
        assert body["reasons"][0]["code"] == "50000040"
        assert body["reasons"][0]["message"]
        assert re.match(r"^[0-9A-F]{16}$", body["processId"])
        assert body["requestId"] == response.headers["zuora-request-id"]


def test_amendment_creates_a_new_version_and_expires_the_old(zuora_http: httpx.Client) -> None:
    before = zuora_http.get("/v1/subscriptions/A-S00000002").json()
    plan = before["ratePlans"][0]
    charge = plan["ratePlanCharges"][0]
    response = zuora_http.put(
        "/v1/subscriptions/A-S00000002",
        json={
            "SupportTier__c": "Enterprise",
            "update": [
                {
                    "ratePlanId": plan["id"],
                    "chargeUpdateDetails": [{"ratePlanChargeId": charge["id"], "quantity": 42}],
                }
            ],
        },
    )
    assert response.status_code == 200
    result = response.json()
    assert result["success"] is True and HEX32.match(result["subscriptionId"])
    after = zuora_http.get("/v1/subscriptions/A-S00000002").json()
    assert after["id"] == result["subscriptionId"] != before["id"]
    assert after["version"] == before["version"] + 1
    assert after["revision"] == f"{after['version']}.0"
    assert after["SupportTier__c"] == "Enterprise"
    assert {p["id"] for p in after["ratePlans"]}.isdisjoint({p["id"] for p in before["ratePlans"]})
    changed = after["ratePlans"][0]
    assert changed["lastChangeType"] == "Update"
    assert changed["ratePlanCharges"][0]["originalChargeId"] == charge["originalChargeId"]
    if charge["quantity"] is not None:
        assert changed["ratePlanCharges"][0]["quantity"] == 42
    old = zuora_http.get(f"/v1/subscriptions/A-S00000002/versions/{before['version']}").json()
    assert old["id"] == before["id"] and old["status"] == "Expired"


def test_custom_field_edit_is_in_place(zuora_http: httpx.Client) -> None:
    before = zuora_http.get("/v1/subscriptions/A-S00000003").json()
    response = zuora_http.put(
        f"/v1/subscriptions/A-S00000003/versions/{before['version']}/customFields",
        json={"customFields": {"SupportTier__c": "Platinum", "SeatOverride__c": 75}},
    )
    assert response.status_code == 200 and response.json() == {"success": True}
    after = zuora_http.get("/v1/subscriptions/A-S00000003").json()
    assert (after["id"], after["version"]) == (before["id"], before["version"])
    assert after["SupportTier__c"] == "Platinum"
    assert after["SeatOverride__c"] == "75"  # a text field: numbers come back as strings
    assert after["ratePlans"] == before["ratePlans"]
    unknown = zuora_http.put(
        f"/v1/subscriptions/A-S00000003/versions/{before['version']}/customFields",
        json={"customFields": {"Nope__c": "x"}},
    )
    assert unknown.status_code == 400 and unknown.json()["success"] is False
    assert zuora_http.get("/v1/subscriptions/A-S00000003").json() == after


def test_cancel_makes_a_cancelled_version(zuora_http: httpx.Client) -> None:
    before = zuora_http.get("/v1/subscriptions/A-S00000004").json()
    if before["status"] == "Cancelled":
        return
    response = zuora_http.put(
        "/v1/subscriptions/A-S00000004/cancel",
        json={"cancellationPolicy": "SpecificDate", "cancellationEffectiveDate": "2026-12-31"},
    )
    assert response.status_code == 200
    assert response.json()["cancelledDate"] == "2026-12-31"
    after = zuora_http.get("/v1/subscriptions/A-S00000004").json()
    assert after["status"] == "Cancelled" and after["version"] == before["version"] + 1
    missing_policy = zuora_http.put("/v1/subscriptions/A-S00000005/cancel", json={})
    assert missing_policy.status_code == 400


def test_malformed_bodies_change_nothing(zuora_http: httpx.Client) -> None:
    before = zuora_http.get("/v1/subscriptions/A-S00000006").json()
    bad = zuora_http.put(
        "/v1/subscriptions/A-S00000006",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert bad.status_code == 400 and bad.json()["reasons"][0]["code"] == "50000090"
    bad_plan = zuora_http.put(
        "/v1/subscriptions/A-S00000006", json={"remove": [{"ratePlanId": "f" * 32}]}
    )
    assert bad_plan.status_code == 400
    assert zuora_http.get("/v1/subscriptions/A-S00000006").json() == before


def test_admin_changes_and_delete(sandbox: RunningSandbox, zuora_http: httpx.Client) -> None:
    admin = sandbox.admin
    assert admin.edit_custom_fields("A-S00000007", {"ContractOwner__c": "ops@example.com"})
    assert zuora_http.get("/v1/subscriptions/A-S00000007").json()["ContractOwner__c"] == (
        "ops@example.com"
    )
    new_id = admin.amend("A-S00000007", {"notes": "amended by admin"})
    assert zuora_http.get("/v1/subscriptions/A-S00000007").json()["id"] == new_id
    admin.delete("A-S00000007")
    assert zuora_http.get("/v1/subscriptions/A-S00000007").status_code == 404
    assert zuora_http.get(f"/v1/subscriptions/{new_id}").status_code == 404


def test_export_is_exactly_what_get_returns(
    sandbox: RunningSandbox, zuora_http: httpx.Client
) -> None:
    sandbox.admin.amend("A-S00000010")
    sandbox.admin.delete("A-S00000011")
    exported = list(sandbox.admin.export())
    numbers = [s["subscriptionNumber"] for s in exported]
    assert numbers == sorted(numbers) and "A-S00000011" not in numbers
    assert len(exported) == 19
    for body in exported:
        assert zuora_http.get(f"/v1/subscriptions/{body['subscriptionNumber']}").json() == body


def test_same_seed_same_data_byte_for_byte(sandbox_factory: SandboxFactory) -> None:
    one = sandbox_factory(subscriptions=30, seed=7)
    two = sandbox_factory(subscriptions=30, seed=7)
    other = sandbox_factory(subscriptions=30, seed=8)
    bigger = sandbox_factory(subscriptions=45, seed=7)
    raw_one = httpx.get(f"{one.base_url}/_sandbox/export").content
    assert raw_one == httpx.get(f"{two.base_url}/_sandbox/export").content
    assert raw_one != httpx.get(f"{other.base_url}/_sandbox/export").content
    # Subscription k does not depend on how many there are.
    assert list(bigger.admin.export())[:30] == list(one.admin.export())


def test_seeded_data_is_realistic(shared_sandbox: RunningSandbox) -> None:
    subs = list(shared_sandbox.admin.export())
    assert len(subs) == 1000
    statuses = {s["status"] for s in subs}
    assert {"Active", "Cancelled", "Suspended"} <= statuses
    assert sum(s["status"] == "Active" for s in subs) > 700
    assert {s["termType"] for s in subs} == {"TERMED", "EVERGREEN"}
    assert len({s["currency"] for s in subs}) >= 3
    assert sum(s["version"] > 1 for s in subs) > 100
    assert any(s["SeatOverride__c"] is None for s in subs)
    assert any(
        isinstance(s["SeatOverride__c"], str) and s["SeatOverride__c"].isdigit() for s in subs
    )
    assert any(s["SupportTier__c"] is None for s in subs)
    assert {len(s["ratePlans"]) for s in subs} == {1, 2, 3, 4}
    charges = [len(p["ratePlanCharges"]) for s in subs for p in s["ratePlans"]]
    assert set(charges) == {1, 2, 3}


def test_amendment_adds_and_removes_rate_plans(zuora_http: httpx.Client) -> None:
    before = zuora_http.get("/v1/subscriptions/A-S00000008").json()
    other = zuora_http.get("/v1/subscriptions/A-S00000009").json()["ratePlans"][0]
    removed = before["ratePlans"][0]
    response = zuora_http.put(
        "/v1/subscriptions/A-S00000008",
        json={
            "add": [
                {
                    "productRatePlanId": other["productRatePlanId"],
                    "contractEffectiveDate": "2026-12-01",
                }
            ],
            "remove": [{"ratePlanId": removed["id"], "contractEffectiveDate": "2026-12-01"}],
        },
    )
    assert response.status_code == 200, response.text
    after = zuora_http.get("/v1/subscriptions/A-S00000008").json()
    assert len(after["ratePlans"]) == len(before["ratePlans"]) + 1
    added = after["ratePlans"][-1]
    assert added["lastChangeType"] == "Add"
    assert added["productRatePlanId"] == other["productRatePlanId"]
    assert added["ratePlanCharges"] and all(
        c["effectiveStartDate"] == "2026-12-01" for c in added["ratePlanCharges"]
    )
    assert after["ratePlans"][0]["lastChangeType"] == "Remove"
    unknown = zuora_http.put(
        "/v1/subscriptions/A-S00000008", json={"add": [{"productRatePlanId": "0" * 32}]}
    )
    assert unknown.status_code == 400


def test_big_responses_are_gzipped_when_the_client_asks(
    sandbox_factory: SandboxFactory,
) -> None:
    sandbox = sandbox_factory(gzip_responses=True)
    with authorized_client(sandbox) as http:
        raw = http.get("/v1/subscriptions/A-S00000001", headers={"Accept-Encoding": "gzip"})
        assert raw.headers["content-encoding"] == "gzip"
        assert raw.json()["subscriptionNumber"] == "A-S00000001"  # httpx decodes it
        plain = http.get("/v1/subscriptions/A-S00000001", headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers
        assert plain.json() == raw.json()
        small = http.get("/v1/subscriptions/A-S99999999", headers={"Accept-Encoding": "gzip"})
        assert "content-encoding" not in small.headers  # 1000 bytes or less: as is
        listed = http.post(
            "/v1/action/query",
            headers={"Accept-Encoding": "gzip"},
            json={"queryString": "select Id, Name from Subscription"},
        )
        assert listed.headers["content-encoding"] == "gzip" and listed.json()["size"] > 20
