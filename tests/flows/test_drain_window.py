"""A scheduled drain run counts its window from its scheduled start, so late runs end on time."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from prefect.client.schemas.objects import FlowRun

from flows.drain_callouts import MIN_LATE_WINDOW_SECONDS, scheduled_start, window_left

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_a_run_that_starts_late_keeps_only_what_is_left_of_its_window() -> None:
    assert window_left(50, T0, T0) == 50
    assert window_left(50, T0, T0 + timedelta(seconds=20)) == 30
    # Started after its window: one short look, not a whole window into the next run's minute.
    assert window_left(50, T0, T0 + timedelta(seconds=75)) == MIN_LATE_WINDOW_SECONDS
    # A clock a little behind the scheduler's never stretches the window.
    assert window_left(50, T0, T0 - timedelta(seconds=5)) == 50


def test_until_empty_and_unscheduled_runs_keep_their_window() -> None:
    assert window_left(0, T0, T0 + timedelta(seconds=90)) == 0
    assert window_left(50, None, T0 + timedelta(seconds=90)) == 50


def test_only_runs_the_scheduler_created_count_from_the_schedule() -> None:
    planned = T0 - timedelta(seconds=30)
    by_scheduler = FlowRun(flow_id=uuid.uuid4(), auto_scheduled=True, expected_start_time=planned)
    ad_hoc = FlowRun(flow_id=uuid.uuid4(), auto_scheduled=False, expected_start_time=planned)
    assert scheduled_start(by_scheduler) == planned
    assert scheduled_start(ad_hoc) is None
    assert scheduled_start(None) is None
