"""Benchmark order_filled's index sets: Postgres backend CPU per inserted row, old vs new.

Two scratch databases on one server: one migrated to 4c1d9e2b7f30 (the indexes and collations
before 2026-12-06-0900_chain_index_costs), one to head. The rows are confirmed fills from the
venue's chain generator (random 32-byte transaction and order hashes, blocks every two seconds,
one to four makers and a taker aggregate per transaction, ~1.2 KB raw frames parsed as ingest
parses them), with more wallets and markets than the venue's default day so that the address
indexes are not unrealistically small. Each round writes the next batch to both databases, in
alternating order, as the ingest writer stores confirmed fills: a binary COPY straight into
order_filled and a COMMIT (`--merge`: its fallback for re-deliveries, COPY into a staging table
and INSERT ... SELECT ... ON CONFLICT DO NOTHING, of which only the INSERT and COMMIT count).

CPU is the backend's utime + stime from /proc/<pid>/stat around the statements (so the server
must run on this machine): other load moves it less than wall time, but moves it, hence the
side-by-side rounds, and the total per row printed with the median and quartiles of the rounds.
If the server loads pg_stat_statements, WAL bytes, full-page images and shared buffers touched
per row are printed too.

    .venv/bin/python scripts/bench_fill_indexes.py                      # 200k rows, 5k batches
    .venv/bin/python scripts/bench_fill_indexes.py --rows 400000 --prefill 1000000
    .venv/bin/python scripts/bench_fill_indexes.py --server postgresql://postgres@127.0.0.1:5499/postgres

`--prefill N` first writes N other rows into each database, untimed: a day partition grows to
~5M rows, and an index's insert cost grows with it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from operator import attrgetter
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import make_url, text

from app.db.migrate import upgrade
from app.db.models import OrderFilled
from app.db.partitions import ensure_partitions, partition_name
from app.db.session import make_engine, sqlalchemy_url
from app.domain.events import OrderFilledEvent
from app.ingest import parse
from app.venue import model
from app.venue.encode import order_filled_json
from app.venue.generator import FeedItem, build_universe, chain_day, hex_id

OLD_REVISION = "4c1d9e2b7f30"
COLUMNS = tuple(c.name for c in OrderFilled.__table__.columns if c.name != "received_at")
ROW = attrgetter(*COLUMNS)
NAMES = ", ".join(COLUMNS)
COPY = f"COPY order_filled ({NAMES}) FROM STDIN (FORMAT BINARY)"
STAGE = f"COPY bench_stage ({NAMES}) FROM STDIN (FORMAT BINARY)"
MERGE = (
    f"INSERT INTO order_filled ({NAMES}) SELECT {NAMES} FROM bench_stage "
    "ON CONFLICT (business_date, tx_hash, log_index) DO NOTHING"
)
FRAME_PREFIX = b'{"type":"event","subscription_id":"sub_bench","data":'
# Confirmed order_filled rows per unit of DayConfig.scale without pending events, a few % under
# the generator's, so that the rows asked for span the whole day.
ROWS_PER_SCALE = 800_000
TICKS = os.sysconf("SC_CLK_TCK")
# What pg_stat_statements counted of the measured statements, in this database.
STATEMENT_STATS = """
SELECT coalesce(sum(wal_bytes), 0), coalesce(sum(wal_fpi), 0),
       coalesce(sum(shared_blks_hit + shared_blks_read), 0)
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND (query LIKE 'COPY order_filled%' OR query LIKE 'INSERT INTO order_filled%')
"""


def chain_fills(rows: int, seed: int, markets: int, wallets: int) -> list[OrderFilledEvent]:
    """The first `rows` confirmed fills of a generated chain day, parsed from their frames."""
    config = model.DayConfig(
        seed=seed, scale=rows / ROWS_PER_SCALE, markets=markets, breaks={}, pending_fraction=0.0
    )
    universe = dataclasses.replace(
        build_universe(config),
        wallets=tuple(hex_id(seed, "wallet", w, size=20) for w in range(wallets)),
    )
    fills: list[OrderFilledEvent] = []
    for item in chain_day(config, universe):
        if isinstance(item, FeedItem) and isinstance(item.event, model.OrderFilled):
            frame = parse.orders_frame(FRAME_PREFIX + order_filled_json(item.event) + b"}")
            assert isinstance(frame, parse.OrdersEvent)
            assert isinstance(frame.event, OrderFilledEvent)
            fills.append(frame.event)
            if len(fills) == rows:
                break
    if len(fills) < rows:
        raise SystemExit(f"the generator gave {len(fills):,} fills, not {rows:,}")
    return fills


def backend_cpu(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class Target:
    """One scratch database and the backend that writes to it."""

    def __init__(self, label: str, conninfo: str, *, merge: bool) -> None:
        self.label = label
        self.merge = merge
        self.pg = psycopg.connect(conninfo)
        found = self.pg.execute("SELECT pg_backend_pid()").fetchone()
        assert found is not None
        self.pid = int(found[0])
        if not Path(f"/proc/{self.pid}/stat").exists():
            raise SystemExit("the server must run on this machine: its backends' CPU is read")
        # As the writer's sessions (BatchWriter._create_staging).
        self.pg.execute("SET default_toast_compression = lz4")
        self.pg.execute("SET jit = off")
        self.pg.execute(
            f"CREATE TEMP TABLE bench_stage ON COMMIT DELETE ROWS AS "
            f"SELECT {NAMES} FROM order_filled WITH NO DATA"
        )
        described = self.pg.execute(f"SELECT {NAMES} FROM order_filled LIMIT 0").description
        self.types = [c.type_code for c in described or ()]
        self.stats = self.pg.execute(
            "SELECT current_setting('shared_preload_libraries') ~ 'pg_stat_statements'"
        ).fetchone() == (True,)
        if self.stats:
            self.pg.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        self.pg.commit()
        self.rows = 0
        self.cpu = 0.0
        self.rounds: list[float] = []  # us per row

    def copy(self, statement: str, batch: Sequence[OrderFilledEvent]) -> None:
        with self.pg.cursor() as cur, cur.copy(statement) as copy:
            copy.set_types(self.types)
            for event in batch:
                copy.write_row(ROW(event))

    def write(self, batch: Sequence[OrderFilledEvent], *, measured: bool) -> None:
        if self.merge:
            self.copy(STAGE, batch)
        started = backend_cpu(self.pid)
        if self.merge:
            self.pg.execute(MERGE)
        else:
            self.copy(COPY, batch)
        self.pg.commit()
        cpu = backend_cpu(self.pid) - started
        if measured:
            self.rows += len(batch)
            self.cpu += cpu
            self.rounds.append(1e6 * cpu / len(batch))

    def reset_statement_stats(self) -> None:
        if self.stats:
            self.pg.execute(
                "SELECT pg_stat_statements_reset(0, oid, 0) FROM pg_database"
                " WHERE datname = current_database()"
            )
            self.pg.commit()

    def report(self) -> str:
        rounds = sorted(self.rounds)
        q1, q3 = rounds[len(rounds) // 4], rounds[(3 * len(rounds)) // 4]
        line = (
            f"{self.label}: {1e6 * self.cpu / self.rows:5.1f} us/row CPU "
            f"(rounds: median {statistics.median(rounds):5.1f}, quartiles {q1:.1f}-{q3:.1f})"
        )
        if self.stats:
            found = self.pg.execute(STATEMENT_STATS).fetchone()
            self.pg.rollback()
            assert found is not None
            wal, fpi, buffers = (float(v) / self.rows for v in found)
            line += f" | WAL {wal:5.0f} B/row, FPI {fpi:.3f}/row, buffers {buffers:4.1f}/row"
        return line

    def index_sizes(self, partition: str) -> str:
        rows = self.pg.execute(
            "SELECT i.relname, am.amname, pg_relation_size(i.oid)"
            " FROM pg_index AS x JOIN pg_class AS i ON i.oid = x.indexrelid"
            " JOIN pg_am AS am ON am.oid = i.relam"
            " WHERE x.indrelid = to_regclass(%s) ORDER BY i.relname",
            (partition,),
        ).fetchall()
        self.pg.rollback()
        return ", ".join(
            f"{name.removeprefix(partition + '_')} {am} {size / 2**20:.0f} MB"
            for name, am, size in rows
        )

    def close(self) -> None:
        self.pg.close()


def batches(events: Sequence[OrderFilledEvent], size: int) -> Iterator[Sequence[OrderFilledEvent]]:
    for i in range(0, len(events), size):
        yield events[i : i + size]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000, help="measured rows per database")
    parser.add_argument("--batch", type=int, default=5000, help="rows per write")
    parser.add_argument("--prefill", type=int, default=0, help="untimed rows written first")
    parser.add_argument("--merge", action="store_true", help="staged INSERT ... ON CONFLICT")
    parser.add_argument("--markets", type=int, default=500)
    parser.add_argument("--wallets", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--server",
        default=os.environ.get(
            "RECON_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="Postgres server URL, on this machine (two scratch databases are made there)",
    )
    args = parser.parse_args()

    started = time.perf_counter()
    fills = chain_fills(args.prefill + args.rows, args.seed, args.markets, args.wallets)
    prefill, measured = fills[: args.prefill], fills[args.prefill :]
    days = sorted({f.business_date for f in fills})
    print(
        f"cpu_count={os.cpu_count()} loadavg={os.getloadavg()[0]:.1f} rows={args.rows:,} "
        f"prefill={args.prefill:,} batch={args.batch:,} wallets={args.wallets:,} "
        f"markets={args.markets:,} path={'staged merge' if args.merge else 'COPY'}; "
        f"{len(fills):,} fills generated and parsed in {time.perf_counter() - started:.0f} s"
    )

    server = sqlalchemy_url(args.server)
    admin = make_engine(server).execution_options(isolation_level="AUTOCOMMIT")
    suffix = uuid.uuid4().hex[:8]
    revisions = {"old": OLD_REVISION, "new": "head"}
    names = {label: f"polyrecon_bench_idx_{label}_{suffix}" for label in revisions}
    targets: list[Target] = []
    try:
        for label, revision in revisions.items():
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{names[label]}"'))
            url = make_url(server).set(database=names[label])
            upgrade(url.render_as_string(hide_password=False), revision)
            engine = make_engine(url.render_as_string(hide_password=False))
            with engine.begin() as conn:
                ensure_partitions(conn, days)
            engine.dispose()
            conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
            targets.append(Target(f"{label} ({revision})", conninfo, merge=args.merge))
        for batch in batches(prefill, args.batch):
            for target in targets:
                target.write(batch, measured=False)
        for target in targets:
            target.reset_statement_stats()
        for n, batch in enumerate(batches(measured, args.batch)):
            for target in targets if n % 2 == 0 else reversed(targets):
                target.write(batch, measured=True)
        print(f"written; loadavg={os.getloadavg()[0]:.1f}")
        for target in targets:
            print(target.report())
        old, new = targets
        print(
            f"new/old CPU per row {new.cpu / old.cpu:.2f} "
            f"({1e6 * (new.cpu / new.rows - old.cpu / old.rows):+.1f} us/row)"
        )
        partition = partition_name("order_filled", days[-1])
        for target in targets:
            print(f"{target.label} {partition}: {target.index_sizes(partition)}")
    finally:
        for target in targets:
            target.close()
        with admin.connect() as conn:
            for name in names.values():
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
