"""Pull the latest version of every subscription from Zuora's query APIs, as one table.

The result is a `pyarrow.Table` of strings, one row per subscription number, with the
columns `COLUMNS` plus one per tracked custom field (named as configured, `SupportTier__c`).
Nulls and empty strings are both null, so the cache side, read the same way, compares equal.

- Data Query (`dataquery`, the default): Zuora caps a job at 500,000 output rows and runs 5
  jobs per tenant, so the pull is paged by ranges of subscription number. A first small job
  cuts the numbers into `BUCKETS` equal ranges (`ntile` over the sorted numbers, with counts);
  consecutive buckets are merged into pages of at most `page_rows` subscriptions, and the
  pages run concurrently (the client holds at most 4 jobs at once). Each result is streamed
  to a temporary gzip CSV file and parsed by pyarrow; nothing is held as JSON.
- ZOQL (`zoql`): one `Subscription` query (every version) read a batch at a time through
  `queryMore`; each batch becomes a small Arrow batch at once, and the latest version of each
  number is kept at the end.

Query text is built from a fixed shape: field names go through `zuora.query.identifier` and
the tracked-field pattern, values (range bounds, the `since` time) through the literal
functions, so nothing from a setting or a parameter can change the query's shape.
"""

from __future__ import annotations

import asyncio
import logging
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from zuora.client import ZuoraClient
from zuora.query import QueryError, identifier, sql_literal, zoql_literal
from zuora_sync.settings import CUSTOM_FIELD_RE

log = logging.getLogger("zuora.pull")

#: The fixed columns of a pulled subscription, and their Data Query and ZOQL names.
COLUMNS = ("subscription_number", "zuora_id", "version", "status", "account_id", "updated_date")
_DQ_NAMES = ("name", "id", "version", "status", "accountid", "updateddate")
_ZOQL_NAMES = ("Name", "Id", "Version", "Status", "AccountId", "UpdatedDate")

#: Zuora's cap on one Data Query job's output.
MAX_OUTPUT_ROWS = 500_000
#: Ranges the numbers are first cut into; pages are runs of consecutive ranges. 256 ranges
#: keep a page under the cap up to 100 million subscriptions.
BUCKETS = 256

#: Rows per page: under the cap with room for subscriptions created between the cutting
#: job and the page jobs.
PAGE_ROWS = 450_000
#: Pages a large pull is split into at least, so that jobs run side by side (Zuora runs 5
#: per tenant; this client holds 4 at once, leaving one for other users).
MIN_PAGES = 4
#: Below this many rows a page is not split further: a job costs a round trip or two.
MIN_PAGE_ROWS = 100_000

QueryApi = Literal["dataquery", "zoql"]


def tracked_fields(names: Sequence[str]) -> list[str]:
    """The tracked custom field names, each checked to be a plain `Name__c` identifier."""
    checked = []
    for name in names:
        if not isinstance(name, str) or not CUSTOM_FIELD_RE.match(name):
            raise QueryError(f"not a custom field name (Name__c): {name!r}")
        checked.append(identifier(name))
    return checked


@dataclass
class PullStats:
    api: str
    rows: int = 0  # rows read from Zuora (ZOQL: every version)
    subscriptions: int = 0
    jobs: int = 0
    pages: list[int] = field(default_factory=list)
    seconds: float = 0.0


def _empty(fields: Sequence[str]) -> pa.Table:
    names = [*COLUMNS, *fields]
    return pa.table({name: pa.array([], pa.string()) for name in names})


def _read_csv(path: Path, names: Sequence[str]) -> pa.Table:
    """A Data Query CSV (header row, lowercase names) as strings; "" and null both null."""
    convert = pacsv.ConvertOptions(
        column_types={name: pa.string() for name in names},
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
        null_values=[""],
    )
    return pacsv.read_csv(
        path, read_options=pacsv.ReadOptions(block_size=8 << 20), convert_options=convert
    )


# --- Data Query ----------------------------------------------------------------------------


def _since_clause(column: str, since: datetime | None) -> str:
    return "" if since is None else f" AND {column} >= {sql_literal(since)}"


def bucket_sql(since: datetime | None) -> str:
    """Cut the (latest-version) numbers into ranges: bucket, first, last, count."""
    where = "" if since is None else f" WHERE updateddate >= {sql_literal(since)}"
    return (
        "SELECT t, min(name) AS lo, max(name) AS hi, count(*) AS n FROM ("
        f"SELECT name, ntile({BUCKETS}) OVER (ORDER BY name) AS t FROM ("
        f"SELECT name FROM subscription{where} GROUP BY name)) AS b "
        "GROUP BY t ORDER BY t"
    )


def page_sql(fields: Sequence[str], lo: str, hi: str, since: datetime | None) -> str:
    """The latest version of each subscription numbered lo..hi (updated since `since`)."""
    cols = [f"s.{name}" for name in _DQ_NAMES] + [f"s.{f.lower()}" for f in tracked_fields(fields)]

    def bounds(alias: str) -> str:
        return f"{alias}name >= {sql_literal(lo)} AND {alias}name <= {sql_literal(hi)}"

    return (
        f"SELECT {', '.join(cols)} FROM subscription s JOIN ("
        f"SELECT name, max(version) AS v FROM subscription WHERE {bounds('')} GROUP BY name) m "
        f"ON s.name = m.name AND s.version = m.v WHERE {bounds('s.')}"
        + _since_clause("s.updateddate", since)
    )


