"""Benchmark the ingest batch writer alone: rows/s for executions and for order_filled.

Each kind is written through `BatchWriter.write` (binary COPY into staging, merge ON CONFLICT,
checkpoint, one transaction per batch) and, in the same run, as a raw psycopg binary COPY of the
same rows into a plain table without keys or indexes (the floor any Postgres writer pays) and
into a table with the target's keys and indexes (what the schema itself costs).
A second pass re-delivers every row (all duplicates), as after a crash; a third writes them
anew with `synchronous_commit=False` (what a DropCopy stream could gain if it re-opened from its
stored checkpoint after every database outage; see BatchWriter). The events are parsed
from venue-shaped protobuf messages and feed JSON frames before the clock starts; the parse
rate is printed too, since parsing shares the ingest budget. Prints os.cpu_count() and the load
average: on a shared 2-core machine other work moves these numbers a lot.

    .venv/bin/python scripts/bench_ingest_write.py --rows 100000 --batch 2000
    .venv/bin/python scripts/bench_ingest_write.py --server postgresql://postgres@127.0.0.1:5432/postgres

A scratch database is created on the server (CREATEDB needed), migrated, and dropped after.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgspec
import psycopg
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import Engine, make_url, text

from app.db.migrate import upgrade
from app.db.session import make_engine, sqlalchemy_url
from app.domain.events import Event
from app.ingest import parse
from app.ingest.writer import EXECUTION, ORDER_FILLED, BatchWriter, Checkpoint, Kind
from polymarket.v1 import enums_pb2, trading_pb2

DAY = date(2026, 11, 20)
START = datetime(2026, 11, 20, 14, tzinfo=UTC)
ENCODE = msgspec.json.Encoder(decimal_format="number").encode


def execution_messages(n: int) -> list[bytes]:
    day = trading_pb2.TradeDate(year=DAY.year, month=DAY.month, day=DAY.day)
    messages = []
    for i in range(n):
        at = Timestamp()
        at.FromDatetime(START + timedelta(microseconds=i * 1000))
        messages.append(
            trading_pb2.Execution(
                id=f"E-20261120-{i:09d}",
                order=trading_pb2.Order(
                    id=f"O-{i // 3:09d}",
                    clord_id=f"C-{i // 3:09d}",
                    symbol=f"tec-nfl-sbw-2026-02-08-{i % 50}",
                    side=enums_pb2.SIDE_BUY if i % 2 else enums_pb2.SIDE_SELL,
                    type=enums_pb2.ORDER_TYPE_LIMIT,
                    time_in_force=enums_pb2.TIME_IN_FORCE_DAY,
                    order_qty=1000,
                    price=525,
                    cum_qty=500,
                    leaves_qty=500,
                    avg_px=525,
                    state=enums_pb2.ORDER_STATE_PARTIALLY_FILLED,
                    account=f"firms/F{i % 4}/accounts/A{i % 20}",
                    participant=f"firms/F{i % 4}/users/U{i % 20}",
                    create_time=at,
                    insert_time=at,
                ),
                last_shares=500,
                last_px=525,
                type=enums_pb2.EXECUTION_TYPE_PARTIAL_FILL,
                transact_time=at,
                trade_id=f"T-{i // 2:09d}",
                aggressor=bool(i % 2),
                commission_notional_collected=-12 if i % 2 else 30,
                transact_trade_date=day,
            ).SerializeToString()
        )
    return messages


def order_filled_frames(n: int) -> list[bytes]:
    """Frames shaped like the seed's order_filled (V2, confirmed), about 1.2 KB each."""
    return [
        ENCODE(
            {
                "type": "event",
                "subscription_id": "sub_2f4b15b33798",
                "data": {
                    "status": "confirmed",
                    "event_type": "order_filled",
                    "token_id": str(10**76 + i % 100),
                    "token_label": "Up",
                    "side": "BUY",
                    "market_slug": f"btc-updown-15m-{1770244200 + i % 100}",
                    "condition_id": f"0x{i % 100:064x}",
                    "shares": 2_000_000 + i,
                    "shares_normalized": Decimal(2_000_000 + i).scaleb(-6),
                    "price": Decimal("0.04"),
                    "tx_hash": f"0x{i // 4:064x}",
                    "log_index": hex(i % 4),
                    "title": "Bitcoin Up or Down - February 4, 5:30PM-5:45PM ET",
                    "timestamp": int(START.timestamp()) + i // 100,
                    "order_hash": f"0x{i + (1 << 200):064x}",
                    "user": f"0x{i % 1000:040x}",
                    "taker": f"0x{(i + 7) % 1000:040x}",
                    "role": "maker" if i % 4 else "taker",
                    "outcome": "Up",
                    "outcome_index": 0,
                    "complement_token_id": str(10**76 + i % 100 + 1),
                    "complement_token_label": "Down",
                    "is_neg_risk": False,
                    "market_id": str(1329542 + i % 100),
                    "image": "https://polymarket-upload.s3.us-east-2.amazonaws.com/BTC+fullsize.png",
                    "fee": Decimal("0.008"),
                    "version": 2,
                    "builder": "0x" + "00" * 32,
                    "metadata": "0x" + "00" * 32,
                },
            }
        )
        for i in range(n)
    ]


