"""Benchmark the ingest worker's CPU per orders-feed frame: parse, and COPY row encoding.

The orders feed is the ingest worker's busiest path; at 30,000 chain events/s on a 2-core box
each event has a budget of a few tens of microseconds for everything, so the parse and the COPY
encoding are measured here alone, in process CPU time (`time.process_time`), without venue,
websocket or database. Frames are the venue store's own `orders_feed` rows (a realistic mix of
confirmed and pending fills and fee refunds), wrapped as the venue's websocket sends them.

`--baseline other_parse.py` times another version of app/ingest/parse.py in the same run,
interleaved with the current one, so a change can be judged on a shared, noisy machine.
The COPY encoding is psycopg's binary row formatter fed the writer's own row tuples, with no
server: what `BatchWriter._copy` costs the client per row.

    .venv/bin/python scripts/bench_parse.py --store /tmp/bench-venue/venue-20260504-<hash>.sqlite
    .venv/bin/python scripts/bench_parse.py --store ... --baseline /tmp/parse_before.py
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from psycopg import adapt, postgres
from psycopg._copy_base import BinaryFormatter

from app.ingest import parse
from app.ingest.writer import FEE_REFUND, KINDS, ORDER_FILLED, ROWS, Kind

PREFIX = b'{"type":"event","subscription_id":"sub_1","data":'

# psycopg's names for the SQL types of column_types().
TYPES = {
    "bigint": "int8",
    "integer": "int4",
    "smallint": "int2",
    "numeric": "numeric",
    "timestamptz": "timestamptz",
    "date": "date",
    "text": "text",
    "bytea": "bytea",
    "boolean": "bool",
}


def frames(store: Path, count: int) -> list[bytes]:
    """`count` frames spread evenly over the day's feed, not only its first minutes."""
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    (total,) = db.execute("SELECT count(*) FROM orders_feed").fetchone()
    step = max(total // count, 1)
    rows = db.execute(
        "SELECT data FROM orders_feed WHERE seq % ? = 0 ORDER BY seq LIMIT ?", (step, count)
    ).fetchall()
    return [PREFIX + bytes(data) + b"}" for (data,) in rows]


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("baseline_parse", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # msgspec resolves the wire structs' annotations through the module's entry here.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def per_frame(parser: Callable[[bytes], Any], batch: list[bytes]) -> float:
    """Microseconds of CPU per frame."""
    start = time.process_time()
    for frame in batch:
        parser(frame)
    return (time.process_time() - start) / len(batch) * 1e6


def copy_types(server_types: dict[str, str], kind: Kind) -> list[int]:
    return [postgres.types[TYPES[server_types[column]]].oid for column in kind.columns]


def encode_per_row(kind: Kind, types: list[int], events: list[Any]) -> float:
    """Microseconds of CPU per row for psycopg's binary COPY formatter on the writer's rows."""
    transformer = adapt.Transformer()
    formatter = BinaryFormatter(transformer)
    transformer.set_dumper_types(types, formatter.format)
    row = ROWS[kind.stage]
    start = time.process_time()
    for event in events:
        formatter.write_row(row(event))
    formatter.end()
    return (time.process_time() - start) / max(len(events), 1) * 1e6


def column_types() -> dict[str, str]:
    """Each chain staging column's SQL type, copied from the migrations: the writer reads them
    from the staging tables, but this benchmark runs without a server."""
    numeric = {"shares_normalized", "price", "fee", "refund", "fee_charged"}
    bigint = {"shares", "log_index"}
    types = {name: "text" for kind in (ORDER_FILLED, FEE_REFUND) for name in kind.columns}
    types |= dict.fromkeys(numeric, "numeric") | dict.fromkeys(bigint, "bigint")
    types |= {"outcome_index": "integer", "version": "smallint"}
    types |= {"event_time": "timestamptz", "business_date": "date", "raw": "bytea"}
    types |= {"is_neg_risk": "boolean"}
    return types


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True, help="a venue store (.sqlite)")
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of this many passes")
    parser.add_argument("--baseline", type=Path, help="another parse.py to time alongside")
    args = parser.parse_args()
    print(f"nproc={os.cpu_count()} load average {os.getloadavg()[0]:.1f}")
    batch = frames(args.store, args.frames)
    events = [parse.orders_frame(frame).event for frame in batch]  # type: ignore[union-attr]
    mix = Counter((type(e).__name__, getattr(e, "status", "")) for e in events)
    print(f"{len(batch)} frames, {sum(map(len, batch)) / len(batch):.0f} bytes avg; {dict(mix)}")
    parsers: dict[str, Callable[[bytes], Any]] = {"current": parse.orders_frame}
    if args.baseline is not None:
        parsers = {"baseline": load(args.baseline).orders_frame, **parsers}
    best = dict.fromkeys(parsers, float("inf"))
    for _ in range(args.repeat):
        for label, orders_frame in parsers.items():
            best[label] = min(best[label], per_frame(orders_frame, batch))
    for label, micros in best.items():
        print(f"parse {label:9s} {micros:6.2f} us/frame (best of {args.repeat})")
    server_types = column_types()
    for kind in (ORDER_FILLED, FEE_REFUND):
        rows = [e for e in events if KINDS[type(e)] is kind]
        types = copy_types(server_types, kind)
        micros = min(encode_per_row(kind, types, rows) for _ in range(args.repeat))
        print(f"encode {kind.stage:28s} {micros:6.2f} us/row ({len(rows)} rows)")


if __name__ == "__main__":
    main()
