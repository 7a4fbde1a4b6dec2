"""The reconcile engine against real PostgreSQL (and SQLite) and the running sandbox."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, update

from flows.reconcile import ReconcileError, ReconcileReport, run_reconcile
from tests.flows.test_drain import callouts, drain, numbers, statuses
from warehouse.db import make_engine
from warehouse.models import inbox as inbox_table
from warehouse.models import subscriptions, sync_runs
from warehouse.verify import cache_differences
from zuora.query import QueryError
from zuora.sandbox.server import RunningSandbox
from zuora_sync.settings import Settings, load_settings


def settings_for(sandbox: RunningSandbox, url: str, **overrides: Any) -> Settings:
    env: dict[str, Any] = {**sandbox.env(), "DATABASE_URL": url}
    env["ZUORA_TRACKED_FIELDS"] = sandbox.config.custom_fields
    env.update(overrides)
    return load_settings(**env)


def fill_cache(engine: Engine, sandbox: RunningSandbox) -> None:
    """The cache as the drain writes it: every subscription of the tenant."""
    callouts(engine, numbers(sandbox, sandbox.config.subscriptions), prefix="fill")
    stats = drain(engine, sandbox)
    assert stats.dead == 0 and stats.upserted == sandbox.config.subscriptions


def reconcile(settings: Settings, **options: Any) -> ReconcileReport:
    return asyncio.run(run_reconcile(settings, **options))


def test_a_cache_equal_to_zuora_has_no_drift(db_url: str, sandbox: RunningSandbox) -> None:
    engine = make_engine(db_url)
    fill_cache(engine, sandbox)
    settings = settings_for(sandbox, db_url)

    report = reconcile(settings, mode="full")

    assert report.drift_total == 0, report.render_text()
    assert report.counts == {"missing": 0, "stale": 0, "deleted": 0}
    assert report.remote_subscriptions == report.cache_subscriptions == 20
    assert report.ok and report.healed == 0 and report.watermark is not None
    assert "drift: 0" in report.render_text()
    with engine.connect() as conn:
        run = conn.execute(select(sync_runs)).one()
    assert (run.kind, run.mode, run.status) == ("reconcile", "full", "succeeded")
    assert run.drift["counts"] == {"missing": 0, "stale": 0, "deleted": 0}
    engine.dispose()


def test_nulls_empty_strings_and_numbers_as_strings_are_not_drift(
    pg_engine: Engine, pg_url: str, sandbox: RunningSandbox
) -> None:
    fill_cache(pg_engine, sandbox)
    (a, b, c) = numbers(sandbox, 3)
    sandbox.admin.edit_custom_fields(a, {"SeatOverride__c": ""})
    sandbox.admin.edit_custom_fields(b, {"SeatOverride__c": "12"})
    sandbox.admin.edit_custom_fields(c, {"SeatOverride__c": "7", "SupportTier__c": None})
    # The cache holds the same values in other shapes: null for "", a JSON number, "7.0".
    with pg_engine.begin() as conn:
        for number, held in ((a, {"SeatOverride__c": None}), (b, {"SeatOverride__c": 12}),
                             (c, {"SeatOverride__c": "7.0", "SupportTier__c": ""})):  # fmt: skip
            fields = conn.execute(
                select(subscriptions.c.custom_fields).where(
                    subscriptions.c.subscription_number == number
                )
            ).scalar_one()
            conn.execute(
                update(subscriptions)
                .where(subscriptions.c.subscription_number == number)
                .values(custom_fields={**fields, **held})
            )

    report = reconcile(settings_for(sandbox, pg_url), mode="full")

    assert report.drift_total == 0, report.render_text()


def test_lost_callouts_are_found_healed_and_the_next_run_is_clean(
    db_url: str, sandbox: RunningSandbox
) -> None:
    engine = make_engine(db_url)
    fill_cache(engine, sandbox)
    a, b, c = numbers(sandbox, 3)
    # Edits through the admin path fire no callout: the cache never hears of them.
    sandbox.admin.edit_custom_fields(a, {"SupportTier__c": "Platinum"}, touch_updated_date=False)
    sandbox.admin.edit_custom_fields(b, {"ContractOwner__c": "new.owner@example.com"})
    sandbox.admin.amend(c)
    settings = settings_for(sandbox, db_url)

    report = reconcile(settings, mode="full")

    assert report.counts == {"missing": 0, "stale": 3, "deleted": 0}, report.render_text()
    assert report.field_counts == {
        "SupportTier__c": 1, "ContractOwner__c": 1, "zuora_id": 1, "version": 1,
    }  # fmt: skip
    assert {(e["subscription"], e["field"], e["zuora"]) for e in report.examples} >= {
        (a, "SupportTier__c", "Platinum"), (b, "ContractOwner__c", "new.owner@example.com"),
    }  # fmt: skip
    assert report.enqueued == 3 and report.healed == 3 and report.ok
    assert report.drain_summary is not None and report.drain_summary["dead"] == 0
    with engine.connect() as conn:
        sources = conn.execute(
            select(inbox_table.c.source, func.count()).group_by(inbox_table.c.source)
        ).all()
    assert dict(sources)["reconcile"] == 3
    assert cache_differences(engine, sandbox.admin.export()) == []

    again = reconcile(settings, mode="full")
    assert again.drift_total == 0, again.render_text()
    engine.dispose()


def test_two_runs_over_the_same_drift_queue_it_once(
    pg_engine: Engine, pg_url: str, sandbox: RunningSandbox
) -> None:
    fill_cache(pg_engine, sandbox)
    (a,) = numbers(sandbox, 1)
    sandbox.admin.edit_custom_fields(a, {"SupportTier__c": "Gold-X"})
    settings = settings_for(sandbox, pg_url)

    first = reconcile(settings, mode="full", drain=False)
    second = reconcile(settings, mode="full", drain=False)

    assert (first.enqueued, first.already_queued) == (1, 0)
    assert (second.enqueued, second.already_queued) == (0, 1)
    assert first.ok and second.ok  # queued for the scheduled drain counts as healed
    assert statuses(pg_engine) == {"done": 20, "pending": 1}
    drain(pg_engine, sandbox)
    # The same subscription drifting again, to new values, is queued again.
    sandbox.admin.edit_custom_fields(a, {"SupportTier__c": "Gold-Y"})
    third = reconcile(settings, mode="full", drain=False)
    assert third.enqueued == 1


def test_missing_and_deleted_subscriptions(
    pg_engine: Engine, pg_url: str, sandbox: RunningSandbox
) -> None:
    fill_cache(pg_engine, sandbox)
    a, b, c = numbers(sandbox, 3)
    with pg_engine.begin() as conn:
        conn.execute(subscriptions.delete().where(subscriptions.c.subscription_number == a))
    sandbox.admin.delete(b)
    sandbox.admin.delete(c)
    settings = settings_for(sandbox, pg_url)

    dry = reconcile(settings, mode="full", dry_run=True)
    assert dry.counts == {"missing": 1, "stale": 0, "deleted": 2}, dry.render_text()
    assert not dry.ok and dry.healed == 0 and dry.watermark is None
    assert "dry run" in dry.render_text()

    report = reconcile(settings, mode="full")
    assert report.counts == {"missing": 1, "stale": 0, "deleted": 2}
    assert (report.enqueued, report.marked_deleted) == (1, 2) and report.ok
    with pg_engine.connect() as conn:
        gone = conn.execute(
            select(subscriptions.c.subscription_number).where(
                subscriptions.c.deleted_at.is_not(None)
            )
        ).scalars()
        assert sorted(gone) == [b, c]
    assert reconcile(settings, mode="full").drift_total == 0


def test_no_heal_reports_and_changes_nothing(
    pg_engine: Engine, pg_url: str, sandbox: RunningSandbox
) -> None:
    fill_cache(pg_engine, sandbox)
    (a,) = numbers(sandbox, 1)
    sandbox.admin.edit_custom_fields(a, {"SupportTier__c": "Bronze-Z"})

    report = reconcile(settings_for(sandbox, pg_url), mode="full", heal=False)

    assert report.counts["stale"] == 1 and report.unhealed == 1 and not report.ok
    assert statuses(pg_engine) == {"done": 20}
    with pg_engine.connect() as conn:
        run = conn.execute(select(sync_runs)).one()
    assert run.watermark is None  # the next incremental run must look again
    assert run.drift["fields"] == {"SupportTier__c": 1}


def test_both_query_apis_give_the_same_report(
    pg_engine: Engine, pg_url: str, sandbox: RunningSandbox
) -> None:
    fill_cache(pg_engine, sandbox)
    a, b = numbers(sandbox, 2)
    sandbox.admin.edit_custom_fields(a, {"ContractOwner__c": "z@example.com"})
    sandbox.admin.amend(b)
    with pg_engine.begin() as conn:
        conn.execute(
            subscriptions.delete().where(subscriptions.c.subscription_number == "A-S00000020")
        )

    reports = [
        reconcile(settings_for(sandbox, pg_url, ZUORA_QUERY_API=api), mode="full", heal=False)
        for api in ("dataquery", "zoql")
    ]

    assert reports[0].counts == {"missing": 1, "stale": 2, "deleted": 0}
    assert reports[0].counts == reports[1].counts
    assert reports[0].field_counts == reports[1].field_counts
    assert reports[0].examples == reports[1].examples


@pytest.mark.parametrize("api", ["dataquery", "zoql"])
def test_incremental_finds_what_changed_since_the_watermark(
    pg_engine: Engine, pg_url: str, sandbox: RunningSandbox, api: str
) -> None:
    fill_cache(pg_engine, sandbox)
    settings = settings_for(sandbox, pg_url, ZUORA_QUERY_API=api)
    first = reconcile(settings, mode="incremental")
    assert first.mode == "full" and "no watermark" in first.notes[0]
    assert first.watermark is not None

    a, b = numbers(sandbox, 2)
    sandbox.admin.edit_custom_fields(a, {"SupportTier__c": "Changed"})
    sandbox.admin.amend(b)
    report = reconcile(settings, mode="incremental")

    assert report.mode == "incremental" and report.since is not None
    assert report.since <= first.watermark
    # Only what changed recently is pulled, not the whole tenant (seeded history ends
    # well before the watermark).
    assert report.remote_subscriptions == 2
    assert report.counts == {"missing": 0, "stale": 2, "deleted": 0}
    assert report.ok
    assert reconcile(settings, mode="incremental").drift_total == 0


def test_an_ad_hoc_since_reaches_back_further_than_the_watermark(
    pg_engine: Engine, pg_url: str, sandbox: RunningSandbox
) -> None:
    fill_cache(pg_engine, sandbox)
    settings = settings_for(sandbox, pg_url)
    since = datetime(2019, 1, 1, tzinfo=UTC)
    report = reconcile(settings, mode="incremental", since=since)
    assert report.mode == "incremental" and report.remote_subscriptions == 20
    assert report.drift_total == 0


def test_bad_parameters_are_refused_before_anything_runs(
    pg_engine: Engine, pg_url: str, sandbox: RunningSandbox
) -> None:
    settings = settings_for(sandbox, pg_url)
    with pytest.raises(ReconcileError, match="full"):
        reconcile(settings, mode="full", since=datetime.now(UTC))
    with pytest.raises(ReconcileError, match="time zone"):
        reconcile(settings, mode="incremental", since=datetime(2026, 1, 1))
    with pg_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(sync_runs)).scalar() == 0


def test_query_injection_through_field_names_is_refused(
    pg_engine: Engine, pg_url: str, sandbox: RunningSandbox
) -> None:
    settings = settings_for(sandbox, pg_url)
    for hostile in ("x__c FROM account --", "Name__c' OR '1'='1", 'a"__c'):
        # The settings already refuse them; the pull refuses them again for any caller.
        object.__setattr__(settings, "ZUORA_TRACKED_FIELDS", ("SupportTier__c", hostile))
        with pytest.raises(QueryError, match="custom field"):
            reconcile(settings, mode="full")
    with pg_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(sync_runs)).scalar() == 0


def test_a_since_value_cannot_change_the_query(
    pg_engine: Engine, pg_url: str, sandbox: RunningSandbox
) -> None:
    from zuora.pull import page_sql, zoql_text

    since = datetime(2026, 1, 1, tzinfo=UTC) - timedelta(seconds=1)
    sql = page_sql(["SupportTier__c"], "A' OR 1=1 --", "Z", since)
    assert "'A'' OR 1=1 --'" in sql and "TIMESTAMP '2025-12-31 23:59:59.000 UTC'" in sql
    assert "'2025-12-31T23:59:59+00:00'" in zoql_text(["SupportTier__c"], since)


def test_pages_stay_under_the_output_cap_and_run_side_by_side() -> None:
    from zuora.pull import MAX_OUTPUT_ROWS, PAGE_ROWS, plan_pages

    # 10 million subscriptions in 256 ranges: pages of whole ranges, each under the cap.
    size = 10_000_000 // 256
    buckets = [(f"A-S{i * size:08d}", f"A-S{(i + 1) * size - 1:08d}", size) for i in range(256)]
    pages = plan_pages(buckets, PAGE_ROWS, 4)
    assert sum(n for _, _, n in pages) == size * 256
    assert all(n <= PAGE_ROWS < MAX_OUTPUT_ROWS for _, _, n in pages)
    assert pages[0][0] == "A-S00000000" and len(pages) >= 23
    assert all(a[1] < b[0] for a, b in itertools.pairwise(pages))  # disjoint
    # A million: at least four pages; a small tenant: one job.
    assert len(plan_pages([(f"{i:03d}", f"{i:03d}", 3906) for i in range(256)], PAGE_ROWS, 4)) == 4
    assert len(plan_pages([(f"{i:03d}", f"{i:03d}", 30) for i in range(256)], PAGE_ROWS, 4)) == 1
    assert plan_pages([], PAGE_ROWS, 4) == []
