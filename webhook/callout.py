"""Reading a Zuora callout: its body forms, its parameters and their validation.

Zuora sends a callout either from a callout template (a JSON object body) or with legacy
callout parameters (form-encoded body or query string). Both end up here as one mapping of
parameters, whose names are matched case-insensitively against the ones this project knows.
Everything Zuora sent is kept, with the names as sent, for the drain and for operators.

The rules are strict where a bad value would break the inbox row (the subscription keys are
64-character columns; PostgreSQL's JSONB refuses the NUL character) and loose elsewhere: an
unknown parameter is kept as it came, because Zuora's templates are the tenant admins' to edit.
"""

from __future__ import annotations

import hashlib
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

#: Largest body accepted; Zuora's callouts are a few hundred bytes.
MAX_BODY_BYTES = 64 * 1024
MAX_PARAMETERS = 200
MAX_NAME_LENGTH = 128
#: The inbox's subscription_number and subscription_id columns.
MAX_KEY_LENGTH = 64
MAX_TEXT_LENGTH = 255
MAX_FIELD_VALUE_LENGTH = 1000
MAX_VERSION = 2**31 - 1

BodyFormat = Literal["json", "form", "query"]

SUBSCRIPTION_NUMBER = "SubscriptionNumber"
SUBSCRIPTION_ID = "SubscriptionId"
#: The parameters this project reads, by their canonical names.
KNOWN_PARAMETERS = (
    SUBSCRIPTION_NUMBER,
    SUBSCRIPTION_ID,
    "AccountId",
    "AccountNumber",
    "Version",
    "EventType",
    "EventTimestamp",
)

JSON_TYPES = ("application/json",)
FORM_TYPES = ("application/x-www-form-urlencoded",)


class Rejection(Exception):
    """A callout that cannot be accepted: the HTTP status, a stable code and a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        #: Set when the answer goes out before the body was read: the connection must close.
        self.close_connection = False


def invalid(code: str, message: str) -> Rejection:
    return Rejection(422, code, message)


@dataclass(frozen=True, slots=True)
class Callout:
    """A callout that passed validation."""

    #: Every parameter, names and values as sent (query string and body merged).
    params: dict[str, Any]
    #: The known and tracked parameters found, under their canonical names, normalised
    #: (keys stripped, `Version` an integer), so readers need no case-insensitive lookup.
    fields: dict[str, Any]
    body_format: BodyFormat
    subscription_number: str | None
    subscription_id: str | None

    def content_key(self) -> str:
        """A digest of the parameters, for callouts that carry no notification id.

        Names are folded to lower case, as they are matched; values keep their JSON type.
        """
        folded = {name.lower(): value for name, value in self.params.items()}
        digest = hashlib.sha256(orjson.dumps(folded, option=orjson.OPT_SORT_KEYS))
        return digest.hexdigest()


def media_type(content_type: str | None) -> str:
    """The `type/subtype` of a Content-Type header, lower-cased, without parameters."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


class CalloutReader:
    """Turns a request's body and query string into a validated `Callout`."""

    def __init__(self, tracked_fields: Sequence[str] = ()) -> None:
        self.tracked_fields = tuple(tracked_fields)
        self._canonical = {name.lower(): name for name in (*KNOWN_PARAMETERS, *tracked_fields)}

    def body_format(self, content_type: str | None) -> BodyFormat:
        """The body form a Content-Type announces, or a 415 rejection."""
        kind = media_type(content_type)
        if kind in JSON_TYPES or (kind.startswith("application/") and kind.endswith("+json")):
            charset = _charset(content_type or "")
            if charset not in (None, "utf-8", "utf8"):
                raise Rejection(
                    415, "unsupported_media_type", "a JSON body must be encoded in UTF-8"
                )
            return "json"
        if kind in FORM_TYPES:
            return "form"
        shown = f"Content-Type {kind!r}" if kind else "a body without a Content-Type"
        raise Rejection(
            415,
            "unsupported_media_type",
            f"{shown} is not accepted; send application/json (a callout template) or "
            "application/x-www-form-urlencoded (callout parameters)",
        )

    def read(self, body: bytes, body_format: BodyFormat | None, query_string: bytes) -> Callout:
        """Parse and validate. `body_format` is None when the request has no body."""
        pairs: list[tuple[str, Any]] = []
        if query_string:
            pairs.extend(_form_pairs(query_string, "query string"))
        fmt: BodyFormat = "query"
        if body_format == "json" and body:
            pairs.extend(_json_pairs(body))
            fmt = "json"
        elif body_format == "form" and body:
            pairs.extend(_form_pairs(body, "form body"))
            fmt = "form"
        params = _merge(pairs)
        fields = self._fields(params)
        number = fields.get(SUBSCRIPTION_NUMBER)
        sub_id = fields.get(SUBSCRIPTION_ID)
        if number is None and sub_id is None:
            raise invalid(
                "missing_subscription_key",
                f"the callout carries neither {SUBSCRIPTION_NUMBER} nor {SUBSCRIPTION_ID}",
            )
        return Callout(params, fields, fmt, number, sub_id)

    def _fields(self, params: dict[str, Any]) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for name, value in params.items():
            canonical = self._canonical.get(name.lower())
            if canonical is None:
                continue
            checked = _check(canonical, name, value)
            if checked is not None:
                fields[canonical] = checked
            elif canonical not in (SUBSCRIPTION_NUMBER, SUBSCRIPTION_ID):
                # An empty tracked field is news (a value was cleared); keep it as null.
                fields[canonical] = None
        return fields


