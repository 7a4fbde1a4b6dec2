"""The reconcile diff: Zuora's latest versions against the cache, with pandas.

Both sides arrive as tables of strings keyed by subscription number (`zuora.pull`,
`warehouse.snapshot`), nulls and empty strings already both null. One outer merge lines them
up; each compared column is checked as strings first, which settles nearly every row at
C speed, and only the rows that differ as strings get the lenient checks that keep equal
values from showing as drift: numbers (`"5"`, `5`, `"5.0"`), booleans in any case, and
timestamps in different offsets or precisions.

Kinds of drift, one per subscription:

- `missing`: Zuora has it, the cache does not (or holds it marked deleted);
- `stale`: both have it and the id, version, status, account or a tracked field differs;
- `deleted`: the cache holds it, Zuora's pull does not (full pulls only; the caller confirms
  each with a GET before calling it deleted).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

#: Columns compared besides the tracked fields, by their report names.
BASE_COMPARED = ("zuora_id", "version", "status", "account_id")


@dataclass
class Diff:
    missing: pd.DataFrame  # the Zuora rows the cache lacks
    stale: pd.DataFrame  # the Zuora rows whose cache copy differs, with `drift_fields`
    deleted: list[str]  # numbers the cache holds and the pull does not (unconfirmed)
    field_counts: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    remote_rows: int = 0
    cache_rows: int = 0


def to_frame(table: pa.Table) -> pd.DataFrame:
    # Arrow-backed strings: a million rows of ten columns stay around 100-150 MB.
    frame: pd.DataFrame = table.to_pandas(types_mapper=lambda _: pd.StringDtype("pyarrow"))
    return frame


def _lenient_equal(a: pd.Series, b: pd.Series) -> pd.Series:
    """Where two string columns differ as text, do they hold the same value all the same?"""
    equal = pd.Series(False, index=a.index)
    both = a.notna() & b.notna()
    if not both.any():
        return equal
    x, y = a[both].astype(object), b[both].astype(object)
    nx, ny = pd.to_numeric(x, errors="coerce"), pd.to_numeric(y, errors="coerce")
    equal[both] = (nx == ny) & nx.notna()
    lx, ly = x.str.lower(), y.str.lower()
    booleans = lx.isin(["true", "false"]) & ly.isin(["true", "false"])
    equal[both] = equal[both] | (booleans & (lx == ly))
    looks_like_time = x.str.match(r"^\d{4}-\d{2}-\d{2}[T ]\d") & y.str.match(
        r"^\d{4}-\d{2}-\d{2}[T ]\d"
    )
    if looks_like_time.any():
        tx = pd.to_datetime(x[looks_like_time], errors="coerce", utc=True, format="ISO8601")
        ty = pd.to_datetime(y[looks_like_time], errors="coerce", utc=True, format="ISO8601")
        same = (tx == ty) & tx.notna()
        equal.loc[same[same].index] = True
    return equal


def _arrow(series: pd.Series) -> pa.ChunkedArray | pa.Array:
    return pa.array(series.array)


def differs(a: pd.Series, b: pd.Series) -> pd.Series:
    """True where the cache's value and Zuora's are not the same value."""
    # The text comparison runs on the Arrow arrays underneath (one C++ pass per column).
    xa, xb = _arrow(a), _arrow(b)
    a_na, b_na = pc.is_null(xa), pc.is_null(xb)
    same = pc.or_(pc.fill_null(pc.equal(xa, xb), False), pc.and_(a_na, b_na))
    out = pd.Series(pc.invert(same).to_numpy(zero_copy_only=False), index=a.index)
    # A value against a null is drift as it stands; only two values can be equal leniently.
    candidates = out.to_numpy() & ~a_na.to_numpy(zero_copy_only=False)
    candidates &= ~b_na.to_numpy(zero_copy_only=False)
    if candidates.any():
        out[candidates] = ~_lenient_equal(a[candidates], b[candidates]).to_numpy()
    return out


def compute(
    remote: pa.Table,
    cache: pa.Table,
    fields: Sequence[str],
    *,
    full: bool,
    max_examples: int = 20,
) -> Diff:
    """Line both sides up by number and classify every difference (see the module doc)."""
    compared = [*BASE_COMPARED, *fields]
    # pandas joins string keys through Python objects (seconds per million rows); the numbers
    # are encoded to integers once, with one dictionary for both sides, and joined on those.
    numbers = pa.concat_arrays(
        [
            remote["subscription_number"].combine_chunks(),
            cache["subscription_number"].combine_chunks(),
        ]
    )
    codes = pc.dictionary_encode(numbers).indices.to_numpy(zero_copy_only=False)
    zuora = to_frame(remote)
    zuora["_key"] = codes[: len(zuora)]
    remote_cols = [c for c in zuora.columns if c != "_key"]
    local = to_frame(cache)
    local["_key"] = codes[len(zuora) :]
    cache_rows = int(local["deleted"].isna().sum())
    merged = zuora.merge(
        local,
        on="_key",
        how="outer" if full else "left",
        suffixes=("", "_cache"),
        sort=False,
    )
    del zuora, local
    merged["subscription_number"] = merged["subscription_number"].fillna(
        merged["subscription_number_cache"]
    )
    # Ids are never null on either side, so they say which side a merged row came from.
    in_zuora = merged["zuora_id"].notna().to_numpy()
    in_cache = merged["zuora_id_cache"].notna().to_numpy()
    cache_deleted = merged["deleted"].notna().to_numpy()

    missing_mask = in_zuora & (~in_cache | cache_deleted)
    deleted_mask = ~in_zuora & ~cache_deleted
    both = in_zuora & in_cache & ~cache_deleted

    # Compared on the whole merged frame (no filtered copy of a million rows); rows that are
    # not on both sides are masked out afterwards.
    field_counts: dict[str, int] = {}
    per_field: dict[str, np.ndarray] = {}
    drifted = np.zeros(len(merged), dtype=bool)
    for name in compared:
        mask = differs(merged[f"{name}_cache"], merged[name]).to_numpy() & both
        per_field[name] = mask
        count = int(mask.sum())
        if count:
            field_counts[name] = count
            drifted |= mask

    stale = merged[drifted]
    compared_flags = np.column_stack([per_field[name][drifted] for name in compared])
    drift_fields: list[Any] = [
        [name for name, flag in zip(compared, row, strict=True) if flag]
        for row in compared_flags.tolist()
    ]
    stale = stale.assign(drift_fields=drift_fields)
    missing = merged[missing_mask]

    examples: list[dict[str, Any]] = []
    for record in missing.head(max_examples).to_dict("records"):
        examples.append(
            {"kind": "missing", "subscription": record["subscription_number"], "field": None,
             "cache": "deleted" if _plain(record["deleted"]) else None,
             "zuora": f"version {record['version']}"}
        )  # fmt: skip
    for record in stale.head(max_examples).to_dict("records"):
        for name in record["drift_fields"]:
            examples.append(
                {"kind": "stale", "subscription": record["subscription_number"], "field": name,
                 "cache": _plain(record[f"{name}_cache"]), "zuora": _plain(record[name])}
            )  # fmt: skip
    deleted = merged.loc[deleted_mask, "subscription_number"].tolist()
    return Diff(
        missing=missing[remote_cols],
        stale=stale[[*remote_cols, "drift_fields"]],
        deleted=sorted(deleted),
        field_counts=field_counts,
        examples=examples,
        remote_rows=int(in_zuora.sum()),
        cache_rows=cache_rows,
    )


def _plain(value: Any) -> str | None:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    return str(value)
