"""Custom event triggers, notification definitions, and callouts fired like Zuora fires them.

A change (see `store.ChangeSet`) is matched against every active trigger of its base object;
each trigger whose condition holds raises its event, and every active notification
definition with an active callout for that event sends one notification: an HTTP request
built from the definition, with a stable `Zuora-Notification-Id`, a new `Zuora-Request-Id`
per attempt, Basic auth only after a `401` that carries a realm (unless preemptive), success
on HTTP 200 only, and bounded retries on 1xx, 403, 408, 429, 5xx, timeouts and connection
errors. Deliveries run as tasks on the server's event loop: firing never blocks the request
that made the change, and deliveries are concurrent, so their order is not guaranteed.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import random
import re
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import orjson

from zuora.sandbox import jexl
from zuora.sandbox.config import SandboxConfig
from zuora.sandbox.store import Change, ChangeSet, Row

NAMESPACE = "user.notification"
_BASE_OBJECT = re.compile(r"^(?:[A-Z][\w\-]*|default__[a-z][a-z0-9_]*)$")
_EVENT_NAME = re.compile(r"^[A-Za-z]+[\w\-]*$")
_MERGE = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
_HTTP_METHODS = ("GET", "PUT", "POST", "DELETE")
_CONTENT_TYPES = ("APPLICATION_JSON", "APPLICATION_FORM_URLENCODED")
_RETRYABLE = {403, 408, 429}
MAX_TRIGGERS = 1000
SANDBOX_USER = "2c92c0f8" + "5a1b3c4d5e6f7a8b9c0d1e2f"  # the OAuth client's user id


class ValidationError(ValueError):
    """A request body the events service refuses (HTTP 400)."""


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _text(
    body: dict[str, Any],
    key: str,
    *,
    required: bool,
    max_len: int,
    min_len: int = 0,
    where: str = "",
) -> str | None:
    value = body.get(key)
    label = f"{where}{key}"
    if value is None:
        if required:
            raise ValidationError(f"{label} is required")
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{label} must be a string")
    if not (min_len <= len(value) <= max_len):
        raise ValidationError(f"{label} must be {min_len} to {max_len} characters")
    return value


def _flag(body: dict[str, Any], key: str, *, default: bool | None, where: str = "") -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise ValidationError(f"{where}{key} is required and must be true or false")
    return value


# --- event triggers ------------------------------------------------------------------------


@dataclass
class Trigger:
    id: str
    base_object: str
    condition: jexl.Condition
    description: str | None
    event_name: str
    display_name: str
    event_description: str | None
    active: bool

    def to_json(self) -> dict[str, Any]:
        event: dict[str, Any] = {
            "name": self.event_name,
            "displayName": self.display_name,
            "namespace": NAMESPACE,
        }
        if self.event_description is not None:
            event["description"] = self.event_description
        out: dict[str, Any] = {
            "id": self.id,
            "baseObject": self.base_object,
            "condition": self.condition.text,
            "eventType": event,
            "active": self.active,
        }
        if self.description is not None:
            out["description"] = self.description
        return out


def _condition(text: Any) -> jexl.Condition:
    if not isinstance(text, str) or not 1 <= len(text) <= 5000:
        raise ValidationError("condition is required: a JEXL expression of 1 to 5000 characters")
    try:
        return jexl.parse(text)
    except jexl.JexlError as exc:
        raise ValidationError(f"condition is not a valid JEXL expression: {exc}") from None


# --- notification definitions --------------------------------------------------------------


@dataclass
class Definition:
    id: str
    body: dict[str, Any]  # the stored definition as the API shows it (password kept aside)
    password: str | None
    filter_condition: jexl.Condition | None

    @property
    def event_name(self) -> str:
        return str(self.body["eventTypeName"])

    def public(self) -> dict[str, Any]:
        out = dict(self.body)
        callout = out.get("callout")
        if isinstance(callout, dict) and isinstance(callout.get("calloutAuth"), dict):
            auth = dict(callout["calloutAuth"])
            if auth.get("password") is not None:
                auth["password"] = "********"  # noqa: S105 - a mask, never the secret
            out["callout"] = dict(callout, calloutAuth=auth)
        return out


@dataclass
class Attempt:
    """One HTTP attempt of a notification, as the history shows it."""

    notification_id: str
    attempt: int
    request_id: str
    method: str
    url: str
    status: int  # HTTP status, or negative for a connection-level failure
    success: bool
    error: str | None
    auth_sent: bool
    at: str
    response: str


@dataclass
class Notification:
    """One notification: a definition fired for one event; attempts share its id."""

    id: str
    definition_id: str
    event_name: str
    subscription_number: str
    method: str
    url: str
    body: bytes | None
    query: str
    content_type: str
    username: str | None
    password: str | None
    preemptive: bool
    retry: bool
    created: str
    attempts: list[Attempt] = field(default_factory=list)
    state: str = "pending"  # pending | delivered | failed

    def summary(self) -> dict[str, Any]:
        return {
            "notificationId": self.id,
            "definitionId": self.definition_id,
            "eventTypeName": self.event_name,
            "subscriptionNumber": self.subscription_number,
            "method": self.method,
            "url": self.url,
            "state": self.state,
            "createdOn": self.created,
            "body": self.body.decode() if self.body else None,
            "attempts": [
                {
                    "attempt": a.attempt,
                    "requestId": a.request_id,
                    "status": a.status,
                    "success": a.success,
                    "error": a.error,
                    "authSent": a.auth_sent,
                    "at": a.at,
                }
                for a in self.attempts
            ],
        }


class Events:
    """The events and notifications services of one tenant, and the callout sender."""

    def __init__(self, config: SandboxConfig, count: Callable[[str, int], None]) -> None:
        self.config = config
        self.count = count
        self.triggers: dict[str, Trigger] = {}
        self.definitions: dict[str, Definition] = {}
        self.notifications: deque[Notification] = deque(maxlen=config.callout_history_limit)
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    # --- triggers ---------------------------------------------------------------------------

    def create_trigger(self, body: Any) -> Trigger:
        if not isinstance(body, dict):
            raise ValidationError("the body must be a JSON object")
        active = _flag(body, "active", default=None)
        base = _text(body, "baseObject", required=True, max_len=100, min_len=1)
        assert base is not None
        if not _BASE_OBJECT.match(base):
            raise ValidationError(f"baseObject {base!r} is not a valid object name")
        condition = _condition(body.get("condition"))
        description = _text(body, "description", required=False, max_len=1000)
        event = body.get("eventType")
        if not isinstance(event, dict):
            raise ValidationError("eventType is required: an object with name and displayName")
        name = _text(event, "name", required=True, max_len=200, min_len=1, where="eventType.")
        assert name is not None
        if not _EVENT_NAME.match(name):
            raise ValidationError("eventType.name must start with a letter and have no spaces")
        display = _text(
            event, "displayName", required=True, max_len=500, min_len=1, where="eventType."
        )
        event_description = _text(
            event, "description", required=False, max_len=1000, where="eventType."
        )
        namespace = event.get("namespace")
        if namespace not in (None, NAMESPACE):
            raise ValidationError(f"eventType.namespace must be {NAMESPACE}")
        if any(t.event_name == name for t in self.triggers.values()):
            raise ValidationError(f"an event trigger for event type {name} already exists")
        if len(self.triggers) >= MAX_TRIGGERS:
            raise ValidationError(f"at most {MAX_TRIGGERS} event triggers per tenant")
        trigger = Trigger(
            uuid.uuid4().hex,
            base,
            condition,
            description,
            name,
            str(display),
            event_description,
            active,
        )
        self.triggers[trigger.id] = trigger
        return trigger

    def update_trigger(self, trigger_id: str, body: Any) -> Trigger | None:
        trigger = self.triggers.get(trigger_id)
        if trigger is None:
            return None
        if not isinstance(body, dict):
            raise ValidationError("the body must be a JSON object")
        trigger_active = _flag(body, "active", default=None) if "active" in body else trigger.active
        condition = _condition(body["condition"]) if "condition" in body else trigger.condition
        description = (
            _text(body, "description", required=False, max_len=1000)
            if "description" in body
            else trigger.description
        )
        display, event_description = trigger.display_name, trigger.event_description
        event = body.get("eventType")
        if event is not None:
            if not isinstance(event, dict):
                raise ValidationError("eventType must be an object")
            if "name" in event and event["name"] != trigger.event_name:
                raise ValidationError("eventType.name cannot be changed")
            display = (
                _text(
                    event, "displayName", required=False, max_len=500, min_len=1, where="eventType."
                )
                or display
            )
            if "description" in event:
                event_description = _text(
                    event, "description", required=False, max_len=1000, where="eventType."
                )
        trigger.active, trigger.condition, trigger.description = (
            trigger_active,
            condition,
            description,
        )
        trigger.display_name, trigger.event_description = display, event_description
        return trigger

    def list_triggers(
        self, base_object: str | None, event_name: str | None, active: bool | None
    ) -> list[Trigger]:
        return [
            t
            for t in self.triggers.values()
            if (base_object is None or t.base_object == base_object)
            and (event_name is None or t.event_name == event_name)
            and (active is None or t.active == active)
        ]

    # --- notification definitions -------------------------------------------------------

    def create_definition(self, body: Any) -> Definition:
        stored, password, condition = self._check_definition(body, existing=None)
        definition = Definition(uuid.uuid4().hex, stored, password, condition)
        definition.body["id"] = definition.id
        self.definitions[definition.id] = definition
        return definition

    def update_definition(self, definition_id: str, body: Any) -> Definition | None:
        current = self.definitions.get(definition_id)
        if current is None:
            return None
        if not isinstance(body, dict):
            raise ValidationError("the body must be a JSON object")
        merged = {
            k: v
            for k, v in current.body.items()
            if k not in ("id", "createdBy", "createdOn", "updatedBy", "updatedOn")
        }
        if isinstance(merged.get("callout"), dict):
            callout = dict(merged["callout"])
            callout.pop("id", None)
            callout.pop("createdBy", None)
            callout.pop("updatedOn", None)
            if isinstance(callout.get("calloutAuth"), dict) and current.password is not None:
                callout["calloutAuth"] = dict(callout["calloutAuth"], password=current.password)
            merged["callout"] = callout
        for key, value in body.items():
            if (
                key == "callout"
                and isinstance(value, dict)
                and isinstance(merged.get("callout"), dict)
            ):
                merged["callout"] = {**merged["callout"], **value}
            else:
                merged[key] = value
        stored, password, condition = self._check_definition(merged, existing=current)
        stored["id"] = current.id
        stored["createdBy"], stored["createdOn"] = (
            current.body["createdBy"],
            current.body["createdOn"],
        )
        if isinstance(stored.get("callout"), dict) and isinstance(
            current.body.get("callout"), dict
        ):
            stored["callout"]["id"] = current.body["callout"]["id"]
        current.body, current.password, current.filter_condition = stored, password, condition
        return current

    def _check_definition(
        self, body: Any, existing: Definition | None
    ) -> tuple[dict[str, Any], str | None, jexl.Condition | None]:
        if not isinstance(body, dict):
            raise ValidationError("the body must be a JSON object")
        name = _text(body, "name", required=True, max_len=255, min_len=1)
        event_name = _text(body, "eventTypeName", required=True, max_len=200, min_len=1)
        namespace = body.get("eventTypeNamespace") or NAMESPACE
        if not isinstance(namespace, str):
            raise ValidationError("eventTypeNamespace must be a string")
        profile = body.get("communicationProfileId")
        for other in self.definitions.values():
            if (
                other is not existing
                and other.body["name"] == name
                and other.body.get("communicationProfileId") == profile
            ):
                raise ValidationError(f"a notification definition named {name!r} already exists")
        active = _flag(body, "active", default=True)
        callout_active = _flag(body, "calloutActive", default=False)
        email_active = _flag(body, "emailActive", default=False)
        description = _text(body, "description", required=False, max_len=255)
        callout_raw = body.get("callout")
        password = None
        callout: dict[str, Any] | None = None
        if callout_raw is not None or callout_active:
            if not isinstance(callout_raw, dict):
                raise ValidationError("callout is required when calloutActive is true")
            callout, password = self._check_callout(callout_raw)
        condition = None
        filter_rule = body.get("filterRule")
        if filter_rule is not None:
            if not isinstance(filter_rule, dict):
                raise ValidationError("filterRule must be an object")
            if filter_rule.get("condition"):
                condition = _condition(filter_rule["condition"])
        params = body.get("filterRuleParams")
        if params is not None and not (
            isinstance(params, dict) and all(isinstance(v, str) for v in params.values())
        ):
            raise ValidationError("filterRuleParams must map names to strings")
        now = _now_iso()
        stored: dict[str, Any] = {
            "id": None,
            "name": name,
            "description": description,
            "active": active,
            "eventTypeName": event_name,
            "eventTypeNamespace": namespace,
            "communicationProfileId": profile,
            "associatedAccount": body.get("associatedAccount"),
            "emailActive": email_active,
            "emailTemplateId": body.get("emailTemplateId"),
            "calloutActive": callout_active,
            "callout": callout,
            "filterRule": filter_rule,
            "filterRuleParams": params,
            "createdBy": SANDBOX_USER,
            "createdOn": now,
            "updatedBy": SANDBOX_USER,
            "updatedOn": now,
        }
        return stored, password, condition

    def _check_callout(self, raw: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        where = "callout."
        name = _text(raw, "name", required=True, max_len=255, min_len=1, where=where)
        event_name = _text(raw, "eventTypeName", required=True, max_len=200, min_len=1, where=where)
        url = _text(raw, "calloutBaseurl", required=True, max_len=1000, min_len=10, where=where)
        assert url is not None
        parts = urlsplit(url)
        if parts.scheme == "http":
            if not (self.config.callout_allow_http and _is_loopback(parts.hostname or "")):
                raise ValidationError("callout.calloutBaseurl must start with https://")
        elif parts.scheme != "https" or not parts.hostname:
            raise ValidationError("callout.calloutBaseurl must start with https://")
        method = raw.get("httpMethod")
        if method not in _HTTP_METHODS:
            raise ValidationError(f"callout.httpMethod must be one of {', '.join(_HTTP_METHODS)}")
        required_auth = _flag(raw, "requiredAuth", default=None, where=where)
        auth_raw = raw.get("calloutAuth")
        auth: dict[str, Any] | None = None
        password = None
        if auth_raw is not None:
            if not isinstance(auth_raw, dict):
                raise ValidationError("callout.calloutAuth must be an object")
            auth = {
                "username": _text(
                    auth_raw,
                    "username",
                    required=required_auth,
                    max_len=255,
                    where="callout.calloutAuth.",
                ),
                "password": None,
                "domain": _text(
                    auth_raw, "domain", required=False, max_len=255, where="callout.calloutAuth."
                ),
                "preemptive": _flag(
                    auth_raw, "preemptive", default=False, where="callout.calloutAuth."
                ),
            }
            password = _text(
                auth_raw,
                "password",
                required=required_auth,
                max_len=255,
                where="callout.calloutAuth.",
            )
            auth["password"] = password
        elif required_auth:
            raise ValidationError("callout.calloutAuth is required when requiredAuth is true")
        params = raw.get("calloutParams")
        if params is not None and not (
            isinstance(params, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in params.items())
        ):
            raise ValidationError("callout.calloutParams must map names to strings")
        content_type = raw.get("contentType", "APPLICATION_JSON")
        if content_type not in _CONTENT_TYPES:
            raise ValidationError(f"callout.contentType must be one of {', '.join(_CONTENT_TYPES)}")
        retry = _flag(raw, "calloutRetry", default=True, where=where)
        active = _flag(raw, "active", default=True, where=where)
        return {
            "id": uuid.uuid4().hex,
            "name": name,
            "description": _text(raw, "description", required=False, max_len=255, where=where),
            "eventTypeName": event_name,
            "calloutBaseurl": url,
            "httpMethod": method,
            "contentType": content_type,
            "requiredAuth": required_auth,
            "calloutAuth": auth,
            "calloutParams": params or {},
            "calloutRetry": retry,
            "active": active,
            "createdBy": SANDBOX_USER,
            "updatedOn": _now_iso(),
        }, password

    def list_definitions(self, event_name: str | None, profile: str | None) -> list[Definition]:
        return [
            d
            for d in self.definitions.values()
            if (event_name is None or d.event_name == event_name)
            and (profile is None or d.body.get("communicationProfileId") == profile)
        ]

    # --- firing -----------------------------------------------------------------------------

    def on_changes(self, changes: ChangeSet, account: Row | None, faults_drop: float) -> int:
        """Match a change set against the triggers and start its notifications.

        Returns how many notifications were started. Never waits for a delivery.
        """
        if not changes.changes or not self.triggers:
            return 0
        if faults_drop and random.random() < faults_drop:
            self.count("callouts_dropped", 1)
            return 0
        started = 0
        for change in self._visible(changes.changes):
            ctx = jexl.context_for(change.object_name, change.change_type, change.new, change.old)
            for trigger in list(self.triggers.values()):
                if not trigger.active or trigger.base_object != change.object_name:
                    continue
                if change.object_name == "RatePlan" and change.change_type == "INSERT":
                    continue  # Zuora does not support INSERT on RatePlan triggers
                if not trigger.condition.evaluate(ctx):
                    continue
                self.count("events_fired", 1)
                started += self._fire(trigger, change, ctx, account, changes.subscription_number)
        return started

    def _visible(self, changes: list[Change]) -> list[Change]:
        """The changes custom events see, per the amendment-event setting."""
        mode = self.config.amend_events
        inserts = any(
            c.object_name == "Subscription" and c.change_type == "INSERT" for c in changes
        )
        if not inserts or mode == "insert_and_update":
            return changes
        keep = "INSERT" if mode == "insert" else "UPDATE"
        return [c for c in changes if c.object_name != "Subscription" or c.change_type == keep]

    def _fire(
        self,
        trigger: Trigger,
        change: Change,
        ctx: dict[str, Any],
        account: Row | None,
        number: str,
    ) -> int:
        started = 0
        for definition in list(self.definitions.values()):
            body = definition.body
            callout = body.get("callout")
            if not (
                body["active"]
                and body["calloutActive"]
                and isinstance(callout, dict)
                and callout.get("active", True)
            ):
                continue
            if definition.event_name != trigger.event_name:
                continue
            if body.get("eventTypeNamespace", NAMESPACE) != NAMESPACE:
                continue
            if definition.filter_condition is not None and not definition.filter_condition.evaluate(
                ctx
            ):
                continue
            notification = self._build(definition, callout, trigger, change, account, number)
            self.notifications.append(notification)
            self.count("callouts_started", 1)
            self._spawn(self._deliver(notification))
            started += 1
        return started

    def _build(
        self,
        definition: Definition,
        callout: dict[str, Any],
        trigger: Trigger,
        change: Change,
        account: Row | None,
        number: str,
    ) -> Notification:
        values = self._merge_values(trigger, change, account)
        params = {
            name: self._render(template, values)
            for name, template in (callout.get("calloutParams") or {}).items()
        }
        method = str(callout["httpMethod"])
        url = self._render_url(str(callout["calloutBaseurl"]), values)
        form = callout.get("contentType") == "APPLICATION_FORM_URLENCODED"
        body: bytes | None = None
        query = ""
        if method in ("GET", "DELETE"):
            query = urlencode({k: "" if v is None else v for k, v in params.items()})
        elif form:
            body = urlencode({k: "" if v is None else v for k, v in params.items()}).encode()
        else:
            body = orjson.dumps(params)
        auth = callout.get("calloutAuth") or {}
        return Notification(
            id=uuid.uuid4().hex,
            definition_id=definition.id,
            event_name=trigger.event_name,
            subscription_number=number,
            method=method,
            url=url,
            body=body,
            query=query,
            content_type="application/x-www-form-urlencoded" if form else "application/json",
            username=auth.get("username") if callout.get("requiredAuth") else None,
            password=definition.password if callout.get("requiredAuth") else None,
            preemptive=bool(auth.get("preemptive")),
            retry=bool(callout.get("calloutRetry", True)),
            created=_now_iso(),
        )

    def _merge_values(
        self, trigger: Trigger, change: Change, account: Row | None
    ) -> dict[str, Any]:
        """Merge-field values by path: `Subscription.Name`, `Account.AccountNumber`, ..."""
        values: dict[str, Any] = {}
        current = change.new if change.new is not None else change.old or {}
        for name, value in current.items():
            values[f"{change.object_name}.{name}"] = value
        for name, value in (change.old or {}).items():
            values[f"{change.object_name}.{name}_old"] = value
        for name, value in (account or {}).items():
            values[f"Account.{name}"] = value
        values["Event.Name"] = values["Event.EventType"] = trigger.event_name
        values["Event.ChangeType"] = values["ChangeType"] = change.change_type
        values["Event.Timestamp"] = _now_iso()
        return values

    def _lookup(self, path: str, values: dict[str, Any]) -> tuple[bool, Any]:
        path = path.strip()
        if path.startswith("DataSource."):
            path = path[len("DataSource.") :]
        if path in values:
            return True, values[path]
        lowered = {k.lower(): v for k, v in values.items()}
        if path.lower() in lowered:
            return True, lowered[path.lower()]
        return False, None

    def _stringify(self, value: Any) -> str | None:
        if value is None:
            return None if self.config.callout_empty_as_null else ""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        text = str(value)
        if text == "" and self.config.callout_empty_as_null:
            return None
        return text

    def _render(self, template: str, values: dict[str, Any]) -> str | None:
        """A parameter value: a bare merge field, a `{{...}}` template, or literal text."""
        if "{{" not in template:
            found, value = self._lookup(template, values)
            return self._stringify(value) if found else template
        whole = _MERGE.fullmatch(template.strip())
        if whole:
            found, value = self._lookup(whole.group(1), values)
            return self._stringify(value) if found else template

        def one(match: re.Match[str]) -> str:
            found, value = self._lookup(match.group(1), values)
            if not found:
                return match.group(0)
            return self._stringify(value) or ""

        return _MERGE.sub(one, template)

    def _render_url(self, url: str, values: dict[str, Any]) -> str:
        def one(match: re.Match[str]) -> str:
            found, value = self._lookup(match.group(1), values)
            return str(value) if found and value is not None else ""

        return _MERGE.sub(one, url)

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- delivery ---------------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            timeout = self.config.callout_timeout_s
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
                follow_redirects=False,
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            )
        return self._client

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _deliver(self, note: Notification) -> None:
        jitter = self.config.callout_jitter_ms
        if jitter:
            await asyncio.sleep(random.uniform(0, jitter) / 1000)
        attempts = self.config.callout_max_attempts if note.retry else 1
        for number in range(1, attempts + 1):
            result = await self._attempt(note, number)
            note.attempts.append(result)
            if result.success:
                note.state = "delivered"
                self.count("callouts_delivered", 1)
                return
            self.count("callout_attempts_failed", 1)
            if not _retryable(result.status) or number == attempts:
                break
            await asyncio.sleep(self.config.callout_retry_interval_s)
        note.state = "failed"
        self.count("callouts_failed", 1)

    async def _attempt(self, note: Notification, number: int) -> Attempt:
        request_id = uuid.uuid4().hex
        headers = {
            "Content-Type": note.content_type,
            "Zuora-Request-Id": request_id,
            "Zuora-Notification-Id": note.id,
            "X-Amzn-Trace-Id": f"Root=1-{int(time.time()):08x}-{request_id[:24]}",
            "User-Agent": "Zuora-Callout (sandbox)",
        }
        url = note.url + (("&" if "?" in note.url else "?") + note.query if note.query else "")
        auth_header = None
        if note.username is not None and note.password is not None:
            token = base64.b64encode(f"{note.username}:{note.password}".encode()).decode()
            auth_header = f"Basic {token}"
        sent_auth = False
        self.count("callout_requests", 1)
        try:
            response = await asyncio.wait_for(
                self._send(note, url, headers, auth_header if note.preemptive else None),
                self.config.callout_timeout_s,
            )
            sent_auth = note.preemptive and auth_header is not None
            challenge = response.headers.get("www-authenticate", "")
            if (
                response.status_code == 401
                and auth_header is not None
                and not sent_auth
                and "basic" in challenge.lower()
                and "realm" in challenge.lower()
            ):
                # The challenge-response is the same request, so it keeps its request id.
                self.count("callout_requests", 1)
                response = await asyncio.wait_for(
                    self._send(note, url, headers, auth_header), self.config.callout_timeout_s
                )
                sent_auth = True
        except (TimeoutError, httpx.TimeoutException) as exc:
            return self._attempt_record(
                note, number, request_id, -1, str(exc) or "timed out", sent_auth, ""
            )
        except httpx.HTTPError as exc:
            return self._attempt_record(
                note, number, request_id, -2, f"{type(exc).__name__}: {exc}", sent_auth, ""
            )
        text = response.text[:60_000]
        success = response.status_code == 200
        error = None
        if success and self.config.callout_parse_response:
            success, error = _parsed_success(response)
        elif not success:
            error = f"HTTP {response.status_code}"
        return self._attempt_record(
            note, number, request_id, response.status_code, error, sent_auth, text, success=success
        )

    async def _send(
        self, note: Notification, url: str, headers: dict[str, str], auth: str | None
    ) -> httpx.Response:
        if auth is not None:
            headers = {**headers, "Authorization": auth}
        return await self._http().request(note.method, url, headers=headers, content=note.body)

    def _attempt_record(
        self,
        note: Notification,
        number: int,
        request_id: str,
        status: int,
        error: str | None,
        auth_sent: bool,
        response: str,
        *,
        success: bool = False,
    ) -> Attempt:
        return Attempt(
            note.id,
            number,
            request_id,
            note.method,
            note.url,
            status,
            success,
            error,
            auth_sent,
            _now_iso(),
            response,
        )

    def history(self) -> list[dict[str, Any]]:
        return [n.summary() for n in self.notifications]

    def callout_history(self) -> list[dict[str, Any]]:
        """Rows of `GET /v1/notification-history/callout` (one per attempt)."""
        out = []
        for note in self.notifications:
            for a in note.attempts:
                out.append(
                    {
                        "attemptedNum": str(a.attempt),
                        "createTime": a.at,
                        "eventCategory": note.event_name,
                        "eventContext": note.body.decode() if note.body else note.query,
                        "notification": note.definition_id,
                        "requestMethod": note.method,
                        "requestUrl": note.url,
                        "responseCode": str(a.status),
                        "responseContent": a.response,
                    }
                )
        return out


def _retryable(status: int) -> bool:
    """Zuora retries 1xx, 403, 408, 429, 5xx and connection failures (negative codes); a
    200 only fails when its content said so, and is then retried too."""
    return status < 0 or status < 200 or status in _RETRYABLE or status >= 500 or status == 200


def _parsed_success(response: httpx.Response) -> tuple[bool, str | None]:
    if "application/json" not in response.headers.get("content-type", ""):
        return True, None
    try:
        parsed = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return False, "the response is not valid JSON"
    if isinstance(parsed, dict) and parsed.get("success") is True:
        return True, None
    return False, "the response does not say success: true"
