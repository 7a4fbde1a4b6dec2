"""Write a subscription, as Zuora's `GET /v1/subscriptions/{key}` returns it, into the cache.

One call writes the subscription, its rate plans and their charges in the caller's
transaction: rows present in the payload are inserted or updated, rate plans and charges no
longer present are deleted. The write is guarded so that the cache never moves backwards:

- an older `version` than the stored one changes nothing (`stale`);
- the same version fetched earlier than the stored copy changes nothing either (`stale`):
  custom-field edits do not bump the version, so for two fetches of one version the later
  fetch wins, whatever order they arrive in;
- the same content as stored rewrites nothing but the sync time (`unchanged`).

The guard is part of the `INSERT ... ON CONFLICT DO UPDATE ... WHERE` itself, so concurrent
writers of one subscription are serialised by the row lock and cannot interleave.

Zuora's payloads are loose (numbers as strings, nulls, empty lists where objects are
documented, fields added over time), so every column is read defensively and the whole
payload is kept in `raw`; only a payload without a subscription number, id or version is
refused (`InvalidSubscription`), before anything is written.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from sqlalchemy import Connection, and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from warehouse.models import charges, rate_plans, subscriptions

Outcome = Literal["inserted", "updated", "unchanged", "stale"]


class InvalidSubscription(ValueError):
    """The payload cannot be a subscription (no number, id or version); nothing was written."""


@dataclass(frozen=True)
class UpsertResult:
    subscription_number: str
    outcome: Outcome
    version: int
    stored_version: int | None  # what the cache held before this call
    rate_plans: int = 0
    charges: int = 0
    removed_rate_plans: int = 0
    removed_charges: int = 0

    @property
    def changed(self) -> bool:
        return self.outcome in ("inserted", "updated")


# --- reading Zuora's loose JSON -------------------------------------------------------------


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list_of_objects(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):  # a lone object where a list is documented
        value = [value]
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _text(value: Any, limit: int | None = None) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value).strip() if not isinstance(value, bool) else str(value).lower()
    if not text:
        return None
    return text[:limit] if limit else text


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(Decimal(str(value).strip()))
    except (InvalidOperation, ValueError):
        return None


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None or isinstance(value, dict | list):
        return None
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _date(value: Any) -> date | None:
    text = _text(value)
    if text is None:
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = _text(value)
    if text is None:
        return None
    return {"true": True, "false": False, "1": True, "0": False}.get(text.lower())


def custom_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The `*__c` keys of one level of a Zuora object, values as Zuora sent them."""
    return {key: value for key, value in obj.items() if key.endswith("__c")}


def content_hash(payload: Mapping[str, Any]) -> str:
    """A stable digest of a payload, ignoring the key order Zuora happens to use."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _without(obj: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != key}


@dataclass(frozen=True)
class SubscriptionRows:
    """A payload turned into the three tables' rows, before anything touches the database."""

    subscription: dict[str, Any]
    rate_plans: list[dict[str, Any]]
    charges: list[dict[str, Any]]