def plan_pages(
    buckets: Sequence[tuple[str, str, int]], page_rows: int, min_pages: int
) -> list[tuple[str, str, int]]:
    """Merge consecutive (lo, hi, count) ranges into pages of at most `page_rows` rows,
    and into at least `min_pages` pages when there are enough ranges (for concurrency)."""
    total = sum(n for _, _, n in buckets)
    if not total:
        return []
    # Ranges are whole units, so a page may run one range over its even share.
    share = math.ceil(total / max(1, min_pages)) + max(n for _, _, n in buckets) - 1
    target = min(page_rows, max(MIN_PAGE_ROWS, share))
    pages: list[tuple[str, str, int]] = []
    for lo, hi, n in buckets:
        if pages and pages[-1][2] + n <= target:
            first, _, count = pages[-1]
            pages[-1] = (first, hi, count + n)
        else:
            pages.append((lo, hi, n))
    return pages


async def _job_to_table(
    zuora: ZuoraClient, sql: str, names: Sequence[str], directory: Path
) -> pa.Table:
    path, _job = await zuora.data_query_to_file(sql, directory=directory)
    try:
        return await asyncio.to_thread(_read_csv, path, names)
    finally:
        path.unlink(missing_ok=True)


async def pull_dataquery(
    zuora: ZuoraClient,
    fields: Sequence[str],
    *,
    since: datetime | None = None,
    page_rows: int = PAGE_ROWS,
    min_pages: int = MIN_PAGES,
) -> tuple[pa.Table, PullStats]:
    fields = tracked_fields(fields)
    if not 1 <= page_rows <= MAX_OUTPUT_ROWS:
        raise ValueError(f"page_rows must be 1..{MAX_OUTPUT_ROWS}")
    stats = PullStats("dataquery")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="zuora-pull-") as tmp:
        directory = Path(tmp)
        cuts = await _job_to_table(zuora, bucket_sql(since), ["t", "lo", "hi", "n"], directory)
        stats.jobs += 1
        buckets = [
            (row["lo"], row["hi"], int(row["n"]))
            for row in cuts.to_pylist()
            if row["lo"] is not None
        ]
        pages = plan_pages(buckets, page_rows, min_pages)
        stats.pages = [n for _, _, n in pages]
        names = [*_DQ_NAMES, *(f.lower() for f in fields)]
        tables = await asyncio.gather(
            *(
                _job_to_table(zuora, page_sql(fields, lo, hi, since), names, directory)
                for lo, hi, _ in pages
            )
        )
        stats.jobs += len(pages)
    if not tables:
        result = _empty(fields)
    else:
        result = pa.concat_tables(tables).rename_columns([*COLUMNS, *fields])
    stats.rows = stats.subscriptions = result.num_rows
    stats.seconds = time.perf_counter() - started
    return result, stats


# --- ZOQL ----------------------------------------------------------------------------------


def zoql_text(fields: Sequence[str], since: datetime | None) -> str:
    names = ", ".join([*_ZOQL_NAMES, *tracked_fields(fields)])
    where = "" if since is None else f" where UpdatedDate >= {zoql_literal(since)}"
    return f"select {names} from Subscription{where}"


def _cell(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


async def pull_zoql(
    zuora: ZuoraClient, fields: Sequence[str], *, since: datetime | None = None
) -> tuple[pa.Table, PullStats]:
    fields = tracked_fields(fields)
    stats = PullStats("zoql", jobs=1)
    started = time.perf_counter()
    keys = [*_ZOQL_NAMES, *fields]
    names = [*COLUMNS, *fields]
    schema = pa.schema([(name, pa.string()) for name in names])
    batches: list[pa.RecordBatch] = []
    async for records in zuora.zoql(zoql_text(fields, since)):
        columns = [pa.array([_cell(r.get(k)) for r in records], pa.string()) for k in keys]
        batches.append(pa.RecordBatch.from_arrays(columns, schema=schema))
        stats.rows += len(records)
    table = pa.Table.from_batches(batches, schema=schema) if batches else _empty(fields)
    table = latest_versions(table)
    stats.subscriptions = table.num_rows
    stats.seconds = time.perf_counter() - started
    return table, stats


def latest_versions(table: pa.Table) -> pa.Table:
    """One row per number: its highest version (ZOQL answers one row per version)."""
    if table.num_rows == 0:
        return table
    version = pc.cast(table["version"], pa.int64())
    ordered = table.append_column("_v", version).sort_by(
        [("subscription_number", "ascending"), ("_v", "descending")]
    )
    numbers = ordered["subscription_number"].combine_chunks()
    changed = pc.not_equal(numbers[1:], numbers[:-1])
    keep = pa.concat_arrays([pa.array([True]), changed])
    return ordered.filter(keep).drop_columns(["_v"])


async def pull(
    zuora: ZuoraClient,
    fields: Sequence[str],
    *,
    api: QueryApi = "dataquery",
    since: datetime | None = None,
) -> tuple[pa.Table, PullStats]:
    """The latest version of every subscription (updated since `since`, if given)."""
    if api == "dataquery":
        return await pull_dataquery(zuora, fields, since=since)
    if api == "zoql":
        return await pull_zoql(zuora, fields, since=since)
    raise ValueError(f"unknown query API {api!r}")
