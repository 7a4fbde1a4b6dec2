"""The tenant's data: a read-only seeded base plus a per-instance overlay of changes.

Both are SQLite files with the same tables (see `schema.py`). A change never touches the
base: the base row it replaces is *masked* (its id goes into `masked`) and the new row is
written to the overlay. The temporary views `account`, `subscription`, `rateplan` and
`rateplancharge` unite the two, so ZOQL here and Data Query in worker processes see one
tenant. GETs read both files through indexes directly, which is what keeps them fast.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timezone
from pathlib import Path
from typing import Any

import orjson

from zuora.sandbox.schema import (
    ACCOUNT,
    OVERLAY_INDEXES,
    RATE_PLAN,
    RATE_PLAN_CHARGE,
    Table,
    create_sql,
    now_text,
    subscription_table,
    tables,
    tenant_tz,
)
from zuora.sandbox.seed import CATALOG, Charge, Plan, charge_catalog_id, charge_row, plan_ids

Row = dict[str, Any]
# A row read on the hot path carries its account under this key (not a column).
ACCOUNT_KEY = "__account"


class StoreError(Exception):
    """A change the tenant refuses: `code` is Zuora's 8-digit reason code."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class NotFound(StoreError):
    def __init__(self, message: str) -> None:
        super().__init__("50000040", message, 404)


@dataclass(frozen=True)
class Change:
    """One row change as custom events see it."""

    object_name: str  # Subscription, RatePlan, ...
    change_type: str  # INSERT | UPDATE | DELETE
    new: Row | None
    old: Row | None


@dataclass
class ChangeSet:
    """What one operation did: the rows it changed and the subscription it concerned."""

    subscription_number: str
    changes: list[Change] = field(default_factory=list)
    subscription_id: str | None = None
    delta_mrr: float = 0.0
    delta_tcv: float = 0.0


def view_sql(table: Table) -> str:
    """The united view of one object (what ZOQL reads): unmasked base rows plus overlay rows."""
    cols = ", ".join(c.sql for c in table.public_columns)
    return (
        f"CREATE TEMP VIEW {table.sql} AS "
        f"SELECT {cols} FROM b.{table.sql} WHERE id NOT IN (SELECT id FROM main.masked) "
        f"UNION ALL SELECT {cols} FROM main.{table.sql}"
    )


def connect(
    base: Path, overlay: Path, custom_fields: tuple[str, ...], *, writer: bool
) -> sqlite3.Connection:
    """A connection that sees the tenant: overlay as `main`, base as `b`, views in `temp`."""
    mode = "rw" if writer else "ro"
    con = sqlite3.connect(
        f"file:{overlay}?mode={mode}", uri=True, check_same_thread=False, isolation_level=None
    )
    con.execute(f"ATTACH DATABASE 'file:{base}?mode=ro&immutable=1' AS b")
    con.execute("PRAGMA temp_store=MEMORY")
    con.execute("PRAGMA cache_size=-64000")
    for table in tables(custom_fields).values():
        con.executescript(view_sql(table))
    return con


def create_overlay(path: Path, custom_fields: tuple[str, ...]) -> None:
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        for table in tables(custom_fields).values():
            con.execute(create_sql(table))
            for i, cols in enumerate(OVERLAY_INDEXES[table.sql]):
                con.execute(f"CREATE INDEX IF NOT EXISTS {table.sql}_ix{i} ON {table.sql} ({cols})")
        con.execute("CREATE TABLE IF NOT EXISTS masked (id TEXT PRIMARY KEY)")
        con.commit()
    finally:
        con.close()


def new_id() -> str:
    """A Zuora-style record id: 32 lowercase hex digits."""
    return uuid.uuid4().hex


_NULLABLE_REST_CHARGE = (
    "applyDiscountTo",
    "billingDay",
    "chargedThroughDate",
    "discountAmount",
    "discountClass",
    "discountLevel",
    "discountPercentage",
    "includedUnits",
    "numberOfPeriods",
    "overageCalculationOption",
    "overagePrice",
    "overageUnusedUnitsCreditOption",
    "priceIncreasePercentage",
    "processedThroughDate",
    "smoothingModel",
    "specificBillingPeriod",
    "specificEndDate",
    "triggerDate",
    "unusedUnitsCreditRates",
    "upToPeriods",
    "upToPeriodsType",
    "usageRecordRatingOption",
    "amendedByOrderOn",
)