def to_rows(payload: Mapping[str, Any], *, fetched_at: datetime) -> SubscriptionRows:
    """Map a `GET /v1/subscriptions/{key}` payload to rows; raise `InvalidSubscription`."""
    if not isinstance(payload, Mapping):
        raise InvalidSubscription("a subscription payload must be a JSON object")
    if payload.get("success") is False:
        raise InvalidSubscription("the payload is a Zuora error response (success: false)")
    number = _text(payload.get("subscriptionNumber"), 64)
    zuora_id = _text(payload.get("id"), 64)
    version = _int(payload.get("version"))
    missing = [
        name
        for name, value in (("subscriptionNumber", number), ("id", zuora_id), ("version", version))
        if value is None
    ]
    if missing:
        raise InvalidSubscription(f"subscription payload lacks {', '.join(missing)}")
    assert number is not None and zuora_id is not None and version is not None

    plans_in = _list_of_objects(payload.get("ratePlans"))
    subscription = {
        "subscription_number": number,
        "zuora_id": zuora_id,
        "version": version,
        "revision": _text(payload.get("revision"), 32),
        "status": _text(payload.get("status"), 32),
        "account_id": _text(payload.get("accountId"), 64),
        "account_number": _text(payload.get("accountNumber"), 64),
        "account_name": _text(payload.get("accountName"), 255),
        "term_type": _text(payload.get("termType"), 16),
        "contract_effective_date": _date(payload.get("contractEffectiveDate")),
        "service_activation_date": _date(payload.get("serviceActivationDate")),
        "customer_acceptance_date": _date(payload.get("customerAcceptanceDate")),
        "subscription_start_date": _date(payload.get("subscriptionStartDate")),
        "subscription_end_date": _date(payload.get("subscriptionEndDate")),
        "term_start_date": _date(payload.get("termStartDate")),
        "term_end_date": _date(payload.get("termEndDate")),
        "initial_term": _int(payload.get("initialTerm")),
        "current_term": _int(payload.get("currentTerm")),
        "renewal_term": _int(payload.get("renewalTerm")),
        "auto_renew": _bool(payload.get("autoRenew")),
        "currency": _text(payload.get("currency"), 8),
        "custom_fields": custom_fields(payload),
        "raw": _without(payload, "ratePlans"),
        "content_hash": content_hash(payload),
        "fetched_at": fetched_at,
        "deleted_at": None,
    }
    plan_rows: list[dict[str, Any]] = []
    charge_rows: list[dict[str, Any]] = []
    for plan in plans_in:
        plan_id = _text(plan.get("id"), 64)
        if plan_id is None:
            continue  # nothing to key it by; it stays visible in the subscription's raw payload
        plan_rows.append(
            {
                "id": plan_id,
                "subscription_number": number,
                "rate_plan_name": _text(plan.get("ratePlanName"), 255),
                "product_id": _text(plan.get("productId"), 64),
                "product_name": _text(plan.get("productName"), 255),
                "product_sku": _text(plan.get("productSku"), 64),
                "product_rate_plan_id": _text(plan.get("productRatePlanId"), 64),
                "subscription_rate_plan_number": _text(plan.get("subscriptionRatePlanNumber"), 64),
                "last_change_type": _text(plan.get("lastChangeType"), 16),
                "custom_fields": custom_fields(plan),
                "raw": _without(plan, "ratePlanCharges"),
            }
        )
        for charge in _list_of_objects(plan.get("ratePlanCharges")):
            charge_id = _text(charge.get("id"), 64)
            if charge_id is None:
                continue
            charge_rows.append(
                {
                    "id": charge_id,
                    "rate_plan_id": plan_id,
                    "subscription_number": number,
                    "original_charge_id": _text(charge.get("originalChargeId"), 64),
                    "number": _text(charge.get("number"), 64),
                    "name": _text(charge.get("name"), 255),
                    "product_rate_plan_charge_id": _text(charge.get("productRatePlanChargeId"), 64),
                    "type": _text(charge.get("type"), 32),
                    "model": _text(charge.get("model"), 64),
                    "price": _decimal(charge.get("price")),
                    "quantity": _decimal(charge.get("quantity")),
                    "uom": _text(charge.get("uom"), 64),
                    "currency": _text(charge.get("currency"), 8),
                    "billing_period": _text(charge.get("billingPeriod"), 32),
                    "segment": _int(charge.get("segment")),
                    "version": _int(charge.get("version")),
                    "effective_start_date": _date(charge.get("effectiveStartDate")),
                    "effective_end_date": _date(charge.get("effectiveEndDate")),
                    "charged_through_date": _date(charge.get("chargedThroughDate")),
                    "mrr": _decimal(charge.get("mrr")),
                    "tcv": _decimal(charge.get("tcv")),
                    "custom_fields": custom_fields(charge),
                    "raw": dict(charge),
                }
            )
    # Zuora ids are unique; should a payload repeat one, the last copy wins, as a re-read would.
    plan_rows = list({row["id"]: row for row in plan_rows}.values())
    charge_rows = list({row["id"]: row for row in charge_rows}.values())
    return SubscriptionRows(subscription, plan_rows, charge_rows)


# --- writing ----------------------------------------------------------------------------------


