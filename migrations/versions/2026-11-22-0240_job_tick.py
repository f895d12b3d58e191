"""Scheduler ticks: one row per (job, tick) so that replicas run each scheduled tick once.

Revision ID: 5b0e7f3a9c21
Revises: c7c3604d821e
Create Date: 2026-11-22 02:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5b0e7f3a9c21"
down_revision: str | Sequence[str] | None = "c7c3604d821e"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_tick",
        sa.Column("job", sa.Text(), nullable=False),
        sa.Column("tick", sa.Text(), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column(
            "claimed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("job", "tick", name=op.f("pk_job_tick")),
    )


def downgrade() -> None:
    op.drop_table("job_tick")
    op.execute("DROP TABLE IF EXISTS apscheduler_jobs")
