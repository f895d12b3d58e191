"""Benchmark the compliance queries on a 5M-event chain day plus 1M executions.

Generates the day with generate_series SQL into a scratch database (migrated to head, dropped
afterwards unless --keep), ANALYZEs, then runs each `recon query` query a few times and prints
p50 and max milliseconds per query, with the machine's core count.

    .venv/bin/python scripts/bench_queries.py                      # 5M chain + 1M executions
    .venv/bin/python scripts/bench_queries.py --chain 500000 --executions 100000 --runs 3
    RECON_TEST_DATABASE_URL=postgresql://… .venv/bin/python scripts/bench_queries.py
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Connection, Engine, make_url, text

from app.db.base import FeeScope
from app.db.migrate import upgrade
from app.db.partitions import ensure_partitions
from app.db.session import make_engine, sqlalchemy_url
from app.query.queries import (
    FeeFilter,
    ResultSet,
    Side,
    TradeFilter,
    fees,
    order_trail,
    trades,
    wallet_activity,
)
from app.reports.build import build_report

D = date(2026, 5, 4)
DAY_START = datetime(2026, 5, 4, tzinfo=UTC)
TARGET_MS = 200
ACCOUNTS = 200
SYMBOLS = 50
WALLETS = 20_000
MARKETS = 500
ROWS_PER_TX = 4  # three makers and the taker aggregate

EXECUTIONS = """
INSERT INTO execution (business_date, id, order_id, clord_id, symbol, side, order_type,
    time_in_force, order_qty, order_price, cum_qty, leaves_qty, avg_px, order_state, account,
    participant, exec_type, last_shares, last_px, text, transact_time, trade_id, aggressor,
    commission_notional_collected, raw, source)
SELECT :d, 'E-' || i, 'O-' || (i / 2), NULL, 'SYM-' || (i % :symbols),
       CASE WHEN i % 2 = 0 THEN 'SIDE_BUY' ELSE 'SIDE_SELL' END,
       'ORDER_TYPE_LIMIT', 'TIME_IN_FORCE_DAY', 1000, 50 + i % 40, 1000, 0, 50 + i % 40,
       'ORDER_STATE_FILLED', 'ACC-' || ((i * 7919) % :accounts), NULL,
       CASE WHEN i % 5 = 0 THEN 'EXECUTION_TYPE_PARTIAL_FILL' ELSE 'EXECUTION_TYPE_FILL' END,
       100 + i % 900, 50 + i % 40, NULL,
       :start + (i * interval '86399 seconds') / :n, 'T-' || (i / 2), i % 2 = 0,
       (i % 13) - 2, '\\x00'::bytea, 'dropcopy'
FROM generate_series(CAST(0 AS bigint), :n - 1) AS i
"""

TRADES = """
INSERT INTO trade_capture (business_date, id, trade_type, state, text, trade_link_id,
    update_time, symbol, aggressor_execution_id, passive_execution_id, aggressor_account,
    passive_account, aggressor_side, last_shares, last_px, aggressor_commission,
    passive_commission, transact_time, busted, raw)
SELECT e.business_date, e.trade_id, 'TRADE_TYPE_REGULAR', 'TRADE_STATE_CLEARED', NULL, NULL,
       e.transact_time, e.symbol, e.id, 'E-' || (substr(e.id, 3)::bigint + 1), e.account,
       e.account, e.side, e.last_shares, e.last_px, e.commission_notional_collected, 0,
       e.transact_time, false, '\\x00'::bytea
FROM execution AS e WHERE e.business_date = :d AND e.aggressor
"""

TRADE_STATES = """
INSERT INTO trade_capture_state (business_date, trade_id, state, update_time, raw)
SELECT business_date, id, s.state, transact_time + s.lag, '\\x00'::bytea
FROM trade_capture
CROSS JOIN (VALUES ('TRADE_STATE_NEW', interval '0'),
                   ('TRADE_STATE_CLEARED', interval '1 second')) AS s(state, lag)
WHERE business_date = :d
"""

REPORT_EXECUTIONS = """
INSERT INTO report_execution (business_date, id, order_id, clord_id, symbol, side, order_type,
    time_in_force, order_qty, order_price, cum_qty, leaves_qty, avg_px, order_state, account,
    participant, exec_type, last_shares, last_px, text, transact_time, trade_id, aggressor,
    commission_notional_collected, raw)
