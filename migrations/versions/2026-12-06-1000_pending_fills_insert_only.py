"""Pending fills are written once: superseded_at and the index of unsuperseded rows go (issue #4).

Revision ID: 7d0c2a9e5b13
Revises: 2feb5a1adc98
Create Date: 2026-12-06 10:00:00

A confirmed order_filled supersedes the pending row of its (tx_hash, order_hash). The writer used
to record that in the pending row: every confirmation UPDATEd it, and the update could not be HOT
(the partial index's predicate reads superseded_at), so each of the day's ~1.5M pending rows was
written twice with two primary-key entries, plus its entry in the partial index and the lookups
that found it. Readers now look the confirmation up (`models.pending_confirmed`) and the table is
insert-only. Measured with scripts/bench_ingest.py at 5M events, Postgres defaults, 2 cores:
37.9 -> 31.3 us of Postgres CPU per event before the index was dropped too.

Downgrade puts the column back and fills it with the confirmation's received_at.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7d0c2a9e5b13"
down_revision: str | Sequence[str] | None = "2feb5a1adc98"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_order_filled_pending_unsuperseded", table_name="order_filled_pending")
    op.drop_column("order_filled_pending", "superseded_at")


def downgrade() -> None:
    op.add_column(
        "order_filled_pending",
        sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.execute(
        "UPDATE order_filled_pending AS p SET superseded_at = ("
        "SELECT min(c.received_at) FROM order_filled AS c "
        "WHERE c.tx_hash = p.tx_hash AND c.order_hash = p.order_hash "
        "AND c.business_date = ANY(ARRAY[p.business_date - 1, p.business_date, "
        "p.business_date + 1]))"
    )
    op.create_index(
        "ix_order_filled_pending_unsuperseded",
        "order_filled_pending",
        ["business_date", "tx_hash", "order_hash"],
        unique=False,
        postgresql_where=sa.text("superseded_at IS NULL"),
    )
