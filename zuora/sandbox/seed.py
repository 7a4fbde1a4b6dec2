"""The deterministic seeded data set, written once into a SQLite file (the "base").

Subscriptions are generated in fixed chunks of `CHUNK`, each from its own random stream
(`seed`, chunk number), so subscription k is the same whatever N is, chunks can be made in
parallel, and the same N and seed give the same data byte for byte. Large data sets are
built once and kept in a cache directory keyed by size, seed, custom fields, time zone and
`DATA_FORMAT_VERSION`; a sandbox never writes to its base file (changes go to an overlay, see
`store.py`), so one cached base serves every instance.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import multiprocessing
import os
import random
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from zuora.sandbox.schema import (
    ACCOUNT,
    DATA_FORMAT_VERSION,
    INDEXES,
    RATE_PLAN,
    RATE_PLAN_CHARGE,
    Table,
    create_sql,
    format_datetime,
    subscription_table,
    tenant_tz,
)

CHUNK = 1000
PARALLEL_FROM = 50_000
# Seeded history ends here, so the data does not depend on the day it was built.
SEED_NOW = datetime(2026, 11, 1, tzinfo=UTC)
_FIRST_START = date(2019, 1, 1)


@dataclass(frozen=True)
class Charge:
    """A product rate plan charge of the catalog."""

    name: str
    type: str  # Recurring | OneTime | Usage
    model: str  # FlatFee | PerUnit | Tiered | Volume | DiscountPercentage
    period: str | None  # Month | Quarter | Annual
    price: float
    uom: str | None


@dataclass(frozen=True)
class Plan:
    """A product rate plan of the catalog, with its product."""

    product: str
    sku: str
    name: str
    charges: tuple[Charge, ...]


def _hex_id(*parts: object) -> str:
    return hashlib.md5(":".join(map(str, parts)).encode(), usedforsecurity=False).hexdigest()


CATALOG: tuple[Plan, ...] = (
    Plan(
        "Platform",
        "SKU-00000001",
        "Platform Basic",
        (
            Charge("Platform Fee", "Recurring", "FlatFee", "Month", 49.0, None),
            Charge("Seats", "Recurring", "PerUnit", "Month", 12.0, "Seat"),
        ),
    ),
    Plan(
        "Platform",
        "SKU-00000001",
        "Platform Pro",
        (
            Charge("Platform Fee", "Recurring", "FlatFee", "Month", 199.0, None),
            Charge("Seats", "Recurring", "PerUnit", "Month", 25.0, "Seat"),
            Charge("Onboarding", "OneTime", "FlatFee", None, 500.0, None),
        ),
    ),
    Plan(
        "Platform",
        "SKU-00000001",
        "Platform Enterprise",
        (
            Charge("Platform Fee", "Recurring", "FlatFee", "Annual", 24000.0, None),
            Charge("Seats", "Recurring", "Volume", "Annual", 300.0, "Seat"),
            Charge("Premium Onboarding", "OneTime", "FlatFee", None, 5000.0, None),
        ),
    ),
    Plan(
        "Support",
        "SKU-00000002",
        "Support Standard",
        (Charge("Support Fee", "Recurring", "FlatFee", "Month", 99.0, None),),
    ),
    Plan(
        "Support",
        "SKU-00000002",
        "Support Premium",
        (
            Charge("Support Fee", "Recurring", "FlatFee", "Quarter", 900.0, None),
            Charge("Dedicated Engineer", "Recurring", "PerUnit", "Month", 1500.0, "Engineer"),
        ),
    ),
    Plan(
        "Storage",
        "SKU-00000003",
        "Storage Add-on",
        (
            Charge("Storage", "Recurring", "Tiered", "Month", 0.1, "GB"),
            Charge("Egress", "Usage", "PerUnit", "Month", 0.05, "GB"),
        ),
    ),
    Plan(
        "API",
        "SKU-00000004",
        "API Calls",
        (Charge("API Calls", "Usage", "PerUnit", "Month", 0.002, "Call"),),
    ),
    Plan(
        "Discounts",
        "SKU-00000005",
        "Loyalty Discount",
        (Charge("Loyalty Discount", "Recurring", "DiscountPercentage", "Month", 10.0, None),),
    ),
    Plan(
        "Training",
        "SKU-00000006",
        "Training Pack",
        (
            Charge("Training Days", "OneTime", "PerUnit", None, 1200.0, "Day"),
            Charge("Materials", "OneTime", "FlatFee", None, 150.0, None),
        ),
    ),
)
_PLAN_WEIGHTS: tuple[int, ...] = (18, 14, 5, 12, 5, 8, 6, 4, 3)


_PLAN_IDS = {id(p): (_hex_id("product", p.product), _hex_id("prp", p.name)) for p in CATALOG}
_CHARGE_IDS = {id(c): _hex_id("prpc", p.name, c.name) for p in CATALOG for c in p.charges}


def plan_ids(plan: Plan) -> tuple[str, str]:
    """(productId, productRatePlanId) of a catalog plan: stable, seed-independent."""
    return _PLAN_IDS[id(plan)]


def charge_catalog_id(plan: Plan, charge: Charge) -> str:
    return _CHARGE_IDS[id(charge)]


_PERIOD_MONTHS = {"Month": 1, "Quarter": 3, "Annual": 12, None: 0}
_CURRENCIES = (("USD", 1.0), ("EUR", 0.9), ("GBP", 0.8), ("AUD", 1.5), ("JPY", 150.0))
_CURRENCY_WEIGHTS: tuple[int, ...] = (60, 18, 10, 6, 6)
_STATUSES = (
    "Active",
    "Cancelled",
    "Suspended",
    "Pending Activation",
    "Pending Acceptance",
    "Draft",
    "Expired",
)
_STATUS_WEIGHTS: tuple[int, ...] = (820, 80, 40, 30, 15, 5, 10)
_FIRST = (
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Ken",
    "Linus",
    "Margaret",
    "Dennis",
    "Frances",
    "John",
    "Radia",
    "Tim",
    "Katherine",
    "Guido",
    "Yukihiro",
    "Sophie",
    "Niklaus",
)
_LAST = (
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Thompson",
    "Torvalds",
    "Hamilton",
    "Ritchie",
    "Allen",
    "Backus",
    "Perlman",
    "Lee",
    "Johnson",
    "Rossum",
    "Matsumoto",
    "Wilson",
    "Wirth",
)
_WORDS = (
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Vandelay",
    "Stark",
    "Wayne",
    "Tyrell",
    "Cyberdyne",
    "Soylent",
    "Wonka",
    "Aperture",
    "Black Mesa",
    "Massive",
    "Dynamic",
    "Oceanic",
    "Nakatomi",
    "Gringotts",
    "Monarch",
)
_SUFFIX = ("Inc", "Ltd", "GmbH", "LLC", "Corp", "SA", "BV", "Pty Ltd", "KK", "Group")
_PLACES = (
    ("United States", "California", "San Francisco"),
    ("United States", "New York", "New York"),
    ("Germany", None, "Berlin"),
    ("United Kingdom", None, "London"),
    ("Australia", "New South Wales", "Sydney"),
    ("Japan", None, "Tokyo"),
    ("France", None, "Paris"),
    ("Canada", "Ontario", "Toronto"),
)
_TIERS = ("Standard", "Premium", "Enterprise", "Basic", None)
_TIER_WEIGHTS: tuple[int, ...] = (45, 20, 10, 12, 13)
_SEATS = ("5", "10", "20", "25", "50", "100", "250", "500", "1000", "0", "")
_SEAT_WEIGHTS: tuple[int, ...] = (8, 12, 10, 10, 8, 6, 3, 2, 1, 1, 1)


def _cum(weights: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(itertools.accumulate(weights))


_PLAN_WEIGHTS = _cum(_PLAN_WEIGHTS)
_CURRENCY_WEIGHTS = _cum(_CURRENCY_WEIGHTS)
_STATUS_WEIGHTS = _cum(_STATUS_WEIGHTS)
_TIER_WEIGHTS = _cum(_TIER_WEIGHTS)
_SEAT_WEIGHTS = _cum(_SEAT_WEIGHTS)
_PLAN_COUNT_WEIGHTS = _cum((45, 32, 15, 8))
_VERSION_WEIGHTS = _cum((70, 18, 7, 3, 2))
_GROUP_WEIGHTS = _cum((60, 25, 10, 5))


def _custom_value(rng: random.Random, name: str) -> str | None:
    """A realistic value for a subscription custom field, nulls and numbers-as-strings too."""
    key = name.lower()
    if key == "supporttier__c":
        return rng.choices(_TIERS, cum_weights=_TIER_WEIGHTS)[0]
    if key == "seatoverride__c":
        if rng.random() < 0.55:
            return None
        return rng.choices(_SEATS, cum_weights=_SEAT_WEIGHTS)[0]
    if key == "contractowner__c":
        if rng.random() < 0.2:
            return None
        return f"{rng.choice(_FIRST).lower()}.{rng.choice(_LAST).lower()}@example.com"
    if rng.random() < 0.3:
        return None
    return f"{name[:-3]}-{rng.randint(1, 999)}"


_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _add_months(day: date, months: int) -> date:
    month0 = day.month - 1 + months
    year = day.year + month0 // 12
    month = month0 % 12 + 1
    last = _MONTH_DAYS[month - 1]
    if month == 2 and not (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)):
        last = 28
    return date(year, month, min(day.day, last))


def _rid(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


class _Builder:
    """Generates one chunk of the data set as rows in table column order."""

    def __init__(self, seed: int, chunk: int, custom_fields: tuple[str, ...], tz: timezone):
        self.rng = random.Random(f"zuora-sandbox:{seed}:{chunk}")
        self.custom_fields = custom_fields
        self.tz = tz
        self.accounts: list[tuple[object, ...]] = []
        self.subscriptions: list[tuple[object, ...]] = []
        self.rate_plans: list[tuple[object, ...]] = []
        self.charges: list[tuple[object, ...]] = []

    def ts(self, moment: datetime) -> str:
        return format_datetime(moment, self.tz)

    def account(self, seq: int) -> tuple[str, str, float]:
        rng = self.rng
        currency, scale = rng.choices(_CURRENCIES, cum_weights=_CURRENCY_WEIGHTS)[0]
        created = datetime.combine(
            _FIRST_START + timedelta(days=rng.randint(0, 2700)), datetime.min.time(), UTC
        ) + timedelta(seconds=rng.randint(0, 86399))
        updated = min(created + timedelta(days=rng.randint(0, 400)), SEED_NOW)
        country, state, city = rng.choice(_PLACES)
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        name = f"{rng.choice(_WORDS)} {rng.choice(_WORDS)} {rng.choice(_SUFFIX)}"
        account_id = _rid(rng)
        self.accounts.append(
            (
                account_id,
                f"A{seq + 1:08d}",
                name,
                "Active" if rng.random() < 0.97 else "Canceled",
                currency,
                1 if rng.random() < 0.5 else rng.randint(2, 28),
                rng.choice(("Net 30", "Net 30", "Due Upon Receipt", "Net 45", "Net 60")),
                int(rng.random() < 0.6),
                round(rng.random() * 2000, 2) if rng.random() < 0.3 else 0.0,
                f"Batch{rng.randint(1, 5)}",
                self.ts(created),
                self.ts(updated),
                first,
                last,
                f"{first.lower()}.{last.lower()}@example.com",
                country,
                state,
                city,
                _rid(rng),
            )
        )
        return account_id, currency, scale

    def subscription(self, seq: int, account_id: str, scale: float) -> None:
        rng = self.rng
        number = f"A-S{seq + 1:08d}"
        start = _FIRST_START + timedelta(days=rng.randint(0, 2840))
        created = datetime.combine(start, datetime.min.time(), UTC) - timedelta(
            days=rng.randint(0, 20), seconds=rng.randint(0, 86399)
        )
        termed = rng.random() < 0.75
        term = rng.choice((12, 12, 12, 24, 36)) if termed else None
        renewal = 12 if termed else None
        status = rng.choices(_STATUSES, cum_weights=_STATUS_WEIGHTS)[0]
        versions = rng.choices((1, 2, 3, 4, 5), cum_weights=_VERSION_WEIGHTS)[0]
        if status == "Cancelled":
            versions = max(versions, 2)
        custom = [_custom_value(rng, name) for name in self.custom_fields]
        plans = self._initial_plans(seq, start, scale)
        ids = [_rid(rng) for _ in range(versions)]
        moments = [created]
        for _ in range(versions - 1):
            step = timedelta(days=rng.randint(5, 200), seconds=rng.randint(0, 86399))
            moments.append(min(moments[-1] + step, SEED_NOW - timedelta(hours=versions)))
        for v in range(1, versions + 1):
            latest = v == versions
            if v > 1:
                plans = self._amend_plans(seq, plans, moments[v - 1].date(), scale)
                if rng.random() < 0.5:
                    custom = [
                        _custom_value(rng, name) if rng.random() < 0.5 else value
                        for name, value in zip(self.custom_fields, custom, strict=True)
                    ]
            sub_status = status if latest else "Expired"
            cancelled = None
            end = _add_months(start, term) if term else None
            if latest and status == "Cancelled":
                cancelled = moments[-1].date() + timedelta(days=rng.randint(0, 30))
                end = cancelled
            updated = (
                moments[v]
                if v < versions
                else moments[v - 1] + timedelta(seconds=rng.randint(0, 3600))
            )
            updated = min(updated, SEED_NOW)
            sub_id = ids[v - 1]
            self.subscriptions.append(
                (
                    sub_id,
                    number,
                    account_id,
                    account_id,
                    sub_status,
                    v,
                    f"{v}.0",
                    ids[0],
                    ids[v - 2] if v > 1 else None,
                    "TERMED" if termed else "EVERGREEN",
                    term,
                    "Month" if termed else None,
                    term,
                    "Month" if termed else None,
                    renewal,
                    "Month" if termed else None,
                    "RENEW_WITH_SPECIFIC_TERM" if termed else None,
                    int(termed and rng.random() < 0.7),
                    start.isoformat(),
                    start.isoformat(),
                    start.isoformat(),
                    start.isoformat(),
                    end.isoformat() if end else None,
                    start.isoformat(),
                    _add_months(start, term).isoformat() if term else None,
                    cancelled.isoformat() if cancelled else None,
                    int(rng.random() < 0.1),
                    "" if rng.random() < 0.8 else f"Renewal discussed with {rng.choice(_FIRST)}",
                    self.ts(moments[v - 1]),
                    self.ts(updated),
                    seq * 8 + v,
                    *custom,
                )
            )
            self._write_plans(sub_id, plans, moments[v - 1], updated, term, seq * 8 + v)

    def _initial_plans(self, seq: int, start: date, scale: float) -> list[dict[str, object]]:
        rng = self.rng
        count = rng.choices((1, 2, 3, 4), cum_weights=_PLAN_COUNT_WEIGHTS)[0]
        chosen = rng.choices(range(len(CATALOG)), cum_weights=_PLAN_WEIGHTS, k=count)
        return [self._new_plan(seq, i, CATALOG[c], start, scale) for i, c in enumerate(chosen)]

    def _new_plan(
        self, seq: int, index: int, plan: Plan, start: date, scale: float
    ) -> dict[str, object]:
        rng = self.rng
        charges = []
        max_charges = rng.randint(1, 3)
        for k, charge in enumerate(plan.charges[:max_charges]):
            quantity = None
            if charge.model in ("PerUnit", "Volume", "Tiered"):
                quantity = float(rng.choice((1, 2, 5, 10, 20, 25, 50, 100)))
            elif charge.model == "FlatFee":
                quantity = 1.0
            charges.append(
                {
                    "catalog": charge,
                    "number": f"C-{seq + 1:07d}{index:01d}{k:01d}",
                    "original": None,
                    "quantity": quantity,
                    "price": round(charge.price * scale * rng.choice((0.8, 0.9, 1.0, 1.0, 1.0)), 2),
                    "version": 1,
                    "segment": 1,
                    "start": start,
                }
            )
        return {
            "plan": plan,
            "number": f"SRP-{seq + 1:07d}{index:01d}",
            "original": None,
            "change": None,
            "amendment": None,
            "charges": charges,
        }

    def _amend_plans(
        self, seq: int, plans: list[dict[str, object]], when: date, scale: float
    ) -> list[dict[str, object]]:
        rng = self.rng
        out: list[dict[str, object]] = []
        for p in plans:
            copy = dict(p, change=None, amendment=None)
            copy["charges"] = [dict(c) for c in p["charges"]]  # type: ignore[attr-defined]
            out.append(copy)
        roll = rng.random()
        if roll < 0.25 and len(out) < 4:
            plan = CATALOG[rng.choices(range(len(CATALOG)), cum_weights=_PLAN_WEIGHTS)[0]]
            added = self._new_plan(seq, len(out) + 4, plan, when, scale)
            added["change"], added["amendment"] = "Add", "NewProduct"
            out.append(added)
        else:
            target = rng.choice(out)
            charges = target["charges"]
            assert isinstance(charges, list)
            charge = rng.choice(charges)
            if charge["quantity"] is not None:
                charge["quantity"] = float(
                    max(1, int(charge["quantity"]) + rng.choice((-5, 5, 10)))
                )
            else:
                charge["price"] = round(charge["price"] * 1.05, 2)
            charge["version"] = int(charge["version"]) + 1
            charge["segment"] = int(charge["segment"]) + 1
            charge["start"] = when
            target["change"], target["amendment"] = "Update", "UpdateProduct"
        return out

    def _write_plans(
        self,
        sub_id: str,
        plans: list[dict[str, object]],
        created: datetime,
        updated: datetime,
        term: int | None,
        version_seq: int,
    ) -> None:
        rng = self.rng
        created_text, updated_text = self.ts(created), self.ts(updated)
        for seq_in_sub, p in enumerate(plans):
            plan = p["plan"]
            assert isinstance(plan, Plan)
            product_id, prp_id = plan_ids(plan)
            plan_id = _rid(rng)
            if p["original"] is None:
                p["original"] = plan_id
            self.rate_plans.append(
                (
                    plan_id,
                    plan.name,
                    sub_id,
                    prp_id,
                    p["amendment"],
                    created_text,
                    updated_text,
                    product_id,
                    plan.product,
                    plan.sku,
                    p["change"],
                    p["number"],
                    seq_in_sub,
                    p["original"],
                    version_seq,
                )
            )
            charges = p["charges"]
            assert isinstance(charges, list)
            for k, c in enumerate(charges):
                self.charges.append(
                    charge_row(
                        plan,
                        c,
                        _rid(rng),
                        plan_id,
                        sub_id,
                        term,
                        k,
                        created_text,
                        updated_text,
                        version_seq,
                    )
                )


def charge_row(
    plan: Plan,
    c: dict[str, object],
    charge_id: str,
    plan_id: str,
    sub_id: str,
    term: int | None,
    position: int,
    created_text: str,
    updated_text: str,
    version_seq: int | None = None,
) -> tuple[object, ...]:
    """One RatePlanCharge row; `c` carries the charge's state across versions."""
    charge = c["catalog"]
    assert isinstance(charge, Charge)
    if c["original"] is None:
        c["original"] = charge_id
    price = float(c["price"])  # type: ignore[arg-type]
    quantity = c["quantity"]
    amount = (
        price * float(quantity)  # type: ignore[arg-type]
        if quantity is not None and charge.model != "FlatFee"
        else price
    )
    months = _PERIOD_MONTHS[charge.period]
    mrr: float | None = None
    tcv: float
    if charge.type == "Recurring" and charge.model != "DiscountPercentage":
        mrr = round(amount / months, 6)
        tcv = round(mrr * (term or 12), 2)
    elif charge.type == "OneTime":
        tcv = round(amount, 2)
    else:
        mrr = 0.0
        tcv = 0.0
    start = c["start"]
    assert isinstance(start, date)
    end = _add_months(start, term) if term and charge.type != "OneTime" else None
    if charge.type == "OneTime":
        end = start + timedelta(days=1)
    currency_sym = ""
    summary = f"{currency_sym}{price:g}" + (f"/{charge.uom}" if charge.uom else "")
    if charge.model == "DiscountPercentage":
        summary = f"{price:g}% discount"
    return (
        charge_id,
        charge.name,
        c["number"],
        plan_id,
        c["original"],
        charge_catalog_id(plan, charge),
        charge.type,
        charge.model,
        charge.period,
        quantity,
        charge.uom,
        mrr,
        tcv,
        mrr,
        tcv,
        start.isoformat(),
        end.isoformat() if end else None,
        None,
        "ContractEffective",
        c["segment"],
        c["version"],
        1,
        "",
        created_text,
        updated_text,
        sub_id,
        price,
        "Per_Billing_Period" if charge.type == "Recurring" else None,
        "IN_ADVANCE" if charge.type == "Recurring" else None,
        summary,
        position,
        version_seq,
    )


