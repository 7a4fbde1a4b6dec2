"""Benchmark: the callout webhook on PostgreSQL, beside the ceilings measured in the same run.

    .venv/bin/python bench/webhook.py [--workers 1] [--duration 10] [--rounds 3]

What it does, all on this machine and in one run:

1. Creates two fresh PostgreSQL databases (migrated): one for the webhook, one for pgbench.
2. Starts `zuora-sync webhook` (JSON logs on, as in production, written to a file), a no-op
   FastAPI endpoint and a no-op plain ASGI app, all served by uvicorn the same way.
3. Full speed: wrk posts Zuora-like callouts with unique `Zuora-Notification-Id`s to each
   server in turn for `--duration` seconds, `--rounds` times, interleaved so that a noisy
   neighbour hurts all of them alike; medians are reported. After each webhook round the
   inbox rows are counted: every 2xx must be a stored row, and nothing else may be.
4. Fixed rate: an open-loop generator (bench/loadgen.py) sends 1,000 callouts/s; latency is
   measured from each request's due time. The same against the no-op shows the floor the
   generator itself adds. Every callout answered 2xx is looked up in the inbox by its id.
5. pgbench runs the same INSERT (one row per transaction, as a plain FastAPI + psycopg2
   endpoint would), and the same INSERT with 50 rows per transaction (what group commit does).

wrk comes from Debian's packages; it is installed with apt-get when missing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import resource
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import loadgen  # noqa: E402
from warehouse import migrate  # noqa: E402
from zuora_sync.settings import normalise_database_url  # noqa: E402

CALLOUT_PATH = "/api/v1/zuora/callouts/sync_subscription"
LUA = ROOT / "bench" / "callouts.lua"
PAYLOAD = {
    "SubscriptionNumber": "A-S00000042",
    "AccountId": "2c92a0f96c1ee5a5016c1f2bb0b7",
    "AccountNumber": "A00000042",
    "Version": "3",
    "EventType": "SubscriptionCustomFieldsChanged",
    "SupportTier__c": "Gold",
    "SeatOverride__c": "25",
}
TARGETS = {"accepted_per_s": 4000.0, "ratio_to_noop": 0.5, "p99_ms_at_fixed_rate": 20.0}


@dataclass
class Server:
    name: str
    base: str
    pid: int


@dataclass
class WrkRun:
    requests: int
    non_2xx: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    server_cpu_s: float = 0.0
    database_cpu_s: float = 0.0
    client_cpu_s: float = 0.0

    @property
    def ok(self) -> int:
        return self.requests - self.non_2xx

    @property
    def rate(self) -> float:
        return self.ok / self.seconds


@dataclass
class Report:
    machine: dict[str, Any] = field(default_factory=dict)
    full_speed: dict[str, Any] = field(default_factory=dict)
    fixed_rate: dict[str, Any] = field(default_factory=dict)
    pgbench: dict[str, Any] = field(default_factory=dict)
    verdict: dict[str, Any] = field(default_factory=dict)


# --- plumbing ----------------------------------------------------------------------------------


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk is not installed; installing Debian's package with apt-get ...", flush=True)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*sudo, "apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, env=env, check=False).returncode != 0:
        subprocess.run([*sudo, "apt-get", "update", "-q"], env=env, check=True)
        subprocess.run(install, env=env, check=True)
    found = shutil.which("wrk")
    if not found:
        sys.exit("wrk could not be installed; install it (apt-get install wrk) and run again")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def fresh_database(admin_url: str, label: str) -> Iterator[str]:
    name = f"zs_bench_{label}_{uuid.uuid4().hex[:8]}"
    admin_url = normalise_database_url(admin_url)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def server(
    name: str, command: list[str], env: dict[str, str], port: int, logs: Path, ready: str
) -> Iterator[Server]:
    log_file = (logs / f"{name}.log").open("wb")
    proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited with {proc.returncode}; see {logs / name}.log")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + ready, timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"{name} did not become ready; see {logs / name}.log")
            time.sleep(0.2)
        yield Server(name, base, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_file.close()


def uvicorn_command(app: str, port: int, workers: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers), "--loop", "uvloop", "--http", "httptools",
        "--no-access-log", "--log-level", "warning", "--no-server-header",
    ]  # fmt: skip


def run_wrk(
    wrk: str, url: str, *, seconds: float, connections: int, run_id: str, auth: str
) -> WrkRun:
    # Two seconds more than the load: connections fall silent at `seconds`, so every request
    # sent has been answered (and counted) when wrk stops.
    command = [
        wrk, "-t1", f"-c{connections}", f"-d{int(seconds) + 2}s", "--timeout", "10s",
        "-s", str(LUA), url, "--", run_id, str(seconds), auth,
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    match = re.search(r"WRK_RESULT (\{.*\})", out)
    if not match:
        raise SystemExit(f"unexpected wrk output:\n{out}")
    doc = json.loads(match.group(1))
    errors = doc["connect"] + doc["read"] + doc["write"] + doc["timeout"]
    return WrkRun(
        doc["requests"], doc["non_2xx"], errors, seconds, doc["p50_us"] / 1e3, doc["p99_us"] / 1e3
    )


def inbox_count(url: str, prefix: str | None = None) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if prefix is None:
                return int(conn.execute(text("SELECT count(*) FROM callout_inbox")).scalar_one())
            query = text("SELECT count(*) FROM callout_inbox WHERE starts_with(dedup_key, :p)")
            return int(conn.execute(query, {"p": prefix}).scalar_one())
    finally:
        engine.dispose()


def inbox_keys(url: str, prefix: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            query = text("SELECT dedup_key FROM callout_inbox WHERE starts_with(dedup_key, :p)")
            return set(conn.execute(query, {"p": prefix}).scalars())
    finally:
        engine.dispose()


def raw_request(port: int, path: str, notification_id: str, auth: str) -> bytes:
    body = json.dumps(PAYLOAD, separators=(",", ":")).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Authorization: {auth}\r\nZuora-Notification-Id: {notification_id}\r\n"
        f"Zuora-Request-Id: {uuid.uuid4().hex}\r\n\r\n"
    )
    return head.encode() + body


def run_pgbench(url: str, *, clients: int, seconds: int, batch: int, work: Path) -> float:
    """Rows per second of the webhook's INSERT through pgbench, `batch` rows per commit."""
    payload = json.dumps(
        {
            "params": PAYLOAD,
            "fields": {**PAYLOAD, "Version": 3},
            "format": "json",
            "notification_id": "0" * 32,
            "request_id": "0" * 32,
            "received_at": "2026-11-25T12:00:00.000000+00:00",
        }
    ).replace("'", "''")
    script = work / f"insert_{batch}.sql"
    script.write_text(
        "INSERT INTO callout_inbox (source, dedup_key, subscription_number, subscription_id,"
        " payload, status, attempts, available_at, received_at)\n"
        f"SELECT 'callout', 'callout:pgbench-' || gen_random_uuid(), 'A-S00000042', NULL,"
        f" '{payload}'::jsonb, 'pending', 0, now(), now() FROM generate_series(1, {batch})\n"
        "ON CONFLICT (dedup_key) DO NOTHING RETURNING id, dedup_key;\n"
    )
    parts = make_url(url)
    command = [
        "pgbench", "-n", "-h", parts.host or "127.0.0.1", "-p", str(parts.port or 5432),
        "-U", parts.username or "postgres", "-f", str(script), "-c", str(clients),
        "-j", "2", "-T", str(seconds), parts.database or "postgres",
    ]  # fmt: skip
    env = {**os.environ, "PGPASSWORD": parts.password or ""}
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
    match = re.search(r"tps = ([0-9.]+)", out)
    if not match:
        raise SystemExit(f"unexpected pgbench output:\n{out}")
    return float(match.group(1)) * batch


