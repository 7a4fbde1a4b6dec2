"""Prometheus metrics of the webhook, correct with one worker process or several.

Counters and histograms live in the process that counts them. With several uvicorn workers,
prometheus-client's multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`, set by
`zuora-sync webhook --workers N` before the workers start) keeps them in shared files, and a
scrape of any worker adds up all of them. The inbox's depth and the age of its oldest row are
not counted at all: they are read from the database when scraped, so every worker reports the
same truth.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from warehouse import inbox
from warehouse.db import read_only

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Every reason a callout can be refused; one time series each, present from the start.
REJECTION_REASONS = (
    "unauthorized",
    "body_too_large",
    "unsupported_media_type",
    "malformed_body",
    "not_an_object",
    "missing_subscription_key",
    "invalid_parameter",
    "conflicting_parameter",
    "too_many_parameters",
    "method_not_allowed",
    "database_unavailable",
    "internal_error",
)
OUTCOMES = ("stored", "duplicate", "rejected")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500)


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class WebhookMetrics:
    """The webhook's instruments. Each app gets its own registry, so several apps (tests) can
    live in one process without clashing."""

    def __init__(self, engine: Engine) -> None:
        self.multiprocess = multiprocess_mode()
        # In multiprocess mode values go to the shared files whatever the registry; a scrape
        # builds a fresh registry that reads those files.
        self.registry = CollectorRegistry(auto_describe=True)
        where: Any = None if self.multiprocess else self.registry
        self.received = Counter(
            "zuora_sync_callouts_received",
            "Callout requests received on the callout endpoint.",
            registry=where,
        )
        self.stored = Counter(
            "zuora_sync_callouts_stored",
            "Callouts stored as a new inbox row (answered 200 after the commit).",
            registry=where,
        )
        self.duplicates = Counter(
            "zuora_sync_callouts_duplicates",
            "Callouts already in the inbox (answered 200, nothing stored).",
            registry=where,
        )
        rejected = Counter(
            "zuora_sync_callouts_rejected",
            "Callouts refused, by reason (nothing stored).",
            ["reason"],
            registry=where,
        )
        self.rejected = {reason: rejected.labels(reason) for reason in REJECTION_REASONS}
        latency = Histogram(
            "zuora_sync_callout_duration_seconds",
            "Time from a callout's arrival to its answer, by outcome.",
            ["outcome"],
            buckets=LATENCY_BUCKETS,
            registry=where,
        )
        self.latency = {outcome: latency.labels(outcome) for outcome in OUTCOMES}
        self.batch_size = Histogram(
            "zuora_sync_callout_commit_batch_size",
            "Callouts stored per commit by the group-commit writer.",
            buckets=BATCH_BUCKETS,
            registry=where,
        )
        self.inbox = InboxCollector(engine)
        if not self.multiprocess:
            self.registry.register(self.inbox)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            registry.register(self.inbox)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class InboxCollector(Collector):
    """Reads the inbox's backlog from the database at scrape time.

    The query only touches live rows (a partial index); a result younger than `ttl` seconds
    is reused, so scrapers polling several workers at once cost one query.
    """

    def __init__(self, engine: Engine, *, ttl: float = 1.0) -> None:
        self.engine = engine
        self.ttl = ttl
        self._lock = threading.Lock()
        self._cached: tuple[float, inbox.Backlog | None] = (-ttl, None)

    def describe(self) -> Iterable[Metric]:
        return []  # keeps registration from querying the database

    def _read(self) -> inbox.Backlog | None:
        with self._lock:
            at, value = self._cached
            if time.monotonic() - at < self.ttl:
                return value
            try:
                with read_only(self.engine) as conn:
                    if conn.dialect.name == "postgresql":
                        conn.exec_driver_sql("SET LOCAL statement_timeout = 2000")
                    value = inbox.backlog(conn)
            except Exception:
                value = None
            self._cached = (time.monotonic(), value)
            return value

    def collect(self) -> Iterator[Metric]:
        backlog = self._read()
        up = GaugeMetricFamily(
            "zuora_sync_database_up",
            "1 when the warehouse answered the last metrics query, else 0.",
            value=0 if backlog is None else 1,
        )
        yield up
        if backlog is None:
            return
        depth = GaugeMetricFamily(
            "zuora_sync_inbox_depth",
            "Inbox rows waiting for the drain, by status.",
            labels=["status"],
        )
        depth.add_metric(["pending"], backlog.pending)
        depth.add_metric(["processing"], backlog.processing)
        yield depth
        yield GaugeMetricFamily(
            "zuora_sync_inbox_oldest_pending_age_seconds",
            "Age of the oldest pending or processing inbox row (0 when there is none).",
            value=backlog.oldest_age_seconds or 0.0,
        )