SELECT business_date, id, order_id, clord_id, symbol, side, order_type, time_in_force,
       order_qty, order_price, cum_qty, leaves_qty, avg_px, order_state, account, participant,
       exec_type, last_shares, last_px, text, transact_time, trade_id, aggressor,
       commission_notional_collected, raw
FROM execution WHERE business_date = :d
"""

INSTRUMENTS = """
INSERT INTO instrument (symbol, name, state, price_scale, fractional_qty_scale, update_time, raw)
SELECT 'SYM-' || s, 'Symbol ' || s, 'INSTRUMENT_STATE_OPEN', 100, 100, :start, '\\x00'::bytea
FROM generate_series(0, :symbols - 1) AS s
"""

# One transaction per `tx`: slots 0-2 are its makers, slot 3 its taker aggregate. Wallet and
# market hashes come from small tables so each row costs one md5 for its order hash.
CHAIN = """
WITH wallet AS MATERIALIZED (
    SELECT n, '0x' || substr(md5('w' || n), 1, 40) AS address
    FROM generate_series(0, :wallets - 1) AS n
), market AS MATERIALIZED (
    SELECT n, '0x' || md5('market' || n) || md5('market2' || n) AS condition_id
    FROM generate_series(0, :markets - 1) AS n
)
INSERT INTO order_filled (business_date, tx_hash, log_index, order_hash, token_id, token_label,
    complement_token_id, complement_token_label, side, market_slug, condition_id, market_id,
    title, outcome, outcome_index, is_neg_risk, shares, shares_normalized, price, fee,
    user_address, taker_address, role, version, builder, metadata, event_time, raw)
SELECT :d, t.tx_hash, slot,
       '0x' || md5('order' || (tx * 4 + slot)) || lpad(to_hex(tx * 4 + slot), 32, '0'),
       (1000000 + t.m) :: text, 'Yes', (2000000 + t.m) :: text, 'No',
       CASE WHEN slot = 3 THEN 'SELL' ELSE 'BUY' END,
       'market-' || t.m, market.condition_id, t.m::text, 'Market ' || t.m, 'Yes', 0, false,
       s.shares, s.shares / 1000000.0, t.price, round(s.shares / 1000000.0 * t.price * 0.01, 6),
       CASE WHEN slot = 3 THEN taker.address ELSE maker.address END,
       CASE WHEN slot = 3 THEN '0x4bfb41d5b3570defd03c39a9a4d8de6bd8b8982e'
            ELSE taker.address END,
       CASE WHEN slot = 3 THEN 'taker' ELSE 'maker' END,
       CASE WHEN t.m % 10 < 3 THEN 1 ELSE 2 END, NULL, NULL, t.event_time, '\\x00'::bytea
FROM generate_series(CAST(:tx_from AS bigint), :tx_to - 1) AS tx
CROSS JOIN LATERAL (
    SELECT '0x' || md5('tx' || tx) || md5('tx2' || tx) AS tx_hash, tx % :markets AS m,
           (5 + tx % 90) / 100.0 AS price, (tx * 104729) % :wallets AS taker_n,
           :start + (tx * interval '86399 seconds') / :txs AS event_time
) AS t
CROSS JOIN generate_series(0, 3) AS slot
CROSS JOIN LATERAL (
    SELECT CASE WHEN slot = 3 THEN 3000000 ELSE 1000000 END :: bigint AS shares
) AS s
JOIN market ON market.n = t.m
JOIN wallet AS taker ON taker.n = t.taker_n
JOIN wallet AS maker ON maker.n = ((tx * 4 + slot) * 7919) % :wallets
"""
CHAIN_CHUNK_TXS = 125_000

REFUNDS = """
INSERT INTO fee_refund (tx_hash, order_hash, business_date, user_address, token_id,
    condition_id, market_slug, title, refund, fee_charged, event_time, raw)
SELECT tx_hash, order_hash, business_date, user_address, token_id, condition_id, market_slug,
       title, fee - round(fee / 4, 6), round(fee / 4, 6), NULL, '\\x00'::bytea
