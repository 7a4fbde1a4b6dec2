"""Set up (or check) the custom event and the callout in one Zuora tenant, idempotently.

1. Resolve the profile (`profiles.py`): base URL, callout URL, the tenant it must be.
2. Authenticate and check the token's `tenant.<id>` against the profile before anything
   else, failing closed; say which tenant is about to change.
3. Read the tenant's Subscription event triggers and its notification definitions, compare
   them with what they should be (`desired.py`), and create or update only what differs.
   Objects of ours that are no longer wanted (a shorter field list) are deactivated, not
   deleted, so their history stays readable in Zuora.
4. Optionally (`verify=True`, never in production) fire a test change and wait for it in the
   inbox (`verify.py`).

A dry run does steps 1 to 3 but sends no write: it reports each request it would send, with
the callout password redacted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from zuora.callout_setup import desired as want
from zuora.callout_setup.profiles import (
    ProfileError,
    Target,
    is_loopback_url,
    load_profiles,
    resolve,
)
from zuora.callout_setup.verify import VerifyResult, verify_callout
from zuora.client import ZuoraClient

TRIGGERS = "/events/event-triggers"
_WOULD = {"created": "would create", "updated": "would update", "deactivated": "would deactivate"}
DEFINITIONS = "/notifications/notification-definitions"


class SetupError(Exception):
    """Setup could not go ahead; nothing was changed unless the message says otherwise."""

    exit_code = 1


class SetupConfigError(SetupError):
    """Bad configuration or usage (exit code 2)."""

    exit_code = 2


class TenantMismatch(SetupConfigError):
    """The credentials belong to another tenant than the profile's."""


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: dict[str, Any]

    def render(self) -> str:
        return f"{self.method} {self.path}\n{json.dumps(self.body, indent=2)}"


@dataclass
class ObjectResult:
    kind: str  # "event trigger" or "notification definition"
    name: str
    action: str  # created, updated, deactivated, unchanged (with "would " in a dry run)
    id: str | None = None
    changes: list[str] = field(default_factory=list)
    request: Request | None = None


@dataclass
class SetupResult:
    profile: str
    description: str
    base_url: str
    callout_url: str
    tenant_id: str | None
    expected_tenant: str | None
    dry_run: bool
    tracked_fields: tuple[str, ...]
    objects: list[ObjectResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)
    verification: VerifyResult | None = None

    @property
    def changed(self) -> bool:
        return any(o.action != "unchanged" for o in self.objects) and not self.dry_run

    @property
    def ok(self) -> bool:
        return self.verification is None or self.verification.ok

    def render_text(self) -> str:
        lines = [f"warning: {w}" for w in self.warnings]
        guard = (
            f"checked against profile {self.profile}"
            if self.expected_tenant
            else "NOT checked: no expected tenant"
        )
        lines += [
            f"tenant {self.tenant_id or '?'} ({self.description}) at {self.base_url}: {guard}",
            f"callout URL: {self.callout_url} (from {self.sources.get('callout_url', '?')})",
            f"tracked fields: {', '.join(self.tracked_fields)}",
        ]
        if self.dry_run:
            lines.append("dry run: nothing was sent; these are the requests a real run sends")
        for obj in self.objects:
            what = f"{obj.kind} {obj.name}: {obj.action}"
            if obj.id:
                what += f" (id {obj.id})"
            if obj.changes and obj.action != "unchanged":
                what += f" [{', '.join(obj.changes)}]"
            lines.append(what)
            if self.dry_run and obj.request is not None:
                lines.extend("    " + line for line in obj.request.render().splitlines())
        if not self.dry_run:
            lines.append(
                "changed the tenant" if self.changed else "nothing to change: already set up"
            )
        if self.verification is not None:
            lines.append(self.verification.render_text())
        return "\n".join(lines)


def _credentials(settings: Any, target: Target) -> want.Credentials | None:
    if settings.CALLOUT_USERNAME is not None and settings.CALLOUT_PASSWORD is not None:
        return want.Credentials(
            settings.CALLOUT_USERNAME.get_secret_value(),
            settings.CALLOUT_PASSWORD.get_secret_value(),
        )
    if is_loopback_url(target.callout_url):
        return None
    raise SetupConfigError(
        "set CALLOUT_USERNAME and CALLOUT_PASSWORD (the webhook's Basic auth) in the "
        "environment: Zuora's callout must present them"
    )


