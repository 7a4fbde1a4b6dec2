"""Benchmark the reconcile: a full diff of 1,000,000 subscriptions against the sandbox.

    .venv/bin/python bench/reconcile.py                          # 1,000,000 subscriptions
    .venv/bin/python bench/reconcile.py --subscriptions 100000

The sandbox runs as its own process (`zuora-sync sandbox`, Data Query in its worker
processes). A fresh PostgreSQL database gets a cache equal to the tenant (loaded with COPY
from one Data Query pull: setup, not timed), then drift: custom fields edited in Zuora without
a callout, cache rows removed and altered, subscriptions deleted in Zuora.

The measured part runs in a child process of its own, so its peak RSS is the reconcile's
alone: first the floor (the two reads, exactly as the reconcile does them: the paged Data
Query pull and the cache's COPY, side by side), then `run_reconcile(mode="full",
drain=False)` end to end (reads, diff, GETs confirming deletions, the drift enqueued into the
inbox and deletions marked: the total), then the floor again (the smaller floor is used),
then the drain of what was enqueued, timed on its own. Figures are printed and written to
bench/results/reconcile.json. Targets: total <= 20 s, peak RSS <= 1 GB, total/floor <= 2.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.databases import RESULTS, drop_database, fresh_database
from zuora_sync.settings import SANDBOX_CUSTOM_FIELDS, get_settings, load_settings


def load_cache(settings: Any, url: str) -> int:
    """Fill zuora_subscriptions from one pull of the tenant (the drain would take minutes)."""
    from zuora.client import ZuoraClient
    from zuora.pull import pull

    async def fetch() -> Any:
        async with ZuoraClient.from_settings(settings) as zuora:
            table, _ = await pull(zuora, settings.ZUORA_TRACKED_FIELDS)
            return table

    table = asyncio.run(fetch())
    fields = list(settings.ZUORA_TRACKED_FIELDS)
    now = datetime.now(UTC).isoformat()
    with tempfile.TemporaryFile("w+", newline="") as buffer:
        writer = csv.writer(buffer)
        columns = table.to_pydict()
        for i in range(table.num_rows):
            custom = {f: columns[f][i] for f in fields}
            writer.writerow(
                [columns["subscription_number"][i], columns["zuora_id"][i],
                 columns["version"][i], columns["status"][i], columns["account_id"][i],
                 orjson.dumps(custom).decode(), "{}", "bench", now, now]
            )  # fmt: skip
        buffer.seek(0)
        engine = create_engine(url)
        raw = engine.raw_connection()
        try:
            with raw.cursor() as cursor:
                cursor.copy_expert(
                    "COPY zuora_subscriptions (subscription_number, zuora_id, version, status, "
                    "account_id, custom_fields, raw, content_hash, fetched_at, synced_at) "
                    "FROM STDIN WITH (FORMAT csv)",
                    buffer,
                )
                cursor.execute("ANALYZE zuora_subscriptions")
            raw.commit()
        finally:
            raw.close()
            engine.dispose()
    return int(table.num_rows)


def make_drift(sandbox: Any, url: str, n: int, rng: random.Random) -> dict[str, int]:
    picks = rng.sample(range(1, n + 1), 1_000)
    edited, gone_remote = picks[:400], picks[400:410]
    gone_local, altered = picks[500:700], picks[700:1000]
    for k in edited:
        sandbox.admin.edit_custom_fields(f"A-S{k:08d}", {"SupportTier__c": f"Bench-{k}"})
    for k in gone_remote:
        sandbox.admin.delete(f"A-S{k:08d}")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text("DELETE FROM zuora_subscriptions WHERE subscription_number = ANY(:n)"),
            {"n": [f"A-S{k:08d}" for k in gone_local]},
        )
        conn.execute(
            text(
                "UPDATE zuora_subscriptions SET custom_fields = custom_fields || "
                '\'{"ContractOwner__c": "stale@example.com"}\' '
                "WHERE subscription_number = ANY(:n)"
            ),
            {"n": [f"A-S{k:08d}" for k in altered]},
        )
    engine.dispose()
    return {"edited_in_zuora": 400, "deleted_in_zuora": 10, "removed_from_cache": 200,
            "altered_in_cache": 300}  # fmt: skip


# --- the measured child --------------------------------------------------------------------


async def floor(settings: Any) -> dict[str, float]:
    """The two reads alone, side by side as the reconcile runs them."""
    from sqlalchemy import create_engine as _ce

    from warehouse.snapshot import read_cache
    from zuora.client import ZuoraClient
    from zuora.pull import pull

    engine = _ce(settings.DATABASE_URL)
    fields = settings.ZUORA_TRACKED_FIELDS
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def cache_side() -> Any:
        t = time.perf_counter()
        table = read_cache(engine, fields)
        timings["cache_read_s"] = time.perf_counter() - t
        return table

    async with ZuoraClient.from_settings(settings) as zuora:
        cache_task = asyncio.create_task(asyncio.to_thread(cache_side))
        remote, stats = await pull(zuora, fields)
        timings["pull_s"] = time.perf_counter() - started
        cache = await cache_task
    timings["floor_s"] = time.perf_counter() - started
    timings["pages"] = len(stats.pages)
    assert remote.num_rows and cache.num_rows
    engine.dispose()
    return timings


class RssSampler:
    """Peak resident memory of this process per phase, and when in the phase it was reached."""

    def __init__(self) -> None:
        import threading

        self.peaks: dict[str, tuple[float, float]] = {}
        self.name = "start"
        self.since = time.perf_counter()
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def phase(self, name: str) -> None:
        self.name, self.since = name, time.perf_counter()

    def _run(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while self.running:
            with open("/proc/self/statm") as statm:
                rss = int(statm.read().split()[1]) * page / 2**20
            at = time.perf_counter() - self.since
            if rss > self.peaks.get(self.name, (0.0, 0.0))[0]:
                self.peaks[self.name] = (rss, at)
            time.sleep(0.02)

    def stop(self) -> dict[str, str]:
        self.running = False
        self.thread.join()
        return {k: f"{mb:.0f} MB at {at:.1f} s" for k, (mb, at) in self.peaks.items()}


def child() -> None:
    from flows.drain import DrainOptions
    from flows.reconcile import run_reconcile
    from flows.runner import run_drain

    settings = get_settings()
    sampler = RssSampler()
    sampler.phase("floor")
    first = asyncio.run(floor(settings))
    sampler.phase("reconcile")
    started = time.perf_counter()
    report = asyncio.run(run_reconcile(settings, mode="full", drain=False))
    total = time.perf_counter() - started
    sampler.phase("floor again")
    second = asyncio.run(floor(settings))
    sampler.phase("drain")
    # The drain of what was healed, timed on its own: its pace is the drain's (bounded by
    # Zuora's request limits and bench/drain.py's subject), not the reconcile's.
    started = time.perf_counter()
    drained = asyncio.run(run_drain(settings, DrainOptions.from_settings(settings)))
    drain_s = time.perf_counter() - started
    best = min(first, second, key=lambda t: t["floor_s"])
    out = {
        "total_s": total,
        "floor_s": best["floor_s"],
        "floor_runs_s": [first["floor_s"], second["floor_s"]],
        "pull_s": best["pull_s"],
        "cache_read_s": best["cache_read_s"],
        "pages": best["pages"],
        "timings": report.timings,
        "counts": report.counts,
        "field_counts": report.field_counts,
        "healed": report.healed,
        "drain": drained.as_dict(),
        "drain_s": drain_s,
        "total_with_drain_s": total + drain_s,
        "remote": report.remote_subscriptions,
        "cache": report.cache_subscriptions,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_by_phase": sampler.stop(),
    }
    print("RESULT " + json.dumps(out, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscriptions", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child()
        return

    from zuora.sandbox.config import SandboxConfig
    from zuora.sandbox.server import running_sandbox

    n = args.subscriptions
    config = SandboxConfig(
        subscriptions=n,
        custom_fields=SANDBOX_CUSTOM_FIELDS,
        rate_limit_per_window=0,
        concurrency_limit=200,
        cache_dir=Path(get_settings().ZUORA_SANDBOX_CACHE_DIR),
    )
    print(f"sandbox: {n:,} subscriptions (built once, then cached) ...", flush=True)
    url = fresh_database()
    try:
        with running_sandbox(config, mode="process") as sb:
            env = {**sb.env(), "DATABASE_URL": url, "ZUORA_MAX_CONCURRENCY": "40"}
            settings = load_settings(**env)
            t = time.perf_counter()
            loaded = load_cache(settings, url)
            print(f"cache: {loaded:,} subscriptions loaded in {time.perf_counter() - t:.1f} s")
            drift = make_drift(sb, url, n, random.Random(args.seed))
            print(f"drift made: {drift}", flush=True)
            proc = subprocess.run(
                [sys.executable, __file__, "--child"],
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                check=False,
            )
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not lines:
                print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
                raise SystemExit("the measured run failed")
            result = json.loads(lines[-1].removeprefix("RESULT "))
    finally:
        drop_database(url)

    result = {
        "subscriptions": n,
        **result,
        "ratio": result["total_s"] / result["floor_s"],
        "drift_made": drift,
        "cpus": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    timings = result.pop("timings")
    result.update({f"{k}_s": v for k, v in timings.items() if k != "total"})
    print(f"\nreconcile, {n:,} subscriptions, full, against the sandbox and PostgreSQL")
    print(f"  drift found   {result['counts']}  fields {result['field_counts']}")
    print(f"  healed        {result['healed']:,} (enqueued or marked deleted)")
    print(f"  floor         {result['floor_s']:6.2f} s  (Data Query pull {result['pull_s']:.2f} s "
          f"in {result['pages']} pages, cache COPY {result['cache_read_s']:.2f} s, side by side)")  # fmt: skip
    for key in ("reads_s", "diff_s", "confirm_s", "heal_s"):
        if key in result:
            print(f"  {key[:-2]:<13} {result[key]:6.2f} s")
    print(f"  total         {result['total_s']:6.2f} s   (target <= 20 s; reads, diff, "
          "confirming deletions, enqueueing the drift)")  # fmt: skip
    print(f"  then drain    {result['drain_s']:6.2f} s   ({result['drain']['upserted']:,} written, "
          f"{result['drain']['deleted']:,} deleted; end to end {result['total_with_drain_s']:.2f} s)")  # fmt: skip
    print(f"  ratio         {result['ratio']:6.2f}     (total / floor, target <= 2)")
    print(f"  peak RSS      {result['peak_rss_mb']:6.0f} MB  (target <= 1024 MB)")
    print(f"  by phase      {result['peak_rss_by_phase']}")
    print(f"  load average  {result['load_avg_1m']:.1f} on {result['cpus']} cores")
    RESULTS.mkdir(exist_ok=True)
    flat = {k: v for k, v in result.items() if not isinstance(v, dict | list)}
    flat.update({f"drift_{k}": v for k, v in result["counts"].items()})
    (RESULTS / "reconcile.json").write_text(json.dumps(flat, indent=2, default=str) + "\n")
    print(f"written to {RESULTS / 'reconcile.json'}")


if __name__ == "__main__":
    main()
