"""Benchmark: reconcile synthetic days of 1M, 2M and 5M chain events (+ a fifth as many
executions) and compare each with a plain full scan of the same tables.

    .venv/bin/python scripts/bench_reconcile.py [--url postgresql://postgres@127.0.0.1/postgres]
        [--sizes 1000000,2000000,5000000] [--keep]

Creates a scratch database on the server (dropped at the end unless --keep), migrates it, and
fills one business date per size with generate_series SQL: matchOrders transactions of two
makers and a taker aggregate, half of them with pending events, 30% V1 with fee refunds, every
maker fill on the legacy feed; trades of two executions each, their Report API copies, a
position change per fill and the venue's positions — plus a few dozen injected breaks. Then
ANALYZE, reconcile (no Report API call: the snapshot is synthetic) and time a `count(*)` over
the same rows. Target: 5M chain + 1M executions in <= 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Connection, Engine, make_url, text

from app.db.migrate import upgrade
from app.db.partitions import ensure_partitions
from app.db.session import make_engine, sqlalchemy_url
from app.domain.breaks import RuleConfig
from app.recon.service import reconcile

FIRST_DAY = date(2026, 5, 4)
SYMBOLS = 50
ACCOUNTS = 30
MARKETS = 500
WALLETS = 20_000
# Orders-feed events per transaction: 3 confirmed rows, 1.5 pending, 0.6 refunds (30% V1).
EVENTS_PER_TX = 5.1
# Every row keeps its raw payload; these are the sizes the venue's messages have, so the tables
# (and the full scan the run is compared with) are as wide as the real ones.
RAW_BYTES = {
    "raw_fill": 900,
    "raw_refund": 450,
    "raw_legacy": 650,
    "raw_execution": 330,
    "raw_trade": 700,
    "raw_position": 120,
}

CHAIN = """
INSERT INTO order_filled (business_date, tx_hash, log_index, order_hash, token_id, token_label,
  complement_token_id, complement_token_label, side, market_slug, condition_id, market_id, title,
  outcome, outcome_index, is_neg_risk, shares, shares_normalized, price, fee, user_address,
  taker_address, role, version, builder, metadata, event_time, raw)
SELECT :d, '0x' || md5(:code || 'tx' || t) || md5(:code || 'tx.' || t), t * 3 + k,
       '0x' || md5(:code || 'o' || t || '.' || k) || md5(:code || 'o.' || t || '.' || k),
       (1000 + t % :markets)::text, 'Yes', (9000 + t % :markets)::text, 'No',
       CASE WHEN k = 2 THEN 'SELL' ELSE 'BUY' END, 'market-' || t % :markets,
       '0x' || md5('c' || t % :markets) || md5('c.' || t % :markets), (t % :markets)::text,
       'Market ' || t % :markets, 'Yes', 0, false, s.shares, s.shares / 1000000.0, s.price,
       round(0.02 * least(s.price, 1 - s.price) * s.shares / 1000000.0, 6),
       CASE WHEN k = 2 THEN '0x' || md5('w' || (t * 13) % :wallets)
            ELSE '0x' || md5('w' || (t * 7 + k) % :wallets) END,
       CASE WHEN k = 2 THEN '0xexchange' ELSE '0x' || md5('w' || (t * 13) % :wallets) END,
       CASE WHEN k = 2 THEN 'taker' ELSE 'maker' END,
       CASE WHEN t % 10 < 3 THEN 1 ELSE 2 END, NULL, NULL,
       :start + (t * 86000000.0 / :txs) * interval '1 microsecond', :raw_fill
FROM generate_series(0, :txs - 1) AS t
CROSS JOIN generate_series(0, 2) AS k
CROSS JOIN LATERAL (
  SELECT CASE k WHEN 0 THEN 1000000 * (1 + t % 50) WHEN 1 THEN 1000000 * (1 + (t + 1) % 40)
         ELSE 1000000 * (2 + t % 50 + (t + 1) % 40) END AS shares,
         0.01 * (1 + t % 98) AS price
) AS s
"""

PENDING = """
INSERT INTO order_filled_pending (business_date, tx_hash, order_hash, token_id, token_label,
  complement_token_id, complement_token_label, side, market_slug, condition_id, market_id, title,
  outcome, outcome_index, is_neg_risk, shares, shares_normalized, price, fee, user_address,
  taker_address, role, version, builder, metadata, event_time, raw)