class Store:
    """Reads, renders and changes the tenant's subscriptions (one writer: the event loop)."""

    def __init__(
        self, base: Path, overlay: Path, custom_fields: tuple[str, ...], utc_offset: str
    ) -> None:
        self.base_path = base
        self.overlay_path = overlay
        self.custom_fields = custom_fields
        self.tz: timezone = tenant_tz(utc_offset)
        self.sub_table = subscription_table(custom_fields)
        self.tables = tables(custom_fields)
        create_overlay(overlay, custom_fields)
        self.warm = threading.Event()
        threading.Thread(
            target=_prefetch, args=(base, self.warm), name="sandbox-prefetch", daemon=True
        ).start()
        self.con = connect(base, overlay, custom_fields, writer=True)
        self.con.row_factory = sqlite3.Row
        self.masked: set[str] = set()
        self.overlay_names: set[str] = set()
        self.deleted: set[str] = set()
        self.sub_cols = [c.sql for c in self.sub_table.columns]
        self._custom_sql = [(name, name.lower()) for name in custom_fields]
        self._accounts: dict[str, Row] = {}
        self._rendered: dict[str, bytes] = {}
        self._pending_masks: list[str] = []
        self._plan_cols = [c.sql for c in RATE_PLAN.columns]
        self._charge_cols = [c.sql for c in RATE_PLAN_CHARGE.columns]
        self._account_cols = [c.sql for c in ACCOUNT.columns]
        self._latest_sql = (
            f"SELECT {', '.join('s.' + c for c in self.sub_cols)}, "
            f"{', '.join('a.' + c for c in self._account_cols)} FROM b.subscription s "
            "LEFT JOIN b.account a ON a.id = s.accountid WHERE s.name = ? "
            "ORDER BY s.version DESC LIMIT 1"
        )
        self._plan_sql = "SELECT * FROM b.rateplan WHERE versionseq = ?"
        self._charge_sql = "SELECT * FROM b.rateplancharge WHERE versionseq = ?"

    def close(self) -> None:
        self.con.close()

    # --- reading -----------------------------------------------------------------------

    def _rows(self, table: str, where: str, args: Sequence[Any], overlay: bool = True) -> list[Row]:
        out = [
            dict(r)
            for r in self.con.execute(f"SELECT * FROM b.{table} WHERE {where}", args)
            if r["id"] not in self.masked
        ]
        if overlay:
            out.extend(
                dict(r) for r in self.con.execute(f"SELECT * FROM main.{table} WHERE {where}", args)
            )
        return out

    def versions(self, number: str) -> list[Row]:
        """Every version row of a subscription, oldest first; empty if unknown or deleted."""
        if number in self.deleted:
            return []
        rows = self._rows("subscription", "name = ?", (number,), number in self.overlay_names)
        rows.sort(key=lambda r: r["version"])
        return rows

    def latest(self, number: str) -> Row | None:
        """The latest version row; reads only as far as the newest unmasked row."""
        if number in self.deleted:
            return None
        if number not in self.overlay_names:
            return self._latest_untouched(number)
        best = None
        for row in self.con.execute(
            "SELECT * FROM b.subscription WHERE name = ? ORDER BY version DESC", (number,)
        ):
            if row["id"] not in self.masked:
                best = row
                break
        if number in self.overlay_names:
            mine = self.con.execute(
                "SELECT * FROM main.subscription WHERE name = ? ORDER BY version DESC LIMIT 1",
                (number,),
            ).fetchone()
            if mine is not None and (best is None or mine["version"] > best["version"]):
                best = mine
        return dict(best) if best is not None else None

    def _latest_untouched(self, number: str) -> Row | None:
        """The hot path: the base's latest row with its account, in one indexed query."""
        cur = self.con.execute(self._latest_sql, (number,))
        cur.row_factory = None
        values = cur.fetchone()
        if values is None:
            return None
        width = len(self.sub_cols)
        row = dict(zip(self.sub_cols, values[:width], strict=True))
        row[ACCOUNT_KEY] = dict(zip(self._account_cols, values[width:], strict=True))
        return row

    def by_id(self, sub_id: str) -> Row | None:
        rows = self._rows("subscription", "id = ?", (sub_id,), bool(self.overlay_names))
        if not rows or rows[0]["name"] in self.deleted:
            return None
        return rows[0]

    def resolve(self, key: str, latest_for_old_id: bool) -> Row:
        """A subscription by number, or by the id of any of its versions."""
        row = None if _looks_like_id(key) else self.latest(key)
        if row is None:
            by_id = self.by_id(key)
            if by_id is not None:
                row = self.latest(by_id["name"]) if latest_for_old_id else by_id
        if row is None:
            raise NotFound(f"The subscription {key} is invalid.")
        return row

    def rate_plans(self, sub_row: Row) -> list[tuple[Row, list[Row]]]:
        """A version's rate plans (in order) with their charges (in order)."""
        touched = sub_row["name"] in self.overlay_names
        version_seq = sub_row.get("versionseq")
        plans: list[Row] = []
        charges: list[Row] = []
        if version_seq is not None:
            plans = self._clustered(self._plan_sql, version_seq, self._plan_cols, touched)
            charges = self._clustered(self._charge_sql, version_seq, self._charge_cols, touched)
        if touched:
            plans += [
                dict(r)
                for r in self.con.execute(
                    "SELECT * FROM main.rateplan WHERE subscriptionid = ?", (sub_row["id"],)
                )
            ]
            charges += [
                dict(r)
                for r in self.con.execute(
                    "SELECT * FROM main.rateplancharge WHERE subscriptionid = ?", (sub_row["id"],)
                )
            ]
        plans.sort(key=lambda r: r["seq"])
        by_plan: dict[str, list[Row]] = {p["id"]: [] for p in plans}
        for charge in sorted(charges, key=lambda r: r["seq"]):
            if charge["rateplanid"] in by_plan:
                by_plan[charge["rateplanid"]].append(charge)
        return [(p, by_plan[p["id"]]) for p in plans]

    def _clustered(self, sql: str, version_seq: int, cols: list[str], touched: bool) -> list[Row]:
        """Base rows of one version, read as one clustered range (the hot path)."""
        cur = self.con.execute(sql, (version_seq,))
        cur.row_factory = None
        rows = [dict(zip(cols, values, strict=True)) for values in cur]
        if touched:
            rows = [r for r in rows if r["id"] not in self.masked]
        return rows

    def account(self, account_id: str) -> Row:
        """An account row; accounts never change here, so they are cached."""
        found = self._accounts.get(account_id)
        if found is None:
            rows = self._rows("account", "id = ?", (account_id,), overlay=False)
            found = rows[0] if rows else {}
            if len(self._accounts) > 100_000:
                self._accounts.clear()
            self._accounts[account_id] = found
        return found

    # --- rendering ----------------------------------------------------------------------

    def render(self, sub: Row) -> dict[str, Any]:
        """The subscription exactly as `GET /v1/subscriptions/{key}` shows it."""
        account = sub.get(ACCOUNT_KEY) or self.account(sub["accountid"])
        plans = self.rate_plans(sub)
        rendered_plans = [self._render_plan(p, cs, account) for p, cs in plans]
        mrr = sum(c.get("mrr") or 0.0 for p in rendered_plans for c in p["ratePlanCharges"])
        tcv = sum(c.get("tcv") or 0.0 for p in rendered_plans for c in p["ratePlanCharges"])
        contact = {
            "id": account.get("contactid"),
            "firstName": account.get("firstname"),
            "lastName": account.get("lastname"),
            "workEmail": account.get("workemail"),
            "country": account.get("country"),
            "state": account.get("state"),
            "city": account.get("city"),
            "address1": "",
            "address2": "",
            "zipCode": "",
            "county": None,
            "fax": "",
            "homePhone": "",
            "mobilePhone": "",
            "nickname": "",
            "otherPhone": "",
            "otherPhoneType": None,
            "personalEmail": "",
            "taxRegion": None,
            "workPhone": "",
        }
        body: dict[str, Any] = {
            "success": True,
            "id": sub["id"],
            "accountId": sub["accountid"],
            "accountName": account.get("name"),
            "accountNumber": account.get("accountnumber"),
            "invoiceOwnerAccountId": sub["invoiceownerid"],
            "invoiceOwnerAccountName": account.get("name"),
            "invoiceOwnerAccountNumber": account.get("accountnumber"),
            "subscriptionNumber": sub["name"],
            "version": sub["version"],
            "revision": sub["revision"],
            "isLatestVersion": sub["status"] != "Expired" or self._is_latest(sub),
            "status": sub["status"],
            "termType": sub["termtype"],
            "contractEffectiveDate": sub["contracteffectivedate"],
            "serviceActivationDate": sub["serviceactivationdate"],
            "customerAcceptanceDate": sub["contractacceptancedate"],
            "subscriptionStartDate": sub["subscriptionstartdate"],
            "subscriptionEndDate": sub["subscriptionenddate"],
            "termStartDate": sub["termstartdate"],
            "termEndDate": sub["termenddate"],
            "cancelledDate": sub["cancelleddate"],
            "initialTerm": sub["initialterm"],
            "initialTermPeriodType": sub["initialtermperiodtype"],
            "currentTerm": sub["currentterm"],
            "currentTermPeriodType": sub["currenttermperiodtype"],
            "renewalTerm": sub["renewalterm"],
            "renewalTermPeriodType": sub["renewaltermperiodtype"],
            "renewalSetting": sub["renewalsetting"],
            "autoRenew": bool(sub["autorenew"]),
            "invoiceSeparately": bool(sub["isinvoiceseparate"]),
            "currency": account.get("currency"),
            "paymentTerm": account.get("paymentterm"),
            "invoiceTemplateId": None,
            "invoiceTemplateName": None,
            "invoiceGroupNumber": None,
            "invoiceScheduleId": None,
            "sequenceSetId": None,
            "sequenceSetName": None,
            "notes": sub["notes"],
            "contractedMrr": round(mrr, 2),
            "totalContractedValue": round(tcv, 2),
            "contractedNetMrr": round(mrr, 2),
            "asOfDayGrossMrr": round(mrr, 2),
            "asOfDayNetMrr": round(mrr, 2),
            "netTotalContractedValue": round(tcv, 2),
            "orderNumber": None,
            "externallyManagedBy": None,
            "billToContact": contact,
            "soldToContact": contact,
            "totalNumberOfChargeSegments": sum(len(p["ratePlanCharges"]) for p in rendered_plans),
            "ratePlans": rendered_plans,
        }
        for name, column in self._custom_sql:
            body[name] = sub[column]
        return body

    def render_bytes(self, sub: Row) -> bytes:
        """`render` as JSON bytes; untouched latest versions are cached (they never change)."""
        number = sub["name"]
        cacheable = number not in self.overlay_names
        if cacheable:
            found = self._rendered.get(sub["id"])
            if found is not None:
                return found
        payload = orjson.dumps(self.render(sub))
        if cacheable:
            if len(self._rendered) >= 20_000:
                self._rendered.pop(next(iter(self._rendered)))
            self._rendered[sub["id"]] = payload
        return payload

    def _is_latest(self, sub: Row) -> bool:
        latest = self.latest(sub["name"])
        return latest is not None and latest["id"] == sub["id"]

    def _render_plan(self, plan: Row, charges: list[Row], account: Row) -> dict[str, Any]:
        rendered = [self._render_charge(c, account) for c in charges]
        mrr = round(sum(c.get("mrr") or 0.0 for c in rendered), 2)
        tcv = round(sum(c.get("tcv") or 0.0 for c in rendered), 2)
        return {
            "id": plan["id"],
            "lastChangeType": plan["lastchangetype"],
            "productId": plan["productid"],
            "productName": plan["productname"],
            "productSku": plan["productsku"],
            "productRatePlanId": plan["productrateplanid"],
            "ratePlanName": plan["name"],
            "subscriptionRatePlanNumber": plan["rateplannumber"],
            "originalRatePlanId": plan["originalrateplanid"],
            "contractedMrr": mrr,
            "contractedNetMrr": mrr,
            "asOfDayGrossMrr": mrr,
            "asOfDayNetMrr": mrr,
            "netTotalContractedValue": tcv,
            "ratePlanCharges": rendered,
        }

    def _render_charge(self, c: Row, account: Row) -> dict[str, Any]:
        body: dict[str, Any] = dict.fromkeys(_NULLABLE_REST_CHARGE)
        body.update(
            {
                "id": c["id"],
                "originalChargeId": c["originalid"],
                "productRatePlanChargeId": c["productrateplanchargeid"],
                "number": c["chargenumber"],
                "name": c["name"],
                "type": c["chargetype"],
                "model": c["chargemodel"],
                "uom": c["uom"],
                "version": c["version"],
                "segment": c["segment"],
                "isLastSegment": bool(c["islastsegment"]),
                "description": c["description"],
                "currency": account.get("currency"),
                "price": c["price"] if c["chargemodel"] != "DiscountPercentage" else None,
                "discountPercentage": c["price"]
                if c["chargemodel"] == "DiscountPercentage"
                else None,
                "quantity": c["quantity"],
                "listPriceBase": c["listpricebase"],
                "pricingSummary": c["pricingsummary"],
                "priceChangeOption": "NoChange" if c["chargetype"] == "Recurring" else None,
                "billingPeriod": c["billingperiod"],
                "billingPeriodAlignment": "AlignToCharge" if c["chargetype"] != "OneTime" else None,
                "billingTiming": c["billingtiming"],
                "billingDay": "DefaultFromCustomer" if c["chargetype"] != "OneTime" else None,
                "effectiveStartDate": c["effectivestartdate"],
                "effectiveEndDate": c["effectiveenddate"],
                "chargedThroughDate": c["chargedthroughdate"],
                "triggerEvent": c["triggerevent"],
                "endDateCondition": "One_Time"
                if c["chargetype"] == "OneTime"
                else "Subscription_End",
                "mrr": c["mrr"],
                "tcv": c["tcv"],
                "dmrc": c["dmrc"],
                "dtcv": c["dtcv"],
                "done": c["chargetype"] == "OneTime",
                "tiers": None,
            }
        )
        return body

    # --- changing -----------------------------------------------------------------------

    def _insert(self, table: Table, row: Row) -> None:
        cols = [c.sql for c in table.columns]
        marks = ", ".join("?" for _ in cols)
        self.con.execute(
            f"INSERT INTO main.{table.sql} ({', '.join(cols)}) VALUES ({marks})",
            [row.get(c) for c in cols],
        )

    def _replace(self, table: Table, row: Row) -> None:
        """Store a changed version of an existing row (base rows are masked, not edited)."""
        row_id = row["id"]
        in_overlay = self.con.execute(
            f"SELECT 1 FROM main.{table.sql} WHERE id = ?", (row_id,)
        ).fetchone()
        if in_overlay:
            cols = [c.sql for c in table.columns if c.sql != "id"]
            sets = ", ".join(f"{c} = ?" for c in cols)
            self.con.execute(
                f"UPDATE main.{table.sql} SET {sets} WHERE id = ?",
                [*(row.get(c) for c in cols), row_id],
            )
            return
        self._mask(row_id)
        self._insert(table, row)

    @contextmanager
    def _txn(self) -> Iterator[None]:
        """One atomic change: on any error the overlay and the mask set are as before."""
        self._pending_masks = []
        self.con.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK")
            self.masked.difference_update(self._pending_masks)
            raise
        self.con.execute("COMMIT")

    def _mask(self, row_id: str) -> None:
        if row_id not in self.masked:
            self._pending_masks.append(row_id)
        self.masked.add(row_id)
        self.con.execute("INSERT OR IGNORE INTO main.masked VALUES (?)", (row_id,))

    def _public(self, table: Table, row: Row) -> Row:
        """The row as custom events see it: ZOQL field names."""
        return {c.name: row.get(c.sql) for c in table.public_columns}

    def check_custom_fields(self, values: dict[str, Any]) -> dict[str, str | None]:
        """Validate custom-field values and normalise them to text or null."""
        known = {name.lower(): name for name in self.custom_fields}
        out: dict[str, str | None] = {}
        for name, value in values.items():
            canonical = known.get(name.lower())
            if canonical is None:
                raise StoreError("53100021", f"Unknown field {name}")
            if value is not None and not isinstance(value, (str, int, float, bool)):
                raise StoreError("53100020", f"Invalid value for field {name}")
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, float) and value.is_integer():
                value = str(int(value))
            elif value is not None:
                value = str(value)
            out[canonical] = value
        return out

    def edit_custom_fields(
        self, number: str, version: int, values: dict[str, Any], *, touch_updated: bool
    ) -> ChangeSet:
        """Edit custom fields of one version in place: same id, same version."""
        clean = self.check_custom_fields(values)
        rows = [r for r in self.versions(number) if r["version"] == version]
        if not rows:
            raise NotFound(f"The subscription {number} with version {version} is invalid.")
        old = rows[0]
        new = dict(old)
        for name, value in clean.items():
            new[name.lower()] = value
        if touch_updated:
            new["updateddate"] = now_text(self.tz)
        changes = ChangeSet(number, subscription_id=old["id"])
        if new == old:
            return changes
        with self._txn():
            self._replace(self.sub_table, new)
        self.overlay_names.add(number)
        changes.changes.append(
            Change(
                "Subscription",
                "UPDATE",
                self._public(self.sub_table, new),
                self._public(self.sub_table, old),
            )
        )
        return changes

    def amend(self, key: str, body: dict[str, Any]) -> ChangeSet:
        """The legacy 'Update a subscription': a new version with the requested changes."""
        old = self.resolve(key, latest_for_old_id=True)
        custom = self.check_custom_fields({k: v for k, v in body.items() if k.endswith("__c")})
        return self._new_version(old, body, custom, status=None, cancelled=None)

    def cancel(self, key: str, body: dict[str, Any]) -> ChangeSet:
        """Cancel: a new version with status Cancelled (legacy cancel amendment)."""
        old = self.resolve(key, latest_for_old_id=True)
        if old["status"] == "Cancelled":
            raise StoreError("53200030", "The subscription has already been cancelled.")
        policy = body.get("cancellationPolicy")
        if policy not in ("EndOfCurrentTerm", "EndOfLastInvoicePeriod", "SpecificDate"):
            raise StoreError(
                "53100022",
                "cancellationPolicy is required: EndOfCurrentTerm, EndOfLastInvoicePeriod "
                "or SpecificDate",
            )
        today = date.today()
        if policy == "SpecificDate":
            raw = body.get("cancellationEffectiveDate")
            try:
                when = date.fromisoformat(str(raw))
            except ValueError:
                raise StoreError(
                    "53100020", "cancellationEffectiveDate must be a date (yyyy-mm-dd)"
                ) from None
        elif policy == "EndOfCurrentTerm" and old["termenddate"]:
            when = date.fromisoformat(old["termenddate"])
        else:
            when = today
        return self._new_version(old, {}, {}, status="Cancelled", cancelled=when)

    def _new_version(
        self,
        old: Row,
        body: dict[str, Any],
        custom: dict[str, str | None],
        *,
        status: str | None,
        cancelled: date | None,
    ) -> ChangeSet:
        now = now_text(self.tz)
        new = dict(old)
        new_id = _fresh_id()
        new.update(
            id=new_id,
            version=old["version"] + 1,
            revision=f"{old['version'] + 1}.0",
            previoussubscriptionid=old["id"],
            versionseq=None,
            createddate=now,
            updateddate=now,
            status=status or ("Active" if old["status"] == "Expired" else old["status"]),
        )
        for name, value in custom.items():
            new[name.lower()] = value
        if "notes" in body:
            new["notes"] = body["notes"]
        if "autoRenew" in body:
            new["autorenew"] = int(bool(body["autoRenew"]))
        if cancelled is not None:
            new["cancelleddate"] = cancelled.isoformat()
            new["subscriptionenddate"] = cancelled.isoformat()
        expired = dict(old, status="Expired", updateddate=now)
        changes = ChangeSet(old["name"], subscription_id=new_id)
        plan_changes: list[Change] = []
        with self._txn():
            self._replace(self.sub_table, expired)
            self._insert(self.sub_table, new)
            old_mrr, old_tcv, new_mrr, new_tcv = self._copy_plans(
                old, new, body, now, cancelled, plan_changes
            )
        self.overlay_names.add(old["name"])
        changes.delta_mrr = round(new_mrr - old_mrr, 2)
        changes.delta_tcv = round(new_tcv - old_tcv, 2)
        changes.changes.append(
            Change("Subscription", "INSERT", self._public(self.sub_table, new), None)
        )
        changes.changes.append(
            Change(
                "Subscription",
                "UPDATE",
                self._public(self.sub_table, expired),
                self._public(self.sub_table, old),
            )
        )
        changes.changes.extend(plan_changes)
        return changes

    def _copy_plans(
        self,
        old: Row,
        new: Row,
        body: dict[str, Any],
        now: str,
        cancelled: date | None,
        changes: list[Change],
    ) -> tuple[float, float, float, float]:
        """Give the new version its own rate plans and charges, applying add/update/remove."""
        updates = {u.get("ratePlanId"): u for u in body.get("update") or [] if isinstance(u, dict)}
        removes = {r.get("ratePlanId") for r in body.get("remove") or [] if isinstance(r, dict)}
        adds = [a for a in body.get("add") or [] if isinstance(a, dict)]
        plans = self.rate_plans(old)
        known = {p["id"] for p, _ in plans}
        for missing in (set(updates) | removes) - known:
            raise StoreError("53100020", f"Invalid ratePlanId {missing}")
        old_mrr = old_tcv = new_mrr = new_tcv = 0.0
        for seq, (plan, charges) in enumerate(plans):
            new_plan = dict(
                plan,
                id=_fresh_id(),
                versionseq=None,
                subscriptionid=new["id"],
                createddate=now,
                updateddate=now,
                lastchangetype=None,
                amendmenttype=None,
            )
            update = updates.get(plan["id"])
            if plan["id"] in removes:
                new_plan.update(lastchangetype="Remove", amendmenttype="RemoveProduct")
            elif update is not None:
                new_plan.update(lastchangetype="Update", amendmenttype="UpdateProduct")
            self._insert(RATE_PLAN, new_plan)
            changes.append(Change("RatePlan", "INSERT", self._public(RATE_PLAN, new_plan), None))
            details = {
                d.get("ratePlanChargeId"): d
                for d in (update or {}).get("chargeUpdateDetails") or []
                if isinstance(d, dict)
            }
            for charge in charges:
                old_mrr += charge["mrr"] or 0.0
                old_tcv += charge["tcv"] or 0.0
                new_charge = dict(
                    charge,
                    id=_fresh_id(),
                    versionseq=None,
                    rateplanid=new_plan["id"],
                    subscriptionid=new["id"],
                    createddate=now,
                    updateddate=now,
                )
                detail = details.get(charge["id"])
                if detail is not None:
                    _apply_charge_update(new_charge, detail)
                if plan["id"] in removes or cancelled is not None:
                    end = (cancelled or date.today()).isoformat()
                    new_charge["effectiveenddate"] = end
                new_mrr += new_charge["mrr"] or 0.0
                new_tcv += new_charge["tcv"] or 0.0
                self._insert(RATE_PLAN_CHARGE, new_charge)
            del seq
        for index, add in enumerate(adds):
            plan_row, charge_rows = self._added_plan(add, new, now, len(plans) + index)
            self._insert(RATE_PLAN, plan_row)
            changes.append(Change("RatePlan", "INSERT", self._public(RATE_PLAN, plan_row), None))
            for charge_row_ in charge_rows:
                new_mrr += charge_row_["mrr"] or 0.0
                new_tcv += charge_row_["tcv"] or 0.0
                self._insert(RATE_PLAN_CHARGE, charge_row_)
        return old_mrr, old_tcv, new_mrr, new_tcv

    def _added_plan(
        self, add: dict[str, Any], new: Row, now: str, position: int
    ) -> tuple[Row, list[Row]]:
        wanted = add.get("productRatePlanId")
        plan: Plan | None = next((p for p in CATALOG if plan_ids(p)[1] == wanted), None)
        if plan is None:
            raise StoreError("53100020", f"Invalid productRatePlanId {wanted}")
        product_id, prp_id = plan_ids(plan)
        plan_id = _fresh_id()
        start_raw = add.get("contractEffectiveDate") or date.today().isoformat()
        try:
            start = date.fromisoformat(str(start_raw))
        except ValueError:
            raise StoreError("53100020", "contractEffectiveDate must be yyyy-mm-dd") from None
        plan_row: Row = {
            "id": plan_id,
            "name": plan.name,
            "subscriptionid": new["id"],
            "productrateplanid": prp_id,
            "amendmenttype": "NewProduct",
            "createddate": now,
            "updateddate": now,
            "productid": product_id,
            "productname": plan.product,
            "productsku": plan.sku,
            "lastchangetype": "Add",
            "rateplannumber": f"SRP-{uuid.uuid4().int % 10**8:08d}",
            "seq": position,
            "originalrateplanid": plan_id,
        }
        overrides = {
            o.get("productRatePlanChargeId"): o
            for o in add.get("chargeOverrides") or []
            if isinstance(o, dict)
        }
        rows = []
        for k, charge in enumerate(plan.charges):
            state: dict[str, object] = {
                "catalog": charge,
                "number": f"C-{uuid.uuid4().int % 10**8:08d}",
                "original": None,
                "quantity": _default_quantity(charge),
                "price": charge.price,
                "version": 1,
                "segment": 1,
                "start": start,
            }
            override = overrides.get(charge_catalog_id(plan, charge))
            if override is not None:
                if override.get("quantity") is not None:
                    state["quantity"] = float(override["quantity"])
                if override.get("price") is not None:
                    state["price"] = float(override["price"])
            values = charge_row(
                plan, state, _fresh_id(), plan_id, new["id"], new["initialterm"], k, now, now
            )
            rows.append(dict(zip([c.sql for c in RATE_PLAN_CHARGE.columns], values, strict=True)))
        return plan_row, rows

    def delete(self, number: str) -> ChangeSet:
        """Remove a subscription with all its versions (GET then answers 404)."""
        rows = self.versions(number)
        if not rows:
            raise NotFound(f"The subscription {number} is invalid.")
        with self._txn():
            for row in rows:
                for plan, charges in self.rate_plans(row):
                    for charge in charges:
                        self._drop(RATE_PLAN_CHARGE, charge["id"])
                    self._drop(RATE_PLAN, plan["id"])
                self._drop(self.sub_table, row["id"])
        self.deleted.add(number)
        latest = rows[-1]
        return ChangeSet(
            number,
            [Change("Subscription", "DELETE", None, self._public(self.sub_table, latest))],
            subscription_id=latest["id"],
        )

    def _drop(self, table: Table, row_id: str) -> None:
        self.con.execute(f"DELETE FROM main.{table.sql} WHERE id = ?", (row_id,))
        self._mask(row_id)

    # --- bulk -----------------------------------------------------------------------------

    def numbers(self, batch: int = 2000) -> Iterator[list[str]]:
        """Every live subscription number, in batches, in number order."""
        last = ""
        while True:
            found = [
                r[0]
                for r in self.con.execute(
                    # Every number is in the base (subscriptions are never created here), and
                    # its index yields them in order without a sort.
                    "SELECT DISTINCT name FROM b.subscription WHERE name > ? ORDER BY name LIMIT ?",
                    (last, batch),
                )
            ]
            if not found:
                return
            yield [n for n in found if n not in self.deleted]
            last = found[-1]

    def export(self) -> Iterator[dict[str, Any]]:
        """Every subscription's latest version as GET shows it, in number order."""
        for batch in self.numbers():
            for number in batch:
                row = self.latest(number)
                if row is not None:
                    yield self.render(row)


