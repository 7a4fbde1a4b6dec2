"""Read the cache's side of a reconcile: one streaming query, no ORM object per row.

The result has the same columns as `zuora.pull` (minus `updated_date`, which the cache does
not keep) plus `deleted` ("1" when the cache marked the subscription deleted), all strings,
with nulls and empty strings both null:

- PostgreSQL: `COPY (SELECT ...) TO STDOUT WITH CSV` through psycopg2's `copy_expert` into
  a temporary file, parsed by pyarrow (about a second per million rows; rows are never
  Python objects).
- SQLite (the embedded default, small caches): a plain cursor read in batches.

Tracked custom fields come out of the `custom_fields` JSON as text (`->>` on PostgreSQL,
`json_extract` on SQLite), so a number Zuora sent as a number and one it sent as a string
both arrive as text and compare as the pull's strings do.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
from sqlalchemy import Engine

from zuora.pull import COLUMNS, tracked_fields

SNAPSHOT_COLUMNS = (*COLUMNS[:-1], "deleted")
_SQL_COLUMNS = ("subscription_number", "zuora_id", "version", "status", "account_id")
_BATCH = 50_000


def _pg_select(fields: Sequence[str], numbers_param: bool) -> str:
    # Field names are checked identifiers (no quote can occur), so they are safe as literals.
    extracted = [f"custom_fields->>'{name}' AS \"{name}\"" for name in fields]
    cols = [*_SQL_COLUMNS, "CASE WHEN deleted_at IS NULL THEN NULL ELSE '1' END AS deleted"]
    where = " WHERE subscription_number = ANY(%(numbers)s)" if numbers_param else ""
    return f"SELECT {', '.join([*cols, *extracted])} FROM zuora_subscriptions{where}"


def read_cache(
    engine: Engine, fields: Sequence[str], numbers: Sequence[str] | None = None
) -> pa.Table:
    """Every cached subscription (or only `numbers`) as a table of strings."""
    fields = tracked_fields(fields)
    names = [*SNAPSHOT_COLUMNS, *fields]
    if engine.dialect.name == "postgresql":
        return _read_postgres(engine, fields, names, numbers)
    return _read_sqlite(engine, fields, names, numbers)


def _read_postgres(
    engine: Engine, fields: Sequence[str], names: Sequence[str], numbers: Sequence[str] | None
) -> pa.Table:
    raw = engine.raw_connection()
    cursor: Any = raw.cursor()
    try:
        with tempfile.TemporaryFile() as buffer:
            select = _pg_select(fields, numbers is not None)
            if numbers is not None:
                select = cursor.mogrify(select, {"numbers": list(numbers)}).decode()
            cursor.copy_expert(f"COPY ({select}) TO STDOUT WITH (FORMAT csv, HEADER)", buffer)
            raw.rollback()
            buffer.seek(0)
            convert = pacsv.ConvertOptions(
                column_types={name: pa.string() for name in names},
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
                null_values=[""],
            )
            return pacsv.read_csv(
                buffer,
                read_options=pacsv.ReadOptions(block_size=8 << 20),
                convert_options=convert,
            ).select(list(names))
    finally:
        cursor.close()
        raw.close()


def _text(value: object) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _read_sqlite(
    engine: Engine, fields: Sequence[str], names: Sequence[str], numbers: Sequence[str] | None
) -> pa.Table:
    extracted = [f"json_extract(custom_fields, '$.\"{name}\"')" for name in fields]
    cols = [*_SQL_COLUMNS, "CASE WHEN deleted_at IS NULL THEN NULL ELSE '1' END"]
    select = f"SELECT {', '.join([*cols, *extracted])} FROM zuora_subscriptions"
    schema = pa.schema([(name, pa.string()) for name in names])
    batches: list[pa.RecordBatch] = []
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        chunks: list[Sequence[str] | None] = [None]
        if numbers is not None:
            wanted = list(numbers)
            chunks = [wanted[i : i + 500] for i in range(0, len(wanted), 500)]
        for chunk in chunks:
            if chunk is None:
                cursor.execute(select)
            elif not chunk:
                continue
            else:
                marks = ", ".join("?" * len(chunk))
                cursor.execute(f"{select} WHERE subscription_number IN ({marks})", list(chunk))
            while rows := cursor.fetchmany(_BATCH):
                columns = [
                    pa.array([_text(row[i]) for row in rows], pa.string())
                    for i in range(len(names))
                ]
                batches.append(pa.RecordBatch.from_arrays(columns, schema=schema))
        cursor.close()
        raw.rollback()
    finally:
        raw.close()
    return pa.Table.from_batches(batches, schema=schema)
