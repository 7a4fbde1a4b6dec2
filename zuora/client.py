"""An async client for the parts of Zuora's REST API that zuora-sync uses.

- OAuth 2.0 client credentials: the token is cached, refreshed shortly before it expires and
  once more when Zuora answers 401.
- Every request pins `Zuora-Version`, sends a `Zuora-Track-Id`, and holds a slot of the
  process-wide `AdaptiveLimiter` of its tenant (see `zuora/limiter.py`).
- Transient failures (429, 5xx, timeouts, connection errors, Zuora's retryable reason codes)
  are retried with exponential backoff and jitter, honouring `Retry-After`, within a budget
  of attempts and seconds; then, like every other failure, they surface as typed errors
  (`zuora/errors.py`). A 200 with `success: false` is an error too.
- Requests that change something in Zuora are retried only when Zuora cannot have acted on
  them (a 429, or a connection that never opened), so a retry never creates a duplicate.

Credentials never reach logs or error messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import math
import os
import random
import ssl
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from zuora.errors import (
    ZuoraAuthError,
    ZuoraError,
    ZuoraPermanentError,
    ZuoraRateLimited,
    ZuoraTransientError,
    error_for,
    parse_error_body,
)
from zuora.limiter import AdaptiveLimiter, Feedback, shared_limiter
from zuora_sync.logs import fields

log = logging.getLogger("zuora.client")

#: The API minor version this project is written against (notes: the current reference).
ZUORA_VERSION = "2025-08-12"

#: Zuora's REST base URLs by environment, for `ZUORA_BASE_URL` (a name or a URL).
ENVIRONMENTS = {
    "us-sandbox": "https://rest.test.zuora.com",  # US Developer & Central Sandbox
    "us-apisandbox-cloud1": "https://rest.sandbox.na.zuora.com",
    "us-apisandbox-cloud2": "https://rest.apisandbox.zuora.com",
    "us-production-cloud1": "https://rest.na.zuora.com",
    "us-production-cloud2": "https://rest.zuora.com",
    "eu-sandbox": "https://rest.test.eu.zuora.com",
    "eu-apisandbox": "https://rest.sandbox.eu.zuora.com",
    "eu-production": "https://rest.eu.zuora.com",
    "apac-sandbox": "https://rest.test.ap.zuora.com",
    "apac-production": "https://rest.ap.zuora.com",
}

TOKEN_REFRESH_MARGIN_SECONDS = 300.0
DATA_QUERY_FINAL = ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class RetryBudget:
    """How hard one call tries before giving up on a transient failure."""

    max_attempts: int = 6
    base_seconds: float = 0.25
    max_seconds: float = 8.0
    max_retry_after: float = 60.0
    total_seconds: float = 90.0

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        step = min(self.max_seconds, self.base_seconds * 2 ** max(0, attempt - 1))
        return (rng or random).uniform(step / 2, step)


@dataclass(frozen=True)
class TokenInfo:
    """What the OAuth token response says about the credentials' tenant."""

    scope: str
    tenant_id: str | None
    entity_ids: tuple[str, ...]
    user_id: str | None
    expires_in: float

    @classmethod
    def from_scope(cls, scope: str, expires_in: float) -> TokenInfo:
        parts = scope.split()

        def values(prefix: str) -> list[str]:
            return [p.removeprefix(prefix) for p in parts if p.startswith(prefix)]

        tenants = values("tenant.")
        users = values("user.")
        return cls(
            scope=scope,
            tenant_id=tenants[0] if tenants else None,
            entity_ids=tuple(values("entity.")),
            user_id=users[0] if users else None,
            expires_in=expires_in,
        )


@dataclass
class ClientStats:
    """Counters for run summaries and benchmarks."""

    requests: int = 0
    retries: int = 0
    throttled: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    transport_errors: int = 0
    token_refreshes: int = 0


def resolve_base_url(value: str) -> str:
    """A base URL, given either one or a known environment name (`us-production-cloud2`)."""
    return ENVIRONMENTS.get(value.strip().lower(), value).rstrip("/")


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time()) if when else None