def _check_inbox(settings: Any) -> None:
    """`--verify` watches the webhook's inbox: make sure it can, before changing anything."""
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from warehouse.db import make_engine
    from warehouse.models import inbox

    engine = make_engine(settings.DATABASE_URL, pool_size=1)
    try:
        with engine.connect() as conn:
            conn.execute(select(inbox.c.id).limit(1)).all()
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise SetupConfigError(
            f"--verify reads callout_inbox in DATABASE_URL ({settings.database_url_masked}), "
            f"the webhook's database, and cannot: {reason}"
        ) from None
    finally:
        engine.dispose()


def _production_tenants(settings: Any) -> set[str]:
    profiles = load_profiles(settings.ZUORA_PROFILES_FILE)
    return {p.tenant_id for p in profiles.values() if p.production and p.tenant_id}


async def setup_callout(
    settings: Any,
    *,
    env: str,
    callout_url: str | None = None,
    dry_run: bool = False,
    client: ZuoraClient | None = None,
    verify: bool = False,
    verify_timeout: float = 120.0,
    echo: Callable[[str], None] | None = None,
) -> SetupResult:
    """Create or update the custom event trigger(s) and callout(s) of profile `env`.

    Raises `SetupConfigError` (bad configuration, wrong tenant: nothing changed),
    `SetupError` (a conflict in the tenant) or `ZuoraError` (Zuora refused a request).
    """
    say = echo or (lambda _line: None)
    if verify and dry_run:
        raise SetupConfigError("--verify makes a real change; it cannot go with --dry-run")
    try:
        target = resolve(settings, env, callout_url, base_url=client.base_url if client else None)
    except ProfileError as exc:
        raise SetupConfigError(str(exc)) from None
    if verify and target.production:
        raise SetupConfigError(
            f"--verify edits a subscription; it is refused against production ({env})"
        )
    credentials = _credentials(settings, target)
    try:
        pairs = want.desired(settings.ZUORA_TRACKED_FIELDS, target.callout_url, credentials)
    except ValueError as exc:
        raise SetupConfigError(str(exc)) from None
    if verify:
        _check_inbox(settings)

    zuora = client or ZuoraClient(
        target.base_url,
        settings.ZUORA_CLIENT_ID.get_secret_value(),
        settings.ZUORA_CLIENT_SECRET.get_secret_value(),
        max_concurrency=min(4, settings.ZUORA_MAX_CONCURRENCY),
    )
    try:
        result = await _run(settings, zuora, target, pairs, dry_run=dry_run, verify=verify, say=say)
        if verify:
            say("verifying: editing a tracked field and waiting for its callout ...")
            result.verification = await verify_callout(
                settings, zuora, callout_url=target.callout_url, timeout=verify_timeout
            )
        return result
    finally:
        if client is None:
            await zuora.aclose()


async def _run(
    settings: Any,
    zuora: ZuoraClient,
    target: Target,
    pairs: list[tuple[want.DesiredTrigger, want.DesiredDefinition]],
    *,
    dry_run: bool,
    verify: bool,
    say: Callable[[str], None],
) -> SetupResult:
    info = await zuora.authenticate()
    tenant = info.tenant_id
    if target.expected_tenant is not None and tenant != target.expected_tenant:
        found = f"tenant {tenant}" if tenant else "no tenant (the token's scope names none)"
        raise TenantMismatch(
            f"the Zuora credentials belong to {found} at {zuora.base_url}, but profile "
            f"{target.profile} is tenant {target.expected_tenant}; nothing was changed"
        )
    if verify and (target.production or (tenant and tenant in _production_tenants(settings))):
        raise SetupConfigError(
            f"--verify edits a subscription; tenant {tenant} is a production tenant, so it is "
            "refused; nothing was changed"
        )
    result = SetupResult(
        profile=target.profile,
        description=target.description,
        base_url=zuora.base_url,
        callout_url=target.callout_url,
        tenant_id=tenant,
        expected_tenant=target.expected_tenant,
        dry_run=dry_run,
        tracked_fields=tuple(settings.ZUORA_TRACKED_FIELDS),
        warnings=list(target.warnings),
        sources=dict(target.sources),
    )
    say(
        f"tenant {tenant or '?'} ({target.description}) at {zuora.base_url}: "
        + ("dry run, nothing will be sent" if dry_run else "about to change")
    )

    triggers = {
        str((t.get("eventType") or {}).get("name")): t
        for t in await zuora.list_event_triggers(baseObject=want.BASE_OBJECT)
    }
    definitions = {str(d.get("name")): d for d in await zuora.list_notification_definitions()}
    wanted_events = {t.event_name for t, _ in pairs}

    async def send(
        obj: ObjectResult, method: str, path: str, body: dict[str, Any], redacted: dict[str, Any]
    ) -> dict[str, Any] | None:
        obj.request = Request(method, path, redacted)
        if dry_run:
            obj.action = _WOULD[obj.action]
            return None
        doc = await zuora.request(method, path, json=body, idempotent=method == "PUT")
        say(f"{obj.kind} {obj.name}: {obj.action}")
        return doc if isinstance(doc, dict) else None

    for trigger, definition in pairs:
        result.objects.append(await _trigger(trigger, triggers.get(trigger.event_name), send))
        result.objects.append(await _definition(definition, definitions.get(definition.name), send))
    for name, current in sorted(triggers.items()):
        if want.EVENT_NAME_RE.match(name) and name not in wanted_events:
            result.objects.extend(
                await _retire(name, current, definitions.get(want.DEFINITION_PREFIX + name), send)
            )
    return result


