"""What users read: analyst views, the read-only role, query indexes, stored nightly reports.

Revision ID: c7c3604d821e
Revises: 821f68655b41
Create Date: 2026-11-22 02:32:00

- `recon_report`: every nightly report built, with its summary and self-contained HTML.
- Indexes for the compliance queries, which look things up without a business date (by order,
  account, wallet, market): each leads with the looked-up value so a 5M-row day is not scanned;
  and by time alone, so "the newest trades" reads the end of an index instead of sorting a day.
- Views `v_exchange_fill`, `v_chain_fill`, `v_open_breaks`: the same definitions the `recon
  query` commands read, for analysts' own SQL.
- Role `recon_readonly` (NOLOGIN; grant it to analysts' login roles): SELECT on every table and
  view, including tables later migrations create. Roles are cluster-wide and other databases may
  use it, so downgrade revokes this database's grants and leaves the role.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "c7c3604d821e"
down_revision: str | Sequence[str] | None = "821f68655b41"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES: tuple[tuple[str, str, list[str]], ...] = (
    ("ix_execution_order_id", "execution", ["order_id"]),
    ("ix_execution_account_transact_time", "execution", ["account", "transact_time"]),
    ("ix_execution_transact_time", "execution", ["transact_time"]),
    ("ix_report_execution_order_id", "report_execution", ["order_id"]),
    ("ix_order_filled_user_address_event_time", "order_filled", ["user_address", "event_time"]),
    ("ix_order_filled_taker_address_event_time", "order_filled", ["taker_address", "event_time"]),
    ("ix_order_filled_condition_id_event_time", "order_filled", ["condition_id", "event_time"]),
    ("ix_order_filled_event_time", "order_filled", ["event_time"]),
    ("ix_fee_refund_user_address", "fee_refund", ["user_address"]),
    ("ix_recon_break_key", "recon_break", ["key"]),
)

# Prices, quantities and fees in dollars and contracts, exactly (NUMERIC), from raw venue units.
V_EXCHANGE_FILL = """
CREATE VIEW v_exchange_fill AS
SELECT e.business_date, e.transact_time, e.id AS execution_id, e.order_id, e.trade_id,
       e.account, e.symbol, e.side, e.exec_type, e.aggressor, e.source,
       e.last_shares, e.last_px, e.commission_notional_collected,
       trim_scale(e.last_shares::numeric / i.fractional_qty_scale) AS quantity,
       trim_scale(e.last_px::numeric / i.price_scale) AS price,
       trim_scale(e.last_shares::numeric * e.last_px
                  / (i.price_scale * i.fractional_qty_scale)) AS notional,
       trim_scale(e.commission_notional_collected::numeric
                  / (i.price_scale * i.fractional_qty_scale)) AS commission,
       t.state AS trade_state, coalesce(t.busted, false) AS busted
FROM execution AS e
LEFT JOIN instrument AS i ON i.symbol = e.symbol
LEFT JOIN trade_capture AS t ON t.business_date = e.business_date AND t.id = e.trade_id
WHERE e.exec_type IN ('EXECUTION_TYPE_FILL', 'EXECUTION_TYPE_PARTIAL_FILL')
"""

# Maker rows only (the taker aggregate repeats their shares). A V1 fill's refund is the one of
# the same transaction and order; V2 fees are already net.
V_CHAIN_FILL = """
CREATE VIEW v_chain_fill AS
SELECT o.business_date, o.event_time, o.tx_hash, o.log_index, o.order_hash,
       o.condition_id, o.market_slug, o.title, o.outcome, o.token_id, o.side,
       o.user_address AS maker_address, o.taker_address,
       o.shares, o.shares_normalized, o.price,
       o.shares_normalized * o.price AS notional,
       o.version, o.fee, r.refund, r.fee_charged,
       CASE WHEN o.version = 1 THEN o.fee - coalesce(r.refund, 0) ELSE o.fee END AS net_fee
FROM order_filled AS o
LEFT JOIN fee_refund AS r ON r.tx_hash = o.tx_hash AND r.order_hash = o.order_hash
WHERE o.role = 'maker'
"""

# Age buckets as in app.domain.breaks.age_bucket (whole days since first seen).
V_OPEN_BREAKS = """
CREATE VIEW v_open_breaks AS
SELECT b.id, b.kind, b.business_date, b.key, b.severity, b.status, b.occurrences,
       b.first_seen_at, b.last_seen_at, b.assignee, b.notes, b.expected, b.actual, b.details,
       a.age_days,
       CASE WHEN a.age_days <= 1 THEN '0-1' WHEN a.age_days <= 7 THEN '2-7'
            WHEN a.age_days <= 30 THEN '8-30' ELSE '>30' END AS age_bucket
FROM recon_break AS b
CROSS JOIN LATERAL (
    SELECT greatest(floor(extract(epoch FROM now() - b.first_seen_at) / 86400), 0)::integer
        AS age_days
) AS a
WHERE b.status IN ('open', 'acknowledged')
"""

VIEWS = ("v_exchange_fill", "v_chain_fill", "v_open_breaks")

CREATE_READONLY_ROLE = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'recon_readonly') THEN
        CREATE ROLE recon_readonly NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    -- Another database of the cluster created it at the same moment.
    NULL;
END $$
"""

GRANT_READONLY = """
DO $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO recon_readonly', current_schema());
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO recon_readonly', current_schema());
    EXECUTE format(
        'ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT ON TABLES TO recon_readonly',
        current_schema()
    );
END $$
"""

REVOKE_READONLY = """
DO $$
BEGIN
    EXECUTE format(
        'ALTER DEFAULT PRIVILEGES IN SCHEMA %I REVOKE SELECT ON TABLES FROM recon_readonly',
        current_schema()
    );
    EXECUTE format(
        'REVOKE SELECT ON ALL TABLES IN SCHEMA %I FROM recon_readonly', current_schema()
    );
    EXECUTE format('REVOKE USAGE ON SCHEMA %I FROM recon_readonly', current_schema());
END $$
"""


def upgrade() -> None:
    op.create_table(
        "recon_report",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column(
            "built_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("summary", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("html", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recon_report")),
    )
    op.create_index(
        op.f("ix_recon_report_business_date_built_at"),
        "recon_report",
        ["business_date", "built_at"],
        unique=False,
    )
    for name, table, columns in INDEXES:
        op.create_index(op.f(name), table, columns, unique=False)
    op.execute(V_EXCHANGE_FILL)
    op.execute(V_CHAIN_FILL)
    op.execute(V_OPEN_BREAKS)
    op.execute(CREATE_READONLY_ROLE)
    op.execute(GRANT_READONLY)


def downgrade() -> None:
    op.execute(REVOKE_READONLY)
    for view in reversed(VIEWS):
        op.execute(f"DROP VIEW {view}")
    for name, table, _ in reversed(INDEXES):
        op.drop_index(op.f(name), table_name=table)
    op.drop_index(op.f("ix_recon_report_business_date_built_at"), table_name="recon_report")
    op.drop_table("recon_report")