def upsert_subscription(
    conn: Connection,
    payload: Mapping[str, Any],
    *,
    fetched_at: datetime,
    now: datetime | None = None,
) -> UpsertResult:
    """Write one subscription graph; see the module docstring for the guard."""
    rows = to_rows(payload, fetched_at=fetched_at)
    sub = rows.subscription
    number = sub["subscription_number"]
    now = now or datetime.now(UTC)
    sub["synced_at"] = now

    before = conn.execute(
        select(subscriptions.c.version, subscriptions.c.content_hash).where(
            subscriptions.c.subscription_number == number
        )
    ).first()
    stored_version = before.version if before else None

    stmt = _subscription_upsert(conn.dialect.name, tuple(sub))
    if conn.execute(stmt, sub).first() is None:
        return UpsertResult(number, "stale", sub["version"], stored_version)

    if (
        before is not None
        and before.content_hash == sub["content_hash"]
        and stored_version == sub["version"]
    ):
        return UpsertResult(number, "unchanged", sub["version"], stored_version)

    plan_ids = [row["id"] for row in rows.rate_plans]
    charge_ids = [row["id"] for row in rows.charges]
    removed_charges = conn.execute(
        delete(charges).where(
            charges.c.subscription_number == number, charges.c.id.not_in(charge_ids)
        )
    ).rowcount
    removed_plans = conn.execute(
        delete(rate_plans).where(
            rate_plans.c.subscription_number == number, rate_plans.c.id.not_in(plan_ids)
        )
    ).rowcount
    _upsert_many(conn, rate_plans, rows.rate_plans)
    _upsert_many(conn, charges, rows.charges)
    return UpsertResult(
        number,
        "inserted" if before is None else "updated",
        sub["version"],
        stored_version,
        rate_plans=len(rows.rate_plans),
        charges=len(rows.charges),
        removed_rate_plans=removed_plans,
        removed_charges=removed_charges,
    )


def _upsert_many(conn: Connection, table: Any, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    conn.execute(_child_upsert(conn.dialect.name, table.name, tuple(rows[0])), rows)


# The upsert statements are built once per column set: building them (and their `excluded`
# alias) per subscription was a measured share of the drain's CPU. Values go in as
# execution parameters, so one statement serves every subscription.


@functools.lru_cache(maxsize=32)
def _subscription_upsert(dialect: str, columns: tuple[str, ...]) -> Any:
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(subscriptions)
    current = subscriptions.c
    newer = or_(
        current.version < stmt.excluded.version,
        and_(
            current.version == stmt.excluded.version, current.fetched_at <= stmt.excluded.fetched_at
        ),
    )
    return stmt.on_conflict_do_update(
        index_elements=["subscription_number"],
        set_={name: stmt.excluded[name] for name in columns if name != "subscription_number"},
        where=newer,
    ).returning(current.content_hash)


@functools.lru_cache(maxsize=32)
def _child_upsert(dialect: str, table_name: str, columns: tuple[str, ...]) -> Any:
    table = {rate_plans.name: rate_plans, charges.name: charges}[table_name]
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    return stmt.on_conflict_do_update(
        index_elements=["id"],
        set_={column: stmt.excluded[column] for column in columns if column != "id"},
    )


def mark_deleted(
    conn: Connection,
    *,
    subscription_number: str | None = None,
    zuora_id: str | None = None,
    now: datetime | None = None,
) -> str | None:
    """Record that Zuora no longer has a subscription; rows are kept, `deleted_at` is set.

    Returns the subscription number marked, or None when the cache never had it.
    """
    if not (subscription_number or zuora_id):
        raise ValueError("mark_deleted needs a subscription number or id")
    condition = (
        subscriptions.c.subscription_number == subscription_number
        if subscription_number
        else subscriptions.c.zuora_id == zuora_id
    )
    stmt = (
        update(subscriptions)
        .where(condition)
        .values(deleted_at=func.coalesce(subscriptions.c.deleted_at, now or datetime.now(UTC)))
        .returning(subscriptions.c.subscription_number)
    )
    return conn.execute(stmt).scalar()
