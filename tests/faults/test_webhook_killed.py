"""The webhook killed with SIGKILL (and stopped with SIGTERM) again and again while Zuora
keeps sending callouts.

Proves: a 200 means a committed row (every acknowledged callout is in the inbox), Zuora's
retries of one notification store it once (the dedup key is the notification id, whichever
attempt's commit won), and a callout that met a dead webhook is retried until it is taken.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from tests.faults.harness import (
    Notification,
    Webhook,
    ZuoraSender,
    notifications,
    project_env,
    sized,
)
from tests.webhook.conftest import PASSWORD, USER
from warehouse.models import inbox as inbox_table


def webhook_env(database_url: str, **extra: str) -> dict[str, str]:
    return project_env(
        DATABASE_URL=database_url,
        CALLOUT_USERNAME=USER,
        CALLOUT_PASSWORD=PASSWORD,
        ZUORA_SYNC_ENV="production",
        LOG_FORMAT="json",
        **extra,
    )


async def deliver_while_killing(
    hook: Webhook, notes: list[Notification], *, kills: int, deadline: float
) -> int:
    """Send every callout; stop the webhook each time another share of them has been
    acknowledged (so stops land under load, with requests in flight), mostly with SIGKILL,
    every other time with SIGTERM; restart it at once."""
    sender = ZuoraSender(hook.url, USER, PASSWORD, retry_interval=0.1)
    delivery = asyncio.create_task(sender.deliver_all(notes, concurrency=8, deadline=deadline))
    killed = 0
    while killed < kills and not delivery.done():
        threshold = len(notes) * (killed + 1) // (kills + 1)
        if sum(n.acknowledged for n in notes) < threshold:
            await asyncio.sleep(0.01)
            continue
        if killed % 2:
            # Every other time a graceful stop: uvicorn finishes what is in flight, then
            # ends the way the signal asked (so a supervisor sees a normal stop).
            code = await asyncio.to_thread(hook.stop)
            assert code in (0, -signal.SIGTERM), hook.output()[-2000:]
            stopped = hook.output().count('"event":"webhook.stopped"')
            assert stopped == (killed + 1) // 2, hook.output()[-2000:]
        else:
            hook.kill()
        killed += 1
        hook.start()
        await asyncio.to_thread(hook.wait_up)
    await delivery
    return killed


@pytest.mark.slow
@pytest.mark.timeout(sized(300, 1500))
def test_sigkilled_webhook__every_acknowledged_callout_stored_once_and_the_rest_retried_in(
    pg_url: str, pg_engine: Engine, tmp_path: Path
) -> None:
    total, kills = sized(100, 3000), sized(2, 15)
    numbers = [f"A-S{i:08d}" for i in range(1, 41)]
    notes = notifications(total, numbers)
    hook = Webhook(webhook_env(pg_url), tmp_path / "webhook.log")
    hook.start()
    hook.wait_up()
    try:
        deadline = time.monotonic() + sized(150, 900)
        killed = asyncio.run(deliver_while_killing(hook, notes, kills=kills, deadline=deadline))
    finally:
        hook.stop()

    assert killed == kills and hook.starts == kills + 1
    # Every callout was acknowledged in the end; none was refused for good.
    assert [n.id for n in notes if not n.acknowledged] == []
    assert [(n.id, n.refused) for n in notes if n.refused] == []
    # The kills really hit callouts: some attempts found no webhook or lost their answer.
    assert sum(a.status == -1 for n in notes for a in n.attempts) > 0
    # Zuora's handshake on every attempt that reached the app: a 401 without credentials,
    # then the same request (same request id) with them.
    for note in notes:
        answered = [a for a in note.attempts if a.status != -1]
        assert answered and all((a.status == 401) != a.auth_sent for a in answered), note
        assert note.attempts[-1].auth_sent and note.attempts[-1].status == 200

    with pg_engine.connect() as conn:
        rows = conn.execute(
            select(
                inbox_table.c.dedup_key,
                inbox_table.c.subscription_number,
                inbox_table.c.payload,
                inbox_table.c.status,
            )
        ).all()
    # Exactly once: one row per notification, keyed by its notification id.
    assert len(rows) == total
    assert sorted(r.dedup_key for r in rows) == sorted(f"callout:{n.id}" for n in notes)
    by_key = {f"callout:{n.id}": n for n in notes}
    for row in rows:
        note = by_key[row.dedup_key]
        assert row.subscription_number == note.body["SubscriptionNumber"]
        assert row.status == "pending"
        # The stored row came from one of this notification's attempts (maybe not the last:
        # an attempt can commit and then lose its answer to the kill).
        assert row.payload["request_id"] in {a.request_id for a in note.attempts}
    assert '"event":"webhook.started"' in hook.output()