def generate_chunk(
    seed: int, chunk: int, stop: int, custom_fields: tuple[str, ...], offset: str
) -> dict[str, list[tuple[object, ...]]]:
    """Rows of subscriptions chunk*CHUNK .. min(stop, next chunk), by table name."""
    builder = _Builder(seed, chunk, custom_fields, tenant_tz(offset))
    seq = chunk * CHUNK
    end = min(stop, seq + CHUNK)
    rng = builder.rng
    while seq < end:
        group = min(end - seq, rng.choices((1, 2, 3, 5), cum_weights=_GROUP_WEIGHTS)[0])
        account_id, _currency, scale = builder.account(seq)
        for s in range(seq, seq + group):
            builder.subscription(s, account_id, scale)
        seq += group
    return {
        "account": builder.accounts,
        "subscription": builder.subscriptions,
        "rateplan": builder.rate_plans,
        "rateplancharge": builder.charges,
    }


def _insert_sql(table: Table) -> str:
    marks = ", ".join("?" for _ in table.columns)
    return f"INSERT INTO {table.sql} VALUES ({marks})"


def arrow_schema(table: Table) -> pa.Schema:
    """The Parquet schema of a table (Data Query reads the base from Parquet)."""
    kinds = {"int": pa.int64(), "real": pa.float64(), "bool": pa.bool_()}
    return pa.schema([(c.sql, kinds.get(c.kind, pa.string())) for c in table.columns])


