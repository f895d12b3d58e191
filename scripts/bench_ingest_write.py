"""Benchmark the ingest batch writer alone: rows/s for executions and for order_filled.

Each kind is written through `BatchWriter.write` (COPY to staging, merge ON CONFLICT, checkpoint,
one transaction per batch) and, in the same run, as a raw psycopg binary COPY of the same rows
into a plain table without keys (the floor any Postgres writer pays). Prints both, their ratio,
and os.cpu_count(). Parsing is not timed: the events are built before the clock starts.

    .venv/bin/python scripts/bench_ingest_write.py --rows 200000 --batch 2000
    .venv/bin/python scripts/bench_ingest_write.py --server postgresql://postgres@127.0.0.1:5432/postgres

A scratch database is created on the server (CREATEDB needed), migrated, and dropped after.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from sqlalchemy import Engine, make_url, text

from app.db.migrate import upgrade
from app.db.session import make_engine, sqlalchemy_url
from app.domain.events import Event, ExecutionEvent, OrderFilledEvent
from app.ingest.writer import EXECUTION, KINDS, ORDER_FILLED, BatchWriter, Checkpoint

DAY = date(2026, 11, 20)
START = datetime(2026, 11, 20, 14, tzinfo=UTC)


def executions(n: int) -> list[Event]:
    return [
        ExecutionEvent(
            business_date=DAY,
            id=f"E-20261120-{i:09d}",
            order_id=f"O-{i // 3:09d}",
            clord_id=f"C-{i // 3:09d}",
            symbol=f"sym-{i % 50}",
            side="SIDE_BUY" if i % 2 else "SIDE_SELL",
            order_type="ORDER_TYPE_LIMIT",
            time_in_force="TIME_IN_FORCE_DAY",
            order_qty=1000,
            order_price=525,
            cum_qty=500,
            leaves_qty=500,
            avg_px=525,
            order_state="ORDER_STATE_PARTIALLY_FILLED",
            account=f"firms/F{i % 4}/accounts/A{i % 20}",
            participant=f"firms/F{i % 4}/users/U{i % 20}",
            exec_type="EXECUTION_TYPE_PARTIAL_FILL",
            last_shares=500,
            last_px=525,
            text=None,
            transact_time=START + timedelta(microseconds=i * 1000),
            trade_id=f"T-{i // 2:09d}",
            aggressor=bool(i % 2),
            commission_notional_collected=-12 if i % 2 else 30,
            raw=os.urandom(180),
        )
        for i in range(n)
    ]


def order_fills(n: int) -> list[Event]:
    return [
        OrderFilledEvent(
            business_date=DAY,
            status="confirmed",
            tx_hash=f"0x{i // 4:064x}",
            log_index=i % 4,
            order_hash=f"0x{i + (1 << 200):064x}",
            token_id=str(10**70 + i % 100),
            token_label="Up",
            complement_token_id=str(10**70 + i % 100 + 1),
            complement_token_label="Down",
            side="BUY",
            market_slug=f"btc-updown-15m-{i % 100}",
            condition_id=f"0x{i % 100:064x}",
            market_id=str(1329542 + i % 100),
            title="Bitcoin Up or Down - February 4, 5:30PM-5:45PM ET",
            outcome="Up",
            outcome_index=0,
            is_neg_risk=False,
            shares=2_000_000 + i,
            shares_normalized=Decimal(2_000_000 + i).scaleb(-6),
            price=Decimal("0.04"),
            fee=Decimal("0.008"),
            user_address=f"0x{i % 1000:040x}",
            taker_address=f"0x{(i + 7) % 1000:040x}",
            role="maker" if i % 4 else "taker",
            version=2,
            builder="0x" + "00" * 32,
            metadata="0x" + "00" * 32,
            event_time=START + timedelta(seconds=i // 100),
            raw=os.urandom(900),
        )
        for i in range(n)
    ]


def batches(events: Sequence[Event], size: int) -> list[Sequence[Event]]:
    return [events[i : i + size] for i in range(0, len(events), size)]


def through_writer(engine: Engine, name: str, events: Sequence[Event], size: int) -> float:
    writer = BatchWriter(engine)
    started = time.perf_counter()
    for i, batch in enumerate(batches(events, size)):
        writer.write(batch, [], Checkpoint(f"bench.{name}", f"token-{i}".encode(), None))
    return len(events) / (time.perf_counter() - started)


def raw_copy(url: str, table: str, columns: Sequence[str], rows: Callable[[Any], Any],
             events: Sequence[Event], size: int) -> float:
    """The floor: binary COPY of the same rows into a keyless table, a transaction per batch."""
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo) as pg:
        cols = ", ".join(columns)
        pg.execute(f"CREATE TABLE {table} AS SELECT {cols} FROM {_source(table)} WITH NO DATA")
        types = [c.type_code for c in pg.execute(f"SELECT {cols} FROM {table} LIMIT 0").description or ()]
        pg.commit()
        started = time.perf_counter()
        for batch in batches(events, size):
            with pg.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(types)
                for event in batch:
                    copy.write_row(rows(event))
            pg.commit()
        return len(events) / (time.perf_counter() - started)


def _source(table: str) -> str:
    return {"plain_execution": "execution", "plain_order_filled": "order_filled"}[table]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="rows per kind")
    parser.add_argument("--batch", type=int, default=2000, help="rows per write")
    parser.add_argument(
        "--server",
        default=os.environ.get("RECON_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="Postgres server URL (a scratch database is made there)",
    )
    args = parser.parse_args()

    server = sqlalchemy_url(args.server)
    name = f"polyrecon_bench_{uuid.uuid4().hex[:8]}"
    admin = make_engine(server).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        engine = make_engine(url)
        print(f"cpu_count={os.cpu_count()} rows/kind={args.rows} batch={args.batch}")
        for label, make, kind, plain in (
            ("execution", executions, EXECUTION, "plain_execution"),
            ("order_filled", order_fills, ORDER_FILLED, "plain_order_filled"),
        ):
            events = make(args.rows)
            columns = [c for c in kind.columns if c != "status"]
            getter = _getter(columns)
            floor = raw_copy(url, plain, columns, getter, events, args.batch)
            written = through_writer(engine, label, events, args.batch)
            again = through_writer(engine, f"{label}.again", events, args.batch)
            print(
                f"{label:13s} writer {written:9,.0f} rows/s   re-delivered (all duplicates) "
                f"{again:9,.0f} rows/s   raw COPY {floor:9,.0f} rows/s   "
                f"writer/raw = {written / floor:.2f}"
            )
        assert set(KINDS.values()) >= {EXECUTION, ORDER_FILLED}
        engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _getter(columns: Sequence[str]) -> Callable[[Any], tuple[Any, ...]]:
    from operator import attrgetter

    return attrgetter(*columns)


if __name__ == "__main__":
    main()
