"""Fuzzing the webhook on the wire: `zuora-sync webhook` as deployed, raw HTTP/1.1 over a
loopback socket, on a real PostgreSQL database.

Where `tests/webhook/test_openapi.py` checks answers against the published document with
well-formed HTTP, this run sends what a client library would not: repeated and oddly cased
headers, every flavour of broken Basic credentials, chunked bodies, Content-Length that
lies short, bodies around the 64 KiB limit, JSON at the edges of what parsers take, and
other methods. Asserted for every case: no 5xx, no row unless the answer was a 200 that
says it stored one, no row and no 200 without the right credentials, and a well-formed
authenticated callout always taken.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from tests.conftest import drop_pg_database, new_pg_database
from tests.faults.harness import CALLOUT, FULL, Webhook, sized
from tests.faults.test_webhook_killed import webhook_env
from tests.webhook.conftest import PASSWORD, USER
from warehouse.db import make_engine
from warehouse.models import inbox as inbox_table

GOOD = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
LIMIT = 64 * 1024


@dataclass
class Target:
    hook: Webhook
    engine: Engine

    def rows(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(inbox_table)).scalar_one())


@pytest.fixture(scope="module")
def target(pg_template: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    url = new_pg_database(pg_template)
    log = Path(tmp_path_factory.mktemp("fuzz")) / "webhook.log"
    hook = Webhook(webhook_env(url, LOG_LEVEL="WARNING"), log)  # quiet: a line per request
    hook.start()
    hook.wait_up()
    engine = make_engine(url, pool_size=1)
    yield Target(hook, engine)
    hook.stop()
    engine.dispose()
    drop_pg_database(url)


def exchange(port: int, request: bytes, method: str) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the one answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body


# --- strategies ------------------------------------------------------------------------------

header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=120,
)
b64 = st.binary(max_size=60).map(lambda raw: base64.b64encode(raw).decode())
credentials = st.one_of(
    st.just([GOOD]),
    st.just([GOOD.replace("Basic", "basic")]),
    st.just([GOOD + "  "]),
    st.just(["  " + GOOD]),
    st.just([]),
    st.just(["Basic " + base64.b64encode(f"{USER}:wrong".encode()).decode()]),
    st.just(["Basic " + base64.b64encode(f"{USER}{PASSWORD}".encode()).decode()]),
    st.just(["Basic " + base64.b64encode(f"{USER}:{PASSWORD}:".encode()).decode()]),
    st.just(["Basic " + base64.b64encode(f"{USER.upper()}:{PASSWORD}".encode()).decode()]),
    st.just(["Bearer " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()]),
    st.just([GOOD[:-2]]),
    st.just(["Basic"]),
    st.just(["Basic ###"]),
    st.just(["Basic " + PASSWORD]),
    b64.map(lambda token: ["Basic " + token]),
    header_text.map(lambda value: [value]),
    st.just(["Basic " + base64.b64encode(b"\xff\xfe:\x00").decode(), GOOD]),  # first counts
    st.just([GOOD, "Basic " + base64.b64encode(b"x:y").decode()]),
)
content_types = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "APPLICATION/JSON",
            "application/json;charset=UTF8",
            "application/json; charset=utf-16",
            "application/vnd.zuora+json",
            "application/x-www-form-urlencoded",
            "application/x-www-form-urlencoded; charset=utf-8",
            "text/plain",
            "application/xml",
            "multipart/form-data; boundary=x",
            "",
            ";",
            "application/json; charset",
        ]
    ),
    header_text,
)
scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(["A-S00000001", " A-S00000002 ", "", "\u0000", "\u2028", "é" * 70]),
)
json_value = st.recursive(
    scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=20), inner, max_size=4)
    ),
    max_leaves=12,
)
key_names = st.sampled_from(
    ["SubscriptionNumber", "subscriptionNUMBER", "SubscriptionId", "Version", "EventTimestamp",
     "SupportTier__c", "SeatOverride__c", "AccountId", "x" * 129, ""]
)  # fmt: skip
valid_callout = st.fixed_dictionaries(
    {"SubscriptionNumber": st.text(alphabet="AS-0123456789", min_size=1, max_size=64)},
    optional={
        "Version": st.integers(0, 2**31 - 1),
        "SupportTier__c": st.one_of(st.none(), st.text(max_size=30)),
        "EventTimestamp": st.integers(0, 2**62),
    },
)


@st.composite
def bodies(draw: Any) -> tuple[str, bytes]:
    """(kind, bytes): 'valid' is a well-formed callout under its own content type."""
    choice = draw(st.integers(0, 9))
    if choice <= 2:
        return "valid-json", orjson.dumps(draw(valid_callout))
    if choice == 3:
        doc = draw(valid_callout)
        return "valid-form", urlencode({k: v for k, v in doc.items() if v is not None}).encode()
    if choice == 4:
        doc = draw(st.dictionaries(key_names, json_value, max_size=6))
        # The standard library writes integers of any size, which orjson refuses to.
        return "json", json.dumps(doc).encode("utf-8", "surrogatepass")
    if choice == 5:
        raw = draw(st.sampled_from([
            b'{"SubscriptionNumber": 1e400}', b'{"SubscriptionNumber": "\\ud800"}',
            b'{"SubscriptionNumber": "A", "SubscriptionNumber": "B"}',
            b'\xef\xbb\xbf{"SubscriptionNumber": "A-S1"}', b"[" * 2000 + b"]" * 2000,
            b'{"SubscriptionNumber": "A-S1", "x": ' + b"[" * 600 + b"]" * 600 + b"}",
            b'{"SubscriptionNumber": "A-S1", "EventTimestamp": 99999999999999999999999}',
            b'{"SubscriptionNumber": "A-S1", "Version": 18446744073709551615}',
            b'{"SubscriptionNumber": "A-S1", "k\\u0000": 1}', b"null", b'"A-S1"', b"",
        ]))  # fmt: skip
        return "edge", raw
    if choice == 6:
        size = draw(st.sampled_from([LIMIT - 1, LIMIT, LIMIT + 1, 70_000]))
        filler = b'{"SubscriptionNumber": "A-S1", "pad": "'
        return "big", filler + b"x" * max(0, size - len(filler) - 2) + b'"}'
    if choice == 7:
        pairs = draw(st.lists(st.tuples(key_names, st.text(max_size=20)), max_size=5))
        return "form", "&".join(f"{k}={v}" for k, v in pairs).encode("utf-8", "surrogatepass")
    return "bytes", draw(st.binary(max_size=300))


@st.composite
def requests(draw: Any) -> dict[str, Any]:
    kind, body = draw(bodies())
    valid = kind.startswith("valid")
    content_type = (
        ("application/json" if kind == "valid-json" else "application/x-www-form-urlencoded")
        if valid and draw(st.booleans())
        else draw(content_types)
    )
    return {
        "method": draw(st.sampled_from(["POST"] * 8 + ["GET", "PUT", "PATCH", "DELETE"])),
        "query": draw(
            st.one_of(
                st.just(""),
                st.sampled_from(
                    [
                        "?SubscriptionNumber=A-S9",
                        "?%ff=1",
                        "?a=%00",
                        "?SubscriptionNumber=&x",
                        "?==",
                    ]
                ),
            )
        ),
        "auth": draw(credentials),
        "content_type": content_type,
        "note": draw(st.one_of(st.none(), header_text, st.text("n", min_size=300, max_size=600))),
        "framing": draw(st.sampled_from(["length"] * 6 + ["chunked", "short", "none"])),
        "extra": draw(
            st.lists(
                st.tuples(
                    st.sampled_from(
                        [
                            "X-Forwarded-For",
                            "zuora-notification-id",
                            "Content-Type",
                            "Expect",
                            "X-A",
                        ]
                    ),
                    header_text,
                ),
                max_size=3,
            )
        ),
        "kind": kind,
        "body": body,
    }


def build(case: dict[str, Any]) -> bytes:
    lines = [f"{case['method']} {CALLOUT}{case['query']} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"Authorization: {value}" for value in case["auth"]]
    if case["content_type"] is not None:
        lines.append(f"Content-Type: {case['content_type']}")
    if case["note"] is not None:
        lines.append(f"Zuora-Notification-Id: {case['note']}")
    lines.append(f"Zuora-Request-Id: {uuid.uuid4().hex}")
    lines += [f"{name}: {value}" for name, value in case["extra"]]
    lines.append("Connection: close")
    body: bytes = case["body"]
    if case["framing"] == "chunked" and body:
        lines.append("Transfer-Encoding: chunked")
        half = len(body) // 2
        parts = [p for p in (body[:half], body[half:]) if p]
        body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    elif case["framing"] == "short" and len(body) > 1:
        lines.append(f"Content-Length: {len(body) - 1}")
    elif case["framing"] != "none" or body:
        lines.append(f"Content-Length: {len(body)}")
    head = "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n"
    return head + body


def well_formed(case: dict[str, Any]) -> bool:
    """A callout the webhook must take: right credentials, POST, a valid body under its
    own content type, framed correctly, nothing else in the way."""
    return (
        case["kind"].startswith("valid")
        and case["method"] == "POST"
        and case["auth"][:1] == [GOOD]
        and case["query"] == ""
        and case["framing"] in ("length", "chunked")
        and case["content_type"]
        == {"valid-json": "application/json", "valid-form": "application/x-www-form-urlencoded"}[
            case["kind"]
        ]
        and case["extra"] == []
    )


@pytest.mark.slow
@pytest.mark.timeout(sized(300, 1500))
def test_fuzzed_requests__never_a_5xx_and_rows_only_from_authenticated_accepted_callouts(
    target: Target,
) -> None:
    seen: dict[int, int] = {}

    @settings(
        max_examples=1200 if FULL else 150,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(case=requests())
    def run(case: dict[str, Any]) -> None:
        before = target.rows()
        status, headers, body = exchange(target.hook.port, build(case), case["method"])
        seen[status] = seen.get(status, 0) + 1
        assert status < 500, (status, body[:300])
        grew = target.rows() - before
        stored = status == 200 and orjson.loads(body).get("status") == "stored"
        assert grew == (1 if stored else 0), (status, body[:300], grew)
        if case["auth"][:1] not in ([GOOD], [GOOD.replace("Basic", "basic")]):
            if case["auth"][:1] in ([GOOD + "  "], ["  " + GOOD]):
                return  # surrounding blanks: a header value's own whitespace, trimmed
            assert status != 200 and grew == 0
            if case["method"] == "POST" and status != 400:
                assert status == 401 and "realm=" in headers.get("www-authenticate", "")
        if well_formed(case):
            assert status == 200, (status, body[:300])

    run()
    assert target.hook.running, target.hook.output()[-3000:]
    assert {200, 401} <= set(seen), seen
    output = target.hook.output()
    for failure in ("callout.error", "webhook.batch_failed", "webhook.item_failed", "Traceback"):
        assert failure not in output, output[-3000:]
