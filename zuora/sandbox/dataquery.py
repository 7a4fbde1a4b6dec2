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
import csv
import gzip
import io
import multiprocessing
import re
import secrets
import sqlite3
import time
import uuid
import zipfile
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, cast

import orjson

from zuora.sandbox.config import SandboxConfig
from zuora.sandbox.schema import tables, tenant_tz
from zuora.sandbox.store import connect
from zuora.sandbox.zoql import ZoqlError, normalise_datetime

SANDBOX_USER_UUID = "8a8082c4-5aa8-1b51-015a-d64396090f5c"
_FORMATS = {"JSON": "jsonl", "CSV": "csv", "TSV": "tsv", "DSV": "dsv"}
_COMPRESSIONS = ("NONE", "GZIP", "ZIP")
_BOOL_COLUMNS = {"autorenew", "isinvoiceseparate", "autopay", "islastsegment"}
_LITERAL = re.compile(r"\b(TIMESTAMP|DATE)\s*('(?:[^']|'')*')", re.IGNORECASE)
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
    try:
        return f"'{normalise_datetime(text, tz)}'"
    except ZoqlError as exc:
        raise QueryRefused(400, exc.message) from None


_ALLOWED_ACTIONS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    getattr(sqlite3, "SQLITE_RECURSIVE", 33),
}


def _authorizer(action: int, *_args: Any) -> int:
    return sqlite3.SQLITE_OK if action in _ALLOWED_ACTIONS else sqlite3.SQLITE_DENY


def open_reader(base: str, overlay: str, custom_fields: tuple[str, ...]) -> sqlite3.Connection:
    """A read-only connection for job SQL: views set up, then only reads authorised."""
    con = connect(Path(base), Path(overlay), custom_fields, writer=False)
    con.execute("PRAGMA query_only=ON")
    con.set_authorizer(_authorizer)
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
    try:
        con = open_reader(spec.base, spec.overlay, spec.custom_fields)
    except sqlite3.Error as exc:
        return {"error": f"cannot open the tenant: {exc}"}
    try:
        cursor = con.execute(spec.sql)
        names = [d[0].lower() for d in cursor.description or ()]
        rows = _write(cursor, names, spec)
    except _TooMany:
        Path(spec.path).unlink(missing_ok=True)
        return {
            "error": f"The query returned more than {spec.max_rows} rows, the maximum output "
            "of a Data Query job. Narrow it (for example page by id or updateddate ranges).",
            "code": "OUTPUT_LIMIT_EXCEEDED",
        }
    except sqlite3.Error as exc:
        Path(spec.path).unlink(missing_ok=True)
        return {"error": f"Query failed: {exc}", "code": "QUERY_ERROR"}
    finally:
        con.close()
    return {"rows": rows, "ms": int((time.perf_counter() - started) * 1000)}


class _TooMany(Exception):
    pass


def _write(cursor: sqlite3.Cursor, names: list[str], spec: JobSpec) -> int:
    bools = [i for i, n in enumerate(names) if n in _BOOL_COLUMNS]
    path = Path(spec.path)
    raw = cast(
        IO[bytes],
        gzip.open(path, "wb", compresslevel=1)  # noqa: SIM115 - closed in the finally below
        if spec.compression == "GZIP"
        else open(path, "wb"),  # noqa: SIM115
    )
    count = 0
    try:
        if spec.output_format == "JSON":
            count = _write_jsonl(cursor, names, bools, raw, spec.max_rows)
        else:
            text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
            writer = csv.writer(text, delimiter=spec.separator, lineterminator="\n")
            writer.writerow(names)
            while batch := cursor.fetchmany(5000):
                count += len(batch)
                if count > spec.max_rows:
                    raise _TooMany
                if bools:
                    batch = [_fix_bools(row, bools, csv_text=True) for row in batch]
                writer.writerows(batch)
            text.flush()
            text.detach()
    finally:
        raw.close()
    if spec.compression == "ZIP":
        zipped = path.with_name(path.name + ".zip")
        with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.write(path, arcname=path.name)
        zipped.replace(path)
    return count


def _fix_bools(row: tuple[Any, ...], bools: list[int], csv_text: bool) -> tuple[Any, ...]:
    values = list(row)
    for i in bools:
        if values[i] in (0, 1):
            values[i] = ("true" if values[i] else "false") if csv_text else bool(values[i])
    return tuple(values)


def _write_jsonl(
    cursor: sqlite3.Cursor, names: list[str], bools: list[int], out: IO[bytes], max_rows: int
) -> int:
    count = 0
    dumps = orjson.dumps
    while batch := cursor.fetchmany(5000):
        count += len(batch)
        if count > max_rows:
            raise _TooMany
        chunk = []
        for row in batch:
            if bools:
                row = _fix_bools(row, bools, csv_text=False)
            chunk.append(dumps(dict(zip(names, row, strict=True))))
        out.write(b"\n".join(chunk) + b"\n")
    return count


_POOL: ProcessPoolExecutor | None = None


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
        precheck: sqlite3.Connection,
    ) -> None:
        self.config = config
        self.base = base
        self.overlay = overlay
        self.files = files
        self.precheck = precheck
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
            self.precheck.execute(f"EXPLAIN {sql}").fetchone()
        except sqlite3.Error as exc:
            raise QueryRefused(400, f"Invalid query: {exc}") from None

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
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
