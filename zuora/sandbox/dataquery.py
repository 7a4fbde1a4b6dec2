"""Data Query: asynchronous read-only SQL jobs, as `/query/jobs` at Zuora.

Jobs run in worker processes (SQLite over the tenant's base and overlay files), so a query
over a million subscriptions neither blocks the API nor holds the GIL, and two jobs run side
by side. The tenant's limits hold: `dataquery_running_limit` jobs `in_progress` (5 at Zuora),
`dataquery_queue_limit` more waiting in `accepted` (10), a refused submit beyond that, and at
most `dataquery_max_output_rows` rows per job (500,000) or the job ends `failed`.

SQL is SQLite's dialect over tables and columns named as Data Query names them; Trino's
`TIMESTAMP '...'` and `DATE '...'` literals are accepted. Timestamps in result files are
ISO 8601 with milliseconds and the tenant's UTC offset (`2026-11-25T10:20:30.123+00:00`),
the same as ZOQL records.
"""

from __future__ import annotations

import asyncio
import gzip
import multiprocessing
import re
import secrets
import sqlite3
import time
import uuid
import zipfile
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from zuora.sandbox.config import SandboxConfig
from zuora.sandbox.schema import tables, tenant_tz
from zuora.sandbox.seed import parquet_path, to_arrow
from zuora.sandbox.zoql import ZoqlError, normalise_datetime

SANDBOX_USER_UUID = "8a8082c4-5aa8-1b51-015a-d64396090f5c"
_FORMATS = {"JSON": "jsonl", "CSV": "csv", "TSV": "tsv", "DSV": "dsv"}
_COMPRESSIONS = ("NONE", "GZIP", "ZIP")
_LITERAL = re.compile(r"\b(TIMESTAMP|DATE)\s*('(?:[^']|'')*')", re.IGNORECASE)
_ZONE_SUFFIX = re.compile(r"^(.*\d)\s+(UTC|Z|[+-]\d{2}:\d{2})$", re.IGNORECASE)
_STRINGS_OR_COMMENTS = re.compile(r"'(?:[^']|'')*'|\"[^\"]*\"|--[^\n]*|/\*.*?\*/", re.DOTALL)


class QueryRefused(Exception):
    """A submit Data Query refuses: HTTP status and `{"code", "message"}` body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _stamp() -> str:
    """Data Query's timestamp format: UTC, milliseconds, `Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_sql(sql: str) -> str:
    """Refuse anything but one read-only SELECT or WITH statement; return it cleaned."""
    if not isinstance(sql, str) or not sql.strip():
        raise QueryRefused(400, "query is required")
    if len(sql) > 1_000_000:
        raise QueryRefused(400, "the query is longer than 1,000,000 characters")
    bare = _STRINGS_OR_COMMENTS.sub(" ", sql).strip().rstrip(";").strip()
    if ";" in bare:
        raise QueryRefused(400, "only a single SELECT statement is allowed")
    first = bare.split(None, 1)[0].upper() if bare else ""
    if first not in ("SELECT", "WITH"):
        raise QueryRefused(400, "only read-only SELECT (or WITH ... SELECT) queries are allowed")
    return sql.strip().rstrip(";")


def translate(sql: str, utc_offset: str) -> str:
    """Trino literals to the stored forms: TIMESTAMP '...' -> '<iso, tenant offset>'."""
    tz = tenant_tz(utc_offset)
    return _LITERAL.sub(lambda m: _rewrite_pair(m, tz), sql)


def _rewrite_pair(match: re.Match[str], tz: Any) -> str:
    kind, quoted = match.group(1).upper(), match.group(2)
    text = quoted[1:-1].replace("''", "'")
    if kind == "DATE":
        return quoted
    # Trino's TIMESTAMP WITH TIME ZONE literals name the zone after a space:
    # '2026-01-01 00:00:00.000 UTC' or '2026-01-01 00:00:00 +01:00'.
    zoned = _ZONE_SUFFIX.match(text.strip())
    if zoned:
        zone = zoned.group(2)
        text = zoned.group(1) + ("+00:00" if zone.upper() in ("UTC", "Z") else zone)
    try:
        return f"'{normalise_datetime(text, tz)}'"
    except ZoqlError as exc:
        raise QueryRefused(400, exc.message) from None


