"""APScheduler's job store table, made by the migrations rather than by the scheduler.

Revision ID: 4c1d9e2b7f30
Revises: e3a8f1c06b27
Create Date: 2026-11-22 08:00:00

The job store creates its table at start when it is missing, which the application role
(`recon_app`, no CREATE on the schema) may not do: `recon scheduler` logged in as the application
failed with "permission denied for schema". The table is APScheduler 3's own shape (its create
then finds it and does nothing); one made earlier by a scheduler is kept as it is, and
downgrading drops it. Like every
other table it belongs to `recon_owner` where the migrating role may hand it over, and
`recon_app` reads and writes its rows.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "4c1d9e2b7f30"
down_revision: str | Sequence[str] | None = "e3a8f1c06b27"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "CREATE TABLE IF NOT EXISTS apscheduler_jobs ("
        " id VARCHAR(191) NOT NULL PRIMARY KEY,"
        " next_run_time FLOAT(25),"
        " job_state BYTEA NOT NULL)"
    )
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_apscheduler_jobs_next_run_time "
        "ON apscheduler_jobs (next_run_time)"
    )
    op.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON apscheduler_jobs TO recon_app")
    op.execute(
        """
DO $$
BEGIN
    ALTER TABLE apscheduler_jobs OWNER TO recon_owner;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'apscheduler_jobs stays owned by %: it may not be given to recon_owner',
        current_user;
END $$
"""
    )


def downgrade() -> None:
    # Jobs are rebuilt from settings at every scheduler start; a scheduler run as the migrator
    # makes the table again.
    op.execute("DROP TABLE IF EXISTS apscheduler_jobs")
