"""Ingest indexes: drop two nothing reads, add one that keeps superseding cheap at any day size.

- order_filled (business_date, user_address): every insert paid for it, no query used it (wallet
  lookups go through (user_address, event_time), a day's fee totals scan the day's partition).
- execution and report_execution (business_date, order_id): (order_id) serves every lookup of
  an order, which has a handful of executions, with or without its date.
- order_filled_pending (business_date, tx_hash, order_hash) WHERE superseded_at IS NULL: every
  confirmed fill probes for a pending row to supersede; nearly all pending rows are superseded
  within seconds, so this index holds only the few in flight, where the primary key's probes
  turn into random reads once a day's pending rows outgrow the cache.

Revision ID: 9d41c2e7a6b0
Revises: 5b0e7f3a9c21
Create Date: 2026-11-22 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9d41c2e7a6b0"
down_revision: str | Sequence[str] | None = "5b0e7f3a9c21"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


DATED_ORDER_ID = ("execution", "report_execution")


def upgrade() -> None:
    op.drop_index(op.f("ix_order_filled_business_date_user_address"), table_name="order_filled")
    for table in DATED_ORDER_ID:
        op.drop_index(op.f(f"ix_{table}_business_date_order_id"), table_name=table)
    op.create_index(
        "ix_order_filled_pending_unsuperseded",
        "order_filled_pending",
        ["business_date", "tx_hash", "order_hash"],
        unique=False,
        postgresql_where=sa.text("superseded_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_order_filled_pending_unsuperseded", table_name="order_filled_pending")
    for table in DATED_ORDER_ID:
        op.create_index(
            op.f(f"ix_{table}_business_date_order_id"),
            table,
            ["business_date", "order_id"],
            unique=False,
        )
    op.create_index(
        op.f("ix_order_filled_business_date_user_address"),
        "order_filled",
        ["business_date", "user_address"],
        unique=False,
    )
