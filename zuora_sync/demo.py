"""`zuora-sync demo`: both paths end to end on embedded defaults, told as a short story.

Everything runs in this process: the simulated tenant (the sandbox) and the webhook on
loopback threads, the warehouse in its own SQLite file, the drain and the reconcile called
directly (the same code the Prefect flows run). The story:

1. set the custom event and callout up in the tenant with the setup command (twice: the
   second run changes nothing);
2. backfill the empty cache with a full reconcile;
3. a Zuora admin edits tracked custom fields: the tenant fires callouts into the webhook,
   the drain takes them into the cache;
4. changes whose callouts never come (a lost callout, an edit that does not even move
   UpdatedDate, an amendment, a deletion) leave the cache behind;
5. a full reconcile finds that drift by value, heals it through the inbox, and a second one
   finds nothing;
6. the cache is compared with the tenant row for row.

The demo's database is its own file (recreated each run), so a demo never touches the
warehouse that `DATABASE_URL` points at.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy import Engine, func, select

from flows.drain import DrainOptions
from flows.reconcile import ReconcileReport, run_reconcile
from flows.runner import run_drain
from warehouse import inbox, migrate
from warehouse.db import make_engine
from warehouse.models import charges, rate_plans, subscriptions
from warehouse.models import inbox as callout_inbox
from warehouse.verify import cache_differences
from zuora.callout_setup import setup_callout
from zuora.sandbox.config import DEFAULT_TENANT_ID, SandboxConfig
from zuora.sandbox.server import RunningSandbox, running_sandbox
from zuora_sync.settings import Settings, load_settings

CALLOUT_PATH = "/api/v1/zuora/callouts/sync_subscription"
#: The dev profile's tenant: the sandbox answers as that tenant, so the setup's tenant
#: guard passes exactly as it would against Zuora Central Sandbox 2.
DEMO_ENV = "dev"


class DemoFailed(RuntimeError):
    """A step of the story did not come out as it must; the message says which."""


@dataclass(frozen=True)
class DemoOptions:
    subscriptions: int = 200
    seed: int = 7
    database: Path = Path("zuora_sync_demo.db")
    callout_wait_seconds: float = 30.0


class Story:
    """Numbered steps with the time since the start, on one output function."""

    def __init__(self, out: Callable[[str], None]) -> None:
        self.out = out
        self.started = time.monotonic()
        self.step = 0

    def chapter(self, title: str) -> None:
        self.step += 1
        self.out(f"\n[{time.monotonic() - self.started:5.1f}s] {self.step}. {title}")

    def say(self, line: str) -> None:
        self.out(f"         {line}")


def run_demo(options: DemoOptions | None = None, out: Callable[[str], None] = print) -> None:
    """Tell the story; raise `DemoFailed` when the pipeline does not do what it should."""
    options = options or DemoOptions()
    story = Story(out)
    _fresh_database(options.database)
    username, password = "zuora-callout", secrets.token_urlsafe(18)

    story.chapter("Start a simulated Zuora tenant, the warehouse and the webhook")
    config = SandboxConfig(
        subscriptions=options.subscriptions,
        seed=options.seed,
        tenant_id=DEFAULT_TENANT_ID,
        callout_retry_interval_s=1.0,
    )
    with running_sandbox(config) as sandbox:
        settings = _demo_settings(options.database, sandbox, username, password)
        migrate.upgrade(settings.DATABASE_URL)
        engine = make_engine(settings.DATABASE_URL, pool_size=2)
        try:
            with _webhook(settings, engine) as webhook_url:
                story.say(f"tenant     {sandbox.base_url} ({options.subscriptions} subscriptions)")
                story.say(f"warehouse  {settings.database_url_masked} (schema at head)")
                story.say(f"webhook    {webhook_url}{CALLOUT_PATH}")
                asyncio.run(_story(story, settings, engine, sandbox, webhook_url, options))
        finally:
            engine.dispose()
    story.chapter("Stopped the webhook and the tenant")
    story.say(f"the demo's warehouse stays in {options.database} for a look around")


async def _story(
    story: Story,
    settings: Settings,
    engine: Engine,
    sandbox: RunningSandbox,
    webhook_url: str,
    options: DemoOptions,
) -> None:
    admin = sandbox.admin
    fields = settings.ZUORA_TRACKED_FIELDS

    story.chapter(f"Set up the custom event and the callout (`setup-callout --env {DEMO_ENV}`)")
    first = await setup_callout(settings, env=DEMO_ENV, callout_url=webhook_url + CALLOUT_PATH)
    for line in first.render_text().splitlines():
        story.say(line)
    again = await setup_callout(settings, env=DEMO_ENV, callout_url=webhook_url + CALLOUT_PATH)
    if again.changed:
        raise DemoFailed("a second setup run changed the tenant again; it must be idempotent")
    story.say("second run: " + ", ".join(f"{o.kind} {o.name} {o.action}" for o in again.objects))

    story.chapter("Backfill the empty cache: a full reconcile finds every subscription missing")
    report = await run_reconcile(settings, mode="full")
    _tell(story, report)
    story.say(f"cache now holds {_count(engine)}")

    numbers = [p["subscriptionNumber"] for p in admin.export()]
    edited = numbers[3:8]
    story.chapter(f"A Zuora admin edits {fields[0]} on {len(edited)} subscriptions")
    before = _inbox_rows(engine)
    async with httpx.AsyncClient(base_url=sandbox.base_url, timeout=30) as api:
        token = await _token(api, settings)
        for i, number in enumerate(edited):
            await _edit_in_zuora(api, token, number, {fields[0]: f"Tier-{i + 1}"})
    arrived = _wait_for_callouts(engine, before + len(edited), options.callout_wait_seconds)
    delivered = [n for n in admin.callouts() if n["state"] == "delivered"]
    story.say(f"the tenant fired {len(delivered)} callouts; the webhook stored {arrived - before}")
    stats = await run_drain(settings, DrainOptions.from_settings(settings, window_seconds=0))
    story.say(
        f"drain: {stats.completed} callouts -> {stats.fetched} subscriptions fetched and upserted"
    )
    _check_cache_equals(engine, admin)
    story.say(f"the cache matches Zuora again, {len(edited)} edits included")

    story.chapter("Changes whose callouts never come")
    lost = numbers[20:23]
    admin.edit_custom_fields(lost[0], {fields[1]: "999"})
    story.say(f"{lost[0]}: {fields[1]} edited, its callout lost")
    admin.edit_custom_fields(lost[1], {fields[-1]: "ops@example.com"}, touch_updated_date=False)
    story.say(f"{lost[1]}: {fields[-1]} edited without moving UpdatedDate")
    admin.amend(lost[2])
    story.say(f"{lost[2]}: amended (a new version), no callout")
    gone = numbers[30]
    admin.delete(gone)
    story.say(f"{gone}: deleted in Zuora")
    drift = cache_differences(engine, list(admin.export()))
    story.say(f"the cache is now behind Zuora: {len(drift)} difference(s)")

    story.chapter("A full reconcile finds the drift by value and heals it through the inbox")
    report = await run_reconcile(settings, mode="full")
    _tell(story, report)
    if report.drift_total == 0:
        raise DemoFailed("the reconcile found no drift after changes whose callouts were lost")

    story.chapter("Reconcile again: nothing left")
    report = await run_reconcile(settings, mode="full")
    _tell(story, report)
    if report.drift_total:
        raise DemoFailed(f"{report.drift_total} subscriptions still drift after healing")

    story.chapter("Compare the cache with Zuora, row for row")
    differences = cache_differences(engine, list(admin.export()))
    if differences:
        for line in differences[:10]:
            story.say(str(line))
        raise DemoFailed(f"cache != Zuora: {len(differences)} difference(s)")
    with engine.connect() as conn:
        states = inbox.stats(conn).counts
    story.say(f"cache == Zuora: {_count(engine)}, identical")
    story.say("inbox: " + ", ".join(f"{k} {v}" for k, v in sorted(states.items())))


def _tell(story: Story, report: ReconcileReport, examples: int = 5) -> None:
    """The reconcile's own report, with its list of examples cut short for the story."""
    shown = hidden = 0
    in_examples = False
    for line in report.render_text().splitlines():
        if line.strip() == "examples:":
            in_examples = True
        elif in_examples and line.startswith("    "):
            if shown == examples:
                hidden += 1
                continue
            shown += 1
        else:
            if hidden:
                story.say(f"    ... and {hidden} more")
                hidden = 0
            in_examples = False
        story.say(line)