SELECT business_date, tx_hash, order_hash, token_id, token_label, complement_token_id,
       complement_token_label, side, market_slug, condition_id, market_id, title, outcome,
       outcome_index, is_neg_risk, shares, shares_normalized, price, fee, user_address,
       taker_address, role, version, builder, metadata, event_time - interval '4 seconds', raw
FROM order_filled WHERE business_date = :d AND log_index / 3 % 2 = 0
"""

REFUNDS = """
INSERT INTO fee_refund (tx_hash, order_hash, business_date, user_address, token_id,
  condition_id, market_slug, title, refund, fee_charged, event_time, raw)
SELECT tx_hash, order_hash, business_date, user_address, token_id, condition_id, market_slug,
       title, round(fee / 2, 6), fee - round(fee / 2, 6), NULL, :raw_refund
FROM order_filled WHERE business_date = :d AND version = 1 AND role = 'maker'
"""

LEGACY = """
INSERT INTO feed_trade (business_date, tx_hash, order_hash, asset_id, condition_id, market_slug,
  title, outcome, shares, shares_normalized, price, user_address, taker_address, event_time,
  feed_source, raw)
SELECT business_date, tx_hash, order_hash, token_id, condition_id, market_slug, title, outcome,
       shares_normalized, shares_normalized, price, user_address, taker_address, event_time,
       'alchemy', :raw_legacy
FROM order_filled WHERE business_date = :d AND role = 'maker'
"""

INSTRUMENTS = """
INSERT INTO instrument (symbol, name, state, price_scale, fractional_qty_scale, update_time, raw)
SELECT 'SYM' || s, 'Instrument ' || s, 'INSTRUMENT_STATE_OPEN', 1000, 100, :start, ''::bytea
FROM generate_series(0, :symbols - 1) AS s
ON CONFLICT DO NOTHING
"""

EXECUTIONS = """
INSERT INTO execution (business_date, id, order_id, clord_id, symbol, side, order_type,
  time_in_force, order_qty, order_price, cum_qty, leaves_qty, avg_px, order_state, account,
  participant, exec_type, last_shares, last_px, text, transact_time, trade_id, aggressor,
  commission_notional_collected, raw, source)
SELECT :d, 'E-' || :code || '-' || (i * 2 + k), 'O-' || :code || '-' || (i * 2 + k), NULL,
       'SYM' || i % :symbols, CASE k WHEN 0 THEN 'SIDE_BUY' ELSE 'SIDE_SELL' END,
       'ORDER_TYPE_LIMIT', 'TIME_IN_FORCE_DAY', 100 * (1 + i % 10), 400 + i % 200,
       100 * (1 + i % 10), 0, 400 + i % 200, 'ORDER_STATE_FILLED',
       'ACC' || (i * 3 + k * 7) % :accounts, NULL, 'EXECUTION_TYPE_FILL', 100 * (1 + i % 10),
       400 + i % 200, NULL, :start + (i * 86000000.0 / :trades) * interval '1 microsecond',
       'T-' || :code || '-' || i, k = 0,
       CASE k WHEN 0 THEN 2 ELSE -1 END * 100 * (1 + i % 10) * (400 + i % 200) / 1000,
       :raw_execution, 'dropcopy'
FROM generate_series(0, :trades - 1) AS i CROSS JOIN generate_series(0, 1) AS k
"""

REPORT_EXECUTIONS = """
INSERT INTO report_execution (business_date, id, order_id, clord_id, symbol, side, order_type,
  time_in_force, order_qty, order_price, cum_qty, leaves_qty, avg_px, order_state, account,
  participant, exec_type, last_shares, last_px, text, transact_time, trade_id, aggressor,
  commission_notional_collected, raw)
