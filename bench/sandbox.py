"""Benchmark the sandbox: GETs per second, and the 1M-subscription Data Query.

    .venv/bin/python bench/sandbox.py                      # 1,000,000 subscriptions
    .venv/bin/python bench/sandbox.py --subscriptions 100000 --seconds 5

The sandbox runs as its own process (`zuora-sync sandbox`), as in the benchmarks of the
project. GETs are driven by a lean keep-alive HTTP/1.1 client (raw asyncio streams, several
connections) so the client costs as little CPU as possible on a 2-core machine; the figure
is what one sandbox process serves. The Data Query part times the latest-version query over
every subscription (number, id, version, status, account, updated date, tracked custom
fields) from submit to downloaded rows, as one job and as two half-size jobs in parallel.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gzip
import io
import random
import time
from pathlib import Path

import httpx

from zuora.sandbox.config import SandboxConfig
from zuora.sandbox.server import RunningSandbox, running_sandbox
from zuora_sync.settings import SANDBOX_CUSTOM_FIELDS, get_settings


def token(sb: RunningSandbox) -> str:
    response = httpx.post(
        f"{sb.base_url}/oauth/token",
        data={
            "client_id": sb.client_id,
            "client_secret": sb.client_secret,
            "grant_type": "client_credentials",
        },
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


async def _worker(
    host: str, port: int, bearer: str, numbers: list[str], deadline: float, counts: dict[str, int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            number = random.choice(numbers)
            writer.write(
                f"GET /v1/subscriptions/{number} HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {bearer}\r\n\r\n".encode()
            )
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            key = status_line.split(b" ")[1].decode()
            counts[key] = counts.get(key, 0) + 1
    finally:
        writer.close()


async def get_rate(sb: RunningSandbox, n: int, seconds: float, connections: int) -> float:
    bearer = token(sb)
    host, port = sb.base_url.removeprefix("http://").split(":")
    numbers = [f"A-S{random.randint(1, n):08d}" for _ in range(20_000)]
    counts: dict[str, int] = {}
    # warm-up
    await asyncio.gather(
        *(
            _worker(host, int(port), bearer, numbers, time.perf_counter() + 1, {})
            for _ in range(connections)
        )
    )
    start = time.perf_counter()
    await asyncio.gather(
        *(
            _worker(host, int(port), bearer, numbers, start + seconds, counts)
            for _ in range(connections)
        )
    )
    elapsed = time.perf_counter() - start
    if set(counts) - {"200"}:
        print(f"  statuses: {counts}")
    return counts.get("200", 0) / elapsed


_BARE_APP = """
import sys, uvicorn
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b'{"success":true}'
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            access_log=False)
"""


def bare_rate(seconds: float, connections: int) -> float:
    """Requests/s of a do-nothing uvicorn endpoint with the same client: the ceiling."""
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", _BARE_APP, str(port)])
    try:
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/")
                break
            except httpx.TransportError:
                time.sleep(0.1)

        async def run() -> float:
            counts: dict[str, int] = {}
            start = time.perf_counter()
            await asyncio.gather(
                *(
                    _worker("127.0.0.1", port, "x", ["A-S00000001"], start + seconds, counts)
                    for _ in range(connections)
                )
            )
            return counts.get("200", 0) / (time.perf_counter() - start)

        return asyncio.run(run())
    finally:
        proc.terminate()
        proc.wait()


def data_query(sb: RunningSandbox, sql: str, bearer: str) -> tuple[int, float, float, float]:
    """(rows, seconds to completed, seconds to downloaded and parsed, job processing s)."""
    started = time.perf_counter()
    with httpx.Client(
        base_url=sb.base_url, headers={"Authorization": f"Bearer {bearer}"}, timeout=600
    ) as client:
        job = client.post(
            "/query/jobs",
            json={
                "query": sql,
                "outputFormat": "CSV",
                "compression": "GZIP",
                "output": {"target": "S3"},
            },
        ).json()["data"]
        while job["queryStatus"] not in ("completed", "failed", "cancelled"):
            time.sleep(0.05)
            job = client.get(f"/query/jobs/{job['id']}").json()["data"]
        done = time.perf_counter() - started
        if job["queryStatus"] != "completed":
            raise RuntimeError(job.get("errorMessage"))
        raw = httpx.get(job["dataFile"], timeout=600).content
    rows = sum(1 for _ in csv.reader(io.StringIO(gzip.decompress(raw).decode()))) - 1
    return rows, done, time.perf_counter() - started, job["processingTime"] / 1000


def latest_sql(fields: tuple[str, ...], where: str = "") -> str:
    custom = ", ".join(f.lower() for f in fields)
    return (
        (
            "select s.name, s.id, s.version, s.status, s.accountid, s.updateddate, "
            f"{', '.join('s.' + f.lower() for f in fields)} from subscription s "
            "join (select name, max(version) as v from subscription group by name) m "
            f"on s.name = m.name and s.version = m.v {where}"
        )
        if custom
        else ""
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscriptions", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    n = args.subscriptions
    fields = SANDBOX_CUSTOM_FIELDS
    config = SandboxConfig(
        subscriptions=n,
        custom_fields=fields,
        rate_limit_per_window=0,
        concurrency_limit=1000,
        cache_dir=Path(get_settings().ZUORA_SANDBOX_CACHE_DIR),
        dataquery_max_output_rows=max(n, 500_000),
    )
    ceiling = bare_rate(min(args.seconds, 5.0), args.connections)
    print(f"a do-nothing uvicorn endpoint, same client: {ceiling:,.0f} requests/s")
    print(f"sandbox with {n:,} subscriptions (process mode)")
    t0 = time.perf_counter()
    with running_sandbox(config, mode="process", startup_timeout=3600) as sb:
        print(f"  started in {time.perf_counter() - t0:.1f} s")
        while not sb.admin.health()["warm"]:  # the data set is in the page cache
            time.sleep(0.5)
        print(f"  data set read into the page cache after {time.perf_counter() - t0:.1f} s")
        rate = asyncio.run(get_rate(sb, n, args.seconds, args.connections))
        print(
            f"GET /v1/subscriptions/{{number}}: {rate:,.0f} requests/s "
            f"({args.connections} keep-alive connections, {args.seconds:.0f} s, random numbers)"
        )
        print(f"  = {rate / ceiling:.0%} of the do-nothing endpoint's rate")
        bearer = token(sb)
        rows, done, total, work = data_query(sb, latest_sql(fields), bearer)
        print(
            f"Data Query, latest version of every subscription: {rows:,} rows (CSV, GZIP), "
            f"submit to completed {done:.2f} s (the job's processingTime {work:.2f} s), "
            f"downloaded and parsed with csv {total:.2f} s"
        )
        half = f"A-S{n // 2:08d}"
        started = time.perf_counter()
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2) as pool:
            parts = list(
                pool.map(
                    lambda w: data_query(sb, latest_sql(fields, w), bearer),
                    [f"where s.name <= '{half}'", f"where s.name > '{half}'"],
                )
            )
        both = time.perf_counter() - started
        print(
            f"  as two half jobs in parallel: {sum(p[0] for p in parts):,} rows in "
            f"{both:.2f} s ({total / both:.2f}x the single job)"
        )


if __name__ == "__main__":
    main()
