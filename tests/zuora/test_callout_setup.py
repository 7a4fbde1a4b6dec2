"""Tenant setup as code against the real sandbox: idempotence, updates, dry run, the tenant
guard, profiles, and callouts that the real webhook accepts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.sandbox import SandboxFactory, authorized_client
from tests.flows.test_end_to_end import edit_in_zuora
from tests.sandbox.sdk_check import check_model, sdk_model
from tests.webhook.conftest import PASSWORD, USER, Live, running_webhook
from zuora.callout_setup import (
    SetupConfigError,
    SetupError,
    SetupResult,
    TenantMismatch,
    setup_callout,
)
from zuora.callout_setup.desired import MAX_CONDITION, REDACTED
from zuora.callout_setup.profiles import CALLOUT_PATH
from zuora.sandbox.server import RunningSandbox
from zuora_sync.settings import Settings, load_settings

TRACKED = ("SupportTier__c", "SeatOverride__c", "ContractOwner__c")
HOOK = "http://127.0.0.1:9/zuora-sync"  # loopback: the sandbox may call plain http there


def settings_for(sandbox: RunningSandbox, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "ZUORA_BASE_URL": sandbox.base_url,
        "ZUORA_CLIENT_ID": sandbox.client_id,
        "ZUORA_CLIENT_SECRET": sandbox.client_secret,
        "ZUORA_TRACKED_FIELDS": ",".join(TRACKED),
        "CALLOUT_USERNAME": USER,
        "CALLOUT_PASSWORD": PASSWORD,
        "CALLOUT_URL": HOOK,
    }
    values.update(overrides)
    return load_settings(**values)


def run(settings: Settings, env: str = "dev", **kwargs: Any) -> SetupResult:
    return asyncio.run(setup_callout(settings, env=env, **kwargs))


def actions(result: SetupResult) -> dict[str, str]:
    return {f"{o.kind}: {o.name}": o.action for o in result.objects}


def writes(sandbox: RunningSandbox) -> dict[str, int]:
    """API requests that could change the tenant's events or notifications."""
    counted = sandbox.admin.counters()["requests"]
    return {
        key: n
        for key, n in counted.items()
        if key.split()[0] in ("POST", "PUT", "DELETE") and "/oauth/" not in key
    }


def tenant_state(sandbox: RunningSandbox) -> tuple[list[Any], list[Any]]:
    with authorized_client(sandbox) as api:
        triggers = api.get("/events/event-triggers", params={"limit": 100}).json()["data"]
        definitions = api.get(
            "/notifications/notification-definitions", params={"limit": 100}
        ).json()["data"]
    return triggers, definitions


TRIGGER = "event trigger: ZuoraSyncTrackedFieldsChanged"
DEFINITION = "notification definition: zuora-sync ZuoraSyncTrackedFieldsChanged"


def test_first_run_creates_and_a_second_run_changes_nothing(sandbox: RunningSandbox) -> None:
    settings = settings_for(sandbox)
    first = run(settings)
    assert actions(first) == {TRIGGER: "created", DEFINITION: "created"}
    assert first.tenant_id == "10000719" and first.expected_tenant == "10000719"
    assert first.changed and "changed the tenant" in first.render_text()

    triggers, definitions = tenant_state(sandbox)
    assert len(triggers) == 1 and len(definitions) == 1
    trigger, definition = triggers[0], definitions[0]
    assert trigger["baseObject"] == "Subscription" and trigger["active"] is True
    assert trigger["condition"] == (
        "changeType == 'UPDATE' && (Subscription.SupportTier__c != Subscription.SupportTier__c_old"
        " || Subscription.SeatOverride__c != Subscription.SeatOverride__c_old"
        " || Subscription.ContractOwner__c != Subscription.ContractOwner__c_old)"
    )
    callout = definition["callout"]
    assert definition["eventTypeName"] == trigger["eventType"]["name"]
    assert definition["calloutActive"] is True and callout["calloutRetry"] is True
    assert callout["calloutBaseurl"] == f"{HOOK}{CALLOUT_PATH}"
    assert callout["requiredAuth"] is True
    assert callout["calloutAuth"]["username"] == USER
    assert callout["calloutAuth"]["preemptive"] is True
    assert PASSWORD not in str(definition)  # neither Zuora's answer nor our description holds it

    before = writes(sandbox)
    second = run(settings)
    assert actions(second) == {TRIGGER: "unchanged", DEFINITION: "unchanged"}
    assert not second.changed and "nothing to change: already set up" in second.render_text()
    assert writes(sandbox) == before
    assert tenant_state(sandbox) == (triggers, definitions)


