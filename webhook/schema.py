"""What the OpenAPI document says about the callout endpoint.

These models and schemas describe the wire format for the published document only; the
endpoint itself reads and writes JSON directly (see `receiver.py`), so a test checks every
answer it gives against these schemas.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from webhook.auth import CHALLENGE
from webhook.callout import (
    MAX_BODY_BYTES,
    MAX_FIELD_VALUE_LENGTH,
    MAX_KEY_LENGTH,
    MAX_TEXT_LENGTH,
    MAX_VERSION,
)
from webhook.receiver import RETRY_AFTER_SECONDS

SECURITY_SCHEME = "zuoraCalloutBasic"


class CalloutAccepted(BaseModel):
    """The callout is in the inbox (stored now, or already there from an earlier delivery)."""

    success: Literal[True] = Field(
        description="Always true; Zuora's 'confirm success by parsing response content' "
        "reads this field."
    )
    status: Literal["stored", "duplicate"] = Field(
        description="stored: a new inbox row; duplicate: this notification (or an identical "
        "callout that is still pending) was already in the inbox, nothing new was stored."
    )
    id: int | None = Field(description="The new inbox row's id; null for a duplicate.")


class Reason(BaseModel):
    code: str = Field(
        description="Stable machine-readable code, e.g. unauthorized, body_too_large, "
        "unsupported_media_type, malformed_body, not_an_object, missing_subscription_key, "
        "invalid_parameter, conflicting_parameter, too_many_parameters, method_not_allowed, "
        "database_unavailable, internal_error."
    )
    message: str = Field(description="What was wrong, for a human.")


class CalloutRejected(BaseModel):
    """Nothing was stored."""

    success: Literal[False]
    reasons: list[Reason] = Field(min_length=1)


def parameters_schema(tracked_fields: Sequence[str]) -> dict[str, Any]:
    """The callout's parameters, as a JSON object or form fields."""
    key = {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH}
    text = {"type": ["string", "null"], "maxLength": MAX_TEXT_LENGTH}
    properties: dict[str, Any] = {
        "SubscriptionNumber": {**key, "description": "e.g. A-S00000001"},
        "SubscriptionId": {**key, "description": "the id of any version of the subscription"},
        "AccountId": text,
        "AccountNumber": text,
        "Version": {
            "description": "the subscription version; an integer or a string of digits",
            "anyOf": [
                {"type": "integer", "minimum": 0, "maximum": MAX_VERSION},
                {"type": "string", "pattern": "^\\s*[0-9]{1,10}\\s*$"},
                {"type": "null"},
            ],
        },
        "EventType": text,
        "EventTimestamp": {
            "anyOf": [
                {"type": "string", "maxLength": MAX_KEY_LENGTH},
                {"type": "integer"},
                {"type": "null"},
            ]
        },
    }
    for name in tracked_fields:
        properties[name] = {
            "description": "a tracked subscription custom field",
            "anyOf": [
                {"type": "string", "maxLength": MAX_FIELD_VALUE_LENGTH},
                {"type": "number"},
                {"type": "boolean"},
                {"type": "null"},
            ],
        }
    return {
        "type": "object",
        "title": "CalloutParameters",
        "description": "Parameter names are matched case-insensitively. At least one of "
        "SubscriptionNumber and SubscriptionId is required; other parameters are kept as sent. "
        f"The body is at most {MAX_BODY_BYTES} bytes.",
        "properties": properties,
        "anyOf": [{"required": ["SubscriptionNumber"]}, {"required": ["SubscriptionId"]}],
        "additionalProperties": True,
    }


def callout_operation_extra(tracked_fields: Sequence[str]) -> dict[str, Any]:
    """The parts of the operation FastAPI cannot infer from a raw endpoint."""
    params = parameters_schema(tracked_fields)
    query = [
        {
            "name": name,
            "in": "query",
            "required": False,
            "description": "legacy callout parameter (also accepted in the body)",
            "schema": {"type": "string"},
        }
        for name in params["properties"]
    ]
    headers = [
        {
            "name": "Zuora-Notification-Id",
            "in": "header",
            "required": False,
            "description": "Stable across Zuora's retries of one notification: the dedup key. "
            "Without it, the callout's content is the key, and an identical callout counts as "
            "a duplicate only while the first copy is still pending.",
            "schema": {"type": "string"},
        },
        {
            "name": "Zuora-Request-Id",
            "in": "header",
            "required": False,
            "description": "Differs on every delivery attempt; logged and stored.",
            "schema": {"type": "string"},
        },
    ]
    return {
        "security": [{SECURITY_SCHEME: []}],
        "parameters": [*headers, *query],
        "requestBody": {
            "required": False,
            "description": "A callout template's JSON object, or legacy callout parameters "
            "form-encoded (or in the query string, with no body).",
            "content": {
                "application/json": {"schema": params},
                "application/x-www-form-urlencoded": {"schema": params},
            },
        },
    }


def _rejected(description: str, **headers: dict[str, Any]) -> dict[str, Any]:
    response: dict[str, Any] = {"model": CalloutRejected, "description": description}
    if headers:
        response["headers"] = {name.replace("_", "-"): spec for name, spec in headers.items()}
    return response


CALLOUT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": CalloutAccepted,
        "description": "Stored (or already stored), committed before this answer. The only "
        "status Zuora counts as success.",
    },
    400: _rejected("Malformed: not JSON, not UTF-8, bad Content-Length. Zuora does not retry."),
    401: _rejected(
        "No or wrong credentials. Zuora's first attempt comes without credentials and sends "
        "them after this challenge. Not retried otherwise.",
        WWW_Authenticate={
            "description": "the Basic challenge",
            "schema": {"type": "string", "example": CHALLENGE},
        },
    ),
    405: _rejected("Not a POST.", Allow={"schema": {"type": "string", "example": "POST"}}),
    413: _rejected(
        f"The body is over {MAX_BODY_BYTES} bytes (refused from Content-Length before reading "
        "it, or as soon as a streamed body passes the limit)."
    ),
    415: _rejected("Neither application/json nor application/x-www-form-urlencoded."),
    422: _rejected(
        "Well-formed but invalid: no subscription key, a value of the wrong type or length, "
        "a parameter given twice with different values, a JSON body that is not an object."
    ),
    503: _rejected(
        "The inbox database cannot take the callout now (or an unexpected error): nothing "
        "was stored. Zuora retries 5xx answers.",
        Retry_After={
            "description": "seconds to wait",
            "schema": {"type": "integer", "example": RETRY_AFTER_SECONDS},
        },
    ),
}

SECURITY_SCHEMES = {
    SECURITY_SCHEME: {
        "type": "http",
        "scheme": "basic",
        "description": "CALLOUT_USERNAME / CALLOUT_PASSWORD, as configured in the Zuora "
        "callout. Zuora sends them after a 401 challenge unless preemptive authentication "
        "is on.",
    }
}
