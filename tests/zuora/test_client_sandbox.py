"""The Zuora client against the running sandbox, over real HTTP."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import gzip
from pathlib import Path
from typing import Any

import pytest

from zuora.client import RetryBudget, ZuoraClient
from zuora.errors import ZuoraAuthError, ZuoraNotFound, ZuoraPermanentError
from zuora.limiter import AdaptiveLimiter
from zuora.sandbox.server import RunningSandbox

FAST = RetryBudget(max_attempts=8, base_seconds=0.02, max_seconds=0.2, total_seconds=30)


def client(sandbox: RunningSandbox, *, concurrency: int = 10, **kwargs: Any) -> ZuoraClient:
    kwargs.setdefault("retry", FAST)
    return ZuoraClient(
        sandbox.base_url,
        sandbox.client_id,
        kwargs.pop("secret", sandbox.client_secret),
        limiter=AdaptiveLimiter(concurrency),
        **kwargs,
    )


async def test_subscriptions_by_number_by_old_id_and_by_version(sandbox: RunningSandbox) -> None:
    async with client(sandbox) as zuora:
        info = await zuora.authenticate()
        first = await zuora.get_subscription("A-S00000001")
        new_id = await asyncio.to_thread(sandbox.admin.amend, "A-S00000001")
        latest = await zuora.get_subscription(first["id"])  # an old version's id
        old = await zuora.get_subscription_version("A-S00000001", first["version"])
    assert info.tenant_id == sandbox.config.tenant_id
    assert first["success"] is True and first["subscriptionNumber"] == "A-S00000001"
    assert (latest["id"], latest["version"]) == (new_id, first["version"] + 1)
    assert (old["id"], old["status"]) == (first["id"], "Expired")


async def test_a_custom_field_edit_keeps_the_version_an_amendment_does_not(
    sandbox: RunningSandbox,
) -> None:
    async with client(sandbox) as zuora:
        before = await zuora.get_subscription("A-S00000002")
        await zuora.request(
            "PUT",
            f"/v1/subscriptions/A-S00000002/versions/{before['version']}/customFields",
            json={"customFields": {"SupportTier__c": "Gold"}},
            idempotent=True,
        )
        edited = await zuora.get_subscription("A-S00000002")
        await asyncio.to_thread(sandbox.admin.amend, "A-S00000002")
        amended = await zuora.get_subscription("A-S00000002")
    assert (edited["id"], edited["version"], edited["SupportTier__c"]) == (
        before["id"],
        before["version"],
        "Gold",
    )
    assert amended["version"] == before["version"] + 1 and amended["id"] != before["id"]


async def test_unknown_subscription_is_not_found(sandbox: RunningSandbox) -> None:
    async with client(sandbox) as zuora:
        with pytest.raises(ZuoraNotFound) as caught:
            await zuora.get_subscription("A-S99999999")
    assert caught.value.status == 404 and caught.value.request_id


async def test_bad_credentials_and_an_expired_token(sandbox: RunningSandbox) -> None:
    async with client(sandbox, secret="wrong") as zuora:
        with pytest.raises(ZuoraAuthError):
            await zuora.get_subscription("A-S00000001")
    async with client(sandbox) as zuora:
        await zuora.get_subscription("A-S00000001")
        assert await asyncio.to_thread(sandbox.admin.expire_tokens) >= 1
        await zuora.get_subscription("A-S00000001")  # refreshed on the 401, transparently
    assert zuora.stats.token_refreshes == 2


async def test_permanent_refusals_are_not_retried(sandbox: RunningSandbox) -> None:
    async with client(sandbox) as zuora:
        with pytest.raises(ZuoraPermanentError):
            await zuora.request("POST", "/v1/action/query", json={"queryString": "select from"})
    assert zuora.stats.retries == 0


async def test_5xx_storm_is_retried_through(sandbox: RunningSandbox) -> None:
    sandbox.admin.set_faults(error_rate=0.4)
    # With 40% of answers failing, 8 attempts leave one of 20 calls failing in about one run
    # of 75; 14 attempts make that 1 in 20,000, so the test shows retrying, not luck.
    patient = dataclasses.replace(FAST, max_attempts=14)
    async with client(sandbox, retry=patient) as zuora:
        got = await asyncio.gather(*(zuora.get_subscription(f"A-S{i:08d}") for i in range(1, 21)))
    assert len(got) == 20 and zuora.stats.retries > 0


async def test_a_429_storm_slows_the_client_to_the_tenants_limit(sandbox_factory: Any) -> None:
    sandbox = sandbox_factory(concurrency_limit=5, subscriptions=20)
    sandbox.admin.set_faults(latency_ms=20)
    async with client(sandbox, concurrency=40) as zuora:
        await asyncio.gather(
            *(zuora.get_subscription(f"A-S{(i % 20) + 1:08d}") for i in range(400))
        )
    counters = sandbox.admin.counters()
    # The limiter learns the limit from the first 429s and the Concurrency-Limit headers,
    # then stays under it: only a small share of the requests was ever refused.
    assert counters["peak_concurrency"] <= 5
    assert counters["throttled_concurrency"] < 0.1 * counters["requests_total"]
    assert zuora.limiter.limit <= 5


async def test_zoql_pages_through_several_batches(sandbox: RunningSandbox) -> None:
    async with client(sandbox) as zuora:
        batches = [
            batch
            async for batch in zuora.zoql(
                "select Id, Name, Version from Subscription", batch_size=7
            )
        ]
    rows = [r for b in batches for r in b]
    assert len(batches) >= 3 and all(len(b) <= 7 for b in batches)
    assert len({r["Id"] for r in rows}) == len(rows) >= 20


async def test_data_query_end_to_end(sandbox: RunningSandbox, tmp_path: Path) -> None:
    sql = (
        "select name, id, version from subscription s "
        "where version = (select max(version) from subscription x where x.name = s.name)"
    )
    async with client(sandbox) as zuora:
        path, job = await zuora.data_query_to_file(sql, directory=tmp_path)
    with gzip.open(path, "rt", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert job["queryStatus"] == "completed" and job["outputRows"] == len(rows) == 20
    assert {r["name"] for r in rows} == {f"A-S{i:08d}" for i in range(1, 21)}


async def test_event_triggers_and_notification_definitions(sandbox: RunningSandbox) -> None:
    trigger_body = {
        "active": True,
        "baseObject": "Subscription",
        "condition": "changeType == 'UPDATE' && Subscription.SupportTier__c != Subscription.SupportTier__c_old",
        "eventType": {
            "name": "SubscriptionTrackedFieldChanged",
            "displayName": "Tracked field changed",
        },
    }
    async with client(sandbox) as zuora:
        created = await zuora.create_event_trigger(trigger_body)
        listed = await zuora.list_event_triggers(baseObject="Subscription")
        updated = await zuora.update_event_trigger(created["id"], {**trigger_body, "active": False})
        await zuora.delete_event_trigger(created["id"])
        after = await zuora.list_event_triggers()
    assert created["eventType"]["namespace"] == "user.notification"
    assert [t["id"] for t in listed] == [created["id"]]
    assert updated["active"] is False and after == []