def to_arrow(table: Table, rows: list[tuple[object, ...]] | list[list[object]]) -> pa.Table:
    """Rows in column order as an Arrow table (booleans stored as 0/1 become booleans)."""
    schema = arrow_schema(table)
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in table.columns]
    arrays = []
    for col, values, field in zip(table.columns, columns, schema, strict=True):
        if col.kind == "bool":
            values = tuple(None if v is None else bool(v) for v in values)
        arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def parquet_path(base: Path, table: str) -> Path:
    """Where the Parquet copy of one base table lives, next to the base."""
    return base.with_name(base.name.removesuffix(".sqlite") + f".{table}.parquet")


def _chunk_with_arrow(
    seed: int, chunk: int, stop: int, custom_fields: tuple[str, ...], offset: str
) -> tuple[dict[str, list[tuple[object, ...]]], dict[str, pa.Table]]:
    rows = generate_chunk(seed, chunk, stop, custom_fields, offset)
    all_tables = {t.sql: t for t in _all_tables(custom_fields)}
    return rows, {name: to_arrow(all_tables[name], batch) for name, batch in rows.items()}


def _all_tables(custom_fields: tuple[str, ...]) -> list[Table]:
    return [ACCOUNT, subscription_table(custom_fields), RATE_PLAN, RATE_PLAN_CHARGE]


