"""Serving the webhook with uvicorn: what `zuora-sync webhook` runs.

The serving setup is the measured one (see docs/zuora_callouts.md, "Serving"): uvloop and
httptools, no access log (the app logs one line per callout itself), and one process per
core via `--workers`. With several workers, Prometheus metrics go through prometheus-client's
multiprocess mode, in a fresh directory per run.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from warehouse.db import make_engine
from webhook.app import check_settings
from webhook.metrics import MULTIPROC_ENV
from zuora_sync.logs import fields
from zuora_sync.settings import ConfigError, Settings

log = logging.getLogger("zuora_sync.webhook")

APP = "webhook.app:create_app"
#: Seconds uvicorn waits for requests in flight when told to stop.
GRACEFUL_SHUTDOWN_SECONDS = 20


def preflight(settings: Settings) -> None:
    """Refuse to start when the configuration cannot work; warn when the database is down.

    A database that is down may come back, and until then the webhook answers 503 (Zuora
    retries). A database without the inbox table will not fix itself: that is a setup error.
    """
    check_settings(settings)
    url = make_url(settings.DATABASE_URL)
    file = url.database if url.get_backend_name() == "sqlite" else None
    if file not in (None, "", ":memory:") and not Path(str(file)).exists():
        raise ConfigError(
            f"DATABASE_URL points at {file}, which does not exist yet; "
            "run `zuora-sync db upgrade` first"
        )
    engine = make_engine(settings.DATABASE_URL, pool_size=1)
    try:
        has_inbox = inspect(engine).has_table("callout_inbox")
    except Exception as exc:
        log.warning(
            "webhook.database_unreachable",
            extra=fields(database=settings.database_url_masked, error=type(exc).__name__),
        )
        return
    finally:
        engine.dispose()
    if not has_inbox:
        raise ConfigError(
            f"{settings.database_url_masked} has no callout_inbox table; "
            "run `zuora-sync db upgrade` first"
        )


def _fresh_metrics_dir() -> Path:
    """The multiprocess metrics directory, emptied: counts from an earlier run must not add
    up with this one's. An operator's `PROMETHEUS_MULTIPROC_DIR` is used (and cleaned) as is."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        return path
    path = Path(tempfile.mkdtemp(prefix="zuora-sync-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def serve(settings: Settings, *, host: str, port: int, workers: int) -> None:
    """Run the webhook until interrupted."""
    import uvicorn

    preflight(settings)
    metrics_dir: Path | None = None
    created_dir = False
    if workers > 1:
        created_dir = not os.environ.get(MULTIPROC_ENV)
        metrics_dir = _fresh_metrics_dir()
    log.info("webhook.serving", extra=fields(host=host, port=port, workers=workers))
    try:
        uvicorn.run(
            APP,
            factory=True,
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            http="httptools",
            access_log=False,
            log_config=None,
            server_header=False,
            proxy_headers=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )
    finally:
        if metrics_dir is not None and created_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
