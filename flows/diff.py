"""The reconcile diff: Zuora's latest versions against the cache, with pandas.

Both sides arrive as Arrow tables of strings keyed by subscription number (`zuora.pull`,
`warehouse.snapshot`), nulls and empty strings already both null. The numbers are encoded
to integers with one dictionary for both sides and one pandas outer merge of those keys and
row positions lines the sides up. Each compared column is then taken in that order, one
column at a time, and checked as strings first (one Arrow pass), which settles nearly every
row at C speed; only values that differ as strings get the lenient checks (pandas) that keep
equal values from showing as drift: numbers (`"5"`, `5`, `"5.0"`), booleans in any case,
and timestamps in different offsets or precisions.

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
    del numbers
    n_remote = remote.num_rows
    # Only the keys and row positions are merged; each column is then lined up on its own
    # (Arrow `take`) and dropped after its comparison, so memory holds the two sides plus
    # one column pair, not a merged copy of every column.
    merged = pd.DataFrame({"_key": codes[:n_remote], "_r": np.arange(n_remote)}).merge(
        pd.DataFrame({"_key": codes[n_remote:], "_c": np.arange(cache.num_rows)}),
        on="_key",
        how="outer" if full else "left",
        sort=False,
    )
    del codes
    r_pos = merged["_r"].fillna(-1).to_numpy(dtype=np.int64)
    c_pos = merged["_c"].fillna(-1).to_numpy(dtype=np.int64)
    del merged
    in_zuora, in_cache = r_pos >= 0, c_pos >= 0
    cache_deleted = np.zeros(len(r_pos), dtype=bool)
    flagged = pc.is_valid(cache["deleted"]).to_numpy(zero_copy_only=False)
    cache_deleted[in_cache] = flagged[c_pos[in_cache]]
    cache_rows = int((~flagged).sum())

    missing_mask = in_zuora & (~in_cache | cache_deleted)
    deleted_mask = ~in_zuora & ~cache_deleted
    both = in_zuora & in_cache & ~cache_deleted
    r_both, c_both = r_pos[both], c_pos[both]

    field_counts: dict[str, int] = {}
    per_field: dict[str, np.ndarray] = {}
    drifted = np.zeros(len(r_both), dtype=bool)
    for name in compared:
        zuora_side = _series(remote[name].take(r_both))
        cache_side = _series(cache[name].take(c_both))
        mask = differs(cache_side, zuora_side).to_numpy()
        del zuora_side, cache_side
        per_field[name] = mask
        count = int(mask.sum())
        if count:
            field_counts[name] = count
            drifted |= mask

    remote_cols = list(remote.column_names)
    stale = to_frame(remote.take(r_both[drifted]))
    stale_cache = to_frame(cache.take(c_both[drifted]))
    compared_flags = np.column_stack([per_field[name][drifted] for name in compared])
    drift_fields: list[Any] = [
        [name for name, flag in zip(compared, row, strict=True) if flag]
        for row in compared_flags.tolist()
    ]
    stale["drift_fields"] = drift_fields
    missing_rows = r_pos[missing_mask]
    missing = to_frame(remote.take(missing_rows))
    was_deleted = cache_deleted[missing_mask]

    examples: list[dict[str, Any]] = []
    for i, record in enumerate(missing.head(max_examples).to_dict("records")):
        examples.append(
            {"kind": "missing", "subscription": record["subscription_number"], "field": None,
             "cache": "deleted" if was_deleted[i] else None,
             "zuora": f"version {record['version']}"}
        )  # fmt: skip
    for i, record in enumerate(stale.head(max_examples).to_dict("records")):
        for name in record["drift_fields"]:
            examples.append(
                {"kind": "stale", "subscription": record["subscription_number"], "field": name,
                 "cache": _plain(stale_cache[name].iloc[i]), "zuora": _plain(record[name])}
            )  # fmt: skip
    deleted = cache["subscription_number"].take(c_pos[deleted_mask]).to_pylist()
    return Diff(
        missing=missing[remote_cols],
        stale=stale[[*remote_cols, "drift_fields"]],
        deleted=sorted(deleted),
        field_counts=field_counts,
        examples=examples,
        remote_rows=n_remote,
        cache_rows=cache_rows,
    )


def _series(column: pa.ChunkedArray) -> pd.Series:
    return pd.Series(pd.arrays.ArrowStringArray(pc.cast(column, pa.large_string())))


def _plain(value: Any) -> str | None:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    return str(value)