def _chunks(
    subscriptions: int, seed: int, custom_fields: tuple[str, ...], offset: str
) -> Iterator[tuple[dict[str, list[tuple[object, ...]]], dict[str, pa.Table]]]:
    count = (subscriptions + CHUNK - 1) // CHUNK
    if subscriptions < PARALLEL_FROM:
        for chunk in range(count):
            yield _chunk_with_arrow(seed, chunk, subscriptions, custom_fields, offset)
        return
    context = multiprocessing.get_context("spawn")
    workers = max(1, (os.cpu_count() or 2))
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        yield from pool.map(
            _chunk_with_arrow,
            [seed] * count,
            range(count),
            [subscriptions] * count,
            [custom_fields] * count,
            [offset] * count,
            chunksize=4,
        )


class _ParquetSink:
    """Buffers Arrow chunks per table and writes them in large row groups."""

    def __init__(self, base: Path, tables: list[Table], suffix: str) -> None:
        self.paths = {t.sql: parquet_path(base, t.sql) for t in tables}
        self.tmp = {k: p.with_name(p.name + suffix) for k, p in self.paths.items()}
        self.writers = {
            t.sql: pq.ParquetWriter(self.tmp[t.sql], arrow_schema(t), compression="zstd")
            for t in tables
        }
        self.buffers: dict[str, list[pa.Table]] = {t.sql: [] for t in tables}

    def add(self, name: str, table: pa.Table) -> None:
        self.buffers[name].append(table)
        if sum(t.num_rows for t in self.buffers[name]) >= 200_000:
            self.flush(name)

    def flush(self, name: str) -> None:
        if self.buffers[name]:
            self.writers[name].write_table(pa.concat_tables(self.buffers[name]))
            self.buffers[name] = []

    def close(self) -> None:
        for name, writer in self.writers.items():
            self.flush(name)
            writer.close()
        for name, tmp in self.tmp.items():
            os.replace(tmp, self.paths[name])