def test_a_change_of_fields_url_or_password_updates_only_what_it_touches(
    sandbox: RunningSandbox,
) -> None:
    run(settings_for(sandbox))
    (trigger_id,), (definition_id,) = ([t["id"] for t in x] for x in tenant_state(sandbox))

    fewer = run(settings_for(sandbox, ZUORA_TRACKED_FIELDS="SupportTier__c,SeatOverride__c"))
    assert actions(fewer) == {TRIGGER: "updated", DEFINITION: "updated"}
    changes = {o.kind: o.changes for o in fewer.objects}
    assert changes["event trigger"] == ["condition", "description"]
    assert changes["notification definition"] == ["callout.calloutParams"]
    triggers, definitions = tenant_state(sandbox)
    assert [t["id"] for t in triggers] == [trigger_id]  # updated in place, not replaced
    assert [d["id"] for d in definitions] == [definition_id]
    assert "ContractOwner__c" not in triggers[0]["condition"]
    assert "ContractOwner__c" not in definitions[0]["callout"]["calloutParams"]

    moved = run(
        settings_for(sandbox, ZUORA_TRACKED_FIELDS="SupportTier__c,SeatOverride__c"),
        callout_url="http://localhost:8000",
    )
    assert actions(moved) == {TRIGGER: "unchanged", DEFINITION: "updated"}
    assert moved.objects[1].changes == ["callout.calloutBaseurl"]
    assert moved.sources["callout_url"] == "--callout-url"

    rotated = run(
        settings_for(
            sandbox,
            ZUORA_TRACKED_FIELDS="SupportTier__c,SeatOverride__c",
            CALLOUT_PASSWORD="a-new-secret",
            CALLOUT_URL="http://localhost:8000",
        )
    )
    assert actions(rotated) == {TRIGGER: "unchanged", DEFINITION: "updated"}
    assert rotated.objects[1].changes == ["credentials"]
    again = run(
        settings_for(
            sandbox,
            ZUORA_TRACKED_FIELDS="SupportTier__c,SeatOverride__c",
            CALLOUT_PASSWORD="a-new-secret",
            CALLOUT_URL="http://localhost:8000",
        )
    )
    assert not again.changed


def test_a_dry_run_sends_nothing_and_shows_every_request_without_the_password(
    sandbox: RunningSandbox,
) -> None:
    settings = settings_for(sandbox)
    planned = run(settings, dry_run=True)
    assert actions(planned) == {TRIGGER: "would create", DEFINITION: "would create"}
    assert writes(sandbox) == {} and tenant_state(sandbox) == ([], [])
    text = planned.render_text()
    assert "dry run: nothing was sent" in text
    assert "POST /events/event-triggers" in text
    assert "POST /notifications/notification-definitions" in text
    assert PASSWORD not in text and REDACTED in text

    run(settings)
    planned = run(settings_for(sandbox, CALLOUT_URL="http://localhost:8000"), dry_run=True)
    assert actions(planned) == {TRIGGER: "unchanged", DEFINITION: "would update"}
    assert "PUT /notifications/notification-definitions/" in planned.render_text()
    assert tenant_state(sandbox)[1][0]["callout"]["calloutBaseurl"].startswith(HOOK)