SELECT business_date, id, order_id, clord_id, symbol, side, order_type, time_in_force, order_qty,
       order_price, cum_qty, leaves_qty, avg_px, order_state, account, participant, exec_type,
       last_shares, last_px, text, transact_time, trade_id, aggressor,
       commission_notional_collected, raw
FROM execution WHERE business_date = :d
"""

TRADES = """
INSERT INTO {table} (business_date, id, trade_type, state, text, trade_link_id, update_time,
  symbol, aggressor_execution_id, passive_execution_id, aggressor_account, passive_account,
  aggressor_side, last_shares, last_px, aggressor_commission, passive_commission,
  transact_time, busted, raw)
SELECT a.business_date, a.trade_id, 'TRADE_TYPE_REGULAR', 'TRADE_STATE_CLEARED', NULL, NULL,
       a.transact_time, a.symbol, a.id, p.id, a.account, p.account, a.side, a.last_shares,
       a.last_px, a.commission_notional_collected, p.commission_notional_collected,
       a.transact_time, false, :raw_trade
FROM execution AS a
JOIN execution AS p ON p.business_date = a.business_date AND p.trade_id = a.trade_id
 AND NOT p.aggressor
WHERE a.business_date = :d AND a.aggressor
"""

POSITIONS = """
INSERT INTO position_change (business_date, account, symbol, net_position, qty_bought, qty_sold,
  cost, realized, bod_position, update_time, raw, change_time)
SELECT business_date, account, symbol,
       sum(signed) OVER w, sum(bought) OVER w, sum(sold) OVER w, 0, 0, 0,
       transact_time, :raw_position,
       transact_time + (row_number() OVER w) * interval '1 microsecond'
FROM (
  SELECT business_date, account, symbol, transact_time, id,
         CASE WHEN side = 'SIDE_BUY' THEN last_shares ELSE -last_shares END AS signed,
         CASE WHEN side = 'SIDE_BUY' THEN last_shares ELSE 0 END AS bought,
         CASE WHEN side = 'SIDE_BUY' THEN 0 ELSE last_shares END AS sold
  FROM execution WHERE business_date = :d
) AS f
WINDOW w AS (PARTITION BY account, symbol ORDER BY transact_time, id)
"""

REPORT_POSITIONS = """
INSERT INTO report_position (as_of, account, symbol, net_position, qty_bought, qty_sold, cost,
  realized, bod_position, update_time, raw)
SELECT DISTINCT ON (account, symbol) :as_of, account, symbol, net_position, qty_bought,
       qty_sold, cost, realized, bod_position, update_time, raw
FROM position_change WHERE business_date = :d
ORDER BY account, symbol, change_time DESC
"""

SNAPSHOT = """
INSERT INTO recon_run (job, business_date, started_at, finished_at, status, counts)
VALUES ('report_snapshot', :d, :as_of, :as_of, 'succeeded',
        jsonb_build_object('as_of', CAST(:as_of_text AS text),
                           'window_start', CAST(:start_text AS text),
                           'window_end', CAST(:end_text AS text)))
