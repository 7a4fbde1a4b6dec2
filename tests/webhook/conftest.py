"""The webhook served for real: uvicorn on a free loopback port, in a thread, on a fresh
database; requests go over HTTP with httpx or raw sockets."""

from __future__ import annotations

import base64
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import Engine, select
from sqlalchemy.engine import make_url

from tests.conftest import PG_ADMIN_URL
from warehouse.db import make_engine
from warehouse.models import inbox as inbox_table
from webhook.app import create_app
from zuora_sync.logs import _Formatter
from zuora_sync.settings import Settings, load_settings

from .proxy import Proxy

CALLOUT = "/api/v1/zuora/callouts/sync_subscription"
USER = "zuora-callout"
PASSWORD = "pa55-w0rd-never-logged"
AUTH = (USER, PASSWORD)
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


class LogCapture(logging.Handler):
    """Every record, formatted by the project's formatter (so redaction is what ships)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(_Formatter(as_json=True))
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for record in self.records:
            if record.getMessage() == name:
                found.append(dict(getattr(record, "zs_fields", {})))
        return found


@dataclass
class Live:
    """A running webhook."""

    url: str
    app: FastAPI
    engine: Engine
    settings: Settings
    server: uvicorn.Server
    thread: threading.Thread
    sock: socket.socket
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=30)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def post(self, *, auth: Any = AUTH, notification: str | None = None, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", {}))
        if notification is not None:
            headers["Zuora-Notification-Id"] = notification
        headers.setdefault("Zuora-Request-Id", uuid.uuid4().hex)
        return self.client.post(CALLOUT, auth=auth, headers=headers, **kwargs)

    def rows(self) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(inbox_table).order_by(inbox_table.c.id)).all())

    def metrics(self) -> dict[str, float]:
        text = self.client.get("/metrics").text
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
        assert not self.thread.is_alive(), "the webhook did not shut down"


def serve(settings: Settings, engine: Engine | None = None, app: FastAPI | None = None) -> Live:
    """Start the webhook for `settings` (or another `app`) on a free port; wait until it is up."""
    db = engine or make_engine(settings.DATABASE_URL, pool_size=4)
    app = app or create_app(settings, db)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the webhook did not start")
        time.sleep(0.01)
    return Live(f"http://127.0.0.1:{port}", app, db, settings, server, thread, sock)


def webhook_settings(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "DATABASE_URL": url,
        "CALLOUT_USERNAME": USER,
        "CALLOUT_PASSWORD": PASSWORD,
        "ZUORA_SYNC_ENV": "production",
        "LOG_LEVEL": "DEBUG",
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    capture = LogCapture()
    root = logging.getLogger()
    root.addHandler(capture)
    yield capture
    root.removeHandler(capture)


@contextmanager
def running_webhook(url: str, **overrides: Any) -> Iterator[Live]:
    """The webhook on the database at `url` for the duration of the block."""
    live = serve(webhook_settings(url, **overrides))
    try:
        yield live
    finally:
        live.stop()
        live.engine.dispose()


@pytest.fixture
def start(logs: LogCapture) -> Iterator[Callable[..., Live]]:
    """Start webhooks (stopped at the end of the test): `start(url, **settings)`."""
    with ExitStack() as running:
        yield lambda url, **overrides: running.enter_context(running_webhook(url, **overrides))


@pytest.fixture
def live(pg_url: str, start: Callable[..., Live]) -> Live:
    """The webhook on a fresh PostgreSQL database."""
    return start(pg_url)


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    admin = make_url(PG_ADMIN_URL)
    p = Proxy((admin.host or "127.0.0.1", admin.port or 5432))
    yield p
    p.close()


def through(url: str, proxy: Proxy) -> str:
    """The same database URL, reached through the proxy."""
    return make_url(url).set(port=proxy.port).render_as_string(hide_password=False)