def open_engine(
    base: str, overlay: str | None, custom_fields: tuple[str, ...], writable: list[str]
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that sees the tenant: the base's Parquet copies minus masked rows,
    plus the overlay's rows. Only the base's and the given directories are reachable."""
    con = duckdb.connect(
        config={
            "threads": 2,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        }
    )
    masked: list[str] = []
    overlay_rows: dict[str, list[tuple[Any, ...]]] = {}
    if overlay is not None:
        reader = sqlite3.connect(f"file:{overlay}?mode=ro", uri=True, isolation_level=None)
        try:
            reader.execute("BEGIN")  # one snapshot of masks and rows
            masked = [r[0] for r in reader.execute("SELECT id FROM masked")]
            for name in tables(custom_fields):
                overlay_rows[name] = reader.execute(f"SELECT * FROM {name}").fetchall()
        finally:
            reader.close()
    con.register("__zs_masked", pa.table({"id": pa.array(masked, pa.string())}))
    base_path = Path(base)
    for name, table in tables(custom_fields).items():
        con.register(f"__zs_overlay_{name}", to_arrow(table, overlay_rows.get(name, [])))
        cols = ", ".join(c.sql for c in table.public_columns)
        source = str(parquet_path(base_path, name)).replace("'", "''")
        con.execute(
            f"CREATE VIEW {name} AS SELECT {cols} FROM read_parquet('{source}') "
            "WHERE id NOT IN (SELECT id FROM __zs_masked) "
            f"UNION ALL SELECT {cols} FROM __zs_overlay_{name}"
        )
    allowed = ", ".join(f"'{d}'" for d in [str(base_path.parent), *writable])
    con.execute(f"SET allowed_directories = [{allowed}]")
    con.execute("SET enable_external_access = false")
    return con


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker process needs to run one job (plain data, picklable)."""

    base: str
    overlay: str
    custom_fields: tuple[str, ...]
    sql: str
    output_format: str
    separator: str
    compression: str
    path: str
    max_rows: int


def run_job(spec: JobSpec) -> dict[str, Any]:
    """Run one job in a worker process: write its result file, report rows and time."""
    started = time.perf_counter()
    out = Path(spec.path)
    try:
        con = open_engine(spec.base, spec.overlay, spec.custom_fields, [str(out.parent)])
    except (duckdb.Error, sqlite3.Error, OSError) as exc:
        return {"error": f"cannot open the tenant: {exc}", "code": "INTERNAL_ERROR"}
    raw = out.with_name(out.name + ".raw")
    try:
        names = [d[0] for d in con.execute(f"SELECT * FROM ({spec.sql}) AS q LIMIT 0").description]
        select = ", ".join(f'"{n}" AS "{n.lower()}"' for n in _unique_lower(names))
        limited = f"SELECT {select} FROM ({spec.sql}) AS q LIMIT {spec.max_rows + 1}"
        if spec.output_format == "JSON":
            options = "FORMAT json"
        else:
            delimiter = spec.separator.replace("'", "''")
            options = f"FORMAT csv, HEADER true, DELIMITER '{delimiter}'"
        target = str(raw).replace("'", "''")
        result = con.execute(f"COPY ({limited}) TO '{target}' ({options})").fetchone()
        rows = int(result[0]) if result else 0
    except duckdb.Error as exc:
        raw.unlink(missing_ok=True)
        out.unlink(missing_ok=True)
        return {"error": f"Query failed: {exc}", "code": "QUERY_ERROR"}
    finally:
        con.close()
    if rows > spec.max_rows:
        raw.unlink(missing_ok=True)
        out.unlink(missing_ok=True)
        return {
            "error": f"The query returned more than {spec.max_rows} rows, the maximum output "
            "of a Data Query job. Narrow it (for example page by id or updateddate ranges).",
            "code": "OUTPUT_LIMIT_EXCEEDED",
        }
    _package(raw, out, spec.compression)
    return {"rows": rows, "ms": int((time.perf_counter() - started) * 1000)}


def _unique_lower(names: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for name in names:
        if name.lower() in seen:
            raise duckdb.BinderException(f"duplicate output column {name.lower()!r}")
        seen.add(name.lower())
        out.append(name.replace('"', '""'))
    return out


def _package(raw: Path, out: Path, compression: str) -> None:
    """Compress the result file as asked (gzip at a fast level: these are big files)."""
    if compression == "NONE":
        raw.replace(out)
        return
    if compression == "GZIP":
        # Blocks compressed on both cores and written in order as gzip members: one valid
        # gzip file (RFC 1952 allows several members) in about half the time.
        with (
            open(raw, "rb") as source,
            open(out, "wb") as target,
            ThreadPoolExecutor(2) as threads,
        ):
            blocks = iter(lambda: source.read(8 << 20), b"")
            for member in threads.map(lambda b: gzip.compress(b, compresslevel=1), blocks):
                target.write(member)
    else:
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
            archive.write(raw, arcname=out.name.removesuffix(".zip"))
    raw.unlink()


_POOL: ProcessPoolExecutor | None = None


def _ready() -> bool:
    """A no-op run in each worker at start, so the first job finds them imported."""
    return True


def pool(workers: int) -> Executor:
    """The process pool shared by every sandbox in this process (started on first use)."""
    global _POOL
    if _POOL is None:
        _POOL = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    return _POOL


@dataclass
class Job:
    id: str
    query: str
    sql: str
    output_format: str
    separator: str
    compression: str
    status: str = "accepted"
    created: str = field(default_factory=_stamp)
    updated: str = field(default_factory=_stamp)
    rows: int | None = None
    ms: int | None = None
    file_token: str | None = None
    file_name: str | None = None
    error: str | None = None
    error_code: str | None = None

    def to_json(self, base_url: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "query": self.query,
            "useIndexJoin": False,
            "sourceData": "LIVE",
            "outputFormat": self.output_format,
            "compression": self.compression,
            "readDeleted": False,
            "queryStatus": self.status,
            "remainingRetries": 3,
            "retries": 3,
            "createdOn": self.created,
            "updatedOn": self.updated,
            "createdBy": SANDBOX_USER_UUID,
            "createdByUserEmail": "sandbox-api@example.com",
        }
        if self.status == "completed":
            out["dataFile"] = f"{base_url}/query-results/{self.file_token}/{self.file_name}"
            out["outputRows"] = self.rows
            out["processingTime"] = self.ms
        if self.status == "failed":
            out["errorCode"] = self.error_code
            out["errorMessage"] = self.error
        return out


class DataQuery:
    """The jobs of one tenant and their scheduling."""

    def __init__(
        self,
        config: SandboxConfig,
        base: Path,
        overlay: Path,
        files: Path,
    ) -> None:
        self.config = config
        self.base = base
        self.overlay = overlay
        self.files = files
        self._precheck: duckdb.DuckDBPyConnection | None = None
        self.jobs: dict[str, Job] = {}
        self.queue: list[str] = []
        self.running: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.tables = tables(config.custom_fields)

    def submit(self, body: Any) -> Job:
        if not isinstance(body, dict):
            raise QueryRefused(400, "the body must be a JSON object")
        sql = check_sql(body.get("query"))  # type: ignore[arg-type]
        fmt = str(body.get("outputFormat", "")).upper()
        if fmt not in _FORMATS:
            raise QueryRefused(400, "outputFormat must be one of JSON, CSV, TSV, DSV")
        separator = {"CSV": ",", "TSV": "\t", "JSON": ","}.get(fmt, "")
        if fmt == "DSV":
            separator = body.get("columnSeparator") or ""
            if not isinstance(separator, str) or len(separator) != 1:
                raise QueryRefused(400, "columnSeparator must be one character for DSV output")
        compression = str(body.get("compression", "")).upper()
        if compression not in _COMPRESSIONS:
            raise QueryRefused(400, "compression must be one of NONE, GZIP, ZIP")
        output = body.get("output")
        if not isinstance(output, dict) or str(output.get("target", "")).upper() != "S3":
            raise QueryRefused(400, 'output is required: {"target": "S3"}')
        if body.get("encryptionKey"):
            raise QueryRefused(400, "encryptionKey is not supported by this sandbox")
        if body.get("readDeleted"):
            raise QueryRefused(400, "readDeleted is not supported by this sandbox")
        source = str(body.get("sourceData", "LIVE")).upper()
        if source not in ("LIVE", "WAREHOUSE"):
            raise QueryRefused(400, "sourceData must be LIVE or WAREHOUSE")
        translated = translate(sql, self.config.tenant_utc_offset)
        self._compile(translated)
        if (
            len(self.queue) >= self.config.dataquery_queue_limit
            and len(self.running) >= self.config.dataquery_running_limit
        ):
            raise QueryRefused(
                self.config.dataquery_queue_full_status,
                f"Too many queries: {self.config.dataquery_running_limit} are running and "
                f"{self.config.dataquery_queue_limit} are queued, the most a tenant may have. "
                "Submit again when one finishes.",
            )
        job = Job(str(uuid.uuid4()), sql, translated, fmt, separator, compression)
        self.jobs[job.id] = job
        self.queue.append(job.id)
        return job

    def _compile(self, sql: str) -> None:
        """Compile the statement without running it, so bad SQL fails at submit."""
        try:
            if self._precheck is None:
                # Same tables and types as the jobs see, without the overlay's rows.
                self._precheck = open_engine(str(self.base), None, self.config.custom_fields, [])
            self._precheck.execute(f"DESCRIBE {sql}").fetchall()
        except duckdb.Error as exc:
            raise QueryRefused(400, f"Invalid query: {exc}") from None

    def warm_up(self) -> None:
        """Start the worker processes now rather than on the first job (seconds saved)."""
        workers = pool(self.config.dataquery_workers)
        for _ in range(self.config.dataquery_workers):
            workers.submit(_ready)

    def pump(self) -> None:
        """Start queued jobs while running slots are free (call from the event loop)."""
        loop = asyncio.get_running_loop()
        while self.queue and len(self.running) < self.config.dataquery_running_limit:
            job = self.jobs[self.queue.pop(0)]
            if job.status != "accepted":
                continue
            job.status, job.updated = "in_progress", _stamp()
            self.running.add(job.id)
            task = loop.create_task(self._run(job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, job: Job) -> None:
        started = time.monotonic()
        ext = _FORMATS[job.output_format]
        if job.compression == "GZIP":
            ext += ".gz"
        elif job.compression == "ZIP":
            ext += ".zip"
        job.file_token = secrets.token_hex(16)
        job.file_name = f"{job.id}_{int(time.time() * 1000)}.{ext}"
        directory = self.files / job.file_token
        directory.mkdir(parents=True, exist_ok=True)
        spec = JobSpec(
            str(self.base),
            str(self.overlay),
            self.config.custom_fields,
            job.sql,
            job.output_format,
            job.separator,
            job.compression,
            str(directory / job.file_name),
            self.config.dataquery_max_output_rows,
        )
        try:
            result = await asyncio.get_running_loop().run_in_executor(
                pool(self.config.dataquery_workers), run_job, spec
            )
        except Exception as exc:  # a dead worker process, for instance
            result = {"error": f"the query could not run: {exc}", "code": "INTERNAL_ERROR"}
        wait = self.config.dataquery_min_seconds - (time.monotonic() - started)
        if wait > 0:
            await asyncio.sleep(wait)
        self.running.discard(job.id)
        if job.status == "in_progress":
            if "error" in result:
                job.status, job.error, job.error_code = (
                    "failed",
                    result["error"],
                    result.get("code"),
                )
            else:
                job.status, job.rows, job.ms = "completed", result["rows"], result["ms"]
            job.updated = _stamp()
        self.pump()

    def cancel(self, job_id: str) -> Job | None:
        job = self.jobs.get(job_id)
        if job is None:
            return None
        if job.status in ("completed", "failed", "cancelled"):
            raise QueryRefused(400, f"The job is {job.status} and cannot be cancelled.")
        job.status, job.updated = "cancelled", _stamp()
        if job.id in self.queue:
            self.queue.remove(job.id)
        # A running job's worker finishes on its own; its result is dropped.
        self.running.discard(job.id)
        return job

    def file(self, token: str, name: str) -> Path | None:
        for job in self.jobs.values():
            if job.file_token == token and job.file_name == name and job.status == "completed":
                path = self.files / token / name
                return path if path.exists() else None
        return None

    async def close(self) -> None:
        if self._precheck is not None:
            self._precheck.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