def _charset(content_type: str) -> str | None:
    for part in content_type.split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None


def _json_pairs(body: bytes) -> Iterable[tuple[str, Any]]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Rejection(400, "malformed_body", f"the body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise invalid(
            "not_an_object", f"a JSON callout body must be an object, not {_json_type(doc)}"
        )
    if len(doc) > MAX_PARAMETERS:
        raise invalid("too_many_parameters", f"more than {MAX_PARAMETERS} parameters")
    # PostgreSQL's JSONB cannot store U+0000; orjson only yields it from a \u0000 escape.
    if b"\\u0000" in body and _has_nul(doc):
        raise invalid("invalid_parameter", "the body contains a NUL character (\\u0000)")
    return doc.items()


def _form_pairs(raw: bytes, where: str) -> list[tuple[str, str]]:
    try:
        text = raw.decode("utf-8")
        pairs = urllib.parse.parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=False,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_PARAMETERS,
        )
    except UnicodeDecodeError:
        raise Rejection(400, "malformed_body", f"the {where} is not valid UTF-8") from None
    except ValueError:
        raise invalid("too_many_parameters", f"more than {MAX_PARAMETERS} parameters") from None
    for name, value in pairs:
        if "\x00" in name or "\x00" in value:
            raise invalid("invalid_parameter", f"the {where} contains a NUL character")
    return pairs


def _merge(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """One mapping; a name given twice (in any case) must carry the same value each time."""
    params: dict[str, Any] = {}
    seen: dict[str, str] = {}
    for name, value in pairs:
        if not name or len(name) > MAX_NAME_LENGTH:
            raise invalid(
                "invalid_parameter", f"parameter names must be 1 to {MAX_NAME_LENGTH} characters"
            )
        folded = name.lower()
        first = seen.get(folded)
        if first is None:
            seen[folded] = name
            params[name] = value
        elif params[first] != value:
            raise invalid(
                "conflicting_parameter", f"parameter {name!r} is given twice with different values"
            )
    if len(params) > MAX_PARAMETERS:
        raise invalid("too_many_parameters", f"more than {MAX_PARAMETERS} parameters")
    return params


def _check(canonical: str, sent_as: str, value: Any) -> Any:
    """The normalised value of a known or tracked parameter, None if empty, or a rejection."""
    if value is None or value == "":
        return None
    if canonical in (SUBSCRIPTION_NUMBER, SUBSCRIPTION_ID):
        return _text(sent_as, value, MAX_KEY_LENGTH, strip=True)
    if canonical in ("AccountId", "AccountNumber", "EventType"):
        return _text(sent_as, value, MAX_TEXT_LENGTH, strip=True)
    if canonical == "EventTimestamp":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        return _text(sent_as, value, MAX_KEY_LENGTH, strip=True)
    if canonical == "Version":
        return _version(sent_as, value)
    # A tracked custom field: any JSON scalar.
    if isinstance(value, str):
        return _text(sent_as, value, MAX_FIELD_VALUE_LENGTH, strip=False)
    if isinstance(value, bool | int | float):
        return value
    raise invalid(
        "invalid_parameter",
        f"{sent_as} must be a string, number or boolean, not {_json_type(value)}",
    )


def _text(name: str, value: Any, limit: int, *, strip: bool) -> str | None:
    if not isinstance(value, str):
        raise invalid("invalid_parameter", f"{name} must be a string, not {_json_type(value)}")
    text = value.strip() if strip else value
    if strip and not text:
        return None
    if len(text) > limit:
        raise invalid("invalid_parameter", f"{name} is longer than {limit} characters")
    if strip and not text.isprintable():
        raise invalid("invalid_parameter", f"{name} contains control characters")
    return text


def _version(name: str, value: Any) -> int:
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip()) if len(value.strip()) <= 10 else MAX_VERSION + 1
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid("invalid_parameter", f"{name} must be a whole number")
    if not 0 <= value <= MAX_VERSION:
        raise invalid("invalid_parameter", f"{name} must be between 0 and {MAX_VERSION}")
    return value


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in k or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
