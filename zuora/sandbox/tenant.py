"""One simulated tenant's state: data, tokens, limits, faults, counters, services."""

from __future__ import annotations

import asyncio
import random
import secrets
import shutil
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zuora.sandbox.config import Faults, SandboxConfig
from zuora.sandbox.dataquery import DataQuery
from zuora.sandbox.events import Events
from zuora.sandbox.schema import tenant_tz
from zuora.sandbox.seed import ensure_base
from zuora.sandbox.store import ChangeSet, Store
from zuora.sandbox.zoql import Zoql

# Config fields that may change while the tenant runs (the data set may not).
RUNTIME_FIELDS = frozenset(SandboxConfig.model_fields) - {
    "subscriptions",
    "seed",
    "custom_fields",
    "cache_dir",
    "cache_min_subscriptions",
    "work_dir",
    "tenant_utc_offset",
    "dataquery_workers",
}


@dataclass
class Token:
    expires: float


class Tenant:
    """Everything behind one sandbox app."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self._own_dir = config.work_dir is None
        self.work_dir = Path(config.work_dir or tempfile.mkdtemp(prefix="zuora-sandbox-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        cached = (
            config.cache_dir is not None and config.subscriptions >= config.cache_min_subscriptions
        )
        base_dir = config.cache_dir if cached and config.cache_dir else self.work_dir / "base"
        self.base = ensure_base(
            base_dir,
            config.subscriptions,
            config.seed,
            config.custom_fields,
            config.tenant_utc_offset,
        )
        overlay = self.work_dir / f"overlay-{uuid.uuid4().hex[:8]}.sqlite"
        self.store = Store(self.base, overlay, config.custom_fields, config.tenant_utc_offset)
        self.tz = tenant_tz(config.tenant_utc_offset)
        self.zoql = Zoql(self.store.con, config.zoql_locator_idle_s)
        self.counters: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.events = Events(config, self.count)
        self.dataquery = DataQuery(config, self.base, overlay, self.work_dir / "results")
        self.tokens: dict[str, Token] = {}
        self.inflight = 0
        self.peak = 0
        self.window_start = time.monotonic()
        self.window_count = 0
        self.started = time.time()

    # --- counters ----------------------------------------------------------------------------

    def count(self, name: str, amount: int = 1) -> None:
        self.counters[name] += amount

    def snapshot(self) -> dict[str, Any]:
        by_status: Counter[str] = Counter()
        for key, value in self.requests.items():
            by_status[key.rsplit(" ", 1)[1]] += value
        return {
            "requests": dict(sorted(self.requests.items())),
            "requests_total": sum(self.requests.values()),
            "by_status": dict(sorted(by_status.items())),
            "throttled_429": self.counters["throttled_429"],
            "throttled_concurrency": self.counters["throttled_concurrency"],
            "throttled_rate": self.counters["throttled_rate"],
            "peak_concurrency": self.peak,
            "inflight": self.inflight,
            "faults_injected": self.counters["faults_injected"],
            "timeouts_injected": self.counters["timeouts_injected"],
            "callouts": {
                "started": self.counters["callouts_started"],
                "delivered": self.counters["callouts_delivered"],
                "failed": self.counters["callouts_failed"],
                "dropped": self.counters["callouts_dropped"],
                "requests": self.counters["callout_requests"],
                "failed_attempts": self.counters["callout_attempts_failed"],
            },
            "events_fired": self.counters["events_fired"],
        }

    def reset_counters(self) -> None:
        self.counters.clear()
        self.requests.clear()
        self.peak = self.inflight

    # --- tokens ------------------------------------------------------------------------------

    def issue_token(self) -> tuple[str, int]:
        token = secrets.token_hex(16)
        ttl = self.config.token_ttl_s
        self.tokens[token] = Token(time.monotonic() + ttl)
        if len(self.tokens) > 50_000:
            now = time.monotonic()
            self.tokens = {k: v for k, v in self.tokens.items() if v.expires > now}
        return token, max(1, int(ttl) - 1)

    def token_valid(self, token: str) -> bool:
        found = self.tokens.get(token)
        return found is not None and found.expires > time.monotonic()

    def expire_tokens(self) -> int:
        count = len(self.tokens)
        self.tokens.clear()
        return count

    def scope(self) -> str:
        return (
            f"entity.{uuid.UUID(int=int(self.config.tenant_id))} platform.write "
            "service.genesis.read service.usage.write service.usage.delete "
            f"tenant.{self.config.tenant_id} user.2c92c0f85a1b3c4d5e6f7a8b9c0d1e2f"
        )

    # --- limits --------------------------------------------------------------------------------

    def rate_check(self) -> tuple[bool, int, int]:
        """(allowed, remaining, reset seconds) of the fixed rate-limit window."""
        limit = self.config.rate_limit_per_window
        window = self.config.rate_limit_window_s
        now = time.monotonic()
        if now - self.window_start >= window:
            self.window_start, self.window_count = now, 0
        reset = max(1, int(self.window_start + window - now + 0.999))
        if not limit:
            return True, 0, reset
        self.window_count += 1
        allowed = self.window_count <= limit
        return allowed, max(0, limit - self.window_count), reset

    def fault_delay(self, faults: Faults) -> float:
        delay = faults.latency_ms
        if faults.latency_jitter_ms:
            delay += random.uniform(0, faults.latency_jitter_ms)
        if faults.spike_rate and random.random() < faults.spike_rate:
            delay += faults.spike_ms
        return delay / 1000

    # --- changes ------------------------------------------------------------------------------

    def fire(self, changes: ChangeSet) -> None:
        """Hand a change made through the API to custom events (never blocks)."""
        account = None
        new = next((c.new for c in changes.changes if c.new and "AccountId" in c.new), None)
        if new is not None:
            row = self.store.account(str(new["AccountId"]))
            account = {
                col.name: row.get(col.sql) for col in self.store.tables["account"].public_columns
            }
        self.events.on_changes(changes, account, self.config.faults.callout_drop_rate)

    async def close(self) -> None:
        await self.events.close()
        await self.dataquery.close()
        await asyncio.sleep(0)
        self.store.close()
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)
