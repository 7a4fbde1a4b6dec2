"""Benchmark the drain against a rate-bounded sandbox, beside a naive worker.

    .venv/bin/python bench/drain.py                        # 100,000 callouts, 10,000 subscriptions
    .venv/bin/python bench/drain.py --callouts 20000 --subscriptions 2000

The sandbox runs as its own process with a fixed latency per request and Zuora's default
concurrency limit, so the best any client can do is `limit / latency` subscriptions per
second (the bound). The drain works a backlog of callouts (several per subscription, in
random order) in a fresh PostgreSQL database; the figures are subscriptions synced per
second against the bound, the share of requests answered 429, and the same backlog worked
by a naive worker (one callout at a time: fetch, then upsert) for a fixed time, as a ratio.
Everything is measured in this one run; results also go to bench/results/drain.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.databases import RESULTS, drop_database, fresh_database
from flows.drain import Drainer, DrainOptions
from warehouse import inbox
from warehouse.cache import upsert_subscription
from warehouse.db import make_engine
from warehouse.inbox import NewItem
from zuora.client import ZuoraClient
from zuora.limiter import AdaptiveLimiter
from zuora.sandbox.config import Faults, SandboxConfig
from zuora.sandbox.server import RunningSandbox, running_sandbox


def backlog(url: str, callouts: int, subscriptions: int, seed: int) -> None:
    rng = random.Random(seed)
    numbers = [f"A-S{i:08d}" for i in range(1, subscriptions + 1)]
    keys = numbers * (callouts // subscriptions) + rng.sample(numbers, callouts % subscriptions)
    rng.shuffle(keys)
    engine = make_engine(url)
    with engine.begin() as conn:
        for start in range(0, len(keys), 5000):
            inbox.enqueue(
                conn,
                [
                    NewItem(
                        "callout", f"bench-{start + i}", key, payload={"SubscriptionNumber": key}
                    )
                    for i, key in enumerate(keys[start : start + 5000])
                ],
            )
    engine.dispose()


async def run_drain(url: str, sb: RunningSandbox, concurrency: int) -> dict[str, Any]:
    engine = make_engine(url, pool_size=10)
    async with ZuoraClient(
        sb.base_url, sb.client_id, sb.client_secret, limiter=AdaptiveLimiter(concurrency)
    ) as zuora:
        started_at = time.time()
        started = time.perf_counter()
        stats = await Drainer(engine, zuora, DrainOptions(batch_size=1000)).run()
        elapsed = time.perf_counter() - started
        requests, throttled = zuora.stats.requests, zuora.stats.throttled
    series = per_second(engine, started_at)
    engine.dispose()
    return {
        "elapsed_s": elapsed,
        "started_at": started_at,
        "per_second": series,
        "claimed": stats.claimed,
        "fetched": stats.fetched,
        "subscriptions_per_s": stats.fetched / elapsed,
        "callouts_per_s": stats.claimed / elapsed,
        "requests": requests,
        "throttled": throttled,
        "dead": stats.dead,
    }


def per_second(engine: Engine, started_at: float) -> list[dict[str, int]]:
    """Subscriptions synced and callouts done in each second of the run, read from the inbox
    after it: a subscription's rows are completed in the transaction that writes it to the
    cache, all with one `processed_at`, so nothing is sampled while the drain runs."""
    query = text(
        "SELECT floor(extract(epoch FROM processed_at) - :start)::int AS second,"
        " count(DISTINCT (subscription_number, processed_at)) AS subscriptions,"
        " count(*) AS callouts"
        " FROM callout_inbox WHERE status = 'done' AND processed_at IS NOT NULL"
        " GROUP BY 1 ORDER BY 1"
    )
    with engine.connect() as conn:
        found = {row.second: row for row in conn.execute(query, {"start": started_at})}
    last = max(found, default=-1)
    # Seconds in which nothing finished are zeros, not gaps, so the plot shows the ramp-up
    # and any stall.
    return [
        {
            "second": second,
            "subscriptions": int(found[second].subscriptions) if second in found else 0,
            "callouts": int(found[second].callouts) if second in found else 0,
        }
        for second in range(last + 1)
    ]


async def run_naive(url: str, sb: RunningSandbox, seconds: float) -> dict[str, Any]:
    """What a one-callout-at-a-time worker does: claim one, fetch it, upsert it, repeat."""
    engine = make_engine(url, pool_size=2)
    done = 0
    async with ZuoraClient(
        sb.base_url, sb.client_id, sb.client_secret, limiter=AdaptiveLimiter(1)
    ) as zuora:
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            with engine.begin() as conn:
                rows = inbox.claim(conn, worker="naive", limit=1, lease=timedelta(minutes=5))
            if not rows:
                break
            (row,) = rows
            payload = await zuora.get_subscription(row.subscription_number or "")
            with engine.begin() as conn:
                upsert_subscription(conn, payload, fetched_at=datetime.now(UTC))
                inbox.complete(conn, [row.id], worker="naive")
            done += 1
        elapsed = time.perf_counter() - started
    engine.dispose()
    return {"elapsed_s": elapsed, "callouts": done, "callouts_per_s": done / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callouts", type=int, default=100_000)
    parser.add_argument("--subscriptions", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=250.0)
    parser.add_argument("--limit", type=int, default=40, help="the sandbox's concurrency limit")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=60,
        help="the drain's ZUORA_MAX_CONCURRENCY (above the limit on purpose)",
    )
    parser.add_argument("--naive-seconds", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    config = SandboxConfig(
        subscriptions=args.subscriptions,
        concurrency_limit=args.limit,
        rate_limit_per_window=0,
        faults=Faults(latency_ms=args.latency_ms),
    )
    bound = args.limit / (args.latency_ms / 1000)
    drain_url, naive_url = fresh_database(), fresh_database()
    try:
        print(
            f"sandbox: {args.subscriptions} subscriptions, limit {args.limit}, latency {args.latency_ms:.0f} ms"
        )
        with running_sandbox(config, mode="process") as sb:
            backlog(drain_url, args.callouts, args.subscriptions, args.seed)
            backlog(naive_url, args.callouts, args.subscriptions, args.seed)
            drained = asyncio.run(run_drain(drain_url, sb, args.concurrency))
            naive = asyncio.run(run_naive(naive_url, sb, args.naive_seconds))
            counters = sb.admin.counters()
    finally:
        drop_database(drain_url)
        drop_database(naive_url)

    share_429 = drained["throttled"] / max(1, drained["requests"])
    naive_subs_per_s = naive["callouts_per_s"]  # one fetch per callout
    result = {
        "callouts": args.callouts,
        "subscriptions": args.subscriptions,
        "latency_ms": args.latency_ms,
        "limit": args.limit,
        "concurrency": args.concurrency,
        "bound_subscriptions_per_s": bound,
        "drain": drained,
        "naive": naive,
        "ratio_to_bound": drained["subscriptions_per_s"] / bound,
        "share_429": share_429,
        "speedup_vs_naive_callouts": drained["callouts_per_s"] / naive["callouts_per_s"],
        "speedup_vs_naive_subscriptions": drained["subscriptions_per_s"] / naive_subs_per_s,
        "sandbox_peak_concurrency": counters.get("peak_concurrency"),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "drain.json").write_text(json.dumps(result, indent=2))
    print(
        f"drain: {drained['claimed']} callouts, {drained['fetched']} fetches in {drained['elapsed_s']:.1f} s"
    )
    print(
        f"  subscriptions synced/s  {drained['subscriptions_per_s']:8.1f}   bound {bound:.1f}   ratio {result['ratio_to_bound']:.2f} (target >= 0.90)"
    )
    print(
        f"  429 share               {share_429:8.2%}   ({drained['throttled']} of {drained['requests']} requests; target < 1%)"
    )
    print(f"  callouts/s              {drained['callouts_per_s']:8.1f}")
    print(
        f"naive: {naive['callouts']} callouts in {naive['elapsed_s']:.1f} s = {naive['callouts_per_s']:.2f}/s"
    )
    print(f"  speedup (callouts)      {result['speedup_vs_naive_callouts']:8.1f}x (target >= 30x)")
    print(f"  speedup (subscriptions) {result['speedup_vs_naive_subscriptions']:8.1f}x")
    print(f"sandbox peak concurrency  {result['sandbox_peak_concurrency']} (limit {args.limit})")


if __name__ == "__main__":
    main()
