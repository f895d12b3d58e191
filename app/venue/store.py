"""The simulated day on disk: one SQLite file per day config, built once and then read by the
venue's gRPC and websocket servers.

`VenueStore.build` streams the generator into SQLite in batches (bounded memory) with every
payload pre-encoded, so serving is a range scan. A file whose stored config hash matches is reused.
Reads are thread-safe: each thread gets its own connection.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import sqlite3
import threading
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import orjson

from app.venue.encode import (
    encode_execution,
    encode_instrument,
    encode_order,
    encode_position,
    encode_position_change,
    encode_trade,
    fee_refund_json,
    legacy_trade_json,
    order_filled_json,
)
from app.venue.generator import (
    DayItem,
    ExecutionItem,
    FeedItem,
    PositionItem,
    ReportOrderItem,
    ReportTradeItem,
    StreamItem,
    Universe,
    build_universe,
    chain_day,
    exchange_day,
)
from app.venue.model import (
    STREAM_NAMES,
    Break,
    DayConfig,
    FeedName,
    FeedRow,
    FeeRefund,
    InstrumentStatus,
    OrderFilled,
    StreamName,
    StreamRow,
    TradeCapture,
)

__all__ = ["FeedRow", "FeedTuple", "StreamName", "StreamRow", "VenueStore"]

_BATCH = 2_000  # items between flushes: bounds memory, amortises executemany
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE executions (
    seq INTEGER PRIMARY KEY, time_us INTEGER NOT NULL, symbol TEXT NOT NULL,
    firm TEXT NOT NULL, firm2 TEXT NOT NULL, payload BLOB NOT NULL);
CREATE TABLE trade_captures (
    seq INTEGER PRIMARY KEY, time_us INTEGER NOT NULL, symbol TEXT NOT NULL,
    firm TEXT NOT NULL, firm2 TEXT NOT NULL, payload BLOB NOT NULL);
CREATE TABLE instrument_states (
    seq INTEGER PRIMARY KEY, time_us INTEGER NOT NULL, symbol TEXT NOT NULL,
    firm TEXT NOT NULL, firm2 TEXT NOT NULL, payload BLOB NOT NULL);
CREATE TABLE position_changes (
    seq INTEGER PRIMARY KEY, time_us INTEGER NOT NULL, symbol TEXT NOT NULL,
    firm TEXT NOT NULL, firm2 TEXT NOT NULL, payload BLOB NOT NULL);
CREATE TABLE report_executions (
    exec_id TEXT PRIMARY KEY, time_us INTEGER NOT NULL, symbol TEXT NOT NULL,
    account TEXT NOT NULL, order_id TEXT NOT NULL, exec_type INTEGER NOT NULL,
    payload BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE report_trades (
    trade_id TEXT PRIMARY KEY, time_us INTEGER NOT NULL, symbol TEXT NOT NULL,
    aggressor_account TEXT NOT NULL, passive_account TEXT NOT NULL, state INTEGER NOT NULL,
    payload BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE report_orders (
    order_id TEXT PRIMARY KEY, time_us INTEGER NOT NULL, symbol TEXT NOT NULL,
    account TEXT NOT NULL, payload BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE positions (
    account TEXT NOT NULL, symbol TEXT NOT NULL, payload BLOB NOT NULL,
    PRIMARY KEY (account, symbol)) WITHOUT ROWID;
CREATE TABLE orders_feed (
    seq INTEGER PRIMARY KEY, time_us INTEGER NOT NULL, status TEXT NOT NULL,
    condition_id TEXT NOT NULL, market_slug TEXT NOT NULL, users TEXT NOT NULL,
    data BLOB NOT NULL);
CREATE TABLE trades_feed (
    seq INTEGER PRIMARY KEY, time_us INTEGER NOT NULL, status TEXT NOT NULL,
    condition_id TEXT NOT NULL, market_slug TEXT NOT NULL, users TEXT NOT NULL,
    data BLOB NOT NULL);
"""
# Built after the bulk load, which is faster than maintaining them row by row. Report keys (ids)
# grow with time, so a time window becomes a key range found through these indexes.
_INDEXES = """
CREATE INDEX executions_time ON executions (time_us);
CREATE INDEX trade_captures_time ON trade_captures (time_us);
CREATE INDEX instrument_states_time ON instrument_states (time_us);
CREATE INDEX position_changes_time ON position_changes (time_us);
CREATE INDEX report_executions_time ON report_executions (time_us, exec_id);
CREATE INDEX report_executions_order ON report_executions (order_id);
CREATE INDEX report_trades_time ON report_trades (time_us, trade_id);
CREATE INDEX report_orders_time ON report_orders (time_us, order_id);
"""
# Address space, not memory: SQLite caps it at its build's limit (2 GiB by default) and reads
# pages beyond that as before.
_MMAP_BYTES = 1 << 40
_STREAM_INSERT = "INSERT INTO {} VALUES (?, ?, ?, ?, ?, ?)"
_FEED_INSERT = "INSERT INTO {} VALUES (?, ?, ?, ?, ?, ?, ?)"
_FEED_TABLES: dict[FeedName, str] = {"orders": "orders_feed", "trades": "trades_feed"}
# A feed row as served: seq, status, condition_id, market_slug, users (the addresses a user
# filter matches, space-separated), data (the event's JSON, exactly as sent).
FeedTuple = tuple[int, str, str, str, str, bytes]
_SERVED_COLUMNS = "seq, status, condition_id, market_slug, users, data"


