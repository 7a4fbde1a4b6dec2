"""The sandbox's configuration: the simulated tenant, its limits, its faults and its choices.

Where Zuora's behaviour is not documented (UNCONFIRMED in the research notes), the default
below is the most likely behaviour and a field switches to the alternative; `docs/sandbox.md`
lists each one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from zuora_sync.settings import (
    CUSTOM_FIELD_RE,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_CUSTOM_FIELDS,
    Settings,
    get_settings,
)

DEFAULT_TENANT_ID = "10000719"
_OFFSET_RE = re.compile(r"^[+-](0\d|1[0-4]):[0-5]\d$")


class Faults(BaseModel):
    """Injected trouble. Every rate is a probability per request (0..1).

    Latency is spent inside the concurrency slot, as it is at Zuora, so throughput is
    bounded by `concurrency_limit / latency`.
    """

    model_config = ConfigDict(extra="forbid")

    latency_ms: float = Field(0.0, ge=0, description="fixed latency added to each API request")
    latency_jitter_ms: float = Field(
        0.0, ge=0, description="plus a uniformly drawn 0..jitter on top of the fixed part"
    )
    spike_rate: float = Field(0.0, ge=0, le=1, description="share of requests that spike")
    spike_ms: float = Field(0.0, ge=0, description="extra latency of a spike")
    error_rate: float = Field(0.0, ge=0, le=1, description="share answered 500/502/503")
    error_statuses: list[Literal[500, 502, 503]] = Field(
        default_factory=lambda: list[Literal[500, 502, 503]]([500, 502, 503]), min_length=1
    )
    timeout_rate: float = Field(0.0, ge=0, le=1, description="share held past the timeout")
    timeout_hold_s: float = Field(
        60.0, ge=0, le=3600, description="how long a 'timed out' request is held before a 504"
    )
    callout_drop_rate: float = Field(
        0.0, ge=0, le=1, description="share of changes that fire no callout at all"
    )
    paths: list[str] = Field(
        default_factory=list,
        description="path prefixes the request faults apply to; empty means every API path",
    )


class SandboxConfig(BaseModel):
    """Everything that shapes one simulated tenant."""

    model_config = ConfigDict(extra="forbid")

    # --- the data set ---------------------------------------------------------------------
    subscriptions: int = Field(1000, ge=0, le=5_000_000)
    seed: int = 1
    custom_fields: tuple[str, ...] = SANDBOX_CUSTOM_FIELDS
    cache_dir: Path | None = Field(
        None,
        description="where large data sets are built once and kept, keyed by size, seed, "
        "custom fields and data-format version; None keeps them in the instance's temp dir",
    )
    cache_min_subscriptions: int = Field(
        20_000, ge=0, description="smaller data sets are rebuilt per instance (milliseconds)"
    )
    work_dir: Path | None = Field(None, description="instance files (default: a temp dir)")

    # --- the tenant ----------------------------------------------------------------------
    tenant_id: str = Field(DEFAULT_TENANT_ID, pattern=r"^\d{1,12}$")
    client_id: str = SANDBOX_CLIENT_ID
    client_secret: str = SANDBOX_CLIENT_SECRET
    token_ttl_s: float = Field(3600.0, gt=0, description="OAuth tokens live an hour at Zuora")
    tenant_utc_offset: str = Field(
        "+00:00",
        description="the tenant's time zone as a fixed UTC offset; timestamps in ZOQL records "
        "and Data Query files carry it (daylight saving is not simulated)",
    )

    # --- limits ----------------------------------------------------------------------------
    concurrency_limit: int = Field(40, ge=1, le=10_000)
    concurrency_limit_type: str = Field(
        "Default", description="Concurrency-Limit-Type header value (UNCONFIRMED spelling)"
    )
    concurrency_retry_after_s: int = Field(1, ge=0, description="Retry-After on a concurrency 429")
    rate_limit_per_window: int = Field(
        50_000, ge=0, description="requests per window (Zuora production: 50,000/min); 0 = off"
    )
    rate_limit_window_s: int = Field(60, ge=1)

    gzip_responses: bool = Field(
        False,
        description="gzip API responses over 1000 bytes when the request accepts gzip, as "
        "Zuora does; off by default because it costs the sandbox about a third more CPU per "
        "GET and changes nothing a client sees once decoded",
    )

    # --- subscriptions -----------------------------------------------------------------------
    old_id_returns_latest: bool = Field(
        True,
        description="GET /v1/subscriptions/{old version id} answers the latest version "
        "(UNCONFIRMED; False answers that old version)",
    )
    amend_events: Literal["insert_and_update", "insert", "update"] = Field(
        "insert_and_update",
        description="what an amendment or cancel looks like to custom events (UNCONFIRMED): "
        "INSERT of the new version row and UPDATE of the old one, or only one of them",
    )
    custom_field_edit_touches_updated_date: bool = Field(
        True, description="an in-place custom-field edit moves UpdatedDate (UNCONFIRMED)"
    )

    # --- ZOQL -------------------------------------------------------------------------------
    zoql_locator_idle_s: float = Field(900.0, gt=0, description="queryLocator idle expiry")
    zoql_lowercase_keywords: bool = Field(
        True, description="refuse upper-case ZOQL keywords, as Zuora's docs say it does"
    )

    # --- Data Query -------------------------------------------------------------------------
    dataquery_running_limit: int = Field(5, ge=1)
    dataquery_queue_limit: int = Field(10, ge=0)
    dataquery_max_output_rows: int = Field(500_000, ge=1)
    dataquery_min_seconds: float = Field(
        0.0, ge=0, description="a job stays in_progress at least this long (to test limits)"
    )
    dataquery_queue_full_status: int = Field(
        429, description="HTTP status of a submit refused because the queue is full (UNCONFIRMED)"
    )
    dataquery_workers: int = Field(2, ge=1, le=16, description="worker processes for jobs")

    # --- callouts ----------------------------------------------------------------------------
    callout_max_attempts: int = Field(3, ge=1, le=5, description="Zuora: default 3, max 5")
    callout_retry_interval_s: float = Field(
        1800.0, ge=0, description="Zuora: default 30 minutes; seconds in tests"
    )
    callout_timeout_s: float = Field(25.0, gt=0, description="Zuora: 10 s connect + 15 s read")
    callout_parse_response: bool = Field(
        False, description="tenant option: a 200 must also carry success: true in a JSON body"
    )
    callout_empty_as_null: bool = Field(
        False, description="tenant option: empty merge-field values are sent as null"
    )
    callout_jitter_ms: float = Field(
        0.0, ge=0, description="random delay before each delivery, to shuffle their order"
    )
    callout_allow_http: bool = Field(
        True, description="accept http:// callout URLs for loopback hosts (Zuora needs https)"
    )
    callout_history_limit: int = Field(10_000, ge=10)

    faults: Faults = Field(default_factory=Faults)

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **overrides: Any) -> SandboxConfig:
        """A config whose credentials, custom fields and cache are the project's settings,
        so one environment configures both the sandbox and the project."""
        current = settings or get_settings()
        values: dict[str, Any] = {
            "client_id": current.ZUORA_CLIENT_ID.get_secret_value(),
            "client_secret": current.ZUORA_CLIENT_SECRET.get_secret_value(),
            "custom_fields": current.ZUORA_TRACKED_FIELDS,
            "cache_dir": current.ZUORA_SANDBOX_CACHE_DIR,
        }
        values.update(overrides)
        return cls(**values)

    @field_validator("custom_fields")
    @classmethod
    def _check_custom_fields(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [name for name in value if not CUSTOM_FIELD_RE.match(name)]
        if bad:
            raise ValueError(f"not custom field names (Name__c): {', '.join(bad)}")
        lowered = [name.lower() for name in value]
        if len(set(lowered)) != len(lowered):
            raise ValueError("custom field names must differ in more than letter case")
        return tuple(value)

    @field_validator("tenant_utc_offset")
    @classmethod
    def _check_offset(cls, value: str) -> str:
        if value in ("Z", "UTC"):
            return "+00:00"
        if not _OFFSET_RE.match(value):
            raise ValueError("must be a UTC offset such as +00:00 or -08:00")
        return value