"""

# A few of each kind the data can show without more machinery: 10 each.
BREAKS = (
    "DELETE FROM order_filled WHERE business_date = :d AND role = 'taker' AND log_index < 30",
    "UPDATE feed_trade SET price = price / 2"
    " WHERE business_date = :d AND tx_hash IN (SELECT tx_hash FROM order_filled"
    " WHERE business_date = :d AND role = 'maker' AND log_index BETWEEN 3000 AND 3030)",
    "DELETE FROM report_execution WHERE business_date = :d AND id IN"
    " (SELECT id FROM execution WHERE business_date = :d ORDER BY id LIMIT 10)",
    "UPDATE position_change SET net_position = net_position + 1"
    " WHERE business_date = :d AND account = 'ACC1'",
)

TABLES = (
    "order_filled",
    "order_filled_pending",
    "feed_trade",
    "execution",
    "report_execution",
    "trade_capture",
    "report_trade",
    "position_change",
)


def fill_day(conn: Connection, day: date, chain_events: int) -> dict[str, int]:
    start = datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(seconds=10)
    as_of = start + timedelta(days=1)
    txs = int(chain_events / EVENTS_PER_TX)
    trades = chain_events // 5 // 2
    params = {
        "d": day,
        "start": start,
        "txs": txs,
        "trades": trades,
        "markets": MARKETS,
        "wallets": WALLETS,
        "symbols": SYMBOLS,
        "accounts": ACCOUNTS,
        "code": day.strftime("%Y%m%d"),
        "as_of": as_of,
        "as_of_text": as_of.isoformat(),
        "start_text": (start - timedelta(hours=6)).isoformat(),
        "end_text": (as_of + timedelta(hours=6)).isoformat(),
        **{name: b"x" * size for name, size in RAW_BYTES.items()},
    }
    for sql in (CHAIN, PENDING, REFUNDS, LEGACY, INSTRUMENTS, EXECUTIONS, REPORT_EXECUTIONS):
        conn.execute(text(sql), params)
    for table in ("trade_capture", "report_trade"):
        conn.execute(text(TRADES.format(table=table)), params)
    for sql in (POSITIONS, REPORT_POSITIONS, SNAPSHOT, *BREAKS):
        conn.execute(text(sql), params)
    counts = {}
    for table in (*TABLES, "fee_refund"):
        where = "business_date = :d"
        counts[table] = conn.execute(
            text(f"SELECT count(*) FROM {table} WHERE {where}"), params
        ).scalar_one()
    return counts


def full_scan(engine: Engine, day: date) -> float:
    started = time.perf_counter()
    with engine.connect() as conn:
        for table in (*TABLES, "fee_refund"):
            conn.execute(
                text(f"SELECT count(*) FROM {table} WHERE business_date = :d"), {"d": day}
            ).scalar_one()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url",
        default=os.environ.get("RECON_BENCH_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="a Postgres server URL with CREATEDB rights (a scratch database is made on it)",
    )
    parser.add_argument("--sizes", default="1000000,2000000,5000000", help="chain events per day")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()
    server = sqlalchemy_url(args.url)
    name = f"recon_bench_{uuid.uuid4().hex[:8]}"
    admin = make_engine(server).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    print(f"nproc {os.cpu_count()}; scratch database {name}")
    try:
        upgrade(url)
        engine = make_engine(url)
        sizes = [int(size) for size in args.sizes.split(",")]
        for n, size in enumerate(sizes):
            day = FIRST_DAY + timedelta(days=n)
            started = time.perf_counter()
            with engine.begin() as conn:
                ensure_partitions(conn, [day - timedelta(days=1), day, day + timedelta(days=1)])
            with engine.begin() as conn:
                counts = fill_day(conn, day, size)
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("ANALYZE"))
            loaded = time.perf_counter() - started
            scan = min(full_scan(engine, day) for _ in range(2))
            started = time.perf_counter()
            summary = reconcile(engine, day, report=None, rules=RuleConfig())
            took = time.perf_counter() - started
            chain = counts["order_filled"] + counts["order_filled_pending"] + counts["fee_refund"]
            print(
                f"\n{day}: {chain:,} chain events (+{counts['feed_trade']:,} legacy feed),"
                f" {counts['execution']:,} executions, {sum(counts.values()):,} rows in all;"
                f" loaded in {loaded:.1f} s"
            )
            print(
                f"  reconcile {took:.2f} s   full scan {scan:.2f} s   ratio {took / scan:.1f}x"
                f"   breaks {summary.breaks_found}"
            )
            slow = sorted(summary.timings.items(), key=lambda kv: -kv[1])[:6]
            print("  slowest steps: " + ", ".join(f"{k} {v:.2f}s" for k, v in slow))
        engine.dispose()
    finally:
        if not args.keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
