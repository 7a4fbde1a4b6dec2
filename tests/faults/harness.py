"""What the fault scenarios share: real processes, a Zuora-like callout sender, a private
PostgreSQL cluster that may be stopped, and the sizes of a bounded or a full run.

Every process here is a real `zuora-sync` command on loopback; its output goes to a file
(a pipe nobody reads would block it), which the scenarios read back afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, func, select

from warehouse.models import inbox as inbox_table

FULL = os.environ.get("ZS_FULL") == "1"

CALLOUT = "/api/v1/zuora/callouts/sync_subscription"


def sized(bounded: int, full: int) -> int:
    """A scenario's size: bounded in `make test`, full with ZS_FULL=1."""
    return full if FULL else bounded


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def project_env(**values: str) -> dict[str, str]:
    """The test process's environment without anything that would reach a Prefect server."""
    env = {**os.environ, **values}
    env.pop("PREFECT_API_URL", None)
    return env


def statuses(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(
            conn.execute(
                select(inbox_table.c.status, func.count()).group_by(inbox_table.c.status)
            ).all()
        )


# --- processes -----------------------------------------------------------------------------------


class Service:
    """One `zuora-sync` command run again and again (started, killed, restarted), each run's
    output appended to the same log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args = args
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "zuora_sync", *self.args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye, exactly like a crash or the OOM killer."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, then SIGKILL if it does not go."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(timeout=30)
        return self.proc.returncode

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Webhook(Service):
    """`zuora-sync webhook` on a fixed loopback port, so that a restart is reached at the
    same address as Zuora would reach it."""

    def __init__(self, env: dict[str, str], log: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        super().__init__(["webhook", "--host", "127.0.0.1", "--port", str(self.port)], env, log)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_up(self, timeout: float = 60) -> None:
        """Until the process answers at all (`/healthz`), whatever the database does."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.running, "the webhook exited:\n" + self.output()[-3000:]
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the webhook did not come up"
            time.sleep(0.05)

    def readiness(self) -> int:
        return httpx.get(self.url + "/readyz", timeout=10).status_code


# --- a sender that behaves like Zuora -------------------------------------------------------------

#: What Zuora retries: 1xx, 403, 408, 429, 5xx and connection failures (negative codes).
RETRIED = {403, 408, 429}


@dataclass
class Attempt:
    request_id: str
    status: int  # -1: the connection failed or broke before an answer
    auth_sent: bool


@dataclass
class Notification:
    id: str
    body: dict[str, Any]
    attempts: list[Attempt] = field(default_factory=list)
    acknowledged: bool = False
    refused: int | None = None  # a status Zuora does not retry

    @property
    def statuses(self) -> list[int]:
        return [a.status for a in self.attempts]


class ZuoraSender:
    """Delivers callouts the way Zuora does, with retries that never give up.

    Each attempt has a new `Zuora-Request-Id` and the notification's stable
    `Zuora-Notification-Id`; Basic credentials go only with the answer to a `401` challenge
    that names a realm (non-preemptive), which keeps the attempt's request id. Zuora stops
    after a few attempts; this sender keeps going (`retry_interval` apart) so that a
    scenario can require every callout to be acknowledged in the end.
    """

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        *,
        retry_interval: float = 0.05,
        timeout: float = 25.0,
    ) -> None:
        self.url = url + CALLOUT
        self.basic = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.retry_interval = retry_interval
        self.timeout = timeout

    async def deliver(self, client: httpx.AsyncClient, note: Notification, deadline: float) -> None:
        while time.monotonic() < deadline:
            request_id = uuid.uuid4().hex
            headers = {
                "Content-Type": "application/json",
                "Zuora-Notification-Id": note.id,
                "Zuora-Request-Id": request_id,
            }
            status = await self._send(client, note, headers, request_id, auth=False)
            if status == 401:
                status = await self._send(client, note, headers, request_id, auth=True)
            if status == 200:
                note.acknowledged = True
                return
            if not (status < 200 or status >= 500 or status in RETRIED):
                note.refused = status
                return
            await asyncio.sleep(self.retry_interval)

    async def _send(
        self,
        client: httpx.AsyncClient,
        note: Notification,
        headers: dict[str, str],
        request_id: str,
        *,
        auth: bool,
    ) -> int:
        if auth:
            headers = {**headers, "Authorization": self.basic}
        try:
            response = await client.post(
                self.url, json=note.body, headers=headers, timeout=self.timeout
            )
        except httpx.HTTPError:
            note.attempts.append(Attempt(request_id, -1, auth))
            return -1
        status = response.status_code
        if status == 401 and not auth:
            challenge = response.headers.get("www-authenticate", "").lower()
            if not ("basic" in challenge and "realm" in challenge):
                status = 4010  # a 401 Zuora cannot answer: treated as a refusal
        elif status == 200:
            try:
                ok = response.json().get("success") is True
            except ValueError:
                ok = False
            status = 200 if ok else 2000  # a 200 without success: true is retried
        note.attempts.append(Attempt(request_id, status, auth))
        return status

    async def deliver_all(
        self, notes: list[Notification], *, concurrency: int, deadline: float
    ) -> None:
        queue: asyncio.Queue[Notification] = asyncio.Queue()
        for note in notes:
            queue.put_nowait(note)

        async def worker(client: httpx.AsyncClient) -> None:
            while not queue.empty():
                await self.deliver(client, queue.get_nowait(), deadline)

        # A fresh connection per request: a killed server leaves no half-dead keep-alive
        # connection behind, as Zuora's callout client does not reuse them either.
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(limits=limits) as client:
            await asyncio.gather(*(worker(client) for _ in range(concurrency)))


def notifications(count: int, numbers: list[str], prefix: str = "note") -> list[Notification]:
    return [
        Notification(
            f"{prefix}-{i:06d}-{uuid.uuid4().hex[:8]}",
            {"SubscriptionNumber": numbers[i % len(numbers)], "EventType": "FaultSuite"},
        )
        for i in range(count)
    ]


# --- a PostgreSQL cluster of our own ------------------------------------------------------------


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    return Path(found[-1]).parent


class PrivateCluster:
    """A throwaway PostgreSQL cluster (trust auth, loopback, sockets in its own directory)
    that a scenario may stop and start at will; the shared server is never touched.

    `fsync=off`: the scenarios stop and kill the server, never the machine, so what a
    commit wrote is in the kernel's page cache either way, and the loaded test machine is
    spared the flushes.
    """

    def __init__(self, root: Path) -> None:
        self.bin = _pg_bin()
        self.root = root
        self.data = root / "data"
        self.sockets = root / "sockets"
        self.logfile = root / "server.log"
        self.port = free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            self._as = ["runuser", "-u", "postgres", "--"]

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 120) -> None:
        subprocess.run(
            [*self._as, *args],
            check=True,
            capture_output=True,
            timeout=timeout,
        )

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir()
        if self._as:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.sockets, "postgres")
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
            "--auth=trust", "--no-sync", "-E", "UTF8", "--no-instructions",
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c max_connections=100"
        )
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.logfile),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """`fast`: sessions are cut off and the server shuts down cleanly; `immediate`: the
        postmaster and every backend quit at once and the next start runs crash recovery."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def create_database(self, name: str) -> str:
        from sqlalchemy import create_engine, text

        admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        return self.url(name)

    def remove(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def private_cluster() -> Iterator[PrivateCluster]:
    cluster = PrivateCluster(Path(tempfile.mkdtemp(prefix="zs-pg-")))
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.remove()
