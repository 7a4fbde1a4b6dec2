"""The published OpenAPI document describes the endpoint, and the endpoint keeps to it.

`test_answers_follow_the_published_schema` and the property-based run are driven by the
document the server publishes: every answer must be a documented status code whose body
validates against the documented schema.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from tests.conftest import drop_pg_database, new_pg_database
from warehouse.models import inbox as inbox_table

from .conftest import AUTH, CALLOUT, Live, serve, webhook_settings

FULL = os.environ.get("ZS_FULL") == "1"


@pytest.fixture(scope="module")
def documented(pg_template: str) -> Iterator[Live]:
    url = new_pg_database(pg_template)
    live = serve(webhook_settings(url, LOG_LEVEL="WARNING"))  # quiet: a line per request
    yield live
    live.stop()
    live.engine.dispose()
    drop_pg_database(url)


@pytest.fixture(scope="module")
def schema(documented: Live) -> dict[str, Any]:
    response = documented.client.get("/openapi.json")
    assert response.status_code == 200
    doc: dict[str, Any] = response.json()
    return doc


def operation(schema: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = schema["paths"][CALLOUT]["post"]
    return op


class Conformance:
    """Checks answers against the published document."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self.responses = operation(schema)["responses"]

    def check(self, response: httpx.Response) -> None:
        code = str(response.status_code)
        assert code in self.responses, f"undocumented status {code}: {response.text}"
        documented = self.responses[code]
        body_schema = documented["content"]["application/json"]["schema"]
        resolver_doc = {**body_schema, "components": self.schema["components"]}
        jsonschema.validate(response.json(), resolver_doc)
        for header in documented.get("headers", {}):
            assert header in response.headers, f"{code} without its documented {header}"


def test_document__describes_the_endpoint_auth_bodies_and_every_response(
    schema: dict[str, Any],
) -> None:
    op = operation(schema)
    assert op["operationId"] == "sync_subscription"
    assert op["security"] == [{"zuoraCalloutBasic": []}]
    assert schema["components"]["securitySchemes"]["zuoraCalloutBasic"] == {
        "type": "http",
        "scheme": "basic",
        "description": schema["components"]["securitySchemes"]["zuoraCalloutBasic"]["description"],
    }
    body = op["requestBody"]["content"]
    assert set(body) == {"application/json", "application/x-www-form-urlencoded"}
    params = body["application/json"]["schema"]
    assert {"SubscriptionNumber", "SubscriptionId", "Version", "SupportTier__c"} <= set(
        params["properties"]
    )
    assert params["properties"]["SubscriptionNumber"]["maxLength"] == 64
    headers = {p["name"] for p in op["parameters"] if p["in"] == "header"}
    assert headers == {"Zuora-Notification-Id", "Zuora-Request-Id"}
    assert set(op["responses"]) == {"200", "400", "401", "405", "413", "415", "422", "503"}
    assert "WWW-Authenticate" in op["responses"]["401"]["headers"]
    assert "Retry-After" in op["responses"]["503"]["headers"]
    for code, response in op["responses"].items():
        assert response["content"]["application/json"]["schema"]["$ref"].startswith(
            "#/components/schemas/Callout"
        ), code


def test_answers_follow_the_published_schema(documented: Live, schema: dict[str, Any]) -> None:
    conformance = Conformance(schema)
    cases = [
        documented.post(json={"SubscriptionNumber": "A-S1"}, notification="c1"),
        documented.post(json={"SubscriptionNumber": "A-S1"}, notification="c1"),
        documented.post(auth=None, json={"SubscriptionNumber": "A-S1"}),
        documented.post(content=b"{", headers={"Content-Type": "application/json"}),
        documented.post(content=b"x", headers={"Content-Type": "text/plain"}),
        documented.post(json={"Version": "x"}),
        documented.post(content=b"x" * 70_000, headers={"Content-Type": "application/json"}),
        documented.client.get(CALLOUT),
    ]
    assert {r.status_code for r in cases} == {200, 401, 400, 415, 422, 413, 405}
    for response in cases:
        conformance.check(response)


# --- property-based: random callouts against the published document ---------------------------

