"""Initial schema: exchange and chain facts (partitioned by day), ingest bookkeeping, recon.

Revision ID: 821f68655b41
Revises:
Create Date: 2026-11-22 02:27:59.629139

Besides the tables this creates two pieces of SQL the models cannot express:
- `ensure_partitions(d date)`: creates day `d`'s partition of every table partitioned by
  RANGE (business_date) in the current schema, so later migrations' tables are covered too;
- the append-only trigger on `break_audit`.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "821f68655b41"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ENSURE_PARTITIONS = """
CREATE FUNCTION ensure_partitions(d date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    parent record;
    child text;
    created integer := 0;
BEGIN
    FOR parent IN
        SELECT n.nspname AS schema_name, c.relname AS table_name
        FROM pg_partitioned_table AS p
        JOIN pg_class AS c ON c.oid = p.partrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = current_schema()
          AND NOT c.relispartition
          AND pg_get_partkeydef(p.partrelid) = 'RANGE (business_date)'
        ORDER BY c.relname
    LOOP
        child := parent.table_name || '_p' || to_char(d, 'YYYYMMDD');
        -- The common case, the partition exists, takes no lock: creating one locks the parent
        -- ACCESS EXCLUSIVE, so concurrent creators queue there and all but the first then fail
        -- with duplicate_table.
        CONTINUE WHEN to_regclass(format('%I.%I', parent.schema_name, child)) IS NOT NULL;
        BEGIN
            EXECUTE format(
                'CREATE TABLE %I.%I PARTITION OF %I.%I FOR VALUES FROM (%L) TO (%L)',
                parent.schema_name, child, parent.schema_name, parent.table_name, d, d + 1
            );
            created := created + 1;
        EXCEPTION WHEN duplicate_table THEN
            -- Another caller made it after our look: the outcome we wanted, not ours to count.
            NULL;
        END;
    END LOOP;
    RETURN created;
END;
$$;

COMMENT ON FUNCTION ensure_partitions(date) IS
    'Create day d''s partition of every table partitioned by RANGE (business_date); '
    'idempotent; returns how many it created. Call it in its own short transaction.';
"""

BREAK_AUDIT_APPEND_ONLY = """
CREATE FUNCTION break_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'break_audit is append-only: % refused', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;

-- Statement level, so even an UPDATE or DELETE that matches no row is refused.
CREATE TRIGGER break_audit_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON break_audit
    FOR EACH STATEMENT EXECUTE FUNCTION break_audit_append_only();
"""


def upgrade() -> None:
    op.create_table(
        "dead_letter",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letter")),
    )
    op.create_index(
        op.f("ix_dead_letter_source_received_at"),
        "dead_letter",
        ["source", "received_at"],
        unique=False,
    )
    op.create_table(
        "execution",
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("clord_id", sa.Text(), nullable=True),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("side", sa.Text(), nullable=False),
        sa.Column("order_type", sa.Text(), nullable=False),
        sa.Column("time_in_force", sa.Text(), nullable=False),
        sa.Column("order_qty", sa.BigInteger(), nullable=False),
        sa.Column("order_price", sa.BigInteger(), nullable=False),
        sa.Column("cum_qty", sa.BigInteger(), nullable=False),
        sa.Column("leaves_qty", sa.BigInteger(), nullable=False),
        sa.Column("avg_px", sa.BigInteger(), nullable=False),
        sa.Column("order_state", sa.Text(), nullable=False),
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("participant", sa.Text(), nullable=True),
        sa.Column("exec_type", sa.Text(), nullable=False),
        sa.Column("last_shares", sa.BigInteger(), nullable=False),
        sa.Column("last_px", sa.BigInteger(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("transact_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("trade_id", sa.Text(), nullable=True),
        sa.Column("aggressor", sa.Boolean(), nullable=False),
        sa.Column("commission_notional_collected", sa.BigInteger(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "source IN ('dropcopy', 'report_backfill')", name=op.f("ck_execution_source")
        ),
        sa.CheckConstraint("avg_px >= 0", name=op.f("ck_execution_avg_px_non_negative")),
        sa.CheckConstraint("cum_qty >= 0", name=op.f("ck_execution_cum_qty_non_negative")),
        sa.CheckConstraint("last_px >= 0", name=op.f("ck_execution_last_px_non_negative")),
        sa.CheckConstraint("last_shares >= 0", name=op.f("ck_execution_last_shares_non_negative")),
        sa.CheckConstraint("leaves_qty >= 0", name=op.f("ck_execution_leaves_qty_non_negative")),
        sa.CheckConstraint("order_price >= 0", name=op.f("ck_execution_order_price_non_negative")),
        sa.CheckConstraint("order_qty >= 0", name=op.f("ck_execution_order_qty_non_negative")),
        sa.PrimaryKeyConstraint("business_date", "id", name=op.f("pk_execution")),
        postgresql_partition_by="RANGE (business_date)",
    )
    op.create_index(
        op.f("ix_execution_business_date_account_symbol"),
        "execution",
        ["business_date", "account", "symbol"],
        unique=False,
    )
    op.create_index(
        op.f("ix_execution_business_date_order_id"),
        "execution",
        ["business_date", "order_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_execution_business_date_trade_id"),
        "execution",
        ["business_date", "trade_id"],
        unique=False,
    )
    op.create_table(
        "fee_refund",
        sa.Column("tx_hash", sa.Text(), nullable=False),
        sa.Column("order_hash", sa.Text(), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("user_address", sa.Text(), nullable=False),
        sa.Column("token_id", sa.Text(), nullable=True),
        sa.Column("condition_id", sa.Text(), nullable=True),
        sa.Column("market_slug", sa.Text(), nullable=True),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("refund", sa.Numeric(), nullable=False),
        sa.Column("fee_charged", sa.Numeric(), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("fee_charged >= 0", name=op.f("ck_fee_refund_fee_charged_non_negative")),
        sa.CheckConstraint("refund >= 0", name=op.f("ck_fee_refund_refund_non_negative")),
        sa.PrimaryKeyConstraint("tx_hash", "order_hash", name=op.f("pk_fee_refund")),
    )
    op.create_index(
        op.f("ix_fee_refund_business_date"), "fee_refund", ["business_date"], unique=False
    )
    op.create_index(op.f("ix_fee_refund_order_hash"), "fee_refund", ["order_hash"], unique=False)
    op.create_table(
        "feed_trade",
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("tx_hash", sa.Text(), nullable=False),
        sa.Column("order_hash", sa.Text(), nullable=False),
        sa.Column("asset_id", sa.Text(), nullable=False),
        sa.Column("condition_id", sa.Text(), nullable=False),
        sa.Column("market_slug", sa.Text(), nullable=True),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("shares", sa.Numeric(), nullable=False),
        sa.Column("shares_normalized", sa.Numeric(), nullable=False),
        sa.Column("price", sa.Numeric(), nullable=False),
        sa.Column("user_address", sa.Text(), nullable=False),
        sa.Column("taker_address", sa.Text(), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("feed_source", sa.Text(), nullable=True),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "price BETWEEN 0 AND 1", name=op.f("ck_feed_trade_price_between_0_and_1")
        ),
        sa.CheckConstraint("shares >= 0", name=op.f("ck_feed_trade_shares_non_negative")),
        sa.CheckConstraint(
            "shares_normalized >= 0", name=op.f("ck_feed_trade_shares_normalized_non_negative")
        ),
        sa.PrimaryKeyConstraint(
            "business_date", "tx_hash", "order_hash", name=op.f("pk_feed_trade")
        ),
        postgresql_partition_by="RANGE (business_date)",
    )
    op.create_table(
        "gap_window",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "detected_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("backfilled_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("end_time >= start_time", name=op.f("ck_gap_window_window_ordered")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gap_window")),
    )
    op.create_index(
        op.f("ix_gap_window_source_backfilled_at"),
        "gap_window",
        ["source", "backfilled_at"],
        unique=False,
    )
    op.create_table(
        "instrument",
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("price_scale", sa.BigInteger(), nullable=False),
        sa.Column("fractional_qty_scale", sa.BigInteger(), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "fractional_qty_scale > 0", name=op.f("ck_instrument_fractional_qty_scale_positive")
        ),
        sa.CheckConstraint("price_scale > 0", name=op.f("ck_instrument_price_scale_positive")),
        sa.PrimaryKeyConstraint("symbol", name=op.f("pk_instrument")),
    )
    op.create_table(
        "instrument_state_change",
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("price_scale", sa.BigInteger(), nullable=False),
        sa.Column("fractional_qty_scale", sa.BigInteger(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint(
            "business_date",
            "symbol",
            "update_time",
            "state",
            name=op.f("pk_instrument_state_change"),
        ),
        postgresql_partition_by="RANGE (business_date)",
    )
    op.create_table(
        "net_fee_daily",
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("scope_key", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("gross_fee", sa.Numeric(), nullable=False),
        sa.Column("refund", sa.Numeric(), nullable=False),
        sa.Column("net_fee", sa.Numeric(), nullable=False),
        sa.Column("fills", sa.BigInteger(), nullable=False),
        sa.Column(
            "computed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "scope IN ('account', 'wallet', 'market')", name=op.f("ck_net_fee_daily_scope")
        ),
        sa.CheckConstraint("source IN ('exchange', 'chain')", name=op.f("ck_net_fee_daily_source")),
        sa.CheckConstraint("fills >= 0", name=op.f("ck_net_fee_daily_fills_non_negative")),
        sa.CheckConstraint(
            "net_fee = gross_fee - refund",
            name=op.f("ck_net_fee_daily_net_fee_is_gross_minus_refund"),
        ),
        sa.CheckConstraint("refund >= 0", name=op.f("ck_net_fee_daily_refund_non_negative")),
        sa.PrimaryKeyConstraint(
            "business_date", "scope", "scope_key", "source", name=op.f("pk_net_fee_daily")
        ),
    )
    op.create_table(
        "order_filled",
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("tx_hash", sa.Text(), nullable=False),
        sa.Column("order_hash", sa.Text(), nullable=False),
        sa.Column("token_id", sa.Text(), nullable=False),
        sa.Column("token_label", sa.Text(), nullable=True),
        sa.Column("complement_token_id", sa.Text(), nullable=True),
        sa.Column("complement_token_label", sa.Text(), nullable=True),
        sa.Column("side", sa.Text(), nullable=False),
        sa.Column("market_slug", sa.Text(), nullable=True),
        sa.Column("condition_id", sa.Text(), nullable=False),
        sa.Column("market_id", sa.Text(), nullable=True),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("outcome_index", sa.Integer(), nullable=True),
        sa.Column("is_neg_risk", sa.Boolean(), nullable=True),
        sa.Column("shares", sa.BigInteger(), nullable=False),
        sa.Column("shares_normalized", sa.Numeric(), nullable=False),
        sa.Column("price", sa.Numeric(), nullable=False),
        sa.Column("fee", sa.Numeric(), nullable=False),
        sa.Column("user_address", sa.Text(), nullable=False),
        sa.Column("taker_address", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("version", sa.SmallInteger(), nullable=False),
        sa.Column("builder", sa.Text(), nullable=True),
        sa.Column("metadata", sa.Text(), nullable=True),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("log_index", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("role IN ('maker', 'taker')", name=op.f("ck_order_filled_role")),
        sa.CheckConstraint("log_index >= 0", name=op.f("ck_order_filled_log_index_non_negative")),
        sa.CheckConstraint(
            "price BETWEEN 0 AND 1", name=op.f("ck_order_filled_price_between_0_and_1")
        ),
        sa.CheckConstraint("shares >= 0", name=op.f("ck_order_filled_shares_non_negative")),
        sa.CheckConstraint(
            "shares_normalized >= 0", name=op.f("ck_order_filled_shares_normalized_non_negative")
        ),
        sa.CheckConstraint("version >= 1", name=op.f("ck_order_filled_version_positive")),
        sa.PrimaryKeyConstraint(
            "business_date", "tx_hash", "log_index", name=op.f("pk_order_filled")
        ),
        postgresql_partition_by="RANGE (business_date)",
    )
    op.create_index(
        op.f("ix_order_filled_business_date_order_hash"),
        "order_filled",
        ["business_date", "order_hash"],
        unique=False,
    )
    op.create_index(
        op.f("ix_order_filled_business_date_user_address"),
        "order_filled",
        ["business_date", "user_address"],
        unique=False,
    )
    op.create_table(
        "order_filled_pending",
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("tx_hash", sa.Text(), nullable=False),
        sa.Column("order_hash", sa.Text(), nullable=False),
        sa.Column("token_id", sa.Text(), nullable=False),
        sa.Column("token_label", sa.Text(), nullable=True),
        sa.Column("complement_token_id", sa.Text(), nullable=True),
        sa.Column("complement_token_label", sa.Text(), nullable=True),
        sa.Column("side", sa.Text(), nullable=False),
        sa.Column("market_slug", sa.Text(), nullable=True),
        sa.Column("condition_id", sa.Text(), nullable=False),
        sa.Column("market_id", sa.Text(), nullable=True),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("outcome_index", sa.Integer(), nullable=True),
        sa.Column("is_neg_risk", sa.Boolean(), nullable=True),
        sa.Column("shares", sa.BigInteger(), nullable=False),
        sa.Column("shares_normalized", sa.Numeric(), nullable=False),
        sa.Column("price", sa.Numeric(), nullable=False),
        sa.Column("fee", sa.Numeric(), nullable=False),
        sa.Column("user_address", sa.Text(), nullable=False),
        sa.Column("taker_address", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("version", sa.SmallInteger(), nullable=False),
        sa.Column("builder", sa.Text(), nullable=True),
        sa.Column("metadata", sa.Text(), nullable=True),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("role IN ('maker', 'taker')", name=op.f("ck_order_filled_pending_role")),
        sa.CheckConstraint(
            "price BETWEEN 0 AND 1", name=op.f("ck_order_filled_pending_price_between_0_and_1")
        ),
        sa.CheckConstraint("shares >= 0", name=op.f("ck_order_filled_pending_shares_non_negative")),
        sa.CheckConstraint(
            "shares_normalized >= 0",
            name=op.f("ck_order_filled_pending_shares_normalized_non_negative"),
        ),
        sa.CheckConstraint("version >= 1", name=op.f("ck_order_filled_pending_version_positive")),
        sa.PrimaryKeyConstraint(
            "business_date", "tx_hash", "order_hash", name=op.f("pk_order_filled_pending")
        ),
        postgresql_partition_by="RANGE (business_date)",
    )
    op.create_table(
        "position_change",
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("net_position", sa.BigInteger(), nullable=False),
        sa.Column("qty_bought", sa.BigInteger(), nullable=False),
        sa.Column("qty_sold", sa.BigInteger(), nullable=False),
        sa.Column("cost", sa.BigInteger(), nullable=False),
        sa.Column("realized", sa.BigInteger(), nullable=False),
        sa.Column("bod_position", sa.BigInteger(), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("change_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "qty_bought >= 0", name=op.f("ck_position_change_qty_bought_non_negative")
        ),
        sa.CheckConstraint("qty_sold >= 0", name=op.f("ck_position_change_qty_sold_non_negative")),
        sa.PrimaryKeyConstraint(
            "business_date", "account", "symbol", "change_time", name=op.f("pk_position_change")
        ),
        postgresql_partition_by="RANGE (business_date)",
    )
    op.create_table(
        "recon_run",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("job", sa.Text(), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column(
            "started_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.Text(), server_default=sa.text("'running'"), nullable=False),
        sa.Column(
            "counts",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "timings",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "(status = 'running') = (finished_at IS NULL)",
            name=op.f("ck_recon_run_finished_iff_not_running"),
        ),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed')", name=op.f("ck_recon_run_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recon_run")),
    )
    op.create_index(
        op.f("ix_recon_run_job_business_date"), "recon_run", ["job", "business_date"], unique=False
    )
    op.create_table(
        "report_execution",
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("clord_id", sa.Text(), nullable=True),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("side", sa.Text(), nullable=False),
        sa.Column("order_type", sa.Text(), nullable=False),
        sa.Column("time_in_force", sa.Text(), nullable=False),
        sa.Column("order_qty", sa.BigInteger(), nullable=False),
        sa.Column("order_price", sa.BigInteger(), nullable=False),
        sa.Column("cum_qty", sa.BigInteger(), nullable=False),
        sa.Column("leaves_qty", sa.BigInteger(), nullable=False),
        sa.Column("avg_px", sa.BigInteger(), nullable=False),
        sa.Column("order_state", sa.Text(), nullable=False),
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("participant", sa.Text(), nullable=True),
        sa.Column("exec_type", sa.Text(), nullable=False),
        sa.Column("last_shares", sa.BigInteger(), nullable=False),
        sa.Column("last_px", sa.BigInteger(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("transact_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("trade_id", sa.Text(), nullable=True),
        sa.Column("aggressor", sa.Boolean(), nullable=False),
        sa.Column("commission_notional_collected", sa.BigInteger(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column(
            "fetched_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("avg_px >= 0", name=op.f("ck_report_execution_avg_px_non_negative")),
        sa.CheckConstraint("cum_qty >= 0", name=op.f("ck_report_execution_cum_qty_non_negative")),
        sa.CheckConstraint("last_px >= 0", name=op.f("ck_report_execution_last_px_non_negative")),
        sa.CheckConstraint(
            "last_shares >= 0", name=op.f("ck_report_execution_last_shares_non_negative")
        ),
        sa.CheckConstraint(
            "leaves_qty >= 0", name=op.f("ck_report_execution_leaves_qty_non_negative")
        ),
        sa.CheckConstraint(
            "order_price >= 0", name=op.f("ck_report_execution_order_price_non_negative")
        ),
        sa.CheckConstraint(
            "order_qty >= 0", name=op.f("ck_report_execution_order_qty_non_negative")
        ),
        sa.PrimaryKeyConstraint("business_date", "id", name=op.f("pk_report_execution")),
        postgresql_partition_by="RANGE (business_date)",
    )
    op.create_index(
        op.f("ix_report_execution_business_date_account_symbol"),
        "report_execution",
        ["business_date", "account", "symbol"],
        unique=False,
    )
    op.create_index(
        op.f("ix_report_execution_business_date_order_id"),
        "report_execution",
        ["business_date", "order_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_report_execution_business_date_trade_id"),
        "report_execution",
        ["business_date", "trade_id"],
        unique=False,
    )
    op.create_table(
        "report_position",
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("net_position", sa.BigInteger(), nullable=False),
        sa.Column("qty_bought", sa.BigInteger(), nullable=False),
        sa.Column("qty_sold", sa.BigInteger(), nullable=False),
        sa.Column("cost", sa.BigInteger(), nullable=False),
        sa.Column("realized", sa.BigInteger(), nullable=False),
        sa.Column("bod_position", sa.BigInteger(), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint(
            "qty_bought >= 0", name=op.f("ck_report_position_qty_bought_non_negative")
        ),
        sa.CheckConstraint("qty_sold >= 0", name=op.f("ck_report_position_qty_sold_non_negative")),
        sa.PrimaryKeyConstraint("as_of", "account", "symbol", name=op.f("pk_report_position")),
    )
    op.create_table(
        "report_trade",
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("trade_type", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("trade_link_id", sa.Text(), nullable=True),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("aggressor_execution_id", sa.Text(), nullable=False),
        sa.Column("passive_execution_id", sa.Text(), nullable=False),
        sa.Column("aggressor_account", sa.Text(), nullable=False),
        sa.Column("passive_account", sa.Text(), nullable=False),
        sa.Column("aggressor_side", sa.Text(), nullable=False),
        sa.Column("last_shares", sa.BigInteger(), nullable=False),
        sa.Column("last_px", sa.BigInteger(), nullable=False),
        sa.Column("aggressor_commission", sa.BigInteger(), nullable=False),
        sa.Column("passive_commission", sa.BigInteger(), nullable=False),
        sa.Column("transact_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("busted", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column(
            "fetched_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("last_px >= 0", name=op.f("ck_report_trade_last_px_non_negative")),
        sa.CheckConstraint(
            "last_shares >= 0", name=op.f("ck_report_trade_last_shares_non_negative")
        ),
        sa.PrimaryKeyConstraint("business_date", "id", name=op.f("pk_report_trade")),
        postgresql_partition_by="RANGE (business_date)",
    )
    op.create_table(
        "stream_checkpoint",
        sa.Column("stream", sa.Text(), nullable=False),
        sa.Column("resume_token", sa.LargeBinary(), nullable=True),
        sa.Column("last_event_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("events_total", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("stream", name=op.f("pk_stream_checkpoint")),
    )
    op.create_table(
        "trade_capture",
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("trade_type", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("trade_link_id", sa.Text(), nullable=True),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("symbol", sa.Text(), nullable=False),
        sa.Column("aggressor_execution_id", sa.Text(), nullable=False),
        sa.Column("passive_execution_id", sa.Text(), nullable=False),
        sa.Column("aggressor_account", sa.Text(), nullable=False),
        sa.Column("passive_account", sa.Text(), nullable=False),
        sa.Column("aggressor_side", sa.Text(), nullable=False),
        sa.Column("last_shares", sa.BigInteger(), nullable=False),
        sa.Column("last_px", sa.BigInteger(), nullable=False),
        sa.Column("aggressor_commission", sa.BigInteger(), nullable=False),
        sa.Column("passive_commission", sa.BigInteger(), nullable=False),
        sa.Column("transact_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("busted", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("last_px >= 0", name=op.f("ck_trade_capture_last_px_non_negative")),
        sa.CheckConstraint(
            "last_shares >= 0", name=op.f("ck_trade_capture_last_shares_non_negative")
        ),
        sa.PrimaryKeyConstraint("business_date", "id", name=op.f("pk_trade_capture")),
        postgresql_partition_by="RANGE (business_date)",
    )
    op.create_table(
        "trade_capture_state",
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("trade_id", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint(
            "business_date", "trade_id", "state", "update_time", name=op.f("pk_trade_capture_state")
        ),
        postgresql_partition_by="RANGE (business_date)",
    )
    op.create_table(
        "recon_break",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("severity", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'open'"), nullable=False),
        sa.Column("expected", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("actual", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "details",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "first_seen_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "last_seen_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("occurrences", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("assignee", sa.Text(), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("last_run_id", sa.BigInteger(), nullable=True),
        sa.CheckConstraint(
            "(status = 'resolved') = (resolved_at IS NOT NULL)",
            name=op.f("ck_recon_break_resolved_iff_resolved_at"),
        ),
        sa.CheckConstraint(
            "severity IN ('low', 'medium', 'high', 'critical')",
            name=op.f("ck_recon_break_severity"),
        ),
        sa.CheckConstraint(
            "status IN ('open', 'acknowledged', 'resolved')", name=op.f("ck_recon_break_status")
        ),
        sa.CheckConstraint("occurrences >= 1", name=op.f("ck_recon_break_occurrences_positive")),
        sa.ForeignKeyConstraint(
            ["last_run_id"],
            ["recon_run.id"],
            name=op.f("fk_recon_break_last_run_id_recon_run"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recon_break")),
        sa.UniqueConstraint(
            "kind", "business_date", "key", name=op.f("uq_recon_break_kind_business_date_key")
        ),
    )
    op.create_index(
        op.f("ix_recon_break_status_business_date"),
        "recon_break",
        ["status", "business_date"],
        unique=False,
    )
    op.create_table(
        "alert_outbox",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("break_id", sa.BigInteger(), nullable=False),
        sa.Column("occurrence", sa.Integer(), nullable=False),
        sa.Column("notifier", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_alert_outbox_attempts_non_negative")),
        sa.CheckConstraint("occurrence >= 1", name=op.f("ck_alert_outbox_occurrence_positive")),
        sa.ForeignKeyConstraint(
            ["break_id"], ["recon_break.id"], name=op.f("fk_alert_outbox_break_id_recon_break")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_outbox")),
        sa.UniqueConstraint(
            "break_id",
            "occurrence",
            "notifier",
            name=op.f("uq_alert_outbox_break_id_occurrence_notifier"),
        ),
    )
    op.create_index(
        "ix_alert_outbox_undelivered",
        "alert_outbox",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("delivered_at IS NULL"),
    )
    op.create_table(
        "break_audit",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("break_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("from_status", sa.Text(), nullable=True),
        sa.Column("to_status", sa.Text(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column(
            "data",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "from_status IS NULL OR from_status IN ('open', 'acknowledged', 'resolved')",
            name=op.f("ck_break_audit_from_status"),
        ),
        sa.CheckConstraint(
            "to_status IS NULL OR to_status IN ('open', 'acknowledged', 'resolved')",
            name=op.f("ck_break_audit_to_status"),
        ),
        sa.ForeignKeyConstraint(
            ["break_id"], ["recon_break.id"], name=op.f("fk_break_audit_break_id_recon_break")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_break_audit")),
    )
    op.create_index(
        op.f("ix_break_audit_break_id_at"), "break_audit", ["break_id", "at"], unique=False
    )
    op.execute(ENSURE_PARTITIONS)
    op.execute(BREAK_AUDIT_APPEND_ONLY)


def downgrade() -> None:
    op.drop_table("break_audit")
    op.drop_table("alert_outbox")
    op.drop_table("recon_break")
    op.drop_table("trade_capture_state")
    op.drop_table("trade_capture")
    op.drop_table("stream_checkpoint")
    op.drop_table("report_trade")
    op.drop_table("report_position")
    op.drop_table("report_execution")
    op.drop_table("recon_run")
    op.drop_table("position_change")
    op.drop_table("order_filled_pending")
    op.drop_table("order_filled")
    op.drop_table("net_fee_daily")
    op.drop_table("instrument_state_change")
    op.drop_table("instrument")
    op.drop_table("gap_window")
    op.drop_table("feed_trade")
    op.drop_table("fee_refund")
    op.drop_table("execution")
    op.drop_table("dead_letter")
    op.execute("DROP FUNCTION break_audit_append_only()")
    op.execute("DROP FUNCTION ensure_partitions(date)")
