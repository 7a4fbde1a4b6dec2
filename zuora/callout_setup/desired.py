"""What a tenant should hold: the custom event trigger(s) and their callout definitions.

One custom event on Subscription fires when any tracked custom field changes in place
(`changeType == 'UPDATE'` and `Subscription.F__c != Subscription.F__c_old` for some field);
Zuora caps a condition at 5,000 characters, so a long field list is split over several
triggers (`ZuoraSyncTrackedFieldsChanged`, `...Changed2`, ...), each with its own
notification definition, since a definition listens to exactly one event type.

Each definition's callout POSTs a JSON body to the webhook with HTTP Basic auth sent
preemptively (one request per callout, no `401` round trip to count as a rejection), and
Zuora's retries on. Zuora never shows a callout password back, so the definition's
description carries a salted scrypt fingerprint of the credentials (32 bits: enough to see
that they changed, too few to confirm a guess); a changed `CALLOUT_PASSWORD` is then seen and
sent again, and an unchanged one leaves the definition alone.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

EVENT_PREFIX = "ZuoraSyncTrackedFieldsChanged"
EVENT_NAME_RE = re.compile(rf"^{EVENT_PREFIX}(\d*)$")
DEFINITION_PREFIX = "zuora-sync "
BASE_OBJECT = "Subscription"
MAX_CONDITION = 5000
REDACTED = "<redacted: CALLOUT_PASSWORD>"
_FINGERPRINT_RE = re.compile(r"credentials (?P<salt>[0-9a-f]{16}):(?P<digest>[0-9a-f]{8})")
DESCRIPTION = "Managed by zuora-sync setup-callout; do not edit by hand."


def event_name(index: int) -> str:
    return EVENT_PREFIX if index == 0 else f"{EVENT_PREFIX}{index + 1}"


def change_condition(fields: tuple[str, ...]) -> str:
    changed = " || ".join(f"{BASE_OBJECT}.{f} != {BASE_OBJECT}.{f}_old" for f in fields)
    return f"changeType == 'UPDATE' && ({changed})"


def field_groups(fields: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The tracked fields in order, cut into groups whose condition fits in one trigger."""
    if not fields:
        raise ValueError("ZUORA_TRACKED_FIELDS is empty: there is nothing to watch")
    groups: list[tuple[str, ...]] = []
    current: list[str] = []
    for name in fields:
        if current and len(change_condition((*current, name))) > MAX_CONDITION:
            groups.append(tuple(current))
            current = []
        current.append(name)
    groups.append(tuple(current))
    return groups


def fingerprint(username: str, password: str, salt: str | None = None) -> str:
    salt = salt or secrets.token_hex(8)
    digest = hashlib.scrypt(
        f"{username}:{password}".encode(), salt=bytes.fromhex(salt), n=2**14, r=8, p=1, dklen=4
    ).hex()
    return f"{salt}:{digest}"


def fingerprint_matches(description: Any, username: str, password: str) -> bool:
    match = _FINGERPRINT_RE.search(description) if isinstance(description, str) else None
    if match is None:
        return False
    expected = fingerprint(username, password, match["salt"])
    return hmac.compare_digest(expected, f"{match['salt']}:{match['digest']}")


def existing_salt(description: Any) -> str | None:
    match = _FINGERPRINT_RE.search(description) if isinstance(description, str) else None
    return match["salt"] if match else None


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class DesiredTrigger:
    event_name: str
    fields: tuple[str, ...]

    @property
    def condition(self) -> str:
        return change_condition(self.fields)

    @property
    def display_name(self) -> str:
        return "zuora-sync: tracked subscription fields changed"

    @property
    def description(self) -> str:
        return f"{DESCRIPTION} Fires when one of these changes: {', '.join(self.fields)}."[:1000]

    def create_body(self) -> dict[str, Any]:
        return {
            "active": True,
            "baseObject": BASE_OBJECT,
            "condition": self.condition,
            "description": self.description,
            "eventType": {
                "name": self.event_name,
                "displayName": self.display_name,
                "description": "A tracked custom field of a subscription was edited.",
            },
        }

    def update_body(self) -> dict[str, Any]:
        # The event type's name and the base object cannot change (SDK PutEventTriggerRequest).
        body = self.create_body()
        del body["baseObject"], body["eventType"]["name"]
        return body

    def differences(self, current: dict[str, Any]) -> list[str]:
        wanted = self.create_body()
        found = []
        for key in ("active", "baseObject", "condition", "description"):
            if current.get(key) != wanted[key]:
                found.append(key)
        event = current.get("eventType") or {}
        for key in ("displayName", "description"):
            if event.get(key) != wanted["eventType"][key]:
                found.append(f"eventType.{key}")
        return found


