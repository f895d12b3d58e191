"""Cheaper chain-table indexes: byte-order hex keys and a makers-only taker index (issue #4: every
confirmed fill pays for each index of order_filled at insert).

Revision ID: 2feb5a1adc98
Revises: 4c1d9e2b7f30
Create Date: 2026-12-06 09:00:00

- The 0x-hex keys (tx_hash, order_hash, user_address, taker_address, condition_id) of
  order_filled, order_filled_pending, fee_refund and feed_trade become COLLATE "C". The
  database's C.UTF-8 is not "C" to Postgres 15, so every index comparison of these keys went
  through strcoll; "C" compares bytes. Lower-case hex sorts the same under both (C.UTF-8 is code
  point order), so no result changes order. All four tables at once: their joins then compare
  within one collation and keep using the indexes. Token ids are indexed nowhere and stay.
- order_filled (business_date, order_hash) stays a btree. A hash index on (order_hash) is
  several times smaller and cheaper to insert into, but a lookup by order and a window of days
  (the writer dating refunds) then has no single index for both: with the stale statistics of a
  partition filling up, the planner ANDed it with a scan of the primary key over the whole day,
  for every refund, and a 1M-event ingest slowed to under 1k events/s.
- order_filled (taker_address, event_time) now holds maker rows only: only maker fills are
  looked up by taker (`v_chain_fill`), and every taker aggregate's taker is the exchange
  contract, a third of the rows under one key.
- The (event_time) btree stays: it is the cheapest of the six (time-ordered 8-byte keys, right-edge
  inserts, deduplicated), and newest-first queries and each reconcile run's newest-event lookup
  read its end in a millisecond where a BRIN would scan unsummarised ranges.

`v_chain_fill` reads these columns, so it is dropped and recreated as c7c3604d821e defined it,
with the same grants and owner. Indexes follow their table's owner, and `ensure_partitions`
creates day partitions of the parents, which carry the new collations and indexes.

Measured by scripts/bench_fill_indexes.py on 2 cores: 16-19% less Postgres CPU per stored fill.

Changing a column's collation rebuilds every index on it (not the table): a 5M-fill day took
46 s here, during which the four tables are locked ACCESS EXCLUSIVE; each statement must also
finish within env.py's statement_timeout.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "2feb5a1adc98"
down_revision: str | Sequence[str] | None = "4c1d9e2b7f30"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HEX_KEYS: dict[str, tuple[str, ...]] = {
    "order_filled": ("tx_hash", "order_hash", "user_address", "taker_address", "condition_id"),
    "order_filled_pending": (
        "tx_hash",
        "order_hash",
        "user_address",
        "taker_address",
        "condition_id",
    ),
    "fee_refund": ("tx_hash", "order_hash", "user_address", "condition_id"),
    "feed_trade": ("tx_hash", "order_hash", "user_address", "taker_address", "condition_id"),
}

# As c7c3604d821e created it.
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

# The view's owner and grants, kept across its re-creation in this transaction.
SAVE_VIEW_ACL = """
CREATE TEMP TABLE chain_fill_view_acl ON COMMIT DROP AS
SELECT c.relowner, a.grantee, a.privilege_type
FROM pg_class AS c
LEFT JOIN LATERAL aclexplode(c.relacl) AS a ON TRUE
WHERE c.oid = 'v_chain_fill'::regclass
"""

# The new view has whatever grants the migrating role's default privileges give: replaced by
# the old ones (made as its creator), then the owner, which ALTER OWNER hands them over with.
# Whoever migrates may not be allowed to give it to recon_owner (see e3a8f1c06b27); then it
# keeps the view, as it kept every table.
RESTORE_VIEW_ACL = """
DO $$
DECLARE
    acl record;
    owner regrole := (SELECT relowner FROM chain_fill_view_acl LIMIT 1);
BEGIN
    FOR acl IN
        SELECT DISTINCT CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END
            AS role
        FROM pg_class AS c, aclexplode(c.relacl) AS a
        WHERE c.oid = 'v_chain_fill'::regclass AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('REVOKE ALL ON v_chain_fill FROM %s', acl.role);
    END LOOP;
    FOR acl IN
        SELECT CASE grantee WHEN 0 THEN 'PUBLIC' ELSE grantee::regrole::text END AS role,
               privilege_type
        FROM chain_fill_view_acl
        WHERE grantee IS NOT NULL AND grantee <> owner
    LOOP
        EXECUTE format('GRANT %s ON v_chain_fill TO %s', acl.privilege_type, acl.role);
    END LOOP;
    BEGIN
        EXECUTE format('ALTER VIEW v_chain_fill OWNER TO %s', owner);
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE WARNING 'v_chain_fill stays owned by %: it may not be given back to %',
            current_user, owner;
    END;
    DROP TABLE chain_fill_view_acl;
END $$
"""


def set_collation(collation: str) -> None:
    # One ALTER per table, so each index on several of its keys is rebuilt once.
    for table, columns in HEX_KEYS.items():
        alter = ", ".join(f'ALTER COLUMN {c} TYPE text COLLATE "{collation}"' for c in columns)
        op.execute(f"ALTER TABLE {table} {alter}")


def drop_view() -> None:
    op.execute(SAVE_VIEW_ACL)
    op.execute("DROP VIEW v_chain_fill")


def create_view() -> None:
    op.execute(V_CHAIN_FILL)
    op.execute(RESTORE_VIEW_ACL)


def upgrade() -> None:
    drop_view()
    op.drop_index("ix_order_filled_taker_address_event_time", table_name="order_filled")
    set_collation("C")
    op.create_index(
        "ix_order_filled_makers_taker_address_event_time",
        "order_filled",
        ["taker_address", "event_time"],
        unique=False,
        postgresql_where=sa.text("role = 'maker'"),
    )
    create_view()


def downgrade() -> None:
    drop_view()
    op.drop_index("ix_order_filled_makers_taker_address_event_time", table_name="order_filled")
    set_collation("default")
    op.create_index(
        "ix_order_filled_taker_address_event_time",
        "order_filled",
        ["taker_address", "event_time"],
        unique=False,
    )
    create_view()
