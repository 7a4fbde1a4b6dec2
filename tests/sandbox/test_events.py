"""Event triggers and notification definitions: CRUD, shapes and validation."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from zuora.sandbox import jexl

HEX32 = re.compile(r"^[0-9a-f]{32}$")
TRIGGER = {
    "active": True,
    "baseObject": "Subscription",
    "condition": "changeType == 'UPDATE' && Subscription.SupportTier__c != "
    "Subscription.SupportTier__c_old",
    "description": "tracked fields changed",
    "eventType": {
        "name": "SubscriptionTrackedFieldsChanged",
        "displayName": "Subscription tracked fields changed",
    },
}


def definition(url: str = "https://example.com/callouts", **callout: Any) -> dict[str, Any]:
    return {
        "name": "zuora-sync callout",
        "eventTypeName": "SubscriptionTrackedFieldsChanged",
        "calloutActive": True,
        "callout": {
            "name": "zuora-sync",
            "eventTypeName": "SubscriptionTrackedFieldsChanged",
            "calloutBaseurl": url,
            "httpMethod": "POST",
            "requiredAuth": True,
            "calloutAuth": {"username": "zuora", "password": "s3cret", "preemptive": False},
            "calloutParams": {"SubscriptionNumber": "{{DataSource.Subscription.Name}}"},
            **callout,
        },
    }


def test_trigger_crud(zuora_http: httpx.Client) -> None:
    created = zuora_http.post("/events/event-triggers", json=TRIGGER)
    assert created.status_code == 200
    trigger = created.json()
    assert HEX32.match(trigger["id"])
    assert trigger["eventType"]["namespace"] == "user.notification"
    assert trigger["condition"] == TRIGGER["condition"] and trigger["active"] is True
    assert zuora_http.get(f"/events/event-triggers/{trigger['id']}").json() == trigger
    updated = zuora_http.put(
        f"/events/event-triggers/{trigger['id']}",
        json={"active": False, "eventType": {"displayName": "Renamed"}},
    )
    assert updated.status_code == 200
    assert updated.json()["active"] is False
    assert updated.json()["eventType"]["displayName"] == "Renamed"
    listed = zuora_http.get("/events/event-triggers", params={"baseObject": "Subscription"})
    assert listed.json() == {"data": [updated.json()]}
    assert zuora_http.delete(f"/events/event-triggers/{trigger['id']}").status_code == 204
    missing = zuora_http.get(f"/events/event-triggers/{trigger['id']}")
    assert missing.status_code == 404
    assert missing.json() == {"code": "404", "message": "HTTP 404 Not Found"}


def test_trigger_list_pages_with_next(zuora_http: httpx.Client) -> None:
    for i in range(3):
        body = dict(TRIGGER, eventType={"name": f"Event{i}", "displayName": f"Event {i}"})
        assert zuora_http.post("/events/event-triggers", json=body).status_code == 200
    page = zuora_http.get("/events/event-triggers", params={"start": 0, "limit": 2}).json()
    assert len(page["data"]) == 2 and "start=2" in page["next"]
    assert page["next"].startswith("http")
    last = httpx.get(page["next"], headers=zuora_http.headers).json()
    assert len(last["data"]) == 1 and "next" not in last


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"condition": "changeType == 'UPDATE' &&"}, "condition"),
        ({"condition": "Subscription.Name == ('x'"}, "condition"),
        ({"condition": ""}, "condition"),
        ({"baseObject": "subscription"}, "baseObject"),
        ({"active": "yes"}, "active"),
        ({"eventType": {"name": "has space", "displayName": "x"}}, "eventType.name"),
        ({"eventType": {"name": "NoDisplay"}}, "displayName"),
        ({"eventType": None}, "eventType"),
    ],
)
def test_bad_triggers_are_refused(
    zuora_http: httpx.Client, change: dict[str, Any], needle: str
) -> None:
    response = zuora_http.post("/events/event-triggers", json=TRIGGER | change)
    assert response.status_code == 400
    assert response.json()["code"] == 400 and needle in response.json()["message"]
    assert zuora_http.get("/events/event-triggers").json()["data"] == []


def test_duplicate_event_names_are_refused(zuora_http: httpx.Client) -> None:
    assert zuora_http.post("/events/event-triggers", json=TRIGGER).status_code == 200
    assert zuora_http.post("/events/event-triggers", json=TRIGGER).status_code == 400


def test_notification_definition_crud(zuora_http: httpx.Client) -> None:
    created = zuora_http.post("/notifications/notification-definitions", json=definition())
    assert created.status_code == 200
    body = created.json()
    assert HEX32.match(body["id"]) and HEX32.match(body["callout"]["id"])
    assert body["eventTypeNamespace"] == "user.notification"
    assert body["callout"]["calloutAuth"]["password"] != "s3cret"  # never shown back
    assert body["callout"]["calloutRetry"] is True and body["callout"]["active"] is True
    assert body["createdOn"] and body["updatedOn"]
    fetched = zuora_http.get(f"/notifications/notification-definitions/{body['id']}").json()
    assert fetched == body
    changed = zuora_http.put(
        f"/notifications/notification-definitions/{body['id']}",
        json={"callout": {"calloutBaseurl": "https://example.org/new"}},
    )
    assert changed.status_code == 200
    assert changed.json()["callout"]["calloutBaseurl"] == "https://example.org/new"
    assert changed.json()["callout"]["id"] == body["callout"]["id"]
    listed = zuora_http.get("/notifications/notification-definitions").json()
    assert listed["next"] is None and [d["id"] for d in listed["data"]] == [body["id"]]
    filtered = zuora_http.get(
        "/notifications/notification-definitions", params={"eventTypeName": "Other"}
    ).json()
    assert filtered["data"] == []
    deleted = zuora_http.delete(f"/notifications/notification-definitions/{body['id']}")
    assert deleted.status_code == 204
    assert (
        zuora_http.get(f"/notifications/notification-definitions/{body['id']}").status_code == 404
    )


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (definition("ftp://example.com/callouts"), "https"),
        (definition("http://example.com/callouts"), "https"),
        (definition(httpMethod="PATCH"), "httpMethod"),
        (definition(requiredAuth=True, calloutAuth=None), "calloutAuth"),
        (definition(calloutParams={"a": 1}), "calloutParams"),
        (definition(contentType="TEXT_XML"), "contentType"),
        ({"eventTypeName": "X"}, "name"),
        ({"name": "n", "eventTypeName": "X", "calloutActive": True}, "callout"),
    ],
)
def test_bad_definitions_are_refused(
    zuora_http: httpx.Client, body: dict[str, Any], needle: str
) -> None:
    response = zuora_http.post("/notifications/notification-definitions", json=body)
    assert response.status_code == 400, response.text
    assert needle in response.json()["message"]


def test_jexl_evaluator() -> None:
    ctx = jexl.context_for(
        "Subscription",
        "UPDATE",
        {
            "Status": "Active",
            "SeatOverride__c": "25",
            "Version": 3,
            "Name": "A-S00000001",
            "Notes": None,
        },
        {"Status": "Suspended", "SeatOverride__c": "10", "Version": 3},
    )
    cases = {
        "changeType == 'UPDATE'": True,
        "changeType == 'INSERT' || changeType == 'UPDATE'": True,
        "!(changeType == 'DELETE')": True,
        "Subscription.Status != Subscription.Status_old": True,
        "Subscription.SeatOverride__c > 20 && Subscription.SeatOverride__c_old < 20": True,
        "Subscription.Version >= 3.0 and Subscription.Version <= 3": True,
        "Subscription.Notes == null": True,
        "Subscription.Unknown__c == null": True,
        "Subscription.Name =^ 'A-S'": True,
        "Subscription.Status =~ ['Active', 'Cancelled']": True,
        "Subscription.Status == 'active'": False,
        "changeType == 'UPDATE' && (Subscription.Status == 'Cancelled' || false)": False,
        "Subscription.Version > 'abc'": False,
    }
    for text, expected in cases.items():
        assert jexl.parse(text).evaluate(ctx) is expected, text
    for bad in ("a ==", "(a", "a == 'unterminated", "a === b", "a ? b : c", ")"):
        with pytest.raises(jexl.JexlError):
            jexl.parse(bad)