def _prefetch(path: Path, done: threading.Event) -> None:
    """Read the base file once so the kernel caches it (a background thread).

    A large base (gigabytes) is read at random by GETs; once in the page cache a GET costs
    CPU only. The read releases the GIL, so serving goes on meanwhile.
    """
    stem = path.name.removesuffix(".sqlite")
    try:
        for part in [path, *sorted(path.parent.glob(f"{stem}.*.parquet"))]:
            with open(part, "rb", buffering=0) as handle:
                while handle.read(8 << 20):
                    pass
    except OSError:
        pass
    finally:
        done.set()


def _looks_like_id(key: str) -> bool:
    return len(key) == 32 and all(ch in "0123456789abcdef" for ch in key)


def _fresh_id() -> str:
    return new_id()


def _default_quantity(charge: Charge) -> float | None:
    if charge.model in ("PerUnit", "Volume", "Tiered"):
        return 1.0
    if charge.model == "FlatFee":
        return 1.0
    return None


def _apply_charge_update(row: Row, detail: dict[str, Any]) -> None:
    """Apply a chargeUpdateDetails entry (quantity/price) and refresh the derived metrics."""
    try:
        if detail.get("quantity") is not None:
            row["quantity"] = float(detail["quantity"])
        if detail.get("price") is not None:
            row["price"] = float(detail["price"])
    except (TypeError, ValueError):
        raise StoreError("53100020", "quantity and price must be numbers") from None
    row["version"] = (row["version"] or 1) + 1
    row["segment"] = (row["segment"] or 1) + 1
    price = row["price"] or 0.0
    qty = row["quantity"]
    amount = price * qty if qty is not None and row["chargemodel"] != "FlatFee" else price
    months = {"Month": 1, "Quarter": 3, "Annual": 12}.get(row["billingperiod"] or "", 0)
    if row["chargetype"] == "Recurring" and months and row["chargemodel"] != "DiscountPercentage":
        row["mrr"] = row["dmrc"] = round(amount / months, 6)
        row["tcv"] = row["dtcv"] = round(row["mrr"] * 12, 2)
    elif row["chargetype"] == "OneTime":
        row["tcv"] = row["dtcv"] = round(amount, 2)