def _count(engine: Engine) -> str:
    with engine.connect() as conn:
        counts = [
            conn.scalar(
                select(func.count()).select_from(table).where(table.c.deleted_at.is_(None))
                if table is subscriptions
                else select(func.count()).select_from(table)
            )
            for table in (subscriptions, rate_plans, charges)
        ]
    return f"{counts[0]} subscriptions, {counts[1]} rate plans, {counts[2]} charges"


def _inbox_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(callout_inbox)) or 0)


def _wait_for_callouts(engine: Engine, expected: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while (rows := _inbox_rows(engine)) < expected:
        if time.monotonic() > deadline:
            raise DemoFailed(f"only {rows} of {expected} inbox rows arrived in {timeout:.0f} s")
        time.sleep(0.05)
    return rows


def _check_cache_equals(engine: Engine, admin: Any) -> None:
    differences = cache_differences(engine, list(admin.export()))
    if differences:
        raise DemoFailed(f"after the drain the cache still differs: {differences[:3]}")


async def _token(api: httpx.AsyncClient, settings: Settings) -> str:
    answer = await api.post(
        "/oauth/token",
        data={
            "client_id": settings.ZUORA_CLIENT_ID.get_secret_value(),
            "client_secret": settings.ZUORA_CLIENT_SECRET.get_secret_value(),
            "grant_type": "client_credentials",
        },
    )
    answer.raise_for_status()
    return str(answer.json()["access_token"])


async def _edit_in_zuora(
    api: httpx.AsyncClient, token: str, number: str, fields: dict[str, Any]
) -> None:
    """What an admin's edit in Zuora's UI does: a REST change that fires custom events."""
    headers = {"Authorization": f"Bearer {token}"}
    version = (await api.get(f"/v1/subscriptions/{number}", headers=headers)).json()["version"]
    answer = await api.put(
        f"/v1/subscriptions/{number}/versions/{version}/customFields",
        json={"customFields": fields},
        headers=headers,
    )
    if answer.status_code != 200:
        raise DemoFailed(f"editing {number} in the tenant failed: {answer.text[:200]}")


def _fresh_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _demo_settings(database: Path, sandbox: RunningSandbox, user: str, password: str) -> Settings:
    """The embedded defaults, pointed at this run's tenant and database. Passed explicitly, so
    a `.env` or environment meant for a real deployment cannot leak into the demo."""
    return load_settings(
        ZUORA_SYNC_ENV="dev",
        DATABASE_URL=f"sqlite:///{database}",
        ZUORA_BASE_URL=sandbox.base_url,
        ZUORA_CLIENT_ID=sandbox.client_id,
        ZUORA_CLIENT_SECRET=sandbox.client_secret,
        CALLOUT_USERNAME=user,
        CALLOUT_PASSWORD=password,
        ZUORA_QUERY_API="dataquery",
        LOG_LEVEL="WARNING",
    )


@contextmanager
def _webhook(settings: Settings, engine: Engine) -> Iterator[str]:
    """The webhook app on a loopback thread, as `zuora-sync webhook` would serve it."""
    from webhook.app import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, engine),
            lifespan="on",
            access_log=False,
            log_config=None,
            log_level="warning",
            timeout_graceful_shutdown=5,
        )
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="demo-webhook", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise DemoFailed("the webhook did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
