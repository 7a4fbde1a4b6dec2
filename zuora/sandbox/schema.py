"""The simulated tenant's objects: Account, Subscription, RatePlan, RatePlanCharge.

One table per object, one row per record (a subscription has one row per version, as in
Zuora). Column names are the lowercase of the ZOQL field names, which is exactly how Data
Query names them; custom fields keep their `__c` suffix (`SupportTier__c` ->
`supporttier__c`). Columns marked private feed the REST responses but are not fields of the
object in ZOQL or Data Query (for instance a charge's price lives on RatePlanChargeTier at
Zuora).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Literal

Kind = Literal["text", "int", "real", "bool", "date", "datetime"]

# Bump when the seeded data or the table layout changes: it keys the on-disk cache.
DATA_FORMAT_VERSION = 5


@dataclass(frozen=True, slots=True)
class Column:
    """A field of a Zuora object: its ZOQL name, its kind and whether queries may see it."""

    name: str
    kind: Kind
    public: bool = True

    @property
    def sql(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Table:
    """A Zuora object as a table."""

    object_name: str
    columns: tuple[Column, ...]

    @property
    def sql(self) -> str:
        return self.object_name.lower()

    @property
    def public_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.public)

    def column(self, name: str) -> Column | None:
        """Find a public column by its ZOQL name, case-insensitively (ZOQL is lenient here)."""
        wanted = name.lower()
        for col in self.columns:
            if col.public and col.sql == wanted:
                return col
        return None

    def index_of(self, sql_name: str) -> int:
        for i, col in enumerate(self.columns):
            if col.sql == sql_name:
                return i
        raise KeyError(sql_name)


def _cols(spec: str) -> tuple[Column, ...]:
    """Parse 'Name:kind' words; a leading underscore marks a private column."""
    out = []
    for word in spec.split():
        name, kind = word.split(":")
        public = not name.startswith("_")
        out.append(Column(name.lstrip("_"), kind, public))  # type: ignore[arg-type]
    return tuple(out)


ACCOUNT = Table(
    "Account",
    _cols(
        "Id:text AccountNumber:text Name:text Status:text Currency:text BillCycleDay:int "
        "PaymentTerm:text AutoPay:bool Balance:real Batch:text CreatedDate:datetime "
        "UpdatedDate:datetime _FirstName:text _LastName:text _WorkEmail:text _Country:text "
        "_State:text _City:text _ContactId:text"
    ),
)

_SUBSCRIPTION_BASE = _cols(
    "Id:text Name:text AccountId:text InvoiceOwnerId:text Status:text Version:int "
    "Revision:text OriginalId:text PreviousSubscriptionId:text TermType:text InitialTerm:int "
    "InitialTermPeriodType:text CurrentTerm:int CurrentTermPeriodType:text RenewalTerm:int "
    "RenewalTermPeriodType:text RenewalSetting:text AutoRenew:bool ContractEffectiveDate:date "
    "ServiceActivationDate:date ContractAcceptanceDate:date SubscriptionStartDate:date "
    "SubscriptionEndDate:date TermStartDate:date TermEndDate:date CancelledDate:date "
    "IsInvoiceSeparate:bool Notes:text CreatedDate:datetime UpdatedDate:datetime _VersionSeq:int"
)

RATE_PLAN = Table(
    "RatePlan",
    _cols(
        "Id:text Name:text SubscriptionId:text ProductRatePlanId:text AmendmentType:text "
        "CreatedDate:datetime UpdatedDate:datetime _ProductId:text _ProductName:text "
        "_ProductSku:text _LastChangeType:text _RatePlanNumber:text _Seq:int "
        "_OriginalRatePlanId:text _VersionSeq:int"
    ),
)

RATE_PLAN_CHARGE = Table(
    "RatePlanCharge",
    _cols(
        "Id:text Name:text ChargeNumber:text RatePlanId:text OriginalId:text "
        "ProductRatePlanChargeId:text ChargeType:text ChargeModel:text BillingPeriod:text "
        "Quantity:real UOM:text MRR:real TCV:real DMRC:real DTCV:real EffectiveStartDate:date "
        "EffectiveEndDate:date ChargedThroughDate:date TriggerEvent:text Segment:int "
        "Version:int IsLastSegment:bool Description:text CreatedDate:datetime "
        "UpdatedDate:datetime _SubscriptionId:text _Price:real _ListPriceBase:text "
        "_BillingTiming:text _PricingSummary:text _Seq:int _VersionSeq:int"
    ),
)


def subscription_table(custom_fields: tuple[str, ...]) -> Table:
    """The Subscription object with this tenant's custom fields as extra columns."""
    return Table(
        "Subscription", _SUBSCRIPTION_BASE + tuple(Column(n, "text") for n in custom_fields)
    )


def tables(custom_fields: tuple[str, ...]) -> dict[str, Table]:
    """Every simulated object by its lowercase name."""
    found = [ACCOUNT, subscription_table(custom_fields), RATE_PLAN, RATE_PLAN_CHARGE]
    return {t.sql: t for t in found}


# The base keeps a version's rate plans and charges together on disk (clustered by the
# version's sequence number), so a GET reads one B-tree range for each.
_CLUSTERED = {
    "rateplan": "versionseq, seq, id",
    "rateplancharge": "versionseq, rateplanid, seq, id",
}


def create_sql(table: Table, schema: str = "main", *, base: bool = False) -> str:
    kinds = {"text": "TEXT", "int": "INTEGER", "real": "REAL", "bool": "INTEGER"}
    cols = ", ".join(f"{c.sql} {kinds.get(c.kind, 'TEXT')}" for c in table.columns)
    key = _CLUSTERED.get(table.sql) if base else None
    if key:
        return (
            f"CREATE TABLE IF NOT EXISTS {schema}.{table.sql} ({cols}, PRIMARY KEY ({key})) "
            "WITHOUT ROWID"
        )
    return f"CREATE TABLE IF NOT EXISTS {schema}.{table.sql} ({cols})"


# Indexes of the base; the overlay (small) indexes what its lookups need.
INDEXES = {
    "account": ["id"],
    "subscription": ["id", "name, version"],
    "rateplan": ["id"],
    "rateplancharge": ["id"],
}
OVERLAY_INDEXES = {
    "account": ["id"],
    "subscription": ["id", "name, version"],
    "rateplan": ["id", "subscriptionid"],
    "rateplancharge": ["id", "subscriptionid"],
}


# --- time ----------------------------------------------------------------------------------


def tenant_tz(offset: str) -> timezone:
    sign = -1 if offset.startswith("-") else 1
    hours, minutes = offset[1:].split(":")
    return timezone(sign * timedelta(hours=int(hours), minutes=int(minutes)))


def format_datetime(moment: datetime, tz: timezone) -> str:
    """Zuora's record format for datetimes: ISO 8601, milliseconds, the tenant's offset."""
    return moment.astimezone(tz).isoformat(timespec="milliseconds")


def now_text(tz: timezone) -> str:
    return format_datetime(datetime.now(UTC), tz)