def test_the_bodies_are_what_the_official_sdk_models_describe(sandbox: RunningSandbox) -> None:
    created = run(settings_for(sandbox), dry_run=True)
    bodies = {o.kind: o.request.body for o in created.objects if o.request}
    assert check_model(sdk_model("PostEventTriggerRequest"), bodies["event trigger"]) == []
    assert (
        check_model(
            sdk_model("PostPublicNotificationDefinitionRequest"),
            bodies["notification definition"],
        )
        == []
    )
    run(settings_for(sandbox))
    updated = run(
        settings_for(sandbox, ZUORA_TRACKED_FIELDS="SupportTier__c"), dry_run=True
    ).objects
    bodies = {o.kind: o.request.body for o in updated if o.request}
    assert check_model(sdk_model("PutEventTriggerRequest"), bodies["event trigger"]) == []
    assert (
        check_model(
            sdk_model("PutPublicNotificationDefinitionRequest"),
            bodies["notification definition"],
        )
        == []
    )
    triggers, definitions = tenant_state(sandbox)
    assert check_model(sdk_model("EventTrigger"), triggers[0]) == []
    assert check_model(sdk_model("GetPublicNotificationDefinitionResponse"), definitions[0]) == []


def test_credentials_of_another_tenant_are_refused_and_nothing_changes(
    sandbox_factory: SandboxFactory,
) -> None:
    staging = sandbox_factory(tenant_id="10000796")
    with pytest.raises(TenantMismatch) as refused:
        run(settings_for(staging), env="dev")
    assert str(refused.value) == (
        f"the Zuora credentials belong to tenant 10000796 at {staging.base_url}, but profile "
        "dev is tenant 10000719; nothing was changed"
    )
    assert writes(staging) == {} and tenant_state(staging) == ([], [])
    with pytest.raises(TenantMismatch):
        run(settings_for(staging), env="production")
    assert run(settings_for(staging), env="staging").tenant_id == "10000796"


def test_an_unknown_profile_needs_an_expected_tenant_unless_it_is_a_local_sandbox(
    sandbox: RunningSandbox,
) -> None:
    remote = settings_for(sandbox, ZUORA_BASE_URL="https://rest.apisandbox.zuora.com")
    with pytest.raises(SetupConfigError, match="set ZUORA_TENANT_ID"):
        run(remote, env="eu-trial")
    with pytest.raises(TenantMismatch):
        run(settings_for(sandbox, ZUORA_TENANT_ID="12345"), env="eu-trial")
    with pytest.raises(SetupConfigError, match="contradicts profile dev"):
        run(settings_for(sandbox, ZUORA_TENANT_ID="12345"), env="dev")
    assert writes(sandbox) == {}

    local = run(settings_for(sandbox), env="local")
    assert local.expected_tenant is None and local.changed
    assert any("tenant check is skipped for this local sandbox" in w for w in local.warnings)
    assert "NOT checked" in local.render_text()
    checked = run(settings_for(sandbox, ZUORA_TENANT_ID="10000719"), env="local")
    assert checked.expected_tenant == "10000719" and not checked.changed


def test_configuration_mistakes_are_one_clear_error(sandbox: RunningSandbox) -> None:
    with pytest.raises(SetupConfigError, match="no callout URL for profile dev"):
        run(settings_for(sandbox, CALLOUT_URL=None))
    with pytest.raises(SetupConfigError, match="must start with https://"):
        run(settings_for(sandbox, CALLOUT_URL="http://zuora-sync.example.com"))
    with pytest.raises(SetupConfigError, match="set CALLOUT_USERNAME and CALLOUT_PASSWORD"):
        run(
            settings_for(
                sandbox,
                CALLOUT_USERNAME=None,
                CALLOUT_PASSWORD=None,
                CALLOUT_URL="https://zuora-sync.example.com",
            )
        )
    with pytest.raises(SetupConfigError, match="cannot go with --dry-run"):
        run(settings_for(sandbox), verify=True, dry_run=True)
    with pytest.raises(SetupConfigError, match="refused against production"):
        run(settings_for(sandbox), env="production", verify=True)
    assert writes(sandbox) == {}