class VenueStore:
    """A built day, read by many threads. Obtain one with `build` or `open`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        try:
            meta = dict(self._db().execute("SELECT key, value FROM meta").fetchall())
            if meta.get("complete") != b"1":
                raise ValueError(f"{path} is not a complete venue store")
            self.config = DayConfig.from_dict(orjson.loads(meta["config"]))
            self.config_hash = str(meta["config_hash"].decode())
            self._truth_json: bytes = meta["truth"]
            self._lengths: dict[str, int] = {
                name: self._db().execute(f"SELECT coalesce(max(seq), 0) FROM {name}").fetchone()[0]
                for name in (*STREAM_NAMES, *_FEED_TABLES.values())
            }
        except BaseException:
            self.close()
            raise
        self._universe = build_universe(self.config)

    # lifecycle -----------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path) -> VenueStore:
        if not path.is_file():
            raise FileNotFoundError(path)
        return cls(path)

    @classmethod
    def build(
        cls,
        config: DayConfig,
        path: Path,
        progress: Callable[[int], None] | None = None,
        *,
        parallel: bool | None = None,
    ) -> VenueStore:
        """The store of `config` at `path`: reused if it is there and built from the same
        config, else generated (into a temporary file renamed into place when complete).

        `progress` is called with the number of rows written so far. `parallel` lets a second
        process generate the chain half (default: when the day is big enough to gain from it);
        the file is the same either way."""
        if path.is_file():
            with contextlib.suppress(sqlite3.DatabaseError, ValueError, KeyError):
                existing = cls(path)
                if existing.config_hash == config.config_hash():
                    return existing
                existing.close()
        path.parent.mkdir(parents=True, exist_ok=True)
        building = path.with_name(f"{path.name}.building-{os.getpid()}")
        _remove_database(building)
        try:
            if parallel is None:
                parallel = config.scale >= _PARALLEL_FROM_SCALE
            _write_day(config, building, progress, parallel=parallel)
            _remove_database(path)
            building.replace(path)
        finally:
            _remove_database(building)
        return cls(path)

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _db(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # Each thread uses only its own connection; close() may run on another thread.
            conn = sqlite3.connect(self.path, check_same_thread=False)
            conn.execute("PRAGMA query_only = ON")
            # Serving is range scans of a file that no longer changes: reading its pages through
            # a memory map instead of a read() per page cuts the CPU per feed row read by a fifth.
            conn.execute(f"PRAGMA mmap_size = {_MMAP_BYTES}")
            with self._lock:
                self._connections.append(conn)
            self._local.conn = conn
        return conn

    # ground truth --------------------------------------------------------------------------------

    def truth(self) -> dict[str, object]:
        truth: dict[str, object] = orjson.loads(self._truth_json)
        return truth

    def write_truth(self, path: Path) -> None:
        path.write_bytes(self._truth_json)

    def firms(self) -> list[str]:
        return sorted({a.firm for a in self._universe.accounts})

    def accounts(self) -> list[str]:
        return [a.account for a in self._universe.accounts]

    def symbols(self) -> list[str]:
        return [spec.symbol for spec in self._universe.instruments]

    # DropCopy streams ----------------------------------------------------------------------------

    def stream(
        self,
        name: StreamName,
        after_seq: int,
        symbols: Sequence[str],
        firms: Sequence[str],
        limit: int,
    ) -> list[StreamRow]:
        """Rows after `after_seq` in seq order. Empty filters select everything; a trade capture
        matches a firm filter through either side's firm."""
        table = _stream_table(name)
        where = ["seq > ?"]
        params: list[object] = [after_seq]
        if symbols:
            where.append(f"symbol IN ({_marks(symbols)})")
            params.extend(symbols)
        if firms:
            where.append(f"(firm IN ({_marks(firms)}) OR firm2 IN ({_marks(firms)}))")
            params.extend(firms)
            params.extend(firms)
        params.append(limit)
        rows = self._db().execute(
            f"SELECT seq, time_us, symbol, firm, payload FROM {table} "
            f"WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?",
            params,
        )
        return [StreamRow(*row) for row in rows]

    def first_seq_at_or_after(self, name: StreamName, time_us: int) -> int:
        """The `after_seq` from which `stream` starts at the first event at or after `time_us`."""
        table = _stream_table(name)
        row = (
            self._db()
            .execute(
                f"SELECT seq FROM {table} WHERE time_us >= ? ORDER BY time_us LIMIT 1", (time_us,)
            )
            .fetchone()
        )
        return int(row[0]) - 1 if row else self.stream_length(name)

    def stream_length(self, name: StreamName) -> int:
        return self._lengths[_stream_table(name)]

    # Report API ----------------------------------------------------------------------------------

    def search_executions(
        self,
        *,
        start_us: int | None,
        end_us: int | None,
        symbol: str | None,
        accounts: Sequence[str],
        exec_ids: Sequence[str],
        order_id: str | None,
        types: Sequence[int],
        after_key: str | None,
        limit: int,
    ) -> tuple[list[bytes], str | None]:
        """Executions the Report API knows, in id (= time) order; start inclusive, end exclusive."""
        query = _KeyedQuery("report_executions", "exec_id")
        query.equal("symbol", symbol)
        query.equal("order_id", order_id)
        query.any_of("account", accounts)
        query.any_of("exec_id", exec_ids)
        query.any_of("exec_type", types)
        return query.page(self._db(), start_us, end_us, after_key, limit)

    def search_trades(
        self,
        *,
        start_us: int | None,
        end_us: int | None,
        symbol: str | None,
        accounts: Sequence[str],
        trade_ids: Sequence[str],
        states: Sequence[int],
        after_key: str | None,
        limit: int,
    ) -> tuple[list[bytes], str | None]:
        """Trades in their final state; the time window applies to the aggressor's
        transact_time, an account filter to either side."""
        query = _KeyedQuery("report_trades", "trade_id")
        query.equal("symbol", symbol)
        if accounts:
            marks = _marks(accounts)
            query.where.append(f"(aggressor_account IN ({marks}) OR passive_account IN ({marks}))")
            query.params.extend([*accounts, *accounts])
        query.any_of("trade_id", trade_ids)
        query.any_of("state", states)
        return query.page(self._db(), start_us, end_us, after_key, limit)

    def search_orders(
        self,
        *,
        start_us: int | None,
        end_us: int | None,
        symbol: str | None,
        accounts: Sequence[str],
        order_ids: Sequence[str],
        after_key: str | None,
        limit: int,
    ) -> tuple[list[bytes], str | None]:
        """The latest state of each order; the time window applies to its create_time."""
        query = _KeyedQuery("report_orders", "order_id")
        query.equal("symbol", symbol)
        query.any_of("account", accounts)
        query.any_of("order_id", order_ids)
        return query.page(self._db(), start_us, end_us, after_key, limit)

    def list_positions(self, accounts: Sequence[str], symbols: Sequence[str]) -> list[bytes]:
        where, params = ["1"], list[object]()
        if accounts:
            where.append(f"account IN ({_marks(accounts)})")
            params.extend(accounts)
        if symbols:
            where.append(f"symbol IN ({_marks(symbols)})")
            params.extend(symbols)
        rows = self._db().execute(
            f"SELECT payload FROM positions WHERE {' AND '.join(where)} ORDER BY account, symbol",
            params,
        )
        return [row[0] for row in rows]

    # chain feeds ---------------------------------------------------------------------------------

    def orders_feed(self, after_seq: int, limit: int) -> list[FeedRow]:
        """order_filled (pending and confirmed) and fee_refund events, in time order."""
        return self._feed("orders", after_seq, limit)

    def trades_feed(self, after_seq: int, limit: int) -> list[FeedRow]:
        """The legacy "trade" provider: one message per confirmed maker fill."""
        return self._feed("trades", after_seq, limit)

    def feed_slice(self, feed: FeedName, after_seq: int, limit: int) -> list[FeedTuple]:
        """The feed's rows after `after_seq` as the feed server reads them: plain tuples from
        SQLite, so that serving builds no object per row and splits `users` only for a
        subscription that filters by user (most take every user)."""
        return self._feed_rows(_SERVED_COLUMNS, feed, after_seq, limit)

    def feed_length(self, feed: FeedName) -> int:
        return self._lengths[_FEED_TABLES[feed]]

    def confirmed_tx_times(self, tx_hashes: Sequence[str]) -> dict[str, datetime]:
        """The earliest confirmed orders-feed event time of each of these transactions (the
        ground truth of when the chain saw it, whatever a consumer of the feed received)."""
        if not tx_hashes:
            return {}
        rows = self._db().execute(
            "SELECT tx, min(ts) FROM (SELECT json_extract(CAST(data AS TEXT), '$.tx_hash')"
            " AS tx, json_extract(CAST(data AS TEXT), '$.timestamp') AS ts"
            " FROM orders_feed WHERE status = 'confirmed')"
            f" WHERE tx IN ({_marks(tx_hashes)}) GROUP BY tx",
            list(tx_hashes),
        )
        return {tx: datetime.fromtimestamp(ts, UTC) for tx, ts in rows}

    def _feed(self, feed: FeedName, after_seq: int, limit: int) -> list[FeedRow]:
        return [
            FeedRow(seq, time_us, status, condition_id, slug, tuple(users.split()), data)
            for seq, time_us, status, condition_id, slug, users, data in self._feed_rows(
                "seq, time_us, status, condition_id, market_slug, users, data",
                feed,
                after_seq,
                limit,
            )
        ]

    def _feed_rows(
        self, columns: str, feed: FeedName, after_seq: int, limit: int
    ) -> list[Any]:  # sqlite3 rows are untyped; each caller names the columns' types
        return (
            self._db()
            .execute(
                f"SELECT {columns} FROM {_FEED_TABLES[feed]} WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            )
            .fetchall()
        )


class _KeyedQuery:
    """A Report API search over a table whose text key grows with its time column."""

    def __init__(self, table: str, key: str) -> None:
        self.table = table
        self.key = key
        self.where: list[str] = []
        self.params: list[object] = []

    def equal(self, column: str, value: str | None) -> None:
        if value:
            self.where.append(f"{column} = ?")
            self.params.append(value)

    def any_of(self, column: str, values: Sequence[str] | Sequence[int]) -> None:
        if values:
            self.where.append(f"{column} IN ({_marks(values)})")
            self.params.extend(values)

    def _first_key_at(self, db: sqlite3.Connection, time_us: int) -> str | None:
        row = db.execute(
            f"SELECT {self.key} FROM {self.table} WHERE time_us >= ? "
            f"ORDER BY time_us, {self.key} LIMIT 1",
            (time_us,),
        ).fetchone()
        return None if row is None else str(row[0])

    def page(
        self,
        db: sqlite3.Connection,
        start_us: int | None,
        end_us: int | None,
        after_key: str | None,
        limit: int,
    ) -> tuple[list[bytes], str | None]:
        where, params = list(self.where), list(self.params)
        if after_key is not None:
            where.append(f"{self.key} > ?")
            params.append(after_key)
        if start_us is not None:
            low = self._first_key_at(db, start_us)
            if low is None:
                return [], None
            where.append(f"{self.key} >= ?")
            params.append(low)
        if end_us is not None:
            high = self._first_key_at(db, end_us)
            if high is not None:
                where.append(f"{self.key} < ?")
                params.append(high)
        params.append(limit + 1)
        rows = db.execute(
            f"SELECT {self.key}, payload FROM {self.table} "
            f"WHERE {' AND '.join(where) or '1'} ORDER BY {self.key} LIMIT ?",
            params,
        ).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        return [row[1] for row in rows], (str(rows[-1][0]) if more else None)


def _marks(values: Sequence[object]) -> str:
    return ", ".join("?" * len(values))


def _stream_table(name: str) -> str:
    if name not in STREAM_NAMES:
        raise ValueError(f"unknown stream {name!r}; streams: {', '.join(STREAM_NAMES)}")
    return name


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


# --- building ------------------------------------------------------------------------------------

Row = tuple[object, ...]

# Below this many expected chain events a second process costs more than it saves.
_PARALLEL_FROM_SCALE = 0.1


@dataclass(frozen=True, slots=True)
class _ChainBatch:
    """Encoded chain rows, ready to insert (seq included), with the breaks found among them."""

    rows: dict[str, list[Row]]
    counts: dict[str, int]
    breaks: list[Break]


def chain_batches(config: DayConfig, universe: Universe) -> Iterator[_ChainBatch]:
    """The chain half of the day as insert-ready batches; runs in the parent or a worker."""
    rows: dict[str, list[Row]] = {table: [] for table in _FEED_TABLES.values()}
    seqs = dict.fromkeys(rows, 0)
    counts = dict.fromkeys(("order_filled_confirmed", "order_filled_pending", "fee_refund"), 0)
    breaks: list[Break] = []
    size = 0
    for item in chain_day(config, universe):
        if isinstance(item, Break):
            breaks.append(item)
            continue
        assert isinstance(item, FeedItem)
        event = item.event
        if isinstance(event, OrderFilled):
            counts[f"order_filled_{event.status}"] += 1
            status, users, data = (
                event.status,
                f"{event.user} {event.taker}",
                order_filled_json(event),
            )
        elif isinstance(event, FeeRefund):
            counts["fee_refund"] += 1
            status, users, data = "confirmed", event.user, fee_refund_json(event)
        else:
            status, users, data = (
                "confirmed",
                f"{event.user} {event.taker}",
                legacy_trade_json(event),
            )
        table = _FEED_TABLES[item.feed]
        seqs[table] += 1
        market = event.market
        rows[table].append(
            (
                seqs[table],
                item.time_us,
                status,
                market.condition_id,
                market.market_slug,
                users,
                data,
            )
        )
        size += 1
        if size == _BATCH:
            yield _ChainBatch(rows, counts, breaks)
            rows = {table: [] for table in _FEED_TABLES.values()}
            counts = dict.fromkeys(counts, 0)
            breaks, size = [], 0
    yield _ChainBatch(rows, counts, breaks)


def _chain_worker(config: Mapping[str, object], queue: multiprocessing.Queue[object]) -> None:
    """Process entry: generate and encode the chain half, handing batches to the parent."""
    try:
        day = DayConfig.from_dict(config)
        for batch in chain_batches(day, build_universe(day)):
            queue.put(batch)
        queue.put(None)
    except BaseException:
        queue.put(traceback.format_exc())
        raise


class _DayWriter:
    """Encodes the exchange's day items into table rows and writes everything in batches."""

    def __init__(self, db: sqlite3.Connection, progress: Callable[[int], None] | None) -> None:
        self.db = db
        self.progress = progress
        self.written = 0
        self.streams: dict[str, list[Row]] = {name: [] for name in STREAM_NAMES}
        self.report_executions: list[Row] = []
        self.report_trades: list[Row] = []
        self.report_orders: list[Row] = []
        self.positions: list[Row] = []
        self.counts: Counter[str] = Counter()
        self.breaks: list[Break] = []

    def write_exchange(
        self, items: Iterator[DayItem], between_batches: Callable[[], None] | None = None
    ) -> None:
        pending = 0
        for item in items:
            self.add(item)
            pending += 1
            if pending == _BATCH:
                self.flush()
                pending = 0
                if between_batches is not None:
                    between_batches()
        self.flush()

    def write_chain(self, batch: _ChainBatch) -> None:
        for table, rows in batch.rows.items():
            if rows:
                self.db.executemany(_FEED_INSERT.format(table), rows)
                self.counts[table] += len(rows)
                self.written += len(rows)
        self.counts.update(batch.counts)
        self.breaks.extend(batch.breaks)
        self.report_progress()

    def report_progress(self) -> None:
        if self.progress is not None:
            self.progress(self.written)

    def add(self, item: DayItem) -> None:
        if isinstance(item, ExecutionItem):
            self.add_execution(item)
        elif isinstance(item, StreamItem):
            self.add_stream(item)
        elif isinstance(item, ReportTradeItem):
            trade = item.trade
            self.report_trades.append(
                (
                    trade.id,
                    trade.aggressor.transact_time_us,
                    trade.aggressor.order.symbol,
                    trade.aggressor.order.account,
                    trade.passive.order.account,
                    trade.state,
                    encode_trade(trade),
                )
            )
        elif isinstance(item, ReportOrderItem):
            order = item.order
            self.report_orders.append(
                (order.id, order.create_time_us, order.symbol, order.account, encode_order(order))
            )
        elif isinstance(item, PositionItem):
            position = item.position
            self.positions.append((position.account, position.symbol, encode_position(position)))
        elif isinstance(item, Break):
            self.breaks.append(item)
        else:
            raise TypeError(f"not an exchange item: {item!r}")

    def add_execution(self, item: ExecutionItem) -> None:
        execution = item.execution
        order = execution.order
        payload = encode_execution(execution)
        if item.in_stream:
            self.counts["executions"] += 1
            self.streams["executions"].append(
                (
                    self.counts["executions"],
                    execution.transact_time_us,
                    order.symbol,
                    item.firm,
                    item.firm,
                    payload,
                )
            )
        report = item.report
        if report is not None:
            self.report_executions.append(
                (
                    report.id,
                    report.transact_time_us,
                    order.symbol,
                    order.account,
                    order.id,
                    report.exec_type,
                    payload if report is execution else encode_execution(report),
                )
            )

    def add_stream(self, item: StreamItem) -> None:
        value = item.value
        if isinstance(value, TradeCapture):
            payload = encode_trade(value)
        elif isinstance(value, InstrumentStatus):
            payload = encode_instrument(value)
        else:
            payload = encode_position_change(value)
        self.counts[item.stream] += 1
        firms = item.firms
        self.streams[item.stream].append(
            (
                self.counts[item.stream],
                item.time_us,
                item.symbol,
                firms[0] if firms else "",
                firms[-1] if firms else "",
                payload,
            )
        )

    def flush(self) -> None:
        db = self.db
        for name, rows in self.streams.items():
            if rows:
                db.executemany(_STREAM_INSERT.format(name), rows)
                self.written += len(rows)
                rows.clear()
        for table, rows, width in (
            ("report_executions", self.report_executions, 7),
            ("report_trades", self.report_trades, 7),
            ("report_orders", self.report_orders, 5),
            ("positions", self.positions, 3),
        ):
            if rows:
                self.counts[table] += len(rows)
                db.executemany(f"INSERT INTO {table} VALUES ({_marks(range(width))})", rows)
                self.written += len(rows)
                rows.clear()
        self.report_progress()

    def truth(self, config: DayConfig) -> bytes:
        counts = {
            name: self.counts[name]
            for name in (
                *STREAM_NAMES,
                *_FEED_TABLES.values(),
                "report_executions",
                "report_trades",
                "report_orders",
                "positions",
                "order_filled_confirmed",
                "order_filled_pending",
                "fee_refund",
            )
        }
        breaks = sorted((b.to_dict() for b in self.breaks), key=lambda b: (b["kind"], b["key"]))
        return orjson.dumps(
            {
                "seed": config.seed,
                "business_date": config.business_date.isoformat(),
                "scale": config.scale,
                "config_hash": config.config_hash(),
                "counts": counts,
                "breaks": breaks,
            },
            option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE,
        )


class _ChainWorker:
    """The chain half generated in a second process while this one writes the exchange half.

    Spawned, not forked: the caller may run other threads (a progress bar, servers), and a fork
    would copy their locks mid-flight. Like any spawn, it needs the caller's main module to guard
    its entry point with `if __name__ == "__main__":`.
    """

    def __init__(self, config: DayConfig) -> None:
        context = multiprocessing.get_context("spawn")
        self.queue: multiprocessing.Queue[object] = context.Queue(maxsize=8)
        self.process = context.Process(
            target=_chain_worker, args=(config.to_dict(), self.queue), daemon=True
        )
        self.process.start()
        self.done = False

    def drain(self, writer: _DayWriter, *, block: bool) -> None:
        while not self.done:
            try:
                message = self.queue.get(block=block, timeout=1.0 if block else None)
            except queue.Empty:
                if not block:
                    return
                if not self.process.is_alive():
                    raise RuntimeError(
                        f"the chain worker exited ({self.process.exitcode}) before finishing"
                    ) from None
                continue
            if message is None:
                self.done = True
            elif isinstance(message, _ChainBatch):
                writer.write_chain(message)
            else:
                raise RuntimeError(f"the chain worker failed:\n{message}")

    def close(self) -> None:
        if self.process.is_alive() and not self.done:
            self.process.terminate()
        self.process.join()
        self.queue.close()


def _write_day(
    config: DayConfig, path: Path, progress: Callable[[int], None] | None, *, parallel: bool
) -> None:
    worker = _ChainWorker(config) if parallel else None
    try:
        db = sqlite3.connect(path, isolation_level=None)
        try:
            _load(db, config, _DayWriter(db, progress), worker)
        finally:
            db.close()
    finally:
        if worker is not None:
            worker.close()


def _load(
    db: sqlite3.Connection, config: DayConfig, writer: _DayWriter, worker: _ChainWorker | None
) -> None:
    # A half-built file is thrown away, so the bulk load skips the journal entirely.
    db.execute("PRAGMA journal_mode = OFF")
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA cache_size = -16384")
    db.executescript(_SCHEMA)
    db.execute("BEGIN")
    universe = build_universe(config)
    if worker is None:
        writer.write_exchange(exchange_day(config, universe))
        for batch in chain_batches(config, universe):
            writer.write_chain(batch)
    else:
        writer.write_exchange(
            exchange_day(config, universe), lambda: worker.drain(writer, block=False)
        )
        worker.drain(writer, block=True)
    db.execute("COMMIT")
    db.executescript(_INDEXES)
    db.execute("PRAGMA analysis_limit = 1000")
    db.execute("ANALYZE")
    db.executemany(
        "INSERT INTO meta VALUES (?, ?)",
        [
            ("config", orjson.dumps(config.to_dict(), option=orjson.OPT_SORT_KEYS)),
            ("config_hash", config.config_hash().encode()),
            ("truth", writer.truth(config)),
            ("complete", b"1"),
        ],
    )
    db.execute("PRAGMA journal_mode = WAL")