def parse_execution(raw: bytes) -> Event:
    return parse.execution(trading_pb2.Execution.FromString(raw))


def parse_order_filled(raw: bytes) -> Event:
    frame = parse.orders_frame(raw)
    assert isinstance(frame, parse.OrdersEvent)
    return frame.event


def batches(events: Sequence[Event], size: int) -> list[Sequence[Event]]:
    return [events[i : i + size] for i in range(0, len(events), size)]


def rate(rows: int, started: float) -> float:
    return rows / (time.perf_counter() - started)


def through_writer(
    engine: Engine, stream: str, events: Sequence[Event], size: int, *, synchronous: bool = True
) -> float:
    writer = BatchWriter(engine, synchronous_commit=synchronous)
    started = time.perf_counter()
    for i, batch in enumerate(batches(events, size)):
        writer.write(batch, [], Checkpoint(stream, f"token-{i}".encode(), None))
    return rate(len(events), started)


def raw_copy(
    url: str, kind: Kind, target: str, events: Sequence[Event], size: int, *, keyed: bool
) -> float:
    """The same rows by binary COPY, a commit per batch, into a table with no keys (the floor)
    or, `keyed`, into an unpartitioned copy of the target with its keys and indexes (what the
    schema costs before any merging)."""
    columns = [c for c in kind.columns if c != "status"]
    names = ", ".join(columns)
    row: Callable[[Any], tuple[Any, ...]] = kind.row()
    table = f"{'keyed' if keyed else 'plain'}_{kind.stage}"
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo) as pg:
        if keyed:
            pg.execute(f"CREATE TABLE {table} (LIKE {target} INCLUDING ALL)")
        else:
            shape = kind.shape.replace("NULL::text AS status, ", "")
            pg.execute(f"CREATE TABLE {table} AS {shape} WITH NO DATA")
        described = pg.execute(f"SELECT {names} FROM {table} LIMIT 0").description or ()
        types = [c.type_code for c in described]
        pg.commit()
        started = time.perf_counter()
        for batch in batches(events, size):
            with (
                pg.cursor() as cur,
                cur.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)") as copy,
            ):
                copy.set_types(types)
                for event in batch:
                    values = row(event)
                    copy.write_row(values[1:] if kind is ORDER_FILLED else values)
            pg.commit()
        return rate(len(events), started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000, help="rows per kind")
    parser.add_argument("--batch", type=int, default=2000, help="rows per write")
    parser.add_argument(
        "--server",
        default=os.environ.get(
            "RECON_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
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
        print(
            f"cpu_count={os.cpu_count()} loadavg={os.getloadavg()[0]:.1f} "
            f"rows/kind={args.rows:,} batch={args.batch}"
        )
        # Each label is also the target table.
        for label, make, parser_of, kind in (
            ("execution", execution_messages, parse_execution, EXECUTION),
            ("order_filled", order_filled_frames, parse_order_filled, ORDER_FILLED),
        ):
            payloads = make(args.rows)
            started = time.perf_counter()
            events = [parser_of(raw) for raw in payloads]
            parsed = rate(len(events), started)
            floor = raw_copy(url, kind, label, events, args.batch, keyed=False)
            keyed = raw_copy(url, kind, label, events, args.batch, keyed=True)
            written = through_writer(engine, label, events, args.batch)
            again = through_writer(engine, label, events, args.batch)
            with engine.begin() as conn:
                conn.execute(text(f"TRUNCATE {label}"))
            unflushed = through_writer(engine, label, events, args.batch, synchronous=False)
            print(
                f"{label:12s} parse {parsed:8,.0f}/s | writer {written:7,.0f} rows/s, "
                f"re-delivered {again:7,.0f}, synchronous_commit=off {unflushed:7,.0f} | "
                f"raw COPY {floor:8,.0f} rows/s, into keyed table {keyed:7,.0f} | "
                f"writer/raw {written / floor:.2f}, writer/keyed {written / keyed:.2f}"
            )
        engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