FROM order_filled WHERE business_date = :d AND role = 'maker' AND version = 1
"""

NET_FEES = """
INSERT INTO net_fee_daily (business_date, scope, scope_key, source, gross_fee, refund, net_fee,
                           fills)
SELECT :d, scope, scope_key, source, sum(gross), sum(refund), sum(gross) - sum(refund), count(*)
FROM (
    SELECT 'account' AS scope, account AS scope_key, 'exchange' AS source,
           commission_notional_collected / 10000.0 AS gross, 0 AS refund
    FROM execution WHERE business_date = :d
    UNION ALL
    SELECT 'market', symbol, 'exchange', commission_notional_collected / 10000.0, 0
    FROM execution WHERE business_date = :d
    UNION ALL
    SELECT 'wallet', user_address, 'chain', fee, 0 FROM order_filled
    WHERE business_date = :d AND role = 'maker'
    UNION ALL
    SELECT 'market', condition_id, 'chain', fee, 0 FROM order_filled
    WHERE business_date = :d AND role = 'maker'
) AS f
GROUP BY scope, scope_key, source
"""

BREAKS = """
INSERT INTO recon_break (kind, business_date, key, severity, status, details)
SELECT 'execution_quantity_mismatch', :d, 'E-' || (i * 997), 'high', 'open', '{}'::jsonb
FROM generate_series(0, 999) AS i
"""


def _step(conn: Connection, label: str, sql: str, params: dict[str, object]) -> None:
    started = time.perf_counter()
    rows = conn.execute(text(sql), params).rowcount
    conn.commit()
    print(f"  {label:<28} {rows:>10,} rows {time.perf_counter() - started:7.1f} s", flush=True)


def _chain(engine: Engine, params: dict[str, object], txs: int) -> None:
    """order_filled in chunks on every core: one INSERT … SELECT runs on one core only."""
    started = time.perf_counter()
    chunks = [(lo, min(lo + CHAIN_CHUNK_TXS, txs)) for lo in range(0, txs, CHAIN_CHUNK_TXS)]

    def load(bounds: tuple[int, int]) -> None:
        with engine.connect() as conn:
            conn.execute(text("SET synchronous_commit = off"))
            conn.execute(
                text(CHAIN), {**params, "tx_from": bounds[0], "tx_to": bounds[1], "txs": txs}
            )
            conn.commit()

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(load, chunks))
    rows = txs * ROWS_PER_TX
    print(f"  {'order_filled':<28} {rows:>10,} rows {time.perf_counter() - started:7.1f} s")


def generate(engine: Engine, chain: int, executions: int) -> None:
    params: dict[str, object] = {
        "d": D,
        "start": DAY_START,
        "symbols": SYMBOLS,
        "accounts": ACCOUNTS,
        "wallets": WALLETS,
        "markets": MARKETS,
    }
    with engine.connect() as conn:
        conn.execute(text("SET synchronous_commit = off"))
        conn.execute(text("SET maintenance_work_mem = '512MB'"))
        conn.execute(text("SET work_mem = '256MB'"))
        ensure_partitions(conn, [D])
        conn.commit()
        _step(conn, "instrument", INSTRUMENTS, params)
        _step(conn, "execution", EXECUTIONS, {**params, "n": executions})
        _step(conn, "trade_capture", TRADES, params)
        _step(conn, "trade_capture_state", TRADE_STATES, params)
        _step(conn, "report_execution", REPORT_EXECUTIONS, params)
        _chain(engine, params, chain // ROWS_PER_TX)
        _step(conn, "fee_refund", REFUNDS, params)
        _step(conn, "net_fee_daily", NET_FEES, params)
        _step(conn, "recon_break", BREAKS, params)
    started = time.perf_counter()
    with engine.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(text("VACUUM (ANALYZE)"))
    print(f"  {'vacuum analyze':<28} {'':>15} {time.perf_counter() - started:7.1f} s")


def _wallet(n: int) -> str:
    return "0x" + hashlib.md5(f"w{n}".encode(), usedforsecurity=False).hexdigest()[:40]


def _market(n: int) -> str:
    return "0x" + "".join(
        hashlib.md5(f"{p}{n}".encode(), usedforsecurity=False).hexdigest()
        for p in ("market", "market2")
    )


def queries(executions: int) -> list[tuple[str, Callable[[Connection], ResultSet]]]:
    wallet = _wallet(4242)
    order = f"O-{executions // 3}"  # two executions per order
    noon = DAY_START + timedelta(hours=12)
    return [
        ("order-trail ORDER_ID", lambda c: order_trail(c, order)),
        (
            "trades --account --date",
            lambda c: trades(c, TradeFilter(account="ACC-17", business_date=D)),
        ),
        ("trades --account (all dates)", lambda c: trades(c, TradeFilter(account="ACC-17"))),
        (
            "trades --symbol --side --1h window",
            lambda c: trades(
                c,
                TradeFilter(
                    symbol="SYM-4", side=Side.BUY, start=noon, end=noon + timedelta(hours=1)
                ),
            ),
        ),
        ("trades --wallet (all dates)", lambda c: trades(c, TradeFilter(wallet=wallet))),
        (
            "trades --market --date --min-notional",
            lambda c: trades(
                c,
                TradeFilter(market=_market(77), business_date=D, min_notional=Decimal("0.5")),
            ),
        ),
        ("trades --date (newest 1000)", lambda c: trades(c, TradeFilter(business_date=D))),
        (
            "fees --scope wallet --key",
            lambda c: fees(c, FeeFilter(scope=FeeScope.WALLET, key=wallet)),
        ),
        (
            "fees --scope market --date --total",
            lambda c: fees(
                c, FeeFilter(scope=FeeScope.MARKET, start_date=D, end_date=D, total=True)
            ),
        ),
        ("wallet ADDRESS", lambda c: wallet_activity(c, wallet)),
    ]


def bench(engine: Engine, runs: int, executions: int) -> bool:
    print(f"\n{'query':<40} {'rows':>6} {'p50 ms':>8} {'max ms':>8}")
    all_fast = True
    with engine.connect() as conn:
        for name, run in queries(executions):
            times, rows = [], 0
            for _ in range(runs):
                started = time.perf_counter()
                rows = len(run(conn).rows)
                times.append((time.perf_counter() - started) * 1000)
                conn.rollback()
            p50, worst = statistics.median(times), max(times)
            all_fast &= worst < TARGET_MS
            flag = "" if worst < TARGET_MS else f"  over {TARGET_MS} ms"
            print(f"{name:<40} {rows:>6} {p50:>8.1f} {worst:>8.1f}{flag}")
    return all_fast


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chain", type=int, default=5_000_000, help="order_filled rows")
    parser.add_argument("--executions", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument(
        "--report", action="store_true", help="also time building the nightly report of the day"
    )
    parser.add_argument(
        "--url",
        default=os.environ.get(
            "RECON_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="a Postgres server URL with CREATEDB rights",
    )
    args = parser.parse_args()
    server = sqlalchemy_url(args.url)
    name = f"recon_bench_queries_{uuid.uuid4().hex[:8]}"
    admin = make_engine(server).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    try:
        upgrade(url)
        with engine.connect() as conn:
            version = conn.execute(text("SHOW server_version")).scalar()
        print(
            f"nproc {os.cpu_count()}, Postgres {version}, database {name}: "
            f"{args.chain:,} order_filled + {args.executions:,} executions"
        )
        started = time.perf_counter()
        generate(engine, args.chain, args.executions)
        with engine.connect() as conn:
            size = conn.execute(text("SELECT pg_size_pretty(pg_database_size(:n))"), {"n": name})
            print(f"generated in {time.perf_counter() - started:.0f} s, database {size.scalar()}")
        fast = bench(engine, args.runs, args.executions)
        if args.report:
            with tempfile.TemporaryDirectory() as out:
                started = time.perf_counter()
                build_report(engine, D, Path(out))
                print(f"\nnightly report of the day built in {time.perf_counter() - started:.1f} s")
        print(f"\nevery query under {TARGET_MS} ms: {'yes' if fast else 'NO'}")
        return 0 if fast else 1
    finally:
        engine.dispose()
        if not args.keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    raise SystemExit(main())