names = st.one_of(
    st.sampled_from(
        [
            "SubscriptionNumber",
            "subscriptionnumber",
            "SubscriptionId",
            "SUBSCRIPTIONID",
            "AccountId",
            "AccountNumber",
            "Version",
            "EventType",
            "EventTimestamp",
            "SupportTier__c",
            "SeatOverride__c",
            "ContractOwner__c",
        ]
    ),
    st.text(min_size=0, max_size=140),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=80),
    st.text(alphabet="A-S0123456789", min_size=1, max_size=70),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=5)
objects = st.dictionaries(names, values, max_size=8)

keys = st.text(alphabet="AS-0123456789", min_size=1, max_size=64)
valid_callouts = st.fixed_dictionaries(
    {"SubscriptionNumber": keys},
    optional={
        "SubscriptionId": keys,
        "Version": st.one_of(st.integers(0, 2**31 - 1), st.integers(0, 999).map(str)),
        "AccountId": st.text(max_size=40),
        "SupportTier__c": st.one_of(st.none(), st.text(max_size=40), st.booleans()),
        "Extra": values,
    },
)
json_type = st.sampled_from(["application/json", "application/json; charset=utf-8"])
form_type = st.just("application/x-www-form-urlencoded")
content_types = st.sampled_from(
    [
        None,
        "application/json",
        "application/x-www-form-urlencoded",
        "text/plain",
        "application/json; charset=latin-1",
        "application/merge-patch+json",
        "multipart/form-data; boundary=b",
    ]
)
#: (kind, body, content type): mostly well-formed callouts, the rest anything at all.
bodies = st.one_of(
    st.tuples(st.just("json"), valid_callouts, json_type),
    st.tuples(st.just("form"), valid_callouts.map(lambda d: [(k, str(v)) for k, v in d.items()]),
              form_type),
    st.tuples(st.just("json"), objects, content_types),
    st.tuples(st.just("json"), values, content_types),
    st.tuples(st.just("form"), st.lists(st.tuples(names, st.text(max_size=40)), max_size=6),
              content_types),
    st.tuples(st.just("raw"), st.binary(max_size=200), content_types),
)  # fmt: skip
auths = st.sampled_from(["good", "good", "good", "none", "wrong", "garbage"])
notifications = st.one_of(
    st.none(),
    st.text(min_size=1, max_size=300).map(str.strip).filter(lambda s: bool(s) and s.isprintable()),
)


def _request(
    live: Live, auth: str, body: tuple[str, Any, str | None], query: Any, note: Any
) -> httpx.Response:
    headers: dict[str, Any] = {"Zuora-Request-Id": uuid.uuid4().hex}
    if note is not None:
        headers["Zuora-Notification-Id"] = note.encode("utf-8", "surrogatepass")
    kind, value, content_type = body
    if kind == "json":
        content = httpx.Request("POST", "http://x", json=value).content
    elif kind == "form":
        content = httpx.Request("POST", "http://x", data=dict(value)).content
    else:
        content = value
    if content_type is not None:
        headers["Content-Type"] = content_type
    credentials: Any = {"good": AUTH, "wrong": ("zuora-callout", "nope")}.get(auth)
    if auth == "garbage":
        headers["Authorization"] = "Basic ###"
    return live.client.post(
        CALLOUT, params=query, content=content, headers=headers, auth=credentials
    )


def _count(live: Live) -> int:
    with live.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(inbox_table)).scalar_one())


@pytest.mark.slow
def test_property__no_5xx_and_rows_only_from_accepted_callouts(
    documented: Live, schema: dict[str, Any]
) -> None:
    conformance = Conformance(schema)
    seen: dict[int, int] = {}

    @settings(
        max_examples=1000 if FULL else 200,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        database=None,
    )
    @given(
        auth=auths,
        body=bodies,
        query=st.lists(st.tuples(names, st.text(max_size=20)), max_size=3),
        note=notifications,
    )
    def run(auth: str, body: tuple[str, Any, str | None], query: Any, note: Any) -> None:
        before = _count(documented)
        response = _request(documented, auth, body, query, note)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert response.status_code < 500, response.text
        conformance.check(response)
        grew = _count(documented) - before
        if response.status_code == 200 and response.json()["status"] == "stored":
            assert grew == 1
        else:
            assert grew == 0, f"{response.status_code} {response.text} left a row"
        if auth != "good":
            assert response.status_code == 401

    run()
    # The run reached every kind of answer, not just the first refusal.
    assert {200, 401, 415, 422} <= set(seen), seen
