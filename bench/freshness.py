"""Benchmark freshness: a callout POSTed to the webhook until its subscription is in the cache.

    .venv/bin/python bench/freshness.py                     # 20 callouts/s for 30 s
    .venv/bin/python bench/freshness.py --rate 50 --seconds 60 --latency-ms 100

Everything runs as deployed, each in its own process: the sandbox (Zuora, with a fixed
latency per request), the webhook (`zuora-sync webhook`), and the drain as its schedule runs
it (`zuora-sync drain --window ...`, woken by NOTIFY). A sender posts callouts at a steady
trickle, each for a random subscription and with its own Zuora-Notification-Id, and notes
when it sent each one. The cache write commits in the same transaction that marks the
callout's inbox row done, so `processed_at` of that row is when the subscription reached the
cache; freshness is that minus the send time. Results also go to bench/results/freshness.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.databases import RESULTS, drop_database, fresh_database
from warehouse.models import inbox
from zuora.sandbox.config import Faults, SandboxConfig
from zuora.sandbox.server import running_sandbox

USER, PASSWORD = "bench-callout", "bench-callout-password"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "zuora_sync", *args],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} never became ready")


async def trickle(url: str, rate: float, seconds: float, numbers: int) -> dict[str, float]:
    """Post `rate` callouts a second for `seconds`; return notification id -> send time."""
    sent: dict[str, float] = {}
    interval = 1.0 / rate
    async with httpx.AsyncClient(base_url=url, auth=(USER, PASSWORD), timeout=30) as client:
        start_at = time.time()
        pending: set[asyncio.Task[None]] = set()

        async def post(notification: str, number: str) -> None:
            sent[notification] = time.time()
            response = await client.post(
                "/api/v1/zuora/callouts/sync_subscription",
                json={"SubscriptionNumber": number},
                headers={"Zuora-Notification-Id": notification},
            )
            response.raise_for_status()

        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start_at + i * interval - time.time()))
            number = f"A-S{random.randint(1, numbers):08d}"
            task = asyncio.create_task(post(uuid.uuid4().hex, number))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
    return sent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help="callouts per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--subscriptions", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=250.0, help="Zuora's latency per GET")
    args = parser.parse_args()

    database = fresh_database()
    logs = RESULTS / "freshness-logs"
    logs.mkdir(parents=True, exist_ok=True)
    config = SandboxConfig(
        subscriptions=args.subscriptions,
        rate_limit_per_window=0,
        faults=Faults(latency_ms=args.latency_ms),
    )
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with running_sandbox(config, mode="process") as sb:
            env = {
                **os.environ,
                **sb.env(),
                "DATABASE_URL": database,
                "CALLOUT_USERNAME": USER,
                "CALLOUT_PASSWORD": PASSWORD,
                "LOG_LEVEL": "WARNING",
            }
            env.pop("PREFECT_API_URL", None)
            port = free_port()
            webhook_url = f"http://127.0.0.1:{port}"
            processes.append(start(["webhook", "--port", str(port)], env, logs / "webhook.log"))
            wait_ready(webhook_url)
            window = args.seconds + 30
            processes.append(start(["drain", "--window", str(window)], env, logs / "drain.log"))
            time.sleep(2)  # the drain is up and listening, as a scheduled run would be
            print(
                f"trickle: {args.rate:.0f} callouts/s for {args.seconds:.0f} s, Zuora latency {args.latency_ms:.0f} ms"
            )
            sent = asyncio.run(trickle(webhook_url, args.rate, args.seconds, args.subscriptions))
            engine = create_engine(database)
            deadline = time.monotonic() + 60
            while True:
                with engine.connect() as conn:
                    rows = conn.execute(
                        select(inbox.c.dedup_key, inbox.c.processed_at, inbox.c.status)
                    ).all()
                if (
                    sum(r.status == "done" for r in rows) >= len(sent)
                    or time.monotonic() > deadline
                ):
                    break
                time.sleep(0.5)
            engine.dispose()
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        drop_database(database)

    samples: list[dict[str, Any]] = []
    for key, processed_at, status in rows:
        notification = key.removeprefix("callout:")
        if status == "done" and notification in sent and processed_at is not None:
            done = processed_at.replace(tzinfo=processed_at.tzinfo or UTC).timestamp()
            samples.append({"sent": sent[notification], "freshness_s": done - sent[notification]})
    lags = [s["freshness_s"] for s in samples]
    result = {
        "rate": args.rate,
        "seconds": args.seconds,
        "latency_ms": args.latency_ms,
        "sent": len(sent),
        "in_cache": len(samples),
        "p50_s": percentile(lags, 0.50) if lags else None,
        "p95_s": percentile(lags, 0.95) if lags else None,
        "max_s": max(lags) if lags else None,
        "samples": sorted(samples, key=lambda s: s["sent"]),
        "measured_at": datetime.now(UTC).isoformat(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "freshness.json").write_text(json.dumps(result, indent=2))
    print(f"callouts sent {len(sent)}, in the cache {len(samples)}")
    if lags:
        print(
            f"freshness p50 {result['p50_s']:.3f} s   p95 {result['p95_s']:.3f} s (target <= 2 s)   max {result['max_s']:.3f} s"
        )
        print(
            f"  p95 / target {result['p95_s'] / 2.0:.2f}; Zuora's own latency is {args.latency_ms / 1000:.3f} s of it"
        )


if __name__ == "__main__":
    main()
