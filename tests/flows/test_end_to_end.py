"""The push path end to end: a Zuora admin edits a custom field, the tenant's custom event
fires a real callout into the real webhook, the drain takes it into the cache."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from tests.flows.test_drain import drain, statuses
from tests.webhook.conftest import PASSWORD, USER, Live, running_webhook
from warehouse.models import subscriptions
from warehouse.verify import cache_differences
from zuora.client import ZuoraClient
from zuora.limiter import AdaptiveLimiter
from zuora.sandbox.server import RunningSandbox

TRACKED = ("SupportTier__c", "SeatOverride__c", "ContractOwner__c")


async def enable_callout(sandbox: RunningSandbox, url: str) -> None:
    """What the tenant setup does, by hand: a custom event and a callout to the webhook."""
    changed = " || ".join(f"Subscription.{f} != Subscription.{f}_old" for f in TRACKED)
    async with ZuoraClient(
        sandbox.base_url, sandbox.client_id, sandbox.client_secret, limiter=AdaptiveLimiter(2)
    ) as zuora:
        await zuora.create_event_trigger(
            {
                "active": True,
                "baseObject": "Subscription",
                "condition": f"changeType == 'UPDATE' && ({changed})",
                "eventType": {
                    "name": "TrackedFieldChanged",
                    "displayName": "Tracked field changed",
                },
            }
        )
        await zuora.create_notification_definition(
            {
                "name": "zuora-sync",
                "eventTypeName": "TrackedFieldChanged",
                "active": True,
                "calloutActive": True,
                "callout": {
                    "name": "zuora-sync",
                    "eventTypeName": "TrackedFieldChanged",
                    "calloutBaseurl": f"{url}/api/v1/zuora/callouts/sync_subscription",
                    "httpMethod": "POST",
                    "requiredAuth": True,
                    "calloutAuth": {"username": USER, "password": PASSWORD, "preemptive": False},
                    "calloutParams": {
                        "SubscriptionNumber": "{{DataSource.Subscription.Name}}",
                        "SubscriptionId": "{{DataSource.Subscription.Id}}",
                        "Version": "{{DataSource.Subscription.Version}}",
                        "AccountNumber": "{{DataSource.Account.AccountNumber}}",
                        **{f: f"{{{{DataSource.Subscription.{f}}}}}" for f in TRACKED},
                    },
                    "calloutRetry": True,
                    "active": True,
                },
            }
        )


def edit_in_zuora(sandbox: RunningSandbox, number: str, fields: dict[str, Any]) -> None:
    """A Zuora admin's edit through the REST API: it fires events, unlike the admin path."""
    token = httpx.post(
        f"{sandbox.base_url}/oauth/token",
        data={
            "client_id": sandbox.client_id,
            "client_secret": sandbox.client_secret,
            "grant_type": "client_credentials",
        },
    ).json()["access_token"]
    with httpx.Client(
        base_url=sandbox.base_url, headers={"Authorization": f"Bearer {token}"}
    ) as api:
        version = api.get(f"/v1/subscriptions/{number}").json()["version"]
        answer = api.put(
            f"/v1/subscriptions/{number}/versions/{version}/customFields",
            json={"customFields": fields},
        )
        assert answer.status_code == 200, answer.text


@pytest.fixture
def webhook(pg_url: str) -> Iterator[Live]:
    with running_webhook(pg_url) as live:
        yield live


def test_an_admin_edit_reaches_the_cache_through_callout_webhook_and_drain(
    pg_engine: Engine, sandbox: RunningSandbox, webhook: Live
) -> None:
    asyncio.run(enable_callout(sandbox, webhook.url))
    drain(pg_engine, sandbox)  # nothing yet

    edit_in_zuora(sandbox, "A-S00000003", {"SupportTier__c": "Enterprise"})
    edit_in_zuora(sandbox, "A-S00000007", {"SeatOverride__c": "250"})
    deadline = time.monotonic() + 20
    while len(webhook.rows()) < 2:
        assert time.monotonic() < deadline, "the callouts never reached the inbox"
        time.sleep(0.05)
    rows = webhook.rows()
    assert {r.subscription_number for r in rows} == {"A-S00000003", "A-S00000007"}

    stats = drain(pg_engine, sandbox)
    assert stats.completed == 2 and statuses(pg_engine) == {"done": 2}
    with pg_engine.connect() as conn:
        fields = dict(
            conn.execute(
                select(subscriptions.c.subscription_number, subscriptions.c.custom_fields)
            ).all()
        )
    assert fields["A-S00000003"]["SupportTier__c"] == "Enterprise"
    assert str(fields["A-S00000007"]["SeatOverride__c"]) == "250"
    expected = [p for p in sandbox.admin.export() if p["subscriptionNumber"] in fields]
    assert cache_differences(pg_engine, expected) == []
    # Each callout was delivered with the credentials the webhook demanded after its 401.
    sent = sandbox.admin.callouts()
    assert len(sent) == 2 and {n["state"] for n in sent} == {"delivered"}
    for notification in sent:
        final = notification["attempts"][-1]
        assert (final["status"], final["authSent"]) == (200, True)
    assert {r.dedup_key for r in rows} == {f"callout:{n['notificationId']}" for n in sent}