def test_verify_is_refused_in_a_production_tenant_whatever_the_profile_is_called(
    sandbox_factory: SandboxFactory, sqlite_url: str
) -> None:
    prod = sandbox_factory(tenant_id="6165")
    settings = settings_for(prod, ZUORA_TENANT_ID="6165", DATABASE_URL=sqlite_url)
    with pytest.raises(SetupConfigError, match="6165 is a production tenant"):
        run(settings, env="prod-copy", verify=True)
    assert writes(prod) == {}


def test_verify_needs_the_webhooks_inbox_before_it_changes_anything(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    settings = settings_for(sandbox, DATABASE_URL=f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(SetupConfigError, match="no such table: callout_inbox"):
        run(settings, verify=True)
    assert writes(sandbox) == {}


def test_a_profiles_file_sets_callout_urls_and_new_tenants(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    profiles = tmp_path / "zuora-tenants.toml"
    profiles.write_text(
        '[dev]\ncallout_url = "http://127.0.0.1:7000/"\n\n'
        '[eu-trial]\ntenant_id = "10000719"\ndescription = "EU trial"\n'
    )
    settings = settings_for(sandbox, CALLOUT_URL=None, ZUORA_PROFILES_FILE=str(profiles))
    dev = run(settings, dry_run=True)
    assert dev.callout_url == f"http://127.0.0.1:7000{CALLOUT_PATH}"
    assert dev.sources["callout_url"] == "profile dev"
    with pytest.raises(SetupConfigError, match="no callout URL for profile eu-trial"):
        run(settings, env="eu-trial")
    trial = run(settings, env="eu-trial", callout_url=HOOK)
    assert trial.expected_tenant == "10000719" and trial.description == "EU trial"

    profiles.write_text('[staging]\ntenant_id = "6165"\n')
    with pytest.raises(SetupConfigError, match="contradicts the built-in staging tenant"):
        run(settings, env="staging")
    profiles.write_text("[staging]\ncallout = 1\n")
    with pytest.raises(SetupConfigError, match="unknown key"):
        run(settings, env="staging")


def test_a_long_field_list_is_split_over_triggers_and_a_shorter_one_retires_them(
    sandbox: RunningSandbox,
) -> None:
    many = tuple(f"{'Field' + str(i):A<58}__c" for i in range(45))
    result = run(settings_for(sandbox, ZUORA_TRACKED_FIELDS=",".join(many)))
    triggers, definitions = tenant_state(sandbox)
    assert len(triggers) == len(definitions) > 1
    assert all(len(t["condition"]) <= MAX_CONDITION for t in triggers)
    covered = [f for t in triggers for f in many if f"Subscription.{f} !=" in t["condition"]]
    assert sorted(covered) == sorted(many)
    assert all(o.action == "created" for o in result.objects)

    shorter = run(settings_for(sandbox))
    retired = [o for o in shorter.objects if o.action == "deactivated"]
    assert len(retired) == 2 * (len(triggers) - 1)
    triggers, definitions = tenant_state(sandbox)
    assert sum(t["active"] for t in triggers) == 1
    assert sum(d["active"] for d in definitions) == 1
    assert not run(settings_for(sandbox)).changed

    grown = run(settings_for(sandbox, ZUORA_TRACKED_FIELDS=",".join(many)))
    assert {o.action for o in grown.objects} == {"updated"}  # back on, in place
    triggers, definitions = tenant_state(sandbox)
    assert all(t["active"] for t in triggers) and all(d["active"] for d in definitions)
    assert len(triggers) == len(definitions) == len(retired) // 2 + 1


def test_a_definition_of_ours_bound_to_another_event_is_reported_not_overwritten(
    sandbox: RunningSandbox,
) -> None:
    with authorized_client(sandbox) as api:
        api.post(
            "/events/event-triggers",
            json={
                "active": True,
                "baseObject": "Subscription",
                "condition": "changeType == 'INSERT'",
                "eventType": {"name": "SomethingElse", "displayName": "Something else"},
            },
        ).raise_for_status()
        api.post(
            "/notifications/notification-definitions",
            json={
                "name": "zuora-sync ZuoraSyncTrackedFieldsChanged",
                "eventTypeName": "SomethingElse",
            },
        ).raise_for_status()
    with pytest.raises(SetupError, match="already listens to SomethingElse"):
        run(settings_for(sandbox))
    _, definitions = tenant_state(sandbox)
    assert [d["eventTypeName"] for d in definitions] == ["SomethingElse"]


# --- with the real webhook on PostgreSQL -----------------------------------------------------


@pytest.fixture
def webhook(pg_url: str) -> Iterator[Live]:
    with running_webhook(pg_url) as live:
        yield live


def test_verify_fires_a_change_and_finds_its_row_in_the_inbox(
    sandbox: RunningSandbox, webhook: Live, pg_url: str
) -> None:
    settings = settings_for(sandbox, CALLOUT_URL=webhook.url, DATABASE_URL=pg_url)
    result = run(settings, verify=True, verify_timeout=30)
    assert result.verification is not None and result.verification.ok, result.render_text()
    number = result.verification.subscription
    row = next(r for r in webhook.rows() if r.id == result.verification.inbox_id)
    assert row.subscription_number == number and row.source == "callout"
    assert row.payload["fields"]["SupportTier__c"].startswith("zs-verify-")
    assert "verified: the edit of SupportTier__c" in result.render_text()
    # The field was put back, which is a change (and a callout) of its own.
    with authorized_client(sandbox) as api:
        restored = api.get(f"/v1/subscriptions/{number}").json()["SupportTier__c"]
    assert not str(restored).startswith("zs-verify-")


def test_verify_says_why_when_no_callout_arrives(
    sandbox: RunningSandbox, webhook: Live, pg_url: str
) -> None:
    # The tenant is told another password than the webhook's: every attempt gets a 401.
    result = run(
        settings_for(
            sandbox, CALLOUT_URL=webhook.url, DATABASE_URL=pg_url, CALLOUT_PASSWORD="not-it"
        ),
        verify=True,
        verify_timeout=3,
    )
    assert result.verification is not None and not result.verification.ok
    assert "no callout for" in result.verification.detail
    assert "answered: 401" in result.verification.detail
    assert not result.ok


def test_the_callouts_it_sets_up_carry_what_the_webhook_reads(
    sandbox: RunningSandbox, webhook: Live, pg_url: str
) -> None:
    run(settings_for(sandbox, CALLOUT_URL=webhook.url, DATABASE_URL=pg_url))
    edit_in_zuora(sandbox, "A-S00000004", {"SeatOverride__c": "42", "ContractOwner__c": "ann"})
    sandbox.admin.edit_custom_fields("A-S00000005", {"SeatOverride__c": "7"})  # no event
    with authorized_client(sandbox) as api:
        expected = api.get("/v1/subscriptions/A-S00000004").json()
    rows = _wait_rows(webhook, 1, 20)
    assert len(rows) == 1
    fields = rows[0].payload["fields"]
    assert fields["SubscriptionNumber"] == "A-S00000004"
    assert fields["SubscriptionId"] == expected["id"]
    assert fields["Version"] == expected["version"]
    assert fields["AccountNumber"] == expected["accountNumber"]
    assert fields["AccountId"] == expected["accountId"]
    assert fields["EventType"] == "ZuoraSyncTrackedFieldsChanged"
    assert (fields["SeatOverride__c"], fields["ContractOwner__c"]) == ("42", "ann")
    (sent,) = sandbox.admin.callouts()
    assert sent["state"] == "delivered"
    # Preemptive Basic auth: one request, accepted at once.
    assert [(a["status"], a["authSent"]) for a in sent["attempts"]] == [(200, True)]
    assert rows[0].dedup_key == f"callout:{sent['notificationId']}"


def _wait_rows(webhook: Live, count: int, seconds: float) -> list[Any]:
    deadline = time.monotonic() + seconds
    while len(webhook.rows()) < count:
        assert time.monotonic() < deadline, "the callout never reached the inbox"
        time.sleep(0.05)
    return webhook.rows()


# --- the command line ------------------------------------------------------------------------


def cli(sandbox: RunningSandbox, *args: str, **env: str) -> Any:
    from tests.test_cli import run as run_cli

    base = {
        "ZUORA_BASE_URL": sandbox.base_url,
        "ZUORA_CLIENT_ID": sandbox.client_id,
        "ZUORA_CLIENT_SECRET": sandbox.client_secret,
        "CALLOUT_USERNAME": USER,
        "CALLOUT_PASSWORD": PASSWORD,
    }
    return run_cli("zuora", "setup-callout", *args, env={**base, **env})


def test_the_command_plans_then_creates(sandbox: RunningSandbox) -> None:
    planned = cli(sandbox, "--env", "dev", "--callout-url", HOOK, "--dry-run")
    assert planned.returncode == 0, planned.stderr
    assert "would create" in planned.stdout and REDACTED in planned.stdout
    assert "tenant 10000719 (Zuora Central Sandbox 2)" in planned.stderr
    assert "dry run, nothing will be sent" in planned.stderr
    assert tenant_state(sandbox) == ([], [])

    created = cli(sandbox, "--env", "dev", "--callout-url", HOOK)
    assert created.returncode == 0, created.stderr
    assert "about to change" in created.stderr and "changed the tenant" in created.stdout
    for output in (planned, created):
        assert PASSWORD not in output.stdout + output.stderr


def test_the_command_refuses_another_tenant_with_one_line_and_exit_2(
    sandbox: RunningSandbox,
) -> None:
    result = cli(sandbox, "--env", "staging", "--callout-url", HOOK)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"zuora-sync: the Zuora credentials belong to tenant 10000719 at {sandbox.base_url}, "
        "but profile staging is tenant 10000796; nothing was changed"
    ]
    assert result.stdout == "" and writes(sandbox) == {}


def test_the_command_says_when_zuora_refuses_the_credentials(sandbox: RunningSandbox) -> None:
    result = cli(sandbox, "--env", "dev", "--callout-url", HOOK, ZUORA_CLIENT_SECRET="wrong-secret")
    assert result.returncode == 2
    assert result.stderr.startswith("zuora-sync: Zuora refused the credentials: POST /oauth/token")
    assert "wrong-secret" not in result.stderr


async def test_a_callers_own_client_decides_where_setup_goes(sandbox: RunningSandbox) -> None:
    """As the demo calls it: default settings, a client of the sandbox it started."""
    from zuora.client import ZuoraClient

    settings = load_settings(CALLOUT_USERNAME=USER, CALLOUT_PASSWORD=PASSWORD)
    async with ZuoraClient(sandbox.base_url, sandbox.client_id, sandbox.client_secret) as zuora:
        result = await setup_callout(settings, env="dev", callout_url=HOOK, client=zuora)
        again = await setup_callout(settings, env="dev", callout_url=HOOK, client=zuora)
    assert result.base_url == sandbox.base_url and result.tenant_id == "10000719"
    assert result.sources["base_url"] == "the caller's client"
    assert result.changed and not again.changed
    assert PASSWORD not in repr(result)
    from zuora.callout_setup.desired import Credentials, desired

    assert PASSWORD not in repr(desired(TRACKED, HOOK, Credentials(USER, PASSWORD)))