Send = Callable[..., Any]


async def _trigger(
    trigger: want.DesiredTrigger, current: dict[str, Any] | None, send: Send
) -> ObjectResult:
    obj = ObjectResult("event trigger", trigger.event_name, "created")
    if current is None:
        body = trigger.create_body()
        doc = await send(obj, "POST", TRIGGERS, body, body)
        obj.id = doc.get("id") if doc else None
        return obj
    obj.id = str(current.get("id"))
    obj.changes = trigger.differences(current)
    if current.get("baseObject") != want.BASE_OBJECT:
        raise SetupError(
            f"event type {trigger.event_name} already belongs to a trigger on "
            f"{current.get('baseObject')}; delete that trigger or rename it"
        )
    if not obj.changes:
        obj.action = "unchanged"
        return obj
    obj.action = "updated"
    body = trigger.update_body()
    await send(obj, "PUT", f"{TRIGGERS}/{quote(obj.id, safe='')}", body, body)
    return obj


async def _definition(
    definition: want.DesiredDefinition, current: dict[str, Any] | None, send: Send
) -> ObjectResult:
    obj = ObjectResult("notification definition", definition.name, "created")
    if current is None:
        doc = await send(
            obj,
            "POST",
            DEFINITIONS,
            definition.body(for_create=True, salt=None, redact=False),
            definition.body(for_create=True, salt=None, redact=True),
        )
        obj.id = doc.get("id") if doc else None
        return obj
    obj.id = str(current.get("id"))
    if current.get("eventTypeName") != definition.event_name:
        raise SetupError(
            f"a notification definition named {definition.name!r} already listens to "
            f"{current.get('eventTypeName')}; delete or rename it, then run again"
        )
    obj.changes = definition.differences(current)
    if not obj.changes:
        obj.action = "unchanged"
        return obj
    obj.action = "updated"
    salt = want.existing_salt(current.get("description"))
    await send(
        obj,
        "PUT",
        f"{DEFINITIONS}/{quote(obj.id, safe='')}",
        definition.body(for_create=False, salt=salt, redact=False),
        definition.body(for_create=False, salt=salt, redact=True),
    )
    return obj


async def _retire(
    name: str, trigger: dict[str, Any], definition: dict[str, Any] | None, send: Send
) -> list[ObjectResult]:
    """Switch off an event of ours that the tracked fields no longer need."""
    done = []
    for kind, current, path in (
        ("event trigger", trigger, TRIGGERS),
        ("notification definition", definition, DEFINITIONS),
    ):
        if current is None:
            continue
        label = name if kind == "event trigger" else want.DEFINITION_PREFIX + name
        obj = ObjectResult(kind, label, "deactivated", id=str(current.get("id")))
        if current.get("active") is False:
            obj.action = "unchanged"
        else:
            obj.changes = ["active"]
            body = {"active": False}
            await send(obj, "PUT", f"{path}/{quote(str(obj.id), safe='')}", body, body)
        done.append(obj)
    return done
