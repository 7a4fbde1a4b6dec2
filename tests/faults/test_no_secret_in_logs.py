"""No log line holds a secret: the webhook, the drain, the Zuora client and the CLI run with
known secret values at LOG_LEVEL=DEBUG, through their failure paths too (wrong
credentials, refused callouts, dead letters), and everything they print is searched.

The secrets: the Zuora client secret, the callout password and its Basic header (and the
header's base64 alone), the database password, and every OAuth access token the tenant
issued, including tokens the processes fetched for themselves: any 32-hex string in the
output is tried against the sandbox, and none may be a live token.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from flows.drain import DrainOptions
from flows.runner import run_drain
from tests.faults.harness import (
    FULL,
    Service,
    Webhook,
    ZuoraSender,
    notifications,
    project_env,
    sized,
)
from tests.flows.test_drain import callouts
from warehouse.db import make_engine
from zuora.client import ZuoraClient
from zuora.sandbox.server import RunningSandbox
from zuora_sync import logs
from zuora_sync.settings import load_settings

USER = "zuora-callout"
CLIENT_SECRET = f"client-secret-{uuid.uuid4().hex[:12]}"
CALLOUT_PASSWORD = f"callout-pass-{uuid.uuid4().hex[:12]}"
DB_PASSWORD = f"db-pass-{uuid.uuid4().hex[:12]}"
BASIC_B64 = base64.b64encode(f"{USER}:{CALLOUT_PASSWORD}".encode()).decode()
SECRETS = [CLIENT_SECRET, CALLOUT_PASSWORD, DB_PASSWORD, BASIC_B64, f"Basic {BASIC_B64}"]
#: What the in-process runs read from the same environment.
SETTING_NAMES = {
    "DATABASE_URL",
    "ZUORA_BASE_URL",
    "ZUORA_CLIENT_ID",
    "ZUORA_CLIENT_SECRET",
    "ZUORA_TRACKED_FIELDS",
    "CALLOUT_USERNAME",
    "CALLOUT_PASSWORD",
    "LOG_LEVEL",
}
HEX32 = re.compile(r"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])")


class Records(logging.Handler):
    """Every record, raw (message and fields) and as the project's formatter prints it."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self.lines.append(repr(getattr(record, "zs_fields", {})))
        for formatter in (logs._Formatter(as_json=True), logs._Formatter(as_json=False)):
            self.lines.append(formatter.format(record))


@pytest.fixture
def records() -> Iterator[Records]:
    capture = Records()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    yield capture
    root.removeHandler(capture)
    root.setLevel(previous)


def with_password(url: str) -> str:
    """The same database behind a password (trust auth ignores it; it still travels)."""
    return make_url(url).set(password=DB_PASSWORD).render_as_string(hide_password=False)


