"""The cache upsert on real PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text

from tests import factories
from warehouse.cache import InvalidSubscription, mark_deleted, upsert_subscription
from warehouse.models import charges, rate_plans, subscriptions

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def upsert(engine: Engine, payload: dict[str, Any], fetched_at: datetime = T0) -> Any:
    with engine.begin() as conn:
        return upsert_subscription(conn, payload, fetched_at=fetched_at, now=fetched_at)


def graph(engine: Engine, number: str) -> dict[str, Any]:
    with engine.connect() as conn:
        sub = conn.execute(
            select(subscriptions).where(subscriptions.c.subscription_number == number)
        ).one_or_none()
        plans = conn.execute(
            select(rate_plans)
            .where(rate_plans.c.subscription_number == number)
            .order_by(rate_plans.c.id)
        ).all()
        charge_rows = conn.execute(
            select(charges).where(charges.c.subscription_number == number).order_by(charges.c.id)
        ).all()
    return {"sub": sub, "plans": plans, "charges": charge_rows}


def test_new_subscription_writes_the_whole_graph(engine: Engine) -> None:
    payload = factories.subscription("A-S00000001")
    result = upsert(engine, payload)
    assert (result.outcome, result.rate_plans, result.charges) == ("inserted", 2, 3)
    stored = graph(engine, "A-S00000001")
    sub = stored["sub"]
    assert (sub.zuora_id, sub.version, sub.status) == ("A-S00000001-v1", 1, "Active")
    assert (sub.account_id, sub.account_number, sub.term_type) == ("acc-1", "A00000001", "TERMED")
    assert sub.term_end_date == date(2027, 1, 1)
    assert sub.auto_renew is True and sub.initial_term == 12
    assert sub.custom_fields == {
        "SupportTier__c": "Premium",
        "SeatOverride__c": None,
        "ContractOwner__c": "ops@example.com",
    }
    assert "ratePlans" not in sub.raw and sub.raw["billToContact"] == {"firstName": "Ada"}
    assert sub.synced_at == T0 and sub.deleted_at is None
    assert [p.id for p in stored["plans"]] == ["A-S00000001-rp1", "A-S00000001-rp2"]
    assert "ratePlanCharges" not in stored["plans"][0].raw
    c21 = next(c for c in stored["charges"] if c.id == "A-S00000001-c21")
    assert (c21.price, c21.quantity) == (Decimal("5.5"), Decimal("3"))  # strings from Zuora
    assert c21.rate_plan_id == "A-S00000001-rp2"
    assert c21.effective_start_date == date(2026, 1, 1)


def test_update_rewrites_changed_rows_and_deletes_vanished_plans_and_charges(
    engine: Engine,
) -> None:
    upsert(engine, factories.subscription("A-S1"))
    amended = factories.subscription(
        "A-S1",
        version=2,
        status="Active",
        SupportTier__c="Standard",
        plans=[
            factories.rate_plan(
                "A-S1-rp2",
                [factories.charge("A-S1-c21", price=7, quantity=4)],
                lastChangeType="Update",
            ),
            factories.rate_plan("A-S1-rp3", [factories.charge("A-S1-c31")], lastChangeType="Add"),
        ],
    )
    result = upsert(engine, amended, T0 + timedelta(seconds=1))
    assert result.outcome == "updated" and result.stored_version == 1
    assert (result.removed_rate_plans, result.removed_charges) == (1, 2)
    stored = graph(engine, "A-S1")
    assert (stored["sub"].version, stored["sub"].zuora_id) == (2, "A-S1-v2")
    assert stored["sub"].custom_fields["SupportTier__c"] == "Standard"
    assert [p.id for p in stored["plans"]] == ["A-S1-rp2", "A-S1-rp3"]
    assert [(c.id, c.price) for c in stored["charges"]] == [
        ("A-S1-c21", Decimal(7)),
        ("A-S1-c31", Decimal(19)),
    ]


def test_an_older_version_changes_nothing_and_says_so(engine: Engine) -> None:
    upsert(engine, factories.subscription("A-S1", version=3, SupportTier__c="New"))
    before = graph(engine, "A-S1")
    result = upsert(
        engine,
        factories.subscription("A-S1", version=2, SupportTier__c="Old", plans=[]),
        T0 + timedelta(hours=1),  # fetched later, but an older version all the same
    )
    assert (result.outcome, result.version, result.stored_version) == ("stale", 2, 3)
    assert graph(engine, "A-S1") == before


def test_same_version_fetched_earlier_loses_to_the_later_fetch(engine: Engine) -> None:
    # Custom-field edits keep the version: the fetch that happened last wins, whatever
    # order the two writes arrive in.
    upsert(
        engine, factories.subscription("A-S1", SupportTier__c="Later"), T0 + timedelta(seconds=5)
    )
    result = upsert(engine, factories.subscription("A-S1", SupportTier__c="Earlier"), T0)
    assert result.outcome == "stale"
    assert graph(engine, "A-S1")["sub"].custom_fields["SupportTier__c"] == "Later"
    result = upsert(
        engine, factories.subscription("A-S1", SupportTier__c="Latest"), T0 + timedelta(seconds=9)
    )
    assert result.outcome == "updated"
    assert graph(engine, "A-S1")["sub"].custom_fields["SupportTier__c"] == "Latest"


def test_same_payload_twice_is_harmless(engine: Engine) -> None:
    payload = factories.subscription("A-S1")
    upsert(engine, payload)
    before = graph(engine, "A-S1")
    result = upsert(engine, payload, T0 + timedelta(seconds=1))
    assert result.outcome == "unchanged"
    after = graph(engine, "A-S1")
    assert after["plans"] == before["plans"] and after["charges"] == before["charges"]
    assert after["sub"].synced_at == T0 + timedelta(seconds=1)


def test_a_failure_rolls_the_whole_graph_back(engine: Engine) -> None:
    upsert(engine, factories.subscription("A-S1"))
    before = graph(engine, "A-S1")
    with pytest.raises(RuntimeError, match="crash after the write"), engine.begin() as conn:
        upsert_subscription(
            conn,
            factories.subscription("A-S1", version=2, plans=[]),
            fetched_at=T0 + timedelta(seconds=1),
        )
        raise RuntimeError("crash after the write, before the commit")
    assert graph(engine, "A-S1") == before


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"id": "x", "version": 1}, "subscriptionNumber"),
        ({"subscriptionNumber": "A-S1", "id": "x", "version": "two"}, "version"),
        (
            {"success": False, "reasons": [{"code": "50000040", "message": "nope"}]},
            "success: false",
        ),
        (["not", "an", "object"], "JSON object"),
    ],
)
def test_a_payload_that_is_not_a_subscription_is_refused_before_any_write(
    engine: Engine, payload: Any, message: str
) -> None:
    with pytest.raises(InvalidSubscription, match=message), engine.begin() as conn:
        upsert_subscription(conn, payload, fetched_at=T0)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(subscriptions)).scalar_one() == 0


def test_odd_fields_from_zuora_never_break_it(engine: Engine) -> None:
    odd = factories.subscription(
        "A-S1",
        version="4",  # a number sent as a string
        initialTerm="",
        autoRenew="true",
        termEndDate="",
        subscriptionEndDate=None,
        billToContact=[],  # an empty list where an object is documented
        currency=None,
        SeatOverride__c=12,
        plans=[
            factories.rate_plan(
                "A-S1-rp1",
                [
                    factories.charge("A-S1-c1", price=None, quantity="", segment="x", mrr="NaN"),
                    {"name": "a charge with no id is kept in raw only"},
                    "not even an object",
                ],
                productName=None,
                someFieldZuoraAddedLater={"nested": [1, 2]},
            ),
            {"ratePlanName": "no id"},
        ],
        brandNewTopLevelField=[{"a": 1}],
    )
    result = upsert(engine, odd)
    assert (result.outcome, result.version, result.rate_plans, result.charges) == (
        "inserted",
        4,
        1,
        1,
    )
    stored = graph(engine, "A-S1")
    sub = stored["sub"]
    assert (sub.initial_term, sub.auto_renew, sub.term_end_date) == (None, True, None)
    assert sub.custom_fields["SeatOverride__c"] == 12
    assert sub.raw["brandNewTopLevelField"] == [{"a": 1}]
    (charge,) = stored["charges"]
    assert (charge.price, charge.quantity, charge.segment, charge.mrr) == (None, None, None, None)


@pytest.mark.parametrize("rate_plans_value", [None, [], {}, "n/a"])
def test_no_rate_plans_in_any_shape_means_none(engine: Engine, rate_plans_value: Any) -> None:
    upsert(engine, factories.subscription("A-S1"))
    payload = factories.subscription("A-S1", version=2)
    payload["ratePlans"] = rate_plans_value
    result = upsert(engine, payload, T0 + timedelta(seconds=1))
    assert result.outcome == "updated"
    assert graph(engine, "A-S1")["plans"] == []
    assert graph(engine, "A-S1")["charges"] == []


def test_mark_deleted_keeps_the_rows_and_a_later_sync_revives(engine: Engine) -> None:
    upsert(engine, factories.subscription("A-S1"))
    with engine.begin() as conn:
        assert mark_deleted(conn, zuora_id="A-S1-v1", now=T0) == "A-S1"
        assert mark_deleted(conn, subscription_number="A-S1", now=T0 + timedelta(hours=1)) == "A-S1"
        assert mark_deleted(conn, subscription_number="A-S404", now=T0) is None
    stored = graph(engine, "A-S1")
    assert stored["sub"].deleted_at == T0  # the first sighting of the deletion is kept
    assert len(stored["charges"]) == 3
    upsert(engine, factories.subscription("A-S1", version=2), T0 + timedelta(hours=2))
    assert graph(engine, "A-S1")["sub"].deleted_at is None


def test_concurrent_writers_of_one_subscription_end_on_the_newest(pg_engine: Engine) -> None:
    """Two sessions race on one row: the guard runs under the row lock, so the newest wins."""
    upsert(pg_engine, factories.subscription("A-S1", version=1))
    with pg_engine.connect() as first, pg_engine.connect() as second:
        first.begin()
        newer = upsert_subscription(
            first, factories.subscription("A-S1", version=3), fetched_at=T0 + timedelta(seconds=3)
        )
        second.begin()
        second.execute(text("SET LOCAL lock_timeout = '200ms'"))
        with pytest.raises(Exception, match="lock timeout"):
            upsert_subscription(
                second,
                factories.subscription("A-S1", version=2),
                fetched_at=T0 + timedelta(seconds=2),
            )
        second.rollback()
        first.commit()
        with second.begin():
            late = upsert_subscription(
                second,
                factories.subscription("A-S1", version=2),
                fetched_at=T0 + timedelta(seconds=2),
            )
    assert (newer.outcome, late.outcome) == ("updated", "stale")
    assert graph(pg_engine, "A-S1")["sub"].version == 3
