"""The warehouse schema: the callout inbox, the subscription cache and the run log.

Table and column names are a contract (DESIGN.md "Tables"): the app that reads the cache,
the docs and the operators' queries use them.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from warehouse.types import JSONType, Money, UTCDateTime

# Deterministic constraint names keep Alembic migrations identical across databases.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

INBOX_SOURCES = ("callout", "reconcile", "replay")
INBOX_STATUSES = ("pending", "processing", "done", "dead")

# BIGINT on PostgreSQL, but SQLite only auto-increments a column declared INTEGER.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSONType, datetime: UTCDateTime(), Decimal: Money()}


class CalloutInbox(Base):
    """One row per received callout, enqueued drift or replay; the drain's work queue."""

    __tablename__ = "callout_inbox"
    __table_args__ = (
        CheckConstraint(f"source IN {INBOX_SOURCES!r}", name="source"),
        CheckConstraint(f"status IN {INBOX_STATUSES!r}", name="status"),
        CheckConstraint(
            "subscription_number IS NOT NULL OR subscription_id IS NOT NULL", name="has_key"
        ),
        # The claim scans only live rows; done and dead rows do not slow it down.
        Index(
            "ix_callout_inbox_claimable",
            "status",
            "available_at",
            postgresql_where=text("status IN ('pending', 'processing')"),
            sqlite_where=text("status IN ('pending', 'processing')"),
        ),
        Index("ix_callout_inbox_subscription_number", "subscription_number"),
        Index("ix_callout_inbox_subscription_id", "subscription_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(16))
    dedup_key: Mapped[str] = mapped_column(String(255), unique=True)
    subscription_number: Mapped[str | None] = mapped_column(String(64))
    subscription_id: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    available_at: Mapped[datetime]
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime]
    processed_at: Mapped[datetime | None]
    replay_of: Mapped[int | None] = mapped_column(BigId)
    replayed_as: Mapped[int | None] = mapped_column(BigId)


class ZuoraSubscription(Base):
    """The latest version of each subscription, keyed by its stable number."""

    __tablename__ = "zuora_subscriptions"
    __table_args__ = (Index("ix_zuora_subscriptions_zuora_id", "zuora_id"),)

    subscription_number: Mapped[str] = mapped_column(String(64), primary_key=True)
    zuora_id: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    revision: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str | None] = mapped_column(String(32))
    account_id: Mapped[str | None] = mapped_column(String(64))
    account_number: Mapped[str | None] = mapped_column(String(64))
    account_name: Mapped[str | None] = mapped_column(String(255))
    term_type: Mapped[str | None] = mapped_column(String(16))
    contract_effective_date: Mapped[date | None] = mapped_column(Date)
    service_activation_date: Mapped[date | None] = mapped_column(Date)
    customer_acceptance_date: Mapped[date | None] = mapped_column(Date)
    subscription_start_date: Mapped[date | None] = mapped_column(Date)
    subscription_end_date: Mapped[date | None] = mapped_column(Date)
    term_start_date: Mapped[date | None] = mapped_column(Date)
    term_end_date: Mapped[date | None] = mapped_column(Date)
    initial_term: Mapped[int | None] = mapped_column(Integer)
    current_term: Mapped[int | None] = mapped_column(Integer)
    renewal_term: Mapped[int | None] = mapped_column(Integer)
    auto_renew: Mapped[bool | None] = mapped_column(Boolean)
    currency: Mapped[str | None] = mapped_column(String(8))
    custom_fields: Mapped[dict[str, Any]] = mapped_column(default=dict)
    raw: Mapped[dict[str, Any]]
    content_hash: Mapped[str] = mapped_column(String(64))
    fetched_at: Mapped[datetime]
    synced_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None]


class ZuoraRatePlan(Base):
    __tablename__ = "zuora_rate_plans"
    __table_args__ = (Index("ix_zuora_rate_plans_subscription_number", "subscription_number"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    subscription_number: Mapped[str] = mapped_column(
        String(64), ForeignKey("zuora_subscriptions.subscription_number", ondelete="CASCADE")
    )
    rate_plan_name: Mapped[str | None] = mapped_column(String(255))
    product_id: Mapped[str | None] = mapped_column(String(64))
    product_name: Mapped[str | None] = mapped_column(String(255))
    product_sku: Mapped[str | None] = mapped_column(String(64))
    product_rate_plan_id: Mapped[str | None] = mapped_column(String(64))
    subscription_rate_plan_number: Mapped[str | None] = mapped_column(String(64))
    last_change_type: Mapped[str | None] = mapped_column(String(16))
    custom_fields: Mapped[dict[str, Any]] = mapped_column(default=dict)
    raw: Mapped[dict[str, Any]]


class ZuoraRatePlanCharge(Base):
    __tablename__ = "zuora_rate_plan_charges"
    __table_args__ = (
        Index("ix_zuora_rate_plan_charges_rate_plan_id", "rate_plan_id"),
        Index("ix_zuora_rate_plan_charges_subscription_number", "subscription_number"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    rate_plan_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("zuora_rate_plans.id", ondelete="CASCADE")
    )
    subscription_number: Mapped[str] = mapped_column(String(64))
    original_charge_id: Mapped[str | None] = mapped_column(String(64))
    number: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(255))
    product_rate_plan_charge_id: Mapped[str | None] = mapped_column(String(64))
    type: Mapped[str | None] = mapped_column(String(32))
    model: Mapped[str | None] = mapped_column(String(64))
    price: Mapped[Decimal | None]
    quantity: Mapped[Decimal | None]
    uom: Mapped[str | None] = mapped_column(String(64))
    currency: Mapped[str | None] = mapped_column(String(8))
    billing_period: Mapped[str | None] = mapped_column(String(32))
    segment: Mapped[int | None] = mapped_column(Integer)
    version: Mapped[int | None] = mapped_column(Integer)
    effective_start_date: Mapped[date | None] = mapped_column(Date)
    effective_end_date: Mapped[date | None] = mapped_column(Date)
    charged_through_date: Mapped[date | None] = mapped_column(Date)
    mrr: Mapped[Decimal | None]
    tcv: Mapped[Decimal | None]
    custom_fields: Mapped[dict[str, Any]] = mapped_column(default=dict)
    raw: Mapped[dict[str, Any]]


class SyncRun(Base):
    """One row per drain or reconcile run: what it did and, for reconcile, what drifted."""

    __tablename__ = "sync_runs"
    __table_args__ = (
        CheckConstraint("kind IN ('drain', 'reconcile')", name="kind"),
        CheckConstraint("status IN ('running', 'succeeded', 'failed')", name="status"),
        Index("ix_sync_runs_kind_started_at", "kind", "started_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    mode: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="running")
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    drift: Mapped[dict[str, Any] | None]
    watermark: Mapped[datetime | None]
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)


# The tables themselves, for Core statements (the queue and the upsert do not use the ORM).
inbox = cast(Table, CalloutInbox.__table__)
subscriptions = cast(Table, ZuoraSubscription.__table__)
rate_plans = cast(Table, ZuoraRatePlan.__table__)
charges = cast(Table, ZuoraRatePlanCharge.__table__)
sync_runs = cast(Table, SyncRun.__table__)
