"""index callout_inbox.subscription_id: the drain claims whole subscriptions by id too

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_callout_inbox_subscription_id", "callout_inbox", ["subscription_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_callout_inbox_subscription_id", table_name="callout_inbox")
