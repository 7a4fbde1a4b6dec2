"""initial schema: callout inbox, subscription cache, run log

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out here rather than imported, so this migration keeps its meaning if the models change.
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)
MONEY = sa.Numeric(28, 9).with_variant(sa.String(64), "sqlite")  # SQLite NUMERIC is a float
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER


def upgrade() -> None:
    op.create_table(
        "callout_inbox",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("dedup_key", sa.String(length=255), nullable=False),
        sa.Column("subscription_number", sa.String(length=64), nullable=True),
        sa.Column("subscription_id", sa.String(length=64), nullable=True),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("available_at", TIMESTAMP, nullable=False),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", TIMESTAMP, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("received_at", TIMESTAMP, nullable=False),
        sa.Column("processed_at", TIMESTAMP, nullable=True),
        sa.Column("replay_of", BIG_ID, nullable=True),
        sa.Column("replayed_as", BIG_ID, nullable=True),
        sa.CheckConstraint(
            "source IN ('callout', 'reconcile', 'replay')", name=op.f("ck_callout_inbox_source")
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'processing', 'done', 'dead')",
            name=op.f("ck_callout_inbox_status"),
        ),
        sa.CheckConstraint(
            "subscription_number IS NOT NULL OR subscription_id IS NOT NULL",
            name=op.f("ck_callout_inbox_has_key"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callout_inbox")),
        sa.UniqueConstraint("dedup_key", name=op.f("uq_callout_inbox_dedup_key")),
    )
    op.create_index(
        "ix_callout_inbox_claimable",
        "callout_inbox",
        ["status", "available_at"],
        unique=False,
        postgresql_where=sa.text("status IN ('pending', 'processing')"),
        sqlite_where=sa.text("status IN ('pending', 'processing')"),
    )
    op.create_index(
        "ix_callout_inbox_subscription_number",
        "callout_inbox",
        ["subscription_number"],
        unique=False,
    )
    op.create_table(
        "sync_runs",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.Column("params", JSON, nullable=False),
        sa.Column("counts", JSON, nullable=False),
        sa.Column("drift", JSON, nullable=True),
        sa.Column("watermark", TIMESTAMP, nullable=True),
        sa.Column("flow_run_id", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint("kind IN ('drain', 'reconcile')", name=op.f("ck_sync_runs_kind")),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed')", name=op.f("ck_sync_runs_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_runs")),
    )
    op.create_index(
        "ix_sync_runs_kind_started_at", "sync_runs", ["kind", "started_at"], unique=False
    )
    op.create_table(
        "zuora_subscriptions",
        sa.Column("subscription_number", sa.String(length=64), nullable=False),
        sa.Column("zuora_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("revision", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("account_id", sa.String(length=64), nullable=True),
        sa.Column("account_number", sa.String(length=64), nullable=True),
        sa.Column("account_name", sa.String(length=255), nullable=True),
        sa.Column("term_type", sa.String(length=16), nullable=True),
        sa.Column("contract_effective_date", sa.Date(), nullable=True),
        sa.Column("service_activation_date", sa.Date(), nullable=True),
        sa.Column("customer_acceptance_date", sa.Date(), nullable=True),
        sa.Column("subscription_start_date", sa.Date(), nullable=True),
        sa.Column("subscription_end_date", sa.Date(), nullable=True),
        sa.Column("term_start_date", sa.Date(), nullable=True),
        sa.Column("term_end_date", sa.Date(), nullable=True),
        sa.Column("initial_term", sa.Integer(), nullable=True),
        sa.Column("current_term", sa.Integer(), nullable=True),
        sa.Column("renewal_term", sa.Integer(), nullable=True),
        sa.Column("auto_renew", sa.Boolean(), nullable=True),
        sa.Column("currency", sa.String(length=8), nullable=True),
        sa.Column("custom_fields", JSON, nullable=False),
        sa.Column("raw", JSON, nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("fetched_at", TIMESTAMP, nullable=False),
        sa.Column("synced_at", TIMESTAMP, nullable=False),
        sa.Column("deleted_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("subscription_number", name=op.f("pk_zuora_subscriptions")),
    )
    op.create_index(
        "ix_zuora_subscriptions_zuora_id", "zuora_subscriptions", ["zuora_id"], unique=False
    )
    op.create_table(
        "zuora_rate_plans",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("subscription_number", sa.String(length=64), nullable=False),
        sa.Column("rate_plan_name", sa.String(length=255), nullable=True),
        sa.Column("product_id", sa.String(length=64), nullable=True),
        sa.Column("product_name", sa.String(length=255), nullable=True),
        sa.Column("product_sku", sa.String(length=64), nullable=True),
        sa.Column("product_rate_plan_id", sa.String(length=64), nullable=True),
        sa.Column("subscription_rate_plan_number", sa.String(length=64), nullable=True),
        sa.Column("last_change_type", sa.String(length=16), nullable=True),
        sa.Column("custom_fields", JSON, nullable=False),
        sa.Column("raw", JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["subscription_number"],
            ["zuora_subscriptions.subscription_number"],
            name=op.f("fk_zuora_rate_plans_subscription_number_zuora_subscriptions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_zuora_rate_plans")),
    )
    op.create_index(
        "ix_zuora_rate_plans_subscription_number",
        "zuora_rate_plans",
        ["subscription_number"],
        unique=False,
    )
    op.create_table(
        "zuora_rate_plan_charges",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("rate_plan_id", sa.String(length=64), nullable=False),
        sa.Column("subscription_number", sa.String(length=64), nullable=False),
        sa.Column("original_charge_id", sa.String(length=64), nullable=True),
        sa.Column("number", sa.String(length=64), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("product_rate_plan_charge_id", sa.String(length=64), nullable=True),
        sa.Column("type", sa.String(length=32), nullable=True),
        sa.Column("model", sa.String(length=64), nullable=True),
        sa.Column("price", MONEY, nullable=True),
        sa.Column("quantity", MONEY, nullable=True),
        sa.Column("uom", sa.String(length=64), nullable=True),
        sa.Column("currency", sa.String(length=8), nullable=True),
        sa.Column("billing_period", sa.String(length=32), nullable=True),
        sa.Column("segment", sa.Integer(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("effective_start_date", sa.Date(), nullable=True),
        sa.Column("effective_end_date", sa.Date(), nullable=True),
        sa.Column("charged_through_date", sa.Date(), nullable=True),
        sa.Column("mrr", MONEY, nullable=True),
        sa.Column("tcv", MONEY, nullable=True),
        sa.Column("custom_fields", JSON, nullable=False),
        sa.Column("raw", JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["rate_plan_id"],
            ["zuora_rate_plans.id"],
            name=op.f("fk_zuora_rate_plan_charges_rate_plan_id_zuora_rate_plans"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_zuora_rate_plan_charges")),
    )
    op.create_index(
        "ix_zuora_rate_plan_charges_rate_plan_id",
        "zuora_rate_plan_charges",
        ["rate_plan_id"],
        unique=False,
    )
    op.create_index(
        "ix_zuora_rate_plan_charges_subscription_number",
        "zuora_rate_plan_charges",
        ["subscription_number"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(
        "ix_zuora_rate_plan_charges_subscription_number", table_name="zuora_rate_plan_charges"
    )
    op.drop_index("ix_zuora_rate_plan_charges_rate_plan_id", table_name="zuora_rate_plan_charges")
    op.drop_table("zuora_rate_plan_charges")
    op.drop_index("ix_zuora_rate_plans_subscription_number", table_name="zuora_rate_plans")
    op.drop_table("zuora_rate_plans")
    op.drop_index("ix_zuora_subscriptions_zuora_id", table_name="zuora_subscriptions")
    op.drop_table("zuora_subscriptions")
    op.drop_index("ix_sync_runs_kind_started_at", table_name="sync_runs")
    op.drop_table("sync_runs")
    op.drop_index("ix_callout_inbox_subscription_number", table_name="callout_inbox")
    op.drop_index(
        "ix_callout_inbox_claimable",
        table_name="callout_inbox",
        postgresql_where=sa.text("status IN ('pending', 'processing')"),
        sqlite_where=sa.text("status IN ('pending', 'processing')"),
    )
    op.drop_table("callout_inbox")
