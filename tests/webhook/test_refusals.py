"""Every way a callout is refused, over real HTTP: the status, the reason, and no row.

These tests share one webhook and one fresh database for the module: nothing here may ever
store a row, and each test checks that the inbox is still empty afterwards.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import drop_pg_database, new_pg_database

from .conftest import AUTH, BASIC, CALLOUT, PASSWORD, Live, serve, webhook_settings


@pytest.fixture(scope="module")
def refusing(pg_template: str) -> Iterator[Live]:
    url = new_pg_database(pg_template)
    live = serve(webhook_settings(url, LOG_LEVEL="WARNING"))  # quiet: a line per request
    yield live
    live.stop()
    live.engine.dispose()
    drop_pg_database(url)


@pytest.fixture
def live(refusing: Live) -> Iterator[Live]:
    yield refusing
    assert refusing.rows() == [], "a refused callout left a row behind"


def assert_rejected(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert [r["code"] for r in body["reasons"]] == [code]
    assert body["reasons"][0]["message"]


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic " + "d3Jvbmc6d3Jvbmc=",  # wrong:wrong
        "Basic " + "enVvcmEtY2FsbG91dDp3cm9uZw==",  # right user, wrong password
        "Basic " + "bm9jb2xvbg==",  # no colon
        "Basic !!!not-base64!!!",
        "Bearer " + PASSWORD,
        "Basic",
        "",
    ],
)
def test_auth__wrong_credentials_store_nothing(live: Live, authorization: str) -> None:
    response = live.post(
        auth=None,
        headers={"Authorization": authorization},
        json={"SubscriptionNumber": "A-S1"},
        notification="n-wrong",
    )
    assert_rejected(response, 401, "unauthorized")
    assert "WWW-Authenticate" in response.headers
    assert live.rows() == []


# --- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"AccountId": "acc-1"},
        {"SubscriptionNumber": "", "SubscriptionId": None},
        {"SubscriptionNumber": "   "},
    ],
)
def test_missing_subscription_key__422(live: Live, body: dict[str, object]) -> None:
    assert_rejected(live.post(json=body, notification="n-x"), 422, "missing_subscription_key")
    assert live.rows() == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"SubscriptionNumber": 12345}, "invalid_parameter"),
        ({"SubscriptionNumber": ["A-S1"]}, "invalid_parameter"),
        ({"SubscriptionNumber": "A" * 65}, "invalid_parameter"),
        ({"SubscriptionNumber": "\n"}, "missing_subscription_key"),
        ({"SubscriptionNumber": "A-\tS1"}, "invalid_parameter"),
        ({"SubscriptionId": True}, "invalid_parameter"),
        ({"SubscriptionNumber": "A-S1", "Version": "three"}, "invalid_parameter"),
        ({"SubscriptionNumber": "A-S1", "Version": True}, "invalid_parameter"),
        ({"SubscriptionNumber": "A-S1", "Version": -1}, "invalid_parameter"),
        ({"SubscriptionNumber": "A-S1", "Version": 1.5}, "invalid_parameter"),
        ({"SubscriptionNumber": "A-S1", "AccountId": 7}, "invalid_parameter"),
        ({"SubscriptionNumber": "A-S1", "SupportTier__c": {"a": 1}}, "invalid_parameter"),
        ({"SubscriptionNumber": "A-S1", "SupportTier__c": "x" * 1001}, "invalid_parameter"),
        ({"SubscriptionNumber": "A-S1", "Other": "nul \u0000 inside"}, "invalid_parameter"),
        ({"SubscriptionNumber": "A-S1", "subscriptionNUMBER": "A-S2"}, "conflicting_parameter"),
        ({"SubscriptionNumber": "A-S1", "": 1}, "invalid_parameter"),
        ({"SubscriptionNumber": "A-S1", "n" * 129: 1}, "invalid_parameter"),
        ({"SubscriptionNumber": "A-S1", **{f"p{i}": i for i in range(200)}}, "too_many_parameters"),
    ],
)
def test_wrong_types_and_lengths__422_and_nothing_stored(
    live: Live, body: dict[str, object], code: str
) -> None:
    assert_rejected(live.post(json=body, notification="n-bad"), 422, code)
    assert live.rows() == []


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        (b'{"SubscriptionNumber": "A-S1"', "application/json", 400, "malformed_body"),
        (b"\xff\xfe{}", "application/json", 400, "malformed_body"),
        (b'["A-S1"]', "application/json", 422, "not_an_object"),
        (b'"A-S1"', "application/json", 422, "not_an_object"),
        (b"null", "application/json", 422, "not_an_object"),
        (b'{"SubscriptionNumber": 1e999999}', "application/json", 400, "malformed_body"),
        (b'{"SubscriptionNumber": "A-S1", "a": [[[[' + b"[" * 2000 + b"]" * 2004 + b"}",
         "application/json", 400, "malformed_body"),
        (b"SubscriptionNumber=%FF%FE", "application/x-www-form-urlencoded", 400, "malformed_body"),
        (b"SubscriptionNumber=A%00B", "application/x-www-form-urlencoded", 422,
         "invalid_parameter"),
        (b"SubscriptionNumber=A&SubscriptionNumber=B", "application/x-www-form-urlencoded", 422,
         "conflicting_parameter"),
        (b"\xff" * 20, "application/x-www-form-urlencoded", 400, "malformed_body"),
    ],
)  # fmt: skip
def test_malformed_bodies__refused_and_nothing_stored(
    live: Live, content: bytes, content_type: str, status: int, code: str
) -> None:
    response = live.post(
        content=content, headers={"Content-Type": content_type}, notification="n-malformed"
    )
    assert_rejected(response, status, code)
    assert live.rows() == []


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/xml",
        "text/xml",
        "multipart/form-data; boundary=x",
        "application/json; charset=latin-1",
        None,
    ],
)
def test_wrong_content_types__415(live: Live, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = live.post(
        content=b'{"SubscriptionNumber": "A-S1"}', headers=headers, notification="n-415"
    )
    assert_rejected(response, 415, "unsupported_media_type")
    assert live.rows() == []


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods__405(live: Live, method: str) -> None:
    response = live.client.request(method, CALLOUT, auth=AUTH)
    assert_rejected(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == "POST"


# --- oversized bodies, without reading them ----------------------------------------------------


def raw_exchange(live: Live, head: bytes, chunks: list[bytes], *, pause: float = 0.0) -> bytes:
    """Send a request by hand (possibly never finishing it) and return what comes back."""
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(head)
        for chunk in chunks:
            sock.sendall(chunk)
        time.sleep(pause)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        return answer


def test_huge_body__declared_length_refused_before_reading_it(live: Live) -> None:
    # Ten megabytes announced, one kilobyte sent, and the sender waits: the 413 must come
    # without the server waiting for (or reading) the rest.
    head = (
        f"POST {CALLOUT} HTTP/1.1\r\nHost: x\r\nAuthorization: {BASIC}\r\n"
        "Content-Type: application/json\r\nContent-Length: 10485760\r\n\r\n"
    ).encode()
    started = time.monotonic()
    answer = raw_exchange(live, head, [b"{" + b" " * 1023])
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in answer.lower()
    assert b'"body_too_large"' in answer
    assert time.monotonic() - started < 5
    assert live.rows() == []


def test_huge_body__streamed_body_cut_off_at_the_limit(live: Live) -> None:
    # No Content-Length: chunked, 80 KiB sent, the final chunk never comes. The running
    # count must stop it.
    head = (
        f"POST {CALLOUT} HTTP/1.1\r\nHost: x\r\nAuthorization: {BASIC}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b"2000\r\n" + b" " * 0x2000 + b"\r\n"
    answer = raw_exchange(live, head, [chunk] * 10)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert live.rows() == []


def test_unauthenticated_huge_body__401_first(live: Live) -> None:
    head = (
        f"POST {CALLOUT} HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/json\r\nContent-Length: 10485760\r\n\r\n"
    ).encode()
    answer = raw_exchange(live, head, [b"{"])
    assert answer.startswith(b"HTTP/1.1 401 ")
    assert b"www-authenticate: basic" in answer.lower()