def cli(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "zuora_sync", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return f"$ zuora-sync {' '.join(args)} -> {done.returncode}\n{done.stdout}{done.stderr}"


def live_tokens(sandbox: RunningSandbox, text: str) -> list[str]:
    """32-hex strings in `text` that the tenant accepts as access tokens."""
    found = []
    with httpx.Client(base_url=sandbox.base_url, timeout=30) as api:
        for candidate in sorted(set(HEX32.findall(text))):
            answer = api.get(
                "/v1/subscriptions/A-S00000001", headers={"Authorization": f"Bearer {candidate}"}
            )
            if answer.status_code != 401:
                found.append(candidate)
    return found


@pytest.mark.slow
@pytest.mark.timeout(sized(300, 1500))
def test_no_secret_reaches_any_output_at_debug_level(
    pg_url: str, sandbox_factory: Any, records: Records, tmp_path: Path
) -> None:
    sandbox = sandbox_factory(subscriptions=5, client_secret=CLIENT_SECRET)
    database = with_password(pg_url)
    env = project_env(
        **sandbox.env(),
        DATABASE_URL=database,
        CALLOUT_USERNAME=USER,
        CALLOUT_PASSWORD=CALLOUT_PASSWORD,
        ZUORA_SYNC_ENV="production",
        LOG_LEVEL="DEBUG",
        INBOX_MAX_ATTEMPTS="1",
    )
    outputs: list[str] = []

    # The webhook: challenges, wrong and right credentials, a refusal.
    hook = Webhook(env, tmp_path / "webhook.log")
    hook.start()
    hook.wait_up()
    try:
        notes = notifications(3, ["A-S00000001", "A-S00000002"])
        sender = ZuoraSender(hook.url, USER, CALLOUT_PASSWORD)
        asyncio.run(sender.deliver_all(notes, concurrency=2, deadline=time.monotonic() + 60))
        assert all(n.acknowledged for n in notes)
        wrong = ZuoraSender(hook.url, USER, CALLOUT_PASSWORD + "x")
        refused = notifications(1, ["A-S00000003"], prefix="wrong")
        asyncio.run(wrong.deliver_all(refused, concurrency=1, deadline=time.monotonic() + 60))
        assert refused[0].refused == 401
        bad = httpx.post(
            hook.url + "/api/v1/zuora/callouts/sync_subscription",
            content=b"{",
            headers={"Authorization": f"Basic {BASIC_B64}", "Content-Type": "application/json"},
        )
        assert bad.status_code == 400
    finally:
        hook.stop()
    outputs.append(hook.output())
    assert '"event":"callout"' in hook.output() or "callout outcome=" in hook.output()

    # The drain as a process, in both log formats: first with a revoked secret (401s from
    # the token endpoint, the rows to the dead letter), then replayed and drained properly.
    revoked = {**env, "ZUORA_CLIENT_SECRET": CLIENT_SECRET + "-revoked", "LOG_FORMAT": "text"}
    failing = Service(["drain", "--window", "0"], revoked, tmp_path / "d1.log")
    failing.start()
    assert failing.wait(timeout=120) == 1, failing.output()[-2000:]  # rows went dead
    outputs.append(failing.output())
    outputs.append(cli("inbox", "replay", "--dead", env=env))
    drain = Service(["drain", "--window", "0"], {**env, "LOG_FORMAT": "json"}, tmp_path / "d2.log")
    drain.start()
    assert drain.wait(timeout=120) == 0, drain.output()[-2000:]
    outputs.append(drain.output())

    # The rest of the CLI, side by side, and the sandbox command, which prints how to point
    # the project at it.
    setup = ["zuora", "setup-callout", "--env", "dev", "--callout-url", "https://x.test/cb"]
    commands = [["inbox", "list", "--status", "dead"], [*setup, "--dry-run"]]
    if FULL:
        commands += [["db", "upgrade"], ["inbox", "stats", "--json"], ["reconcile", "--full"]]
    broken = {**env, "DATABASE_URL": "postgresql://u:" + DB_PASSWORD}
    with ThreadPoolExecutor(max_workers=len(commands) + 2) as pool:
        ran = [pool.submit(cli, *args, env=env) for args in commands]
        ran.append(pool.submit(cli, "drain", env=broken))
        if FULL:
            ran.append(pool.submit(sandbox_banner, env))
        outputs.extend(future.result() for future in ran)

    # In this process: the Zuora client and a drain run, every logger at DEBUG.
    settings = load_settings(**{k: v for k, v in env.items() if k in SETTING_NAMES})

    async def in_process() -> list[str]:
        async with ZuoraClient.from_settings(settings) as zuora:
            await zuora.get_subscription("A-S00000001")
            await asyncio.to_thread(sandbox.admin.expire_tokens)
            await zuora.get_subscription("A-S00000002")  # a 401, then a fresh token
            tokens = [zuora._token or ""]
        stats = await run_drain(settings, DrainOptions.from_settings(settings, window_seconds=0))
        assert stats.completed == 1
        return tokens

    engine = make_engine(database, pool_size=1)
    callouts(engine, ["A-S00000005"], prefix="in-process")
    engine.dispose()
    tokens = asyncio.run(in_process())
    everything = "\n".join(outputs + records.lines)
    assert "drain.start" in everything and "drain.failed" in everything
    assert not FULL or "export ZUORA_CLIENT_SECRET=<your ZUORA_CLIENT_SECRET>" in everything
    assert any(line for line in records.lines if "drain" in line)

    for secret in [*SECRETS, *tokens]:
        assert secret not in everything, f"a secret was printed: {secret[:6]}..."
    assert live_tokens(sandbox, everything) == []


def sandbox_banner(env: dict[str, str]) -> str:
    """What `zuora-sync sandbox` prints when it starts, until it is stopped."""
    server = subprocess.Popen(
        [sys.executable, "-m", "zuora_sync", "sandbox", "--port", "0", "--subscriptions", "3"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert server.stdout is not None
    banner = [server.stdout.readline() for _ in range(7)]
    server.send_signal(signal.SIGINT)
    rest, _ = server.communicate(timeout=60)
    return "".join(banner) + rest