def load_average() -> float:
    return os.getloadavg()[0]


def cpu_pressure() -> float | None:
    """Share of the last minute some task waited for a CPU (Linux PSI), in percent: how
    much other work competed with the benchmark."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return None
    return float(line.split("avg60=")[1].split()[0])


TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rsplit(")", 1)[1].split()


def process_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by these processes."""
    total = 0
    for pid in pids:
        fields_ = _stat(pid)
        if fields_:
            total += int(fields_[11]) + int(fields_[12])
    return total / TICKS


def tree(pid: int) -> list[int]:
    """The process and all its descendants (uvicorn's workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields_ = _stat(int(entry.name))
            if fields_:
                children.setdefault(int(fields_[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def backends(url: str) -> list[int]:
    """PostgreSQL server processes serving the given database (same machine)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            query = text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
            )
            return [int(pid) for pid in conn.execute(query).scalars()]
    finally:
        engine.dispose()


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- the run -----------------------------------------------------------------------------------


def full_speed(
    args: argparse.Namespace, wrk: str, servers: dict[str, Server], db_url: str, auth: str
) -> dict[str, Any]:
    runs: dict[str, list[WrkRun]] = {name: [] for name in servers}
    stored_before = inbox_count(db_url)
    answered_2xx = 0
    paths = {"noop_fastapi": "/noop", "noop_asgi": "/noop", "webhook": CALLOUT_PATH}
    for round_no in range(args.rounds):
        for name, srv in servers.items():
            run_id = f"full-{round_no}-{uuid.uuid4().hex[:8]}"
            procs = tree(srv.pid)
            pg = backends(db_url) if name == "webhook" else []
            before = (process_cpu(procs), process_cpu(pg), children_cpu())
            result = run_wrk(
                wrk,
                srv.base + paths[name],
                seconds=args.duration,
                connections=args.connections,
                run_id=run_id,
                auth=auth,
            )
            result.server_cpu_s = process_cpu(procs) - before[0]
            result.database_cpu_s = process_cpu(pg) - before[1]
            result.client_cpu_s = children_cpu() - before[2]
            runs[name].append(result)
            if name == "webhook":
                answered_2xx += result.ok
            print(
                f"  round {round_no + 1} {name:<13} {result.rate:8.0f}/s ok  "
                f"p50 {result.p50_ms:6.1f} ms  p99 {result.p99_ms:6.1f} ms  "
                f"non-2xx {result.non_2xx}  errors {result.errors}  "
                f"CPU us/request: server {_per(result.server_cpu_s, result.requests):.0f}"
                + (
                    f" + PostgreSQL {_per(result.database_cpu_s, result.requests):.0f}"
                    if name == "webhook"
                    else ""
                )
                + f" + wrk {_per(result.client_cpu_s, result.requests):.0f}",
                flush=True,
            )
    stored = inbox_count(db_url) - stored_before
    summary: dict[str, Any] = {}
    for name, results in runs.items():
        summary[name] = {
            "per_s_median": statistics.median(r.rate for r in results),
            "server_cpu_us_per_request": statistics.median(
                _per(r.server_cpu_s, r.requests) for r in results
            ),
            "database_cpu_us_per_request": statistics.median(
                _per(r.database_cpu_s, r.requests) for r in results
            ),
            "client_cpu_us_per_request": statistics.median(
                _per(r.client_cpu_s, r.requests) for r in results
            ),
            "per_s_rounds": [round(r.rate, 1) for r in results],
            "p50_ms_median": statistics.median(r.p50_ms for r in results),
            "p99_ms_median": statistics.median(r.p99_ms for r in results),
            "non_2xx": sum(r.non_2xx for r in results),
            "errors": sum(r.errors for r in results),
        }
    summary["webhook"]["answered_2xx"] = answered_2xx
    summary["webhook"]["rows_stored"] = stored
    return summary