@dataclass(frozen=True)
class DesiredDefinition:
    event_name: str
    fields: tuple[str, ...]
    callout_url: str
    credentials: Credentials | None

    @property
    def name(self) -> str:
        return f"{DEFINITION_PREFIX}{self.event_name}"

    def params(self) -> dict[str, str]:
        """The callout body: what the webhook reads (docs/zuora_callouts.md, 'The body')."""
        merge = "{{DataSource.%s}}"
        body = {
            "SubscriptionNumber": merge % "Subscription.Name",
            "SubscriptionId": merge % "Subscription.Id",
            "Version": merge % "Subscription.Version",
            "AccountId": merge % "Account.Id",
            "AccountNumber": merge % "Account.AccountNumber",
            "EventType": self.event_name,
        }
        for name in self.fields:
            body[name] = merge % f"Subscription.{name}"
        return body

    def description(self, salt: str | None) -> str:
        if self.credentials is None:
            return f"{DESCRIPTION} No callout authentication."
        creds = self.credentials
        return f"{DESCRIPTION} credentials {fingerprint(creds.username, creds.password, salt)}"

    def callout(self, *, for_create: bool, redact: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "description": "Tells zuora-sync that a subscription's tracked fields changed.",
            "calloutBaseurl": self.callout_url,
            "httpMethod": "POST",
            "requiredAuth": self.credentials is not None,
            "calloutParams": self.params(),
            "calloutRetry": True,
            "active": True,
        }
        if for_create:
            body["eventTypeName"] = self.event_name
        if self.credentials is not None:
            body["calloutAuth"] = {
                "username": self.credentials.username,
                "password": REDACTED if redact else self.credentials.password,
                "preemptive": True,
            }
        return body

    def body(self, *, for_create: bool, salt: str | None, redact: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.name}
        if for_create:
            body["eventTypeName"] = self.event_name
        body |= {
            "description": self.description(salt),
            "active": True,
            "emailActive": False,
            "calloutActive": True,
            "callout": self.callout(for_create=for_create, redact=redact),
        }
        return body

    def differences(self, current: dict[str, Any]) -> list[str]:
        """What differs from the definition as Zuora shows it (the password aside)."""
        found = []
        salt = existing_salt(current.get("description"))
        wanted = self.body(for_create=True, salt=salt, redact=True)
        for key in ("active", "emailActive", "calloutActive"):
            if current.get(key) != wanted[key]:
                found.append(key)
        if self.credentials is None:
            if current.get("description") != wanted["description"]:
                found.append("description")
        elif not fingerprint_matches(
            current.get("description"), self.credentials.username, self.credentials.password
        ):
            found.append("credentials")
        callout = current.get("callout") or {}
        want = wanted["callout"]
        for key in ("name", "calloutBaseurl", "httpMethod", "requiredAuth", "calloutRetry"):
            if callout.get(key) != want[key]:
                found.append(f"callout.{key}")
        if callout.get("active", True) is not True:
            found.append("callout.active")
        if (callout.get("calloutParams") or {}) != want["calloutParams"]:
            found.append("callout.calloutParams")
        auth = callout.get("calloutAuth") or {}
        if self.credentials is not None:
            if auth.get("username") != self.credentials.username:
                found.append("callout.calloutAuth.username")
            if auth.get("preemptive") is not True:
                found.append("callout.calloutAuth.preemptive")
        return found


def desired(
    fields: tuple[str, ...], callout_url: str, credentials: Credentials | None
) -> list[tuple[DesiredTrigger, DesiredDefinition]]:
    return [
        (
            DesiredTrigger(event_name(i), group),
            DesiredDefinition(event_name(i), group, callout_url, credentials),
        )
        for i, group in enumerate(field_groups(fields))
    ]
