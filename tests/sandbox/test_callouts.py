"""Callouts fired by custom events into a real receiver on loopback, like Zuora fires them."""

from __future__ import annotations

import base64
import json
import re
import time
from typing import Any
from urllib.parse import parse_qs

import httpx

from tests.fixtures.sandbox import CalloutReceiver, Reply, SandboxFactory, authorized_client
from zuora.sandbox.server import RunningSandbox

HEX32 = re.compile(r"^[0-9a-f]{32}$")
TRACKED = (
    "changeType == 'UPDATE' && (Subscription.SupportTier__c != "
    "Subscription.SupportTier__c_old || Subscription.SeatOverride__c != "
    "Subscription.SeatOverride__c_old)"
)
PARAMS = {
    "SubscriptionNumber": "{{DataSource.Subscription.Name}}",
    "SubscriptionId": "Subscription.Id",
    "Version": "DataSource.Subscription.Version",
    "SupportTier": "{{DataSource.Subscription.SupportTier__c}}",
    "SupportTierBefore": "{{Subscription.SupportTier__c_old}}",
    "AccountNumber": "{{DataSource.Account.AccountNumber}}",
    "Source": "zuora",
    "Summary": "tier {{Subscription.SupportTier__c}} on {{Subscription.Name}}",
}


def setup_callout(
    http: httpx.Client,
    url: str,
    *,
    condition: str = TRACKED,
    auth: dict[str, Any] | None = None,
    **callout: Any,
) -> None:
    trigger = http.post(
        "/events/event-triggers",
        json={
            "active": True,
            "baseObject": "Subscription",
            "condition": condition,
            "eventType": {"name": "TrackedFieldsChanged", "displayName": "Tracked fields changed"},
        },
    )
    assert trigger.status_code == 200, trigger.text
    body = {
        "name": "sync",
        "eventTypeName": "TrackedFieldsChanged",
        "calloutActive": True,
        "callout": {
            "name": "sync",
            "eventTypeName": "TrackedFieldsChanged",
            "calloutBaseurl": url,
            "httpMethod": "POST",
            "requiredAuth": auth is not None,
            "calloutAuth": auth,
            "calloutParams": PARAMS,
            **callout,
        },
    }
    created = http.post("/notifications/notification-definitions", json=body)
    assert created.status_code == 200, created.text


def edit(http: httpx.Client, number: str, **fields: Any) -> None:
    version = http.get(f"/v1/subscriptions/{number}").json()["version"]
    response = http.put(
        f"/v1/subscriptions/{number}/versions/{version}/customFields", json={"customFields": fields}
    )
    assert response.status_code == 200, response.text


