"""Several drain processes at once, SIGKILLed while they hold leased rows, restarted like
the schedule would, while subscriptions keep changing in Zuora and callouts arrive late
and out of order.

Proves: every row ends `done` (a dead worker's rows come back after the lease), no
subscription's cached version ever goes backwards while all this happens, and the cache
ends equal to Zuora row for row.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from tests.faults.harness import Service, project_env, sized, statuses
from tests.flows.test_drain import callouts
from warehouse.models import inbox as inbox_table
from warehouse.models import subscriptions
from warehouse.verify import cache_differences


class VersionWatch:
    """Samples every cached subscription's version in a thread; records any step back."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.highest: dict[str, int] = {}
        self.backwards: list[tuple[str, int, int]] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> VersionWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(subscriptions.c.subscription_number, subscriptions.c.version)
                ).all()
            for number, version in rows:
                seen = self.highest.get(number)
                if seen is not None and version < seen:
                    self.backwards.append((number, seen, version))
                self.highest[number] = max(version, seen or version)
            self.samples += 1
            self._stop.wait(0.05)


def holders(engine: Engine) -> dict[int, int]:
    """Rows under lease, by the pid of the worker holding them (worker = host:pid:tag)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(inbox_table.c.lease_owner, func.count())
            .where(inbox_table.c.status == "processing")
            .group_by(inbox_table.c.lease_owner)
        ).all()
    return {int(owner.split(":")[1]): count for owner, count in rows if owner}


def claimable(engine: Engine) -> bool:
    """Whether a drain started now would find work (a pending row, or a lapsed lease)."""
    with engine.connect() as conn:
        found = conn.execute(
            select(func.count()).where(
                (inbox_table.c.status == "pending")
                | (
                    (inbox_table.c.status == "processing")
                    & (inbox_table.c.lease_expires_at <= func.now())
                )
            )
        ).scalar_one()
    return bool(found)


@pytest.mark.slow
@pytest.mark.timeout(sized(300, 1500))
def test_drains_sigkilled_mid_batch__every_row_done_and_no_version_goes_back(
    pg_url: str, pg_engine: Engine, sandbox_factory: Any, tmp_path: Path
) -> None:
    size, kills, parallel = sized(24, 300), sized(2, 20), 3
    sandbox = sandbox_factory(subscriptions=size)
    # Slow enough that a worker always has fetches in flight when it is killed.
    sandbox.admin.set_faults(latency_ms=150, latency_jitter_ms=150)
    numbers = [f"A-S{i:08d}" for i in range(1, size + 1)]
    callouts(pg_engine, numbers * 2, prefix="first")
    env = project_env(
        **sandbox.env(),
        DATABASE_URL=pg_url,
        INBOX_LEASE_SECONDS="2",
        ZUORA_MAX_CONCURRENCY="2",
        LOG_FORMAT="json",
    )
    workers = [
        Service(["drain", "--window", "0", "--batch-size", "5"], env, tmp_path / f"drain-{i}.log")
        for i in range(parallel)
    ]
    rng = random.Random(7)
    amended: list[str] = []
    killed_holding: list[int] = []
    exits: list[int] = []
    deadline = time.monotonic() + sized(150, 900)

    with VersionWatch(pg_engine) as watch:
        for worker in workers:
            worker.start()
        while True:
            assert time.monotonic() < deadline, f"never finished: {statuses(pg_engine)}"
            # Zuora changes under the drains: new versions, with their callouts arriving
            # out of order (the new version's id first, the old number's afterwards).
            if len(amended) < size // 3:
                number = rng.choice(numbers)
                new_id = sandbox.admin.amend(number)
                amended.append(number)
                callouts(pg_engine, [new_id], prefix=f"amend-{len(amended)}", by_id=True)
                callouts(pg_engine, [number], prefix=f"late-{len(amended)}")
            held = holders(pg_engine)
            victims = [w for w in workers if w.running and w.proc and held.get(w.proc.pid)]
            if len(killed_holding) < kills and victims:
                victim = rng.choice(victims)
                assert victim.proc is not None
                killed_holding.append(held[victim.proc.pid])
                victim.kill()
                victim.start()
            for worker in workers:
                if not worker.running:
                    assert worker.proc is not None
                    exits.append(worker.proc.returncode)
            now = statuses(pg_engine)
            if set(now) == {"done"} and len(amended) >= size // 3:
                break
            # What the minute schedule does: a run that found nothing to do ends; the next
            # one starts, and finds the rows of a killed worker once their lease is out.
            if claimable(pg_engine):
                for worker in workers:
                    if not worker.running:
                        worker.start()
            time.sleep(0.1)
        for worker in workers:
            worker.stop()

    assert len(killed_holding) == kills and all(n > 0 for n in killed_holding)
    assert watch.samples > 10 and watch.backwards == [], watch.backwards
    total = size * 2 + 2 * len(amended)
    assert statuses(pg_engine) == {"done": total}
    # Runs that ended by themselves ended well: no dead letters (exit 1), no crash.
    assert [code for code in exits if code not in (0, -signal.SIGKILL)] == []
    with pg_engine.connect() as conn:
        attempts = conn.execute(select(func.max(inbox_table.c.attempts))).scalar_one()
    assert attempts >= 2  # rows were really taken again after a kill
    assert cache_differences(pg_engine, sandbox.admin.export()) == []