def _per(seconds: float, count: int) -> float:
    return seconds * 1e6 / count if count else float("nan")


def fixed_rate(
    args: argparse.Namespace, servers: dict[str, Server], db_url: str, auth: str
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("noop_asgi", "webhook"):
        base = servers[name].base
        port = int(base.rsplit(":", 1)[1])
        path = CALLOUT_PATH if name == "webhook" else "/noop"
        run_id = f"fixed-{uuid.uuid4().hex[:8]}"

        def make(index: int, run_id: str = run_id, port: int = port, path: str = path) -> Any:
            ident = f"{run_id}-{index}"
            return ident, raw_request(port, path, ident, auth)

        result = asyncio.run(
            loadgen.run(base, make, rate=args.rate, duration=args.rate_duration, connections=64)
        )
        entry = {
            "rate": args.rate,
            "sent": int(args.rate * args.rate_duration),
            "answered": result.answered,
            "statuses": result.statuses,
            "errors": result.errors,
            "p50_ms": result.percentile(50) * 1000,
            "p99_ms": result.percentile(99) * 1000,
            "max_ms": max(result.latencies) * 1000 if result.latencies else None,
            "generator_max_lag_ms": result.max_send_lag * 1000,
        }
        if name == "webhook":
            keys = inbox_keys(db_url, f"callout:{run_id}-")
            wanted = {f"callout:{ident}" for ident in result.ok_ids}
            entry["rows_stored"] = len(keys)
            entry["answered_2xx"] = len(result.ok_ids)
            entry["lost"] = len(wanted - keys)
            entry["unexpected_rows"] = len(keys - wanted)
        out[name] = entry
        print(
            f"  {name:<10} {args.rate:.0f}/s for {args.rate_duration:.0f} s: "
            f"p50 {entry['p50_ms']:.2f} ms  p99 {entry['p99_ms']:.2f} ms  "
            f"max {entry['max_ms']:.1f} ms  statuses {result.statuses}",
            flush=True,
        )
    return out


def verdict(report: Report) -> dict[str, Any]:
    hook = report.full_speed["webhook"]
    noop = report.full_speed["noop_fastapi"]["per_s_median"]
    raw = report.full_speed["noop_asgi"]["per_s_median"]
    fixed = report.fixed_rate["webhook"]
    single = report.pgbench["single_row_per_s"]
    batched = report.pgbench["batched_rows_per_s"]
    return {
        "accepted_per_s": hook["per_s_median"],
        "ratio_to_noop_fastapi": hook["per_s_median"] / noop,
        "ratio_to_noop_asgi": hook["per_s_median"] / raw,
        "ratio_to_pgbench_single_row": hook["per_s_median"] / single,
        "ratio_to_pgbench_batched": hook["per_s_median"] / batched,
        "p99_ms_at_fixed_rate": fixed["p99_ms"],
        "full_speed_rows_equal_2xx": hook["rows_stored"] == hook["answered_2xx"],
        "fixed_rate_rows_equal_2xx": fixed["rows_stored"] == fixed["answered_2xx"]
        and fixed["lost"] == 0
        and fixed["unexpected_rows"] == 0,
    }


def print_report(report: Report, args: argparse.Namespace) -> None:
    v = report.verdict
    hook = report.full_speed["webhook"]
    fixed = report.fixed_rate["webhook"]

    def mark(ok: bool) -> str:
        return "met " if ok else "MISSED"

    print()
    print(
        f"webhook benchmark: {args.workers} worker(s), {args.connections} connections, "
        f"{args.rounds} x {args.duration:.0f} s rounds; load average before "
        f"{report.machine['load_before']:.2f}, after {report.machine['load_after']:.2f}"
    )
    print("-" * 96)
    print(
        f"{'accepted callouts/s (median)':<44}{v['accepted_per_s']:>10.0f}   target >= "
        f"{TARGETS['accepted_per_s']:.0f}   {mark(v['accepted_per_s'] >= 4000)}"
    )
    print(
        f"{'no-op FastAPI endpoint /s (median)':<44}"
        f"{report.full_speed['noop_fastapi']['per_s_median']:>10.0f}   ratio "
        f"{v['ratio_to_noop_fastapi']:.2f}   target >= 0.50   "
        f"{mark(v['ratio_to_noop_fastapi'] >= TARGETS['ratio_to_noop'])}"
    )
    print(
        f"{'no-op plain ASGI app /s (median)':<44}"
        f"{report.full_speed['noop_asgi']['per_s_median']:>10.0f}   ratio "
        f"{v['ratio_to_noop_asgi']:.2f}"
    )
    print(
        f"{'pgbench same INSERT, 1 row/commit, rows/s':<44}"
        f"{report.pgbench['single_row_per_s']:>10.0f}   ratio "
        f"{v['ratio_to_pgbench_single_row']:.2f}"
    )
    print(
        f"{'pgbench same INSERT, 50 rows/commit, rows/s':<44}"
        f"{report.pgbench['batched_rows_per_s']:>10.0f}   ratio "
        f"{v['ratio_to_pgbench_batched']:.2f}"
    )
    print(
        f"{'full speed p50 / p99 ms (median)':<44}{hook['p50_ms_median']:>10.1f} / "
        f"{hook['p99_ms_median']:.1f}"
    )
    noop_cpu = report.full_speed["noop_fastapi"]["server_cpu_us_per_request"]
    raw_cpu = report.full_speed["noop_asgi"]["server_cpu_us_per_request"]
    print(
        f"{'CPU us per request: webhook + its PostgreSQL':<44}"
        f"{hook['server_cpu_us_per_request']:>10.0f} + {hook['database_cpu_us_per_request']:.0f}"
        f"   (no-op FastAPI {noop_cpu:.0f}, no-op ASGI {raw_cpu:.0f}, wrk "
        f"{hook['client_cpu_us_per_request']:.0f})"
    )
    print(
        f"{'full speed 2xx answers vs rows stored':<44}{hook['answered_2xx']:>10} vs "
        f"{hook['rows_stored']}   {mark(v['full_speed_rows_equal_2xx'])}"
    )
    print(
        f"{f'fixed {args.rate:.0f}/s p50 / p99 ms':<44}{fixed['p50_ms']:>10.2f} / "
        f"{fixed['p99_ms']:.2f}   target p99 <= 20   "
        f"{mark(fixed['p99_ms'] <= TARGETS['p99_ms_at_fixed_rate'])}"
    )
    noop_fixed = report.fixed_rate["noop_asgi"]
    print(
        f"{'  (generator floor vs no-op: p50 / p99 ms)':<44}{noop_fixed['p50_ms']:>10.2f} / "
        f"{noop_fixed['p99_ms']:.2f}"
    )
    print(
        f"{'fixed rate 2xx answers vs rows stored':<44}{fixed['answered_2xx']:>10} vs "
        f"{fixed['rows_stored']} (lost {fixed['lost']}, unexpected "
        f"{fixed['unexpected_rows']})   {mark(v['fixed_rate_rows_equal_2xx'])}"
    )
    print("-" * 96)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--duration", type=float, default=10, help="seconds per full-speed run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per server")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--rate", type=float, default=1000, help="fixed rate, requests/s")
    parser.add_argument("--rate-duration", type=float, default=15, help="seconds at fixed rate")
    parser.add_argument("--pgbench-clients", type=int, default=32)
    parser.add_argument("--pgbench-seconds", type=int, default=10)
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("ZS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="an admin connection to the PostgreSQL server to use (creates and drops databases)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    wrk = ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="zs-bench-"))
    password = secrets.token_urlsafe(18)
    auth = "Basic " + base64.b64encode(f"zuora-bench:{password}".encode()).decode()
    report = Report(
        machine={
            "cpus": os.cpu_count(),
            "load_before": load_average(),
            "cpu_pressure_before": cpu_pressure(),
        }
    )
    print(f"logs and scratch files: {work}")
    with (
        fresh_database(args.pg_url, "webhook") as hook_db,
        fresh_database(args.pg_url, "pgbench") as pgbench_db,
    ):
        env = {
            **os.environ,
            "DATABASE_URL": hook_db,
            "CALLOUT_USERNAME": "zuora-bench",
            "CALLOUT_PASSWORD": password,
            "ZUORA_SYNC_ENV": "production",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        ports = {name: free_port() for name in ("webhook", "noop_fastapi", "noop_asgi")}
        webhook_cmd = [
            sys.executable, "-m", "zuora_sync", "webhook", "--host", "127.0.0.1",
            "--port", str(ports["webhook"]), "--workers", str(args.workers),
        ]  # fmt: skip
        with (
            server("webhook", webhook_cmd, env, ports["webhook"], work, "/readyz") as hook,
            server(
                "noop_fastapi",
                uvicorn_command("bench.noop_app:app", ports["noop_fastapi"], args.workers),
                env,
                ports["noop_fastapi"],
                work,
                "/docs",
            ) as noop,
            server(
                "noop_asgi",
                uvicorn_command("bench.noop_app:raw", ports["noop_asgi"], args.workers),
                env,
                ports["noop_asgi"],
                work,
                "/",
            ) as raw,
        ):
            servers = {"noop_fastapi": noop, "webhook": hook, "noop_asgi": raw}
            print("full speed (wrk, closed loop):", flush=True)
            report.full_speed = full_speed(args, wrk, servers, hook_db, auth)
            print(f"fixed rate (open loop, {args.rate:.0f}/s):", flush=True)
            report.fixed_rate = fixed_rate(args, servers, hook_db, auth)
        print("pgbench (same INSERT):", flush=True)
        report.pgbench = {
            "clients": args.pgbench_clients,
            "single_row_per_s": run_pgbench(
                pgbench_db,
                clients=args.pgbench_clients,
                seconds=args.pgbench_seconds,
                batch=1,
                work=work,
            ),
            "batched_rows_per_s": run_pgbench(
                pgbench_db,
                clients=args.pgbench_clients,
                seconds=args.pgbench_seconds,
                batch=50,
                work=work,
            ),
        }
    report.machine["load_after"] = load_average()
    report.machine["cpu_pressure_after"] = cpu_pressure()
    report.verdict = verdict(report)
    print_report(report, args)
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2, default=str))


if __name__ == "__main__":
    main()