def settle(sb: RunningSandbox, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Wait until `count` notifications are finished (delivered or failed)."""
    deadline = time.monotonic() + timeout
    while True:
        notes = sb.admin.callouts()
        if len(notes) >= count and all(n["state"] != "pending" for n in notes):
            return notes
        assert time.monotonic() < deadline, notes
        time.sleep(0.05)


def test_custom_field_edit_fires_a_callout_with_the_basic_auth_dance(
    sandbox: RunningSandbox, zuora_http: httpx.Client, callout_receiver: CalloutReceiver
) -> None:
    callout_receiver.username, callout_receiver.password = "zuora", "s3cret"
    setup_callout(
        zuora_http,
        callout_receiver.url,
        auth={"username": "zuora", "password": "s3cret", "preemptive": False},
    )
    before = zuora_http.get("/v1/subscriptions/A-S00000001").json()
    new_tier = "Gold" if before["SupportTier__c"] != "Gold" else "Silver"
    edit(zuora_http, "A-S00000001", SupportTier__c=new_tier)
    first, second = callout_receiver.wait_for(2)
    assert "authorization" not in first.headers  # not preemptive
    expected = "Basic " + base64.b64encode(b"zuora:s3cret").decode()
    assert second.headers["authorization"] == expected
    assert first.headers["zuora-notification-id"] == second.headers["zuora-notification-id"]
    assert HEX32.match(first.headers["zuora-request-id"])
    assert first.headers["x-amzn-trace-id"].startswith("Root=1-")
    assert second.headers["content-type"] == "application/json"
    assert second.method == "POST" and second.path == "/callouts"
    assert second.json() == {
        "SubscriptionNumber": "A-S00000001",
        "SubscriptionId": before["id"],
        "Version": str(before["version"]),
        "SupportTier": new_tier,
        "SupportTierBefore": before["SupportTier__c"] or "",
        "AccountNumber": before["accountNumber"],
        "Source": "zuora",
        "Summary": f"tier {new_tier} on A-S00000001",
    }
    (note,) = settle(sandbox, 1)
    assert note["state"] == "delivered" and len(note["attempts"]) == 1
    assert note["attempts"][0]["authSent"] is True
    history = zuora_http.get("/v1/notification-history/callout").json()
    assert history["success"] is True
    assert history["calloutHistories"][0]["responseCode"] == "200"


def test_preemptive_auth_sends_credentials_at_once(
    sandbox: RunningSandbox, zuora_http: httpx.Client, callout_receiver: CalloutReceiver
) -> None:
    callout_receiver.username, callout_receiver.password = "zuora", "pw"
    setup_callout(
        zuora_http,
        callout_receiver.url,
        auth={"username": "zuora", "password": "pw", "preemptive": True},
    )
    edit(zuora_http, "A-S00000002", SeatOverride__c="999")
    (only,) = callout_receiver.wait_for(1)
    assert only.headers["authorization"].startswith("Basic ")
    settle(sandbox, 1)
    assert len(callout_receiver.requests) == 1


def test_retries_on_503_keep_the_notification_id_and_change_the_request_id(
    sandbox: RunningSandbox, zuora_http: httpx.Client, callout_receiver: CalloutReceiver
) -> None:
    callout_receiver.script = [Reply(503), Reply(429), Reply(200)]
    setup_callout(zuora_http, callout_receiver.url)
    edit(zuora_http, "A-S00000003", SeatOverride__c="12345")
    got = callout_receiver.wait_for(3)
    assert len({r.headers["zuora-notification-id"] for r in got}) == 1
    assert len({r.headers["zuora-request-id"] for r in got}) == 3
    (note,) = settle(sandbox, 1)
    assert note["state"] == "delivered"
    assert [a["status"] for a in note["attempts"]] == [503, 429, 200]


def test_400_is_not_retried_and_attempts_are_bounded(
    sandbox_factory: SandboxFactory, callout_receiver: CalloutReceiver
) -> None:
    sb = sandbox_factory(callout_max_attempts=2)
    with authorized_client(sb) as http:
        callout_receiver.script = [Reply(400)]
        callout_receiver.default = Reply(500)
        setup_callout(http, callout_receiver.url)
        edit(http, "A-S00000001", SeatOverride__c="1")
        (refused,) = settle(sb, 1)
        assert refused["state"] == "failed" and len(refused["attempts"]) == 1
        edit(http, "A-S00000001", SeatOverride__c="2")
        notes = settle(sb, 2)
        assert notes[1]["state"] == "failed"
        assert [a["status"] for a in notes[1]["attempts"]] == [500, 500]
        counters = sb.admin.counters()["callouts"]
        assert counters["failed"] == 2 and counters["started"] == 2


def test_call_out_retry_off_and_parse_response(
    sandbox_factory: SandboxFactory, callout_receiver: CalloutReceiver
) -> None:
    sb = sandbox_factory(callout_parse_response=True)
    with authorized_client(sb) as http:
        callout_receiver.script = [Reply(200, b'{"success": false}')]
        setup_callout(http, callout_receiver.url)
        edit(http, "A-S00000004", SeatOverride__c="77")
        (note,) = settle(sb, 1)
        assert [a["success"] for a in note["attempts"]] == [False, True]
    sb2 = sandbox_factory()
    with authorized_client(sb2) as http:
        callout_receiver.script = [Reply(503)]
        setup_callout(http, callout_receiver.url, calloutRetry=False)
        edit(http, "A-S00000004", SeatOverride__c="78")
        (note,) = settle(sb2, 1)
        assert note["state"] == "failed" and len(note["attempts"]) == 1


def test_admin_changes_fire_no_callout(
    sandbox: RunningSandbox, zuora_http: httpx.Client, callout_receiver: CalloutReceiver
) -> None:
    setup_callout(
        zuora_http,
        callout_receiver.url,
        condition="changeType == 'UPDATE' || changeType == 'INSERT'",
    )
    sandbox.admin.edit_custom_fields("A-S00000005", {"SupportTier__c": "Lost"})
    sandbox.admin.amend("A-S00000005")
    time.sleep(0.5)
    assert callout_receiver.requests == [] and sandbox.admin.callouts() == []
    edit(zuora_http, "A-S00000005", SupportTier__c="Seen")
    assert len(callout_receiver.wait_for(1)) == 1


def test_a_false_condition_fires_nothing(
    sandbox: RunningSandbox, zuora_http: httpx.Client, callout_receiver: CalloutReceiver
) -> None:
    setup_callout(zuora_http, callout_receiver.url)
    edit(zuora_http, "A-S00000006", ContractOwner__c="someone@example.com")  # not tracked
    time.sleep(0.4)
    assert callout_receiver.requests == []


def test_amendment_is_an_insert_and_an_update(
    sandbox_factory: SandboxFactory, callout_receiver: CalloutReceiver
) -> None:
    condition = (
        "changeType == 'INSERT' || (changeType == 'UPDATE' && Subscription.Status == 'Expired')"
    )
    sb = sandbox_factory()
    with authorized_client(sb) as http:
        setup_callout(http, callout_receiver.url, condition=condition)
        before = http.get("/v1/subscriptions/A-S00000007").json()
        new_id = http.put("/v1/subscriptions/A-S00000007", json={}).json()["subscriptionId"]
        got = callout_receiver.wait_for(2)
        assert {r.json()["SubscriptionId"] for r in got} == {before["id"], new_id}
    sb2 = sandbox_factory(amend_events="insert")
    with authorized_client(sb2) as http:
        setup_callout(http, callout_receiver.url, condition=condition)
        new_id = http.put("/v1/subscriptions/A-S00000007", json={}).json()["subscriptionId"]
        settle(sb2, 1)
        time.sleep(0.3)
        assert [r.json()["SubscriptionId"] for r in callout_receiver.requests[2:]] == [new_id]


def test_dropped_callouts_fault(
    sandbox: RunningSandbox, zuora_http: httpx.Client, callout_receiver: CalloutReceiver
) -> None:
    setup_callout(zuora_http, callout_receiver.url)
    sandbox.admin.set_faults(callout_drop_rate=1.0)
    edit(zuora_http, "A-S00000008", SeatOverride__c="31")
    time.sleep(0.4)
    assert callout_receiver.requests == []
    assert sandbox.admin.counters()["callouts"]["dropped"] == 1
    sandbox.admin.clear_faults()
    edit(zuora_http, "A-S00000008", SeatOverride__c="32")
    assert callout_receiver.wait_for(1)[0].json()["SubscriptionNumber"] == "A-S00000008"


def test_form_encoded_and_get_callouts(
    sandbox: RunningSandbox, zuora_http: httpx.Client, callout_receiver: CalloutReceiver
) -> None:
    setup_callout(zuora_http, callout_receiver.url, contentType="APPLICATION_FORM_URLENCODED")
    edit(zuora_http, "A-S00000009", SeatOverride__c="9")
    (got,) = callout_receiver.wait_for(1)
    assert got.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(got.body.decode())["SubscriptionNumber"] == ["A-S00000009"]


def test_firing_never_blocks_the_request_and_deliveries_are_concurrent(
    sandbox: RunningSandbox, zuora_http: httpx.Client, callout_receiver: CalloutReceiver
) -> None:
    callout_receiver.default = Reply(200, delay=1.5)
    setup_callout(zuora_http, callout_receiver.url)
    started = time.monotonic()
    for i, number in enumerate(("A-S00000010", "A-S00000011", "A-S00000012")):
        edit(zuora_http, number, SeatOverride__c=str(5000 + i))
    assert time.monotonic() - started < 1.5
    callout_receiver.wait_for(3, timeout=2.9)  # in parallel, not one after the other
    bodies = [json.loads(r.body) for r in callout_receiver.requests]
    assert {b["SubscriptionNumber"] for b in bodies} == {
        "A-S00000010",
        "A-S00000011",
        "A-S00000012",
    }
