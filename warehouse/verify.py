"""Cache == Zuora, row for row: the check the demo, the tests and the fault suite end with.

Zuora's side is a set of latest-version payloads (e.g. the sandbox's export, or GETs from a
real tenant); each is mapped to rows exactly as the drain would write them and compared,
column by column, with what the cache holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from warehouse.cache import to_rows
from warehouse.models import charges, rate_plans, subscriptions

# Bookkeeping columns that say when we synced, not what Zuora holds.
VOLATILE = {"fetched_at", "synced_at", "deleted_at"}


def _rows(engine: Engine, table: Any) -> dict[str, dict[str, Any]]:
    key = table.c.subscription_number if table is subscriptions else table.c.id
    with engine.connect() as conn:
        return {
            row[key.name]: {k: v for k, v in row.items() if k not in VOLATILE}
            for row in conn.execute(select(table)).mappings()
        }


def cache_differences(engine: Engine, zuora: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every way the cache differs from these latest-version payloads (empty: equal).

    Subscriptions the cache holds but Zuora no longer has must be marked deleted.
    """
    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    expected_subs: dict[str, dict[str, Any]] = {}
    expected_plans: dict[str, dict[str, Any]] = {}
    expected_charges: dict[str, dict[str, Any]] = {}
    for payload in zuora:
        rows = to_rows(payload, fetched_at=epoch)
        sub = {k: v for k, v in rows.subscription.items() if k not in VOLATILE}
        expected_subs[sub["subscription_number"]] = sub
        expected_plans.update({r["id"]: r for r in rows.rate_plans})
        expected_charges.update({r["id"]: r for r in rows.charges})

    with engine.connect() as conn:
        deleted = set(
            conn.execute(
                select(subscriptions.c.subscription_number).where(
                    subscriptions.c.deleted_at.is_not(None)
                )
            ).scalars()
        )
    problems: list[str] = []
    for name, table, expected in (
        ("subscription", subscriptions, expected_subs),
        ("rate plan", rate_plans, expected_plans),
        ("charge", charges, expected_charges),
    ):
        actual = _rows(engine, table)
        for key in expected.keys() - actual.keys():
            problems.append(f"{name} {key} missing from the cache")
        for key in actual.keys() - expected.keys():
            owner = key if table is subscriptions else actual[key]["subscription_number"]
            if owner not in deleted:
                problems.append(f"{name} {key} is in the cache but not in Zuora")
        for key in expected.keys() & actual.keys():
            for column, value in expected[key].items():
                held = actual[key].get(column)
                if held != value:
                    problems.append(f"{name} {key}: {column} is {held!r}, Zuora has {value!r}")
    return problems