def _json(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError as exc:
        raise ZuoraPermanentError(
            f"Zuora answered HTTP {response.status_code} with a body that is not JSON",
            status=response.status_code,
            request_id=response.headers.get("Zuora-Request-Id"),
        ) from exc


def _refused(doc: Any) -> bool:
    """Zuora answers some failures with HTTP 200 and `success: false`."""
    return isinstance(doc, dict) and doc.get("success") is False


def _int_header(response: httpx.Response, name: str) -> int | None:
    try:
        return int(response.headers[name])
    except (KeyError, ValueError):
        return None


def _feedback(response: httpx.Response) -> Feedback:
    return Feedback(
        throttled=response.status_code == 429,
        retry_after=_retry_after(response),
        tenant_limit=_int_header(response, "Concurrency-Limit-Limit"),
        tenant_remaining=_int_header(response, "Concurrency-Limit-Remaining"),
    )


class _ShardedClient:
    """Several small httpx connection pools side by side, each request to the least busy.

    httpx checks every connection of its pool on every request (the cost grows with the
    square of the pool size); at Zuora's concurrency of 40 that alone used most of a core.
    Pools of a few connections keep the cost flat however much concurrency is allowed.
    """

    SHARD_CONNECTIONS = 8

    def __init__(self, connections: int, **options: Any) -> None:
        shards = max(1, math.ceil(connections / self.SHARD_CONNECTIONS))
        per_shard = math.ceil(connections / shards)
        limits = httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard)
        tls = ssl.create_default_context()  # built once: loading CA certificates is slow
        self._clients = [
            httpx.AsyncClient(limits=limits, verify=tls, **options) for _ in range(shards)
        ]
        self._busy = [0] * shards

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        shard = min(range(len(self._clients)), key=self._busy.__getitem__)
        self._busy[shard] += 1
        try:
            return await self._clients[shard].request(method, path, **kwargs)
        finally:
            self._busy[shard] -= 1

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


