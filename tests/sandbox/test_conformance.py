"""The sandbox's responses conform to the official `zuora_sdk` models.

Where the SDK is stricter than Zuora's own published examples, the test says so and lets
exactly that through:
- `ratePlanCharges[].dmrc` / `dtcv` are strings in the SDK, but numbers in Zuora's example
  responses of `GET /v1/subscriptions/...` (`dmrc: 8.333333`, `dtcv: 100`); we follow Zuora.
- `DataQueryJob.id` / `createdBy` must be 64 characters in the SDK, while Zuora's examples
  and the path parameter's own description use 36-character UUIDs; we follow the examples.
"""

from __future__ import annotations

import re
import time
from typing import Any

import httpx

from tests.sandbox.sdk_check import check_model, sdk_model
from zuora.sandbox.server import RunningSandbox

SDK_STRICTER = (
    re.compile(
        r"^\$\.ratePlans\[\d+\]\.ratePlanCharges\[\d+\]\.(dmrc|dtcv): Input should be a "
        r"valid string"
    ),
    re.compile(r"^\$\.data(\[\d+\])?\.(id|createdBy): String should have at least 64 characters"),
)


def conforms(model: Any, body: Any) -> list[str]:
    return [e for e in check_model(model, body) if not any(p.match(e) for p in SDK_STRICTER)]


def test_the_checker_catches_wrong_shapes() -> None:
    errors = check_model(
        sdk_model("GetSubscriptionResponse"),
        {
            "version": "2",
            "status": "Weird",
            "ratePlans": [{"ratePlanCharges": [{"quantity": "1"}]}],
        },
    )
    assert len(errors) == 3


def test_subscription_responses(shared_sandbox: RunningSandbox, shared_http: httpx.Client) -> None:
    for i in range(1, 1001, 29):
        body = shared_http.get(f"/v1/subscriptions/A-S{i:08d}").json()
        assert conforms(sdk_model("GetSubscriptionResponse"), body) == [], body[
            "subscriptionNumber"
        ]
    version = shared_http.get("/v1/subscriptions/A-S00000003/versions/1").json()
    assert conforms(sdk_model("GetSubscriptionResponse"), version) == []
    assert (
        conforms(
            sdk_model("CommonResponse"), shared_http.get("/v1/subscriptions/A-S99999999").json()
        )
        == []
    )


def test_token_and_changes(sandbox: RunningSandbox, zuora_http: httpx.Client) -> None:
    token = httpx.post(
        f"{sandbox.base_url}/oauth/token",
        data={
            "client_id": sandbox.client_id,
            "client_secret": sandbox.client_secret,
            "grant_type": "client_credentials",
        },
    ).json()
    assert conforms(sdk_model("TokenResponse"), token) == []
    amended = zuora_http.put("/v1/subscriptions/A-S00000001", json={}).json()
    assert conforms(sdk_model("UpdateSubscriptionResponse"), amended) == []
    cancelled = zuora_http.put(
        "/v1/subscriptions/A-S00000001/cancel", json={"cancellationPolicy": "EndOfCurrentTerm"}
    ).json()
    assert conforms(sdk_model("CancelSubscriptionResponse"), cancelled) == []


def test_query_responses(shared_http: httpx.Client) -> None:
    zoql = shared_http.post(
        "/v1/action/query",
        json={"queryString": "select Id, Name from Subscription", "conf": {"batchSize": 3}},
    ).json()
    assert conforms(sdk_model("ProxyActionqueryResponse"), zoql) == []
    more = shared_http.post("/v1/action/queryMore", json={"queryLocator": zoql["queryLocator"]})
    assert conforms(sdk_model("ProxyActionqueryMoreResponse"), more.json()) == []
    request = {
        "query": "select id from account limit 2",
        "outputFormat": "JSON",
        "compression": "NONE",
        "output": {"target": "S3"},
    }
    assert conforms(sdk_model("SubmitDataQueryRequest"), request) == []
    submitted = shared_http.post("/query/jobs", json=request).json()
    assert conforms(sdk_model("SubmitDataQueryResponse"), submitted) == []
    for _ in range(200):
        job = shared_http.get(f"/query/jobs/{submitted['data']['id']}").json()
        if job["data"]["queryStatus"] == "completed":
            break
        time.sleep(0.05)
    assert conforms(sdk_model("GetDataQueryJobResponse"), job) == []
    assert (
        conforms(sdk_model("GetDataQueryJobsResponse"), shared_http.get("/query/jobs").json()) == []
    )


def test_event_and_notification_responses(zuora_http: httpx.Client) -> None:
    trigger_request = {
        "active": True,
        "baseObject": "Subscription",
        "condition": "changeType == 'UPDATE'",
        "eventType": {"name": "Changed", "displayName": "Changed"},
    }
    assert conforms(sdk_model("PostEventTriggerRequest"), trigger_request) == []
    trigger = zuora_http.post("/events/event-triggers", json=trigger_request).json()
    assert conforms(sdk_model("EventTrigger"), trigger) == []
    assert (
        conforms(
            sdk_model("GetEventTriggers200Response"),
            zuora_http.get("/events/event-triggers").json(),
        )
        == []
    )
    definition_request = {
        "name": "n",
        "eventTypeName": "Changed",
        "calloutActive": True,
        "callout": {
            "name": "c",
            "eventTypeName": "Changed",
            "calloutBaseurl": "https://example.com/hook",
            "httpMethod": "POST",
            "requiredAuth": True,
            "calloutAuth": {"username": "u", "password": "p"},
            "calloutParams": {"SubscriptionNumber": "Subscription.Name"},
        },
    }
    assert conforms(sdk_model("PostPublicNotificationDefinitionRequest"), definition_request) == []
    created = zuora_http.post(
        "/notifications/notification-definitions", json=definition_request
    ).json()
    assert conforms(sdk_model("GetPublicNotificationDefinitionResponse"), created) == []
    assert (
        conforms(
            sdk_model("GetQueryNotificationDefinitions200Response"),
            zuora_http.get("/notifications/notification-definitions").json(),
        )
        == []
    )
    assert (
        conforms(
            sdk_model("GetCalloutHistoryVOsType"),
            zuora_http.get("/v1/notification-history/callout").json(),
        )
        == []
    )
