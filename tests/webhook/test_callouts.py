"""The callout endpoint over real HTTP against real PostgreSQL: forms, auth, dedup, refusals."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import update

from warehouse import inbox
from warehouse.models import inbox as inbox_table

from .conftest import AUTH, BASIC, CALLOUT, USER, Live, LogCapture

CALLOUT_JSON = {
    "SubscriptionNumber": "A-S00000101",
    "SubscriptionId": "8ad0823f8f9c1c2a018f9e1c2d3e4f50",
    "AccountId": "2c92a0f96c1ee5a5016c1f2bb0b7",
    "AccountNumber": "A00000101",
    "Version": "4",
    "EventType": "SubscriptionCustomFieldsChanged",
    "EventTimestamp": "2026-11-25T12:00:00Z",
    "SupportTier__c": "Gold",
    "SeatOverride__c": 25,
    "SomethingElse": {"nested": [1, 2]},
}


def assert_rejected(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert [r["code"] for r in body["reasons"]] == [code]
    assert body["reasons"][0]["message"]


# --- the three body forms ----------------------------------------------------------------------


def test_json_body__stored_whole_and_answered_after_commit(live: Live) -> None:
    before = datetime.now(UTC)
    response = live.post(
        json=CALLOUT_JSON, notification="n-json-1", headers={"Zuora-Request-Id": "req-1"}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and body["status"] == "stored"
    # The answer came after the commit: the row is there for any other connection.
    (row,) = live.rows()
    assert body["id"] == row.id
    assert (row.source, row.status, row.dedup_key) == ("callout", "pending", "callout:n-json-1")
    assert (row.subscription_number, row.subscription_id) == (
        "A-S00000101",
        "8ad0823f8f9c1c2a018f9e1c2d3e4f50",
    )
    payload = row.payload
    assert payload["params"] == CALLOUT_JSON  # every parameter, names and values as sent
    assert payload["fields"]["Version"] == 4
    assert payload["fields"]["SupportTier__c"] == "Gold"
    assert payload["fields"]["SeatOverride__c"] == 25
    assert "SomethingElse" not in payload["fields"]
    assert (payload["format"], payload["notification_id"], payload["request_id"]) == (
        "json",
        "n-json-1",
        "req-1",
    )
    received = datetime.fromisoformat(payload["received_at"])
    assert before - timedelta(seconds=1) <= received <= datetime.now(UTC)


def test_form_body__legacy_parameters_with_names_in_any_case(live: Live) -> None:
    response = live.post(
        data={"subscriptionnumber": "A-S00000102", "VERSION": "2", "supporttier__c": ""},
        notification="n-form-1",
    )
    assert response.status_code == 200, response.text
    (row,) = live.rows()
    assert row.subscription_number == "A-S00000102"
    assert row.payload["params"] == {
        "subscriptionnumber": "A-S00000102",
        "VERSION": "2",
        "supporttier__c": "",
    }
    assert row.payload["fields"] == {
        "SubscriptionNumber": "A-S00000102",
        "Version": 2,
        "SupportTier__c": None,  # a cleared field is news too
    }
    assert row.payload["format"] == "form"


def test_query_parameters__a_callout_without_a_body(live: Live) -> None:
    response = live.post(
        params={"SubscriptionId": "8ad08aef8f9c1c2a", "EventType": "x"}, notification="n-q"
    )
    assert response.status_code == 200, response.text
    (row,) = live.rows()
    assert (row.subscription_number, row.subscription_id) == (None, "8ad08aef8f9c1c2a")
    assert row.payload["format"] == "query"


def test_query_and_body__merge_and_must_agree(live: Live) -> None:
    merged = live.post(
        params={"AccountId": "acc-1"}, json={"SubscriptionNumber": "A-S1"}, notification="m1"
    )
    assert merged.status_code == 200
    assert live.rows()[0].payload["params"] == {"AccountId": "acc-1", "SubscriptionNumber": "A-S1"}
    clash = live.post(
        params={"subscriptionNumber": "A-S2"},
        json={"SubscriptionNumber": "A-S3"},
        notification="m2",
    )
    assert_rejected(clash, 422, "conflicting_parameter")
    assert len(live.rows()) == 1


# --- authentication ----------------------------------------------------------------------------


def test_auth__zuoras_dance_challenge_first_then_credentials(live: Live) -> None:
    first = live.post(auth=None, json={"SubscriptionNumber": "A-S1"}, notification="n-auth")
    assert_rejected(first, 401, "unauthorized")
    challenge = first.headers["WWW-Authenticate"]
    assert challenge.startswith("Basic ") and 'realm="' in challenge
    assert live.rows() == []
    second = live.post(json={"SubscriptionNumber": "A-S1"}, notification="n-auth")
    assert second.status_code == 200
    assert len(live.rows()) == 1


def test_auth__scheme_is_case_insensitive(live: Live) -> None:
    header = "basic " + BASIC.split(" ", 1)[1]
    response = live.post(auth=None, headers={"Authorization": header}, data={"SubscriptionId": "x"})
    assert response.status_code == 200


# --- dedup -------------------------------------------------------------------------------------


def test_duplicate_notification__a_retry_is_a_success_that_stores_nothing(live: Live) -> None:
    first = live.post(json={"SubscriptionNumber": "A-S1"}, notification="n-dup")
    retry = live.post(json={"SubscriptionNumber": "A-S1"}, notification="n-dup")
    assert first.json()["status"] == "stored"
    assert retry.status_code == 200
    assert retry.json() == {"success": True, "status": "duplicate", "id": None}
    assert len(live.rows()) == 1


def test_duplicate_notification__from_many_clients_at_once_exactly_one_row(live: Live) -> None:
    ids = [f"n-race-{i}" for i in range(5)]
    statuses: list[int] = []
    stored: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(20)

    def client(worker: int) -> None:
        with httpx.Client(base_url=live.url, timeout=30) as http:
            barrier.wait()
            for notification in ids:
                response = http.post(
                    CALLOUT,
                    auth=AUTH,
                    json={"SubscriptionNumber": f"A-S{worker}"},
                    headers={"Zuora-Notification-Id": notification},
                )
                with lock:
                    statuses.append(response.status_code)
                    if response.json().get("status") == "stored":
                        stored.append(notification)

    threads = [threading.Thread(target=client, args=(w,)) for w in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 100
    assert sorted(stored) == ids  # each notification stored by exactly one request
    assert sorted(r.dedup_key for r in live.rows()) == [f"callout:{n}" for n in ids]


def test_content_key__identical_resend_dedups_only_while_the_first_is_pending(
    live: Live,
) -> None:
    # No Zuora-Notification-Id: the content is the key. A field toggled A -> B -> A yields
    # two identical "A" callouts, and the second must not be lost once the first was taken.
    body = {"SubscriptionNumber": "A-S7", "SupportTier__c": "A"}
    first = live.post(json=body)
    resend = live.post(json=body)
    assert (first.json()["status"], resend.json()["status"]) == ("stored", "duplicate")
    assert len(live.rows()) == 1

    with live.engine.begin() as conn:  # a drain takes the row
        (claimed,) = inbox.claim(conn, worker="drain-1", limit=1, lease=timedelta(minutes=1))
    again = live.post(json=body)
    assert again.json()["status"] == "stored"
    rows = live.rows()
    assert len(rows) == 2
    assert rows[0].dedup_key == f"{rows[1].dedup_key}#{claimed.id}"  # retired, kept
    assert rows[1].status == "pending"

    with live.engine.begin() as conn:  # processed and done: still a new row next time
        conn.execute(update(inbox_table).values(status="done"))
    assert live.post(json=body).json()["status"] == "stored"
    assert live.post(json=body).json()["status"] == "duplicate"
    assert len(live.rows()) == 3


def test_content_key__different_content_is_a_different_callout(live: Live) -> None:
    assert live.post(json={"SubscriptionNumber": "A-S8", "X": 1}).json()["status"] == "stored"
    assert live.post(json={"SubscriptionNumber": "A-S8", "X": 2}).json()["status"] == "stored"
    # Names are matched case-insensitively, so these are the same content.
    assert live.post(json={"subscriptionnumber": "A-S8", "x": 2}).json()["status"] == "duplicate"


def test_notification_id__very_long_ids_are_kept_as_a_digest(live: Live) -> None:
    long_id = "n" * 600
    assert live.post(json={"SubscriptionNumber": "A"}, notification=long_id).status_code == 200
    assert live.post(json={"SubscriptionNumber": "A"}, notification=long_id).json()["status"] == (
        "duplicate"
    )
    (row,) = live.rows()
    assert row.dedup_key.startswith("callout:sha256:") and len(row.dedup_key) < 100


def test_body_just_under_the_limit_is_accepted(live: Live) -> None:
    filler = "x" * (64 * 1024 - 200)
    response = live.post(
        json={"SubscriptionNumber": "A-S1", "Filler": filler}, notification="n-big"
    )
    assert response.status_code == 200
    assert len(json.dumps(live.rows()[0].payload["params"])) > 60_000


def test_json_content_types__charset_utf8_and_vendor_json_are_fine(live: Live) -> None:
    for i, content_type in enumerate(
        ["application/json; charset=UTF-8", "application/vnd.zuora+json", "Application/JSON"]
    ):
        response = live.post(
            content=b'{"SubscriptionNumber": "A-S1"}',
            headers={"Content-Type": content_type},
            notification=f"n-ct-{i}",
        )
        assert response.status_code == 200, (content_type, response.text)


# --- health ------------------------------------------------------------------------------------


def test_healthz_and_readyz(live: Live) -> None:
    assert live.client.get("/healthz").json() == {"status": "ok"}
    ready = live.client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}


def test_unknown_paths__404_in_the_same_shape(live: Live) -> None:
    response = live.client.get("/nope")
    assert_rejected(response, 404, "not_found")


def test_sqlite__the_happy_path(sqlite_url: str, start: Callable[..., Live]) -> None:
    live = start(sqlite_url)
    first = live.post(json={"SubscriptionNumber": "A-S1", "Version": 2}, notification="s-1")
    assert first.status_code == 200 and first.json()["status"] == "stored"
    assert live.post(data={"SubscriptionNumber": "A-S1"}, notification="s-1").json() == {
        "success": True,
        "status": "duplicate",
        "id": None,
    }
    assert live.post(json={"SubscriptionNumber": "A-S2"}).json()["status"] == "stored"
    assert live.post(json={"SubscriptionNumber": "A-S2"}).json()["status"] == "duplicate"
    rows = live.rows()
    assert [r.subscription_number for r in rows] == ["A-S1", "A-S2"]
    assert rows[0].payload["fields"]["Version"] == 2
    assert live.client.get("/readyz").status_code == 200
    assert USER not in str(rows[0].payload)


def test_client_gone_mid_body__nothing_stored_no_error_logged(live: Live, logs: LogCapture) -> None:
    head = (
        f"POST {CALLOUT} HTTP/1.1\r\nHost: x\r\nAuthorization: {BASIC}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock:
        sock.sendall(head + b'{"Subscrip')
    deadline = time.monotonic() + 5
    while not logs.events("callout"):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert logs.events("callout")[-1]["outcome"] == "disconnected"
    assert not [r for r in logs.records if r.levelno >= logging.ERROR]
    assert live.rows() == []