def build_base(
    path: Path, subscriptions: int, seed: int, custom_fields: tuple[str, ...], offset: str
) -> None:
    """Write the data set into a new SQLite file at `path`, and its Parquet copies.

    The Parquet files are in place before the SQLite file appears (atomically), so a base
    that exists is complete.
    """
    suffix = f".{os.getpid()}.tmp"
    tmp = path.with_name(path.name + suffix)
    tmp.unlink(missing_ok=True)
    all_tables = _all_tables(custom_fields)
    sink = _ParquetSink(path, all_tables, suffix)
    con = sqlite3.connect(tmp)
    try:
        con.execute("PRAGMA journal_mode=OFF")
        con.execute("PRAGMA synchronous=OFF")
        con.execute("PRAGMA cache_size=-200000")
        for table in all_tables:
            con.execute(create_sql(table, base=True))
        statements = {t.sql: _insert_sql(t) for t in all_tables}
        for rows, arrow in _chunks(subscriptions, seed, custom_fields, offset):
            for name, batch in rows.items():
                con.executemany(statements[name], batch)
                sink.add(name, arrow[name])
        for name, indexes in INDEXES.items():
            for i, cols in enumerate(indexes):
                con.execute(f"CREATE INDEX {name}_ix{i} ON {name} ({cols})")
        con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        con.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [
                ("format", str(DATA_FORMAT_VERSION)),
                ("subscriptions", str(subscriptions)),
                ("seed", str(seed)),
                ("custom_fields", ",".join(custom_fields)),
                ("offset", offset),
            ],
        )
        con.commit()
    finally:
        con.close()
    sink.close()
    os.replace(tmp, path)


def base_key(subscriptions: int, seed: int, custom_fields: tuple[str, ...], offset: str) -> str:
    fields = hashlib.sha256(f"{','.join(custom_fields)}|{offset}".encode()).hexdigest()[:10]
    return f"base-v{DATA_FORMAT_VERSION}-n{subscriptions}-s{seed}-{fields}.sqlite"


def ensure_base(
    directory: Path, subscriptions: int, seed: int, custom_fields: tuple[str, ...], offset: str
) -> Path:
    """The base file for these parameters in `directory`, built unless already there.

    A lock file serialises concurrent builders (several test processes may ask at once).
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / base_key(subscriptions, seed, custom_fields, offset)
    if path.exists():
        return path
    with open(directory / f"{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            build_base(path, subscriptions, seed, custom_fields, offset)
    return path
