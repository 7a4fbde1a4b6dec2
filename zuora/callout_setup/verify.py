"""`--verify`: prove the callout works by making a change and watching the inbox.

In a sandbox tenant only: edit a tracked custom field of one active subscription through the
REST API (an in-place edit, exactly what the custom event watches), wait a bounded time for
the callout to land in `callout_inbox` (`DATABASE_URL`, the webhook's database), then put the
field back. Putting it back fires a second callout, which the drain applies like any other.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from warehouse.db import make_engine
from warehouse.models import inbox
from zuora.client import ZuoraClient
from zuora.errors import ZuoraError

ACTIVE_SUBSCRIPTION = "select Id, Name, Version from Subscription where Status = 'Active'"


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    subscription: str | None
    field: str
    seconds: float | None
    inbox_id: int | None
    detail: str

    def render_text(self) -> str:
        if self.ok:
            return (
                f"verified: the edit of {self.field} on {self.subscription} reached "
                f"callout_inbox as row {self.inbox_id} after {self.seconds:.1f} s"
            )
        return f"NOT verified: {self.detail}"


async def _active_subscription(zuora: ZuoraClient) -> str | None:
    # An async generator: closed here so the query does not linger after the first batch.
    records = cast(
        AsyncGenerator[list[dict[str, Any]], None], zuora.zoql(ACTIVE_SUBSCRIPTION, batch_size=10)
    )
    try:
        async for batch in records:
            for record in batch:
                if record.get("Name"):
                    return str(record["Name"])
    finally:
        await records.aclose()
    return None


async def _set_field(zuora: ZuoraClient, number: str, version: int, field: str, value: Any) -> None:
    await zuora.request(
        "PUT",
        f"/v1/subscriptions/{quote(number, safe='')}/versions/{int(version)}/customFields",
        json={"customFields": {field: value}},
        idempotent=True,
    )


def _find_row(engine: Any, number: str, field: str, marker: str, since: datetime) -> int | None:
    query = (
        select(inbox.c.id, inbox.c.payload)
        .where(inbox.c.source == "callout")
        .where(inbox.c.subscription_number == number)
        .where(inbox.c.received_at >= since)
        .order_by(inbox.c.id)
    )
    with engine.connect() as conn:
        for row_id, payload in conn.execute(query):
            values = {**(payload or {}).get("params", {}), **(payload or {}).get("fields", {})}
            if values.get(field) == marker:
                return int(row_id)
    return None


async def _history(zuora: ZuoraClient, callout_url: str) -> str:
    """The tenant's last attempts at this URL, to say why nothing arrived."""
    try:
        doc = await zuora.request(
            "GET", "/v1/notification-history/callout", params={"pageSize": 50}
        )
    except ZuoraError as exc:
        return f"(the callout history could not be read: {exc})"
    rows = [r for r in doc.get("calloutHistories") or [] if r.get("requestUrl") == callout_url]
    if not rows:
        return "Zuora's callout history shows no attempt at that URL yet."
    codes = ", ".join(str(r.get("responseCode")) for r in rows[-5:])
    return f"Zuora's last attempts at that URL answered: {codes}."


async def verify_callout(
    settings: Any,
    zuora: ZuoraClient,
    *,
    callout_url: str,
    timeout: float = 120.0,
    poll_seconds: float = 0.2,
    subscription: str | None = None,
) -> VerifyResult:
    field = settings.ZUORA_TRACKED_FIELDS[0]
    number = subscription or await _active_subscription(zuora)
    if number is None:
        return VerifyResult(False, None, field, None, None, "the tenant has no active subscription")
    doc = await zuora.get_subscription(number)
    version, original = int(doc["version"]), doc.get(field)
    marker = f"zs-verify-{secrets.token_hex(4)}"
    engine = make_engine(settings.DATABASE_URL, pool_size=1)
    # Row times come from the webhook's clock; allow for a little skew.
    since = datetime.now(UTC) - timedelta(seconds=30)
    started = time.monotonic()
    try:
        await _set_field(zuora, number, version, field, marker)
        deadline = started + timeout
        while True:
            try:
                found = await asyncio.to_thread(_find_row, engine, number, field, marker, since)
            except SQLAlchemyError as exc:
                reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
                return VerifyResult(
                    False, number, field, None, None, f"callout_inbox cannot be read: {reason}"
                )
            if found is not None:
                return VerifyResult(
                    True, number, field, time.monotonic() - started, found, "arrived"
                )
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(poll_seconds)
        why = await _history(zuora, callout_url)
        return VerifyResult(
            False,
            number,
            field,
            None,
            None,
            f"no callout for {number} reached callout_inbox ({settings.database_url_masked}) "
            f"within {timeout:.0f} s. {why}",
        )
    finally:
        engine.dispose()
        await _set_field(zuora, number, version, field, original)