class ZuoraClient:
    """One tenant's API. Use as `async with ZuoraClient(...) as zuora:`."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        max_concurrency: int = 20,
        retry: RetryBudget | None = None,
        timeout: httpx.Timeout | None = None,
        zuora_version: str = ZUORA_VERSION,
        limiter: AdaptiveLimiter | None = None,
        data_query_jobs: int = 4,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = resolve_base_url(base_url)
        self._client_id = client_id
        self._client_secret = client_secret
        self.retry = retry or RetryBudget()
        self.zuora_version = zuora_version
        self.limiter = limiter or shared_limiter(self.base_url, max_concurrency)
        # Zuora runs at most 5 Data Query jobs per tenant; leave room for other users.
        self._jobs = asyncio.Semaphore(data_query_jobs)
        self._http = _ShardedClient(
            self.limiter.max_concurrency + 4,
            base_url=self.base_url,
            timeout=timeout or httpx.Timeout(30.0, connect=10.0),
            transport=transport,
            headers={"User-Agent": "zuora-sync"},
        )
        self._token: str | None = None
        self._token_expires_at = 0.0
        self._token_lock = asyncio.Lock()
        self.token_info: TokenInfo | None = None
        self.stats = ClientStats()

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> ZuoraClient:
        return cls(
            settings.ZUORA_BASE_URL,
            settings.ZUORA_CLIENT_ID.get_secret_value(),
            settings.ZUORA_CLIENT_SECRET.get_secret_value(),
            max_concurrency=settings.ZUORA_MAX_CONCURRENCY,
            **kwargs,
        )

    def __repr__(self) -> str:
        return f"ZuoraClient({self.base_url!r})"

    async def __aenter__(self) -> ZuoraClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- authentication ---------------------------------------------------------------------

    async def authenticate(self) -> TokenInfo:
        """Fetch a new token now and return what it says about the tenant."""
        async with self._token_lock:
            await self._fetch_token()
        assert self.token_info is not None
        return self.token_info

    async def _bearer(self) -> str:
        if self._token is None or time.monotonic() >= self._token_expires_at:
            async with self._token_lock:
                if self._token is None or time.monotonic() >= self._token_expires_at:
                    await self._fetch_token()
        assert self._token is not None
        return self._token

    async def _fetch_token(self) -> None:
        form = {
            "client_id": self._client_id,
            "client_secret": self._client_secret,
            "grant_type": "client_credentials",
        }
        response, doc = await self._send_with_retries(
            "POST", "/oauth/token", data=form, authenticated=False, idempotent=True
        )
        token = doc.get("access_token") if isinstance(doc, dict) else None
        if not token:
            raise ZuoraAuthError(
                "the token response carries no access_token", status=response.status_code
            )
        expires_in = float(doc.get("expires_in") or 3600)
        margin = min(TOKEN_REFRESH_MARGIN_SECONDS, expires_in / 2)
        self._token = str(token)
        self._token_expires_at = time.monotonic() + expires_in - margin
        self.token_info = TokenInfo.from_scope(str(doc.get("scope") or ""), expires_in)
        self.stats.token_refreshes += 1

    # --- the request loop -------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        track_id: str | None = None,
        idempotent: bool | None = None,
    ) -> Any:
        """Call Zuora and return the decoded JSON body, or raise a typed `ZuoraError`."""
        _, doc = await self._send_with_retries(
            method,
            path,
            params=params,
            json=json,
            track_id=track_id,
            idempotent=method in ("GET", "HEAD", "DELETE") if idempotent is None else idempotent,
        )
        return doc

    async def _send_with_retries(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        track_id: str | None = None,
        authenticated: bool = True,
        idempotent: bool = True,
    ) -> tuple[httpx.Response, Any]:
        deadline = time.monotonic() + self.retry.total_seconds
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            error: ZuoraError
            try:
                response = await self._send_once(
                    method, path, params=params, json=json, data=data,
                    track_id=track_id, authenticated=authenticated,
                )  # fmt: skip
            except httpx.TransportError as exc:
                self.stats.transport_errors += 1
                never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                error = ZuoraTransientError(
                    f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
                    method=method,
                    path=path,
                )
                safe_to_repeat = idempotent or never_sent
            else:
                doc = _json(response) if response.status_code < 400 else None
                if response.status_code < 400 and not _refused(doc):
                    return response, doc
                if response.status_code == 401 and authenticated and not refreshed:
                    refreshed = True  # an expired or revoked token: one fresh token, once
                    self._token = None
                    attempt -= 1
                    continue
                error = error_for(
                    response.status_code,
                    parse_error_body(doc if _refused(doc) else response.content),
                    request_id=response.headers.get("Zuora-Request-Id"),
                    method=method,
                    path=path,
                    retry_after=_retry_after(response),
                )
                safe_to_repeat = idempotent or response.status_code == 429
            if not (error.retryable and safe_to_repeat and attempt < self.retry.max_attempts):
                raise error
            delay = self.retry.backoff(attempt)
            if isinstance(error, ZuoraRateLimited) and error.retry_after is not None:
                delay = max(delay, min(error.retry_after, self.retry.max_retry_after))
            if time.monotonic() + delay > deadline:
                raise error
            self.stats.retries += 1
            log.info(
                "zuora.retry",
                extra=fields(
                    method=method, path=path, attempt=attempt, status=error.status,
                    code=error.code, delay_s=round(delay, 3), request_id=error.request_id,
                ),
            )  # fmt: skip
            await asyncio.sleep(delay)

    async def _send_once(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None,
        json: Any,
        data: Mapping[str, str] | None,
        track_id: str | None,
        authenticated: bool,
    ) -> httpx.Response:
        headers = {
            "Zuora-Version": self.zuora_version,
            "Zuora-Track-Id": (track_id or f"zuora-sync-{uuid.uuid4().hex[:20]}")[:64],
            "Accept": "application/json",
        }
        if not authenticated:  # the token endpoint is outside the concurrency limit
            return await self._count(
                await self._http.request(method, path, params=params, data=data, headers=headers)
            )
        headers["Authorization"] = f"Bearer {await self._bearer()}"
        async with self.limiter.slot() as report:
            response = await self._http.request(
                method, path, params=params, json=json, data=data, headers=headers
            )
            report(_feedback(response))
        return await self._count(response)

    async def _count(self, response: httpx.Response) -> httpx.Response:
        self.stats.requests += 1
        self.stats.by_status[response.status_code] = (
            self.stats.by_status.get(response.status_code, 0) + 1
        )
        if response.status_code == 429:
            self.stats.throttled += 1
        return response

    # --- subscriptions ----------------------------------------------------------------------

    async def get_subscription(self, key: str, *, track_id: str | None = None) -> dict[str, Any]:
        """The latest version of a subscription, by number or by the id of a version."""
        if not key or "/" in key:
            raise ZuoraPermanentError(f"not a subscription key: {key!r}")
        doc = await self.request(
            "GET", f"/v1/subscriptions/{quote(key, safe='')}", track_id=track_id
        )
        if not isinstance(doc, dict):
            raise ZuoraPermanentError(
                "GET /v1/subscriptions answered something that is not an object"
            )
        return doc

    async def get_subscription_version(self, number: str, version: int) -> dict[str, Any]:
        doc = await self.request(
            "GET", f"/v1/subscriptions/{quote(number, safe='')}/versions/{int(version)}"
        )
        assert isinstance(doc, dict)
        return doc

    # --- ZOQL -------------------------------------------------------------------------------

    async def zoql(
        self, query: str, *, batch_size: int = 2000
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Run a ZOQL query and yield its records a batch at a time (query, then queryMore)."""
        conf = {"batchSize": max(1, min(2000, batch_size))}
        doc = await self.request(
            "POST", "/v1/action/query", json={"queryString": query, "conf": conf}, idempotent=True
        )
        while True:
            records = doc.get("records") or []
            if records:
                yield records
            locator = doc.get("queryLocator")
            if doc.get("done", True) or not locator:
                return
            doc = await self.request(
                "POST", "/v1/action/queryMore", json={"queryLocator": locator, "conf": conf},
                idempotent=True,
            )  # fmt: skip

    # --- Data Query -------------------------------------------------------------------------

    async def submit_data_query(
        self, sql: str, *, output_format: str = "CSV", compression: str = "GZIP"
    ) -> dict[str, Any]:
        body = {
            "query": sql,
            "outputFormat": output_format,
            "compression": compression,
            "output": {"target": "S3"},
            "readDeleted": False,
        }
        doc = await self.request("POST", "/query/jobs", json=body)
        return dict(doc["data"])

    async def get_data_query(self, job_id: str) -> dict[str, Any]:
        doc = await self.request("GET", f"/query/jobs/{quote(job_id, safe='')}")
        return dict(doc["data"])

    async def cancel_data_query(self, job_id: str) -> None:
        with contextlib.suppress(ZuoraError):
            await self.request("DELETE", f"/query/jobs/{quote(job_id, safe='')}")

    async def run_data_query(
        self,
        sql: str,
        *,
        output_format: str = "CSV",
        compression: str = "GZIP",
        timeout_seconds: float = 3600.0,
        poll_seconds: tuple[float, float] = (0.1, 2.0),
    ) -> dict[str, Any]:
        """Submit a job and wait for it; return the completed job (with `dataFile`).

        At most `data_query_jobs` of this client's jobs run at once (Zuora runs 5 per tenant).
        A failed or cancelled job raises `ZuoraPermanentError`; a job still running at the
        deadline is cancelled and raises `ZuoraTransientError`.
        """
        async with self._jobs:
            job = await self.submit_data_query(
                sql, output_format=output_format, compression=compression
            )
            deadline = time.monotonic() + timeout_seconds
            delay = poll_seconds[0]
            while job.get("queryStatus") not in DATA_QUERY_FINAL:
                if time.monotonic() + delay > deadline:
                    await self.cancel_data_query(job["id"])
                    raise ZuoraTransientError(
                        f"Data Query job {job['id']} still running after {timeout_seconds:.0f} s"
                    )
                await asyncio.sleep(delay)
                delay = min(poll_seconds[1], delay * 1.5)
                job = await self.get_data_query(job["id"])
        if job["queryStatus"] != "completed":
            detail = job.get("errorMessage") or job.get("errorCode") or job.get("queryStatus")
            raise ZuoraPermanentError(
                f"Data Query job {job['id']} ended {job['queryStatus']}: {detail}"
            )
        return job

    async def download(self, url: str, target: Path) -> Path:
        """Stream a result file to disk, retrying transient failures.

        The URL is pre-signed (S3 in Zuora), so no Zuora credentials are sent with it.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._download_once(url, target)
            except (httpx.TransportError, ZuoraTransientError) as exc:
                if attempt >= self.retry.max_attempts:
                    if isinstance(exc, ZuoraError):
                        raise
                    raise ZuoraTransientError(f"downloading a result file failed: {exc!r}") from exc
                await asyncio.sleep(self.retry.backoff(attempt))

    async def _download_once(self, url: str, target: Path) -> Path:
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(300.0, connect=10.0)) as plain,
            plain.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                error = error_for(response.status_code, [])
                raise (error if error.retryable else ZuoraPermanentError(
                    f"downloading a result file answered HTTP {response.status_code}",
                    status=response.status_code,
                ))  # fmt: skip
            with target.open("wb") as out:
                async for chunk in response.aiter_bytes(1 << 20):
                    out.write(chunk)
        return target

    async def data_query_to_file(
        self,
        sql: str,
        *,
        directory: Path | None = None,
        output_format: str = "CSV",
        compression: str = "GZIP",
    ) -> tuple[Path, dict[str, Any]]:
        """Run a query and download its result; the caller owns (and deletes) the file."""
        job = await self.run_data_query(sql, output_format=output_format, compression=compression)
        suffix = {"CSV": ".csv", "JSON": ".jsonl"}.get(output_format, ".out")
        suffix += ".gz" if compression == "GZIP" else ""
        handle, name = tempfile.mkstemp(prefix="zuora-dq-", suffix=suffix, dir=directory)
        os.close(handle)
        try:
            return await self.download(job["dataFile"], Path(name)), job
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise

    # --- custom events and notifications (for tenant setup) ---------------------------------

    async def list_event_triggers(self, **filters: Any) -> list[dict[str, Any]]:
        return await self._all_pages("/events/event-triggers", filters)

    async def create_event_trigger(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return dict(await self.request("POST", "/events/event-triggers", json=dict(body)))

    async def update_event_trigger(
        self, trigger_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        return dict(
            await self.request(
                "PUT", f"/events/event-triggers/{quote(trigger_id, safe='')}", json=dict(body),
                idempotent=True,
            )
        )  # fmt: skip

    async def delete_event_trigger(self, trigger_id: str) -> None:
        await self.request("DELETE", f"/events/event-triggers/{quote(trigger_id, safe='')}")

    async def list_notification_definitions(self, **filters: Any) -> list[dict[str, Any]]:
        return await self._all_pages("/notifications/notification-definitions", filters)

    async def create_notification_definition(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return dict(
            await self.request("POST", "/notifications/notification-definitions", json=dict(body))
        )

    async def update_notification_definition(
        self, definition_id: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        path = f"/notifications/notification-definitions/{quote(definition_id, safe='')}"
        return dict(await self.request("PUT", path, json=dict(body), idempotent=True))

    async def delete_notification_definition(self, definition_id: str) -> None:
        await self.request(
            "DELETE", f"/notifications/notification-definitions/{quote(definition_id, safe='')}"
        )

    async def _all_pages(self, path: str, filters: Mapping[str, Any]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        start, limit = 0, 100
        while True:
            params = {
                **{k: v for k, v in filters.items() if v is not None},
                "start": start,
                "limit": limit,
            }
            doc = await self.request("GET", path, params=params)
            page = doc.get("data") or [] if isinstance(doc, dict) else []
            items.extend(page)
            if not doc.get("next") or not page:
                return items
            start += len(page)
