"""The batch writer on a real Postgres: one transaction per batch, and the same final tables
whatever the order, batching or repetition of deliveries (the exactly-once effect)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
import pytest
import sqlalchemy.exc
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import errors
from sqlalchemy import Engine, create_engine, make_url, text

from app.db.models import pending_confirmed
from app.db.partitions import partition_name
from app.db.session import make_engine
from app.domain.events import (
    DeadLetter,
    Event,
    ExecutionEvent,
    TradeCaptureEvent,
    trade_delivery_order,
)
from app.ingest import parse
from app.ingest.writer import BatchWriter, Checkpoint
from polymarket.v1 import enums_pb2, trading_pb2

ENCODE = msgspec.json.Encoder(decimal_format="number").encode
DAY = date(2026, 11, 20)
NOON = datetime(2026, 11, 20, 12, tzinfo=UTC)


def ts(at: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at)
    return stamp


class Day:
    """A small trading day of every event kind. `ns` (8 hex digits) is part of every natural key
    and payload, so many days can share one database without touching each other."""

    def __init__(self, ns: str) -> None:
        self.ns = ns

    def execution(self, n: int, *, day: date = DAY) -> trading_pb2.Execution:
        return trading_pb2.Execution(
            id=f"E-{self.ns}-{n}",
            order=trading_pb2.Order(
                id=f"O-{self.ns}-{n}",
                symbol="sym-a",
                side=enums_pb2.SIDE_BUY if n % 2 else enums_pb2.SIDE_SELL,
                type=enums_pb2.ORDER_TYPE_LIMIT,
                time_in_force=enums_pb2.TIME_IN_FORCE_DAY,
                order_qty=100,
                price=525,
                state=enums_pb2.ORDER_STATE_FILLED,
                account=f"A{n % 3}",
            ),
            last_shares=100 + n,
            last_px=525,
            type=enums_pb2.EXECUTION_TYPE_FILL,
            transact_time=ts(NOON + timedelta(seconds=n)),
            trade_id=f"T-{self.ns}-{n // 2}",
            aggressor=bool(n % 2),
            commission_notional_collected=n - 3,
            transact_trade_date=trading_pb2.TradeDate(year=day.year, month=day.month, day=day.day),
        )

    def trade(self, n: int, state: int, update_second: int) -> trading_pb2.Trade:
        return trading_pb2.Trade(
            id=f"T-{self.ns}-{n}",
            aggressor=self.execution(2 * n + 1),
            passive=self.execution(2 * n),
            trade_type=enums_pb2.TRADE_TYPE_REGULAR,
            state=state,  # type: ignore[arg-type]  # the enum's numbers
            update_time=ts(NOON + timedelta(seconds=update_second)),
        )

    def instrument(self, state: int, update_second: int) -> trading_pb2.Instrument:
        return trading_pb2.Instrument(
            symbol=f"sym-{self.ns}",
            state=state,  # type: ignore[arg-type]  # the enum's numbers
            name="Sym",
            price_scale=1000,
            fractional_qty_scale=100,
            update_time=ts(NOON + timedelta(seconds=update_second)),
        )

    def position(self, n: int) -> trading_pb2.PositionChange:
        return trading_pb2.PositionChange(
            position=trading_pb2.Position(
                account=f"A-{self.ns}", symbol="sym-a", net_position=n, qty_bought=n
            ),
            change_time=ts(NOON + timedelta(seconds=n)),
        )

    def hash(self, kind: int, n: int) -> str:
        return f"0x{self.ns}{kind:04d}{n:052d}"

    def fill(self, tx: int, n: int, *, pending: bool = False, at: datetime = NOON) -> bytes:
        price = Decimal("0.52") if pending else Decimal("0.53")  # pending may differ slightly
        data = {
            "status": "pending" if pending else "confirmed",
            "event_type": "order_filled",
            "token_id": "123456789",
            "side": "BUY",
            "condition_id": self.hash(9, 0),
            "shares": 2_000_000 + n,
            "price": price,
            "tx_hash": self.hash(1, tx),
            "log_index": None if pending else hex(n),
            "timestamp": int(at.timestamp()),
            "order_hash": self.hash(2, n),
            "user": "0x" + "1" * 40,
            "taker": "0x" + "2" * 40,
            "role": "maker",
            "fee": Decimal("0.01"),
            "version": 1,
        }
        return self._frame("event", data)

    def refund(self, tx: int, n: int, *, at: datetime | None = None) -> bytes:
        data: dict[str, Any] = {
            "event_type": "fee_refund",
            "user": "0x" + "1" * 40,
            "order_hash": self.hash(2, n),
            "tx_hash": self.hash(1, tx),
            "refund": Decimal("0.004"),
            "fee_charged": Decimal("0.006"),
        }
        if at is not None:
            data["timestamp"] = int(at.timestamp())
        return self._frame("event", data)

    def legacy(self, tx: int, n: int) -> bytes:
        data = {
            "asset_id": "123456789",
            "condition_id": self.hash(9, 0),
            "shares": Decimal("2.5"),
            "price": Decimal("0.53"),
            "tx_hash": self.hash(1, tx),
            "timestamp": int(NOON.timestamp()),
            "order_hash": self.hash(2, n),
            "user": "0x" + "1" * 40,
            "taker": "0x" + "2" * 40,
        }
        return self._frame("trade", data)

    def _frame(self, kind: str, data: dict[str, Any]) -> bytes:
        return ENCODE({"type": kind, "subscription_id": f"sub_{self.ns}", "data": data})

    def events(self) -> list[Event]:
        """Every delivery of the day, duplicates included, in venue order."""
        just_before_midnight = datetime(2026, 11, 20, 23, 59, 58, tzinfo=UTC)
        after_midnight = datetime(2026, 11, 21, 0, 0, 2, tzinfo=UTC)
        cleared, busted = enums_pb2.TRADE_STATE_CLEARED, enums_pb2.TRADE_STATE_BUSTED
        new = enums_pb2.TRADE_STATE_NEW
        exchange: list[Event] = [
            *(parse.execution(self.execution(n)) for n in (1, 2, 3, 4, 5, 2, 3)),
            parse.trade_capture(self.trade(1, new, 10)),
            parse.trade_capture(self.trade(1, cleared, 20)),
            parse.trade_capture(self.trade(1, busted, 30)),
            parse.trade_capture(self.trade(1, cleared, 20)),  # re-sent after the bust
            parse.trade_capture(self.trade(1, cleared, 40)),  # even a later one: BUSTED is final
            parse.trade_capture(self.trade(2, new, 10)),
            parse.trade_capture(self.trade(2, cleared, 10)),  # same time: precedence decides
            parse.trade_capture(self.trade(2, new, 10)),
            parse.instrument(self.instrument(enums_pb2.INSTRUMENT_STATE_PREOPEN, 1)),
            parse.instrument(self.instrument(enums_pb2.INSTRUMENT_STATE_HALTED, 3)),
            parse.instrument(self.instrument(enums_pb2.INSTRUMENT_STATE_OPEN, 2)),
            parse.instrument(self.instrument(enums_pb2.INSTRUMENT_STATE_HALTED, 3)),
            *(parse.position_change(self.position(n)) for n in (1, 2, 3, 2)),
        ]
        frames = [
            self.fill(1, 1, pending=True),
            self.fill(1, 2, pending=True),
            self.fill(1, 1),
            self.fill(1, 2),
            self.fill(1, 1),
            self.refund(1, 1),
            self.refund(1, 1),
            self.fill(9, 7, pending=True),  # its transaction is dropped: never confirmed
            self.fill(2, 3, pending=True, at=just_before_midnight),
            self.fill(2, 3, at=after_midnight),
            self.refund(2, 3),
            self.refund(3, 4, at=NOON),  # no order_filled ever: dated by its own timestamp
        ]
        chain: list[Event] = []
        for raw in frames:
            parsed = parse.orders_frame(raw)
            assert isinstance(parsed, parse.OrdersEvent)
            chain.append(parsed.event)
        for raw in (self.legacy(1, 1), self.legacy(1, 2), self.legacy(1, 1)):
            legacy = parse.trades_frame(raw)
            assert isinstance(legacy, parse.TradeMessage)
            chain.append(legacy.event)
        return exchange + chain


SNAPSHOT = {
    "execution": "SELECT * FROM execution WHERE id LIKE 'E-' || :ns || '-%'",
    "trade_capture": "SELECT * FROM trade_capture WHERE id LIKE 'T-' || :ns || '-%'",
    "trade_capture_state": (
        "SELECT * FROM trade_capture_state WHERE trade_id LIKE 'T-' || :ns || '%'"
    ),
    "instrument": "SELECT * FROM instrument WHERE symbol = 'sym-' || :ns",
    "instrument_state_change": (
        "SELECT * FROM instrument_state_change WHERE symbol = 'sym-' || :ns"
    ),
    "position_change": "SELECT * FROM position_change WHERE account = 'A-' || :ns",
    "order_filled": "SELECT * FROM order_filled WHERE tx_hash LIKE '0x' || :ns || '%'",
    "order_filled_pending": (
        f"SELECT *, {pending_confirmed('p')} AS superseded "
        "FROM order_filled_pending AS p WHERE tx_hash LIKE '0x' || :ns || '%'"
    ),
    "fee_refund": "SELECT * FROM fee_refund WHERE tx_hash LIKE '0x' || :ns || '%'",
    "feed_trade": "SELECT * FROM feed_trade WHERE tx_hash LIKE '0x' || :ns || '%'",
    "stream_checkpoint": (
        "SELECT last_event_time, events_total FROM stream_checkpoint WHERE stream = :ns"
    ),
}
# When a row arrived or changed is not part of what it says.
VOLATILE = {"received_at", "updated_at"}


def snapshot(engine: Engine, ns: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the day `ns`, with `ns` itself masked so different days compare equal."""
    tables: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for table, sql in SNAPSHOT.items():
            result = conn.execute(text(sql), {"ns": ns})
            keep = [i for i, key in enumerate(result.keys()) if key not in VOLATILE]
            tables[table] = sorted(
                (tuple(_mask(row[i], ns) for i in keep) for row in result), key=repr
            )
    return tables


def _mask(value: Any, ns: str) -> Any:
    if isinstance(value, str):
        return value.replace(ns, "NS")
    if isinstance(value, bytes):
        return value.replace(ns.encode(), b"NS")
    return value


def write_all(writer: BatchWriter, ns: str, batches: Sequence[Sequence[Event]]) -> None:
    for batch in batches:
        times = (getattr(e, "event_time", None) for e in batch)
        last = max((t for t in times if t is not None), default=None)
        writer.write(batch, [], Checkpoint(ns, b"token", last))


@pytest.fixture(scope="module")
def shared_engine(pg_server_url: str, template_database: str) -> Iterator[Engine]:
    """One database for the whole module: the property test's examples can't each clone one."""
    name = f"recon_test_writer_{uuid.uuid4().hex[:10]}"
    admin = make_engine(pg_server_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"'))
        # Waiting for each commit's WAL flush is most of a small batch's time, and what these
        # tests check (atomicity, what a committed batch leaves) doesn't depend on it.
        conn.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
    engine = make_engine(make_url(pg_server_url).set(database=name).render_as_string(False))
    yield engine
    engine.dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="module")
def reference(shared_engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """The day written in venue order, in one batch."""
    ns = "aced0000"
    write_all(BatchWriter(shared_engine), ns, [Day(ns).events()])
    return snapshot(shared_engine, ns)


def test_the_reference_day_has_the_merge_semantics(
    shared_engine: Engine, reference: dict[str, list[tuple[Any, ...]]]
) -> None:
    ns = "aced0000"
    with shared_engine.connect() as conn:

        def rows(sql: str) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in conn.execute(text(sql), {"ns": ns})]

        assert rows("SELECT count(*) FROM execution WHERE id LIKE 'E-' || :ns || '%'") == [(5,)]
        assert rows(
            "SELECT id, state, busted FROM trade_capture "
            "WHERE id LIKE 'T-' || :ns || '%' ORDER BY id"
        ) == [
            (f"T-{ns}-1", "TRADE_STATE_BUSTED", True),
            (f"T-{ns}-2", "TRADE_STATE_CLEARED", False),
        ]
        assert rows(
            "SELECT count(*) FROM trade_capture_state WHERE trade_id = 'T-' || :ns || '-1'"
        ) == [(4,)]
        assert rows("SELECT state FROM instrument WHERE symbol = 'sym-' || :ns") == [
            ("INSTRUMENT_STATE_HALTED",)
        ]
        assert rows(
            "SELECT count(*) FROM instrument_state_change WHERE symbol = 'sym-' || :ns"
        ) == [(3,)]
        assert rows("SELECT count(*) FROM position_change WHERE account = 'A-' || :ns") == [(3,)]
        assert rows(
            "SELECT business_date, log_index FROM order_filled "
            "WHERE tx_hash LIKE '0x' || :ns || '%' ORDER BY business_date, log_index"
        ) == [(DAY, 1), (DAY, 2), (date(2026, 11, 21), 3)]
        # Confirmed fills supersede their pending rows, across midnight too; the dropped
        # transaction's pending row stays live.
        assert rows(
            f"SELECT business_date, right(order_hash, 1), {pending_confirmed('p')} "
            "FROM order_filled_pending AS p WHERE tx_hash LIKE '0x' || :ns || '%' ORDER BY 2"
        ) == [(DAY, "1", True), (DAY, "2", True), (DAY, "3", True), (DAY, "7", False)]
        assert rows(
            "SELECT right(order_hash, 1), business_date, event_time FROM fee_refund "
            "WHERE tx_hash LIKE '0x' || :ns || '%' ORDER BY 1"
        ) == [("1", DAY, None), ("3", date(2026, 11, 21), None), ("4", DAY, NOON)]
        assert rows("SELECT count(*) FROM feed_trade WHERE tx_hash LIKE '0x' || :ns || '%'") == [
            (2,)
        ]
    assert reference["stream_checkpoint"] == [(datetime(2026, 11, 21, 0, 0, 2, tzinfo=UTC), 38)]


def test_the_current_trade_is_the_greatest_delivery(
    shared_engine: Engine, reference: dict[str, list[tuple[Any, ...]]]
) -> None:
    """The SQL merge agrees with the domain's `trade_delivery_order`."""
    deliveries = [e for e in Day("aced0000").events() if isinstance(e, TradeCaptureEvent)]
    expected = {
        trade_id: max((e for e in deliveries if e.id == trade_id), key=trade_delivery_order)
        for trade_id in {e.id for e in deliveries}
    }
    with shared_engine.connect() as conn:
        stored = conn.execute(
            text("SELECT id, state, update_time, raw FROM trade_capture WHERE id = ANY(:ids)"),
            {"ids": list(expected)},
        ).all()
    assert sorted(tuple(row) for row in stored) == sorted(
        (e.id, e.state, e.update_time, e.raw) for e in expected.values()
    )


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_order_and_batching_gives_the_same_tables(
    shared_engine: Engine, reference: dict[str, list[tuple[Any, ...]]], data: st.DataObject
) -> None:
    # Not "aced...", the fixed tests' days, and 7 random hex digits: two examples sharing a day
    # would count its checkpoint twice.
    ns = f"b{uuid.uuid4().hex[:7]}"
    events = Day(ns).events()
    # Re-deliver a few events on top of the day's own duplicates.
    repeated = data.draw(st.lists(st.sampled_from(events), max_size=5))
    shuffled = data.draw(st.permutations([*events, *repeated]))
    cuts = sorted(data.draw(st.sets(st.integers(1, len(shuffled) - 1), max_size=3)))
    batches = [shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, len(shuffled)], strict=True)]
    write_all(BatchWriter(shared_engine), ns, batches)
    got = snapshot(shared_engine, ns)
    got["stream_checkpoint"] = [(t, n - len(repeated)) for t, n in got["stream_checkpoint"]]
    assert got == reference


def test_a_batch_commits_whole_or_not_at_all(shared_engine: Engine) -> None:
    writer = BatchWriter(shared_engine)
    day = Day("aced0001")
    good = parse.execution(day.execution(1))
    # Only a bug could build this (the parser refuses it); the database's check catches it.
    bad = ExecutionEvent(**{**msgspec.structs.asdict(good), "id": "bad", "last_shares": -1})
    letter = DeadLetter("aced0001", "why", b"raw")
    with pytest.raises(errors.CheckViolation):
        writer.write([good, bad], [letter], Checkpoint("aced0001", b"tok", NOON))
    assert snapshot(shared_engine, "aced0001")["execution"] == []
    assert writer.load_checkpoint("aced0001") is None
    with shared_engine.connect() as conn:
        letters = "SELECT count(*) FROM dead_letter WHERE source = 'aced0001'"
        assert conn.execute(text(letters)).scalar_one() == 0
    writer.write([good], [], Checkpoint("aced0001", b"tok", NOON))
    assert writer.load_checkpoint("aced0001") == Checkpoint("aced0001", b"tok", NOON)


def test_dead_letters_and_checkpoints(shared_engine: Engine) -> None:
    writer = BatchWriter(shared_engine)
    stream = "executions[aced0002]"
    assert writer.load_checkpoint(stream) is None
    letter = DeadLetter("feed-aced0002", "unparseable JSON: \x00", b"\xff{")
    result = writer.write([], [letter], Checkpoint("feed-aced0002", None, None))
    assert (result.events, result.dead_letters, result.rows) == (0, 1, {"dead_letter": 1})
    day = Day("aced0002")
    first = [parse.execution(day.execution(n)) for n in (1, 2)]
    writer.write(first, [], Checkpoint(stream, b"t1", NOON))
    writer.write(first[:1], [], Checkpoint(stream, b"t2", NOON - timedelta(hours=1)))
    with shared_engine.connect() as conn:
        assert conn.execute(
            text("SELECT reason, raw FROM dead_letter WHERE source = 'feed-aced0002'")
        ).one() == ("unparseable JSON: \\x00", b"\xff{")
        assert (
            conn.execute(
                text("SELECT events_total FROM stream_checkpoint WHERE stream = :s"), {"s": stream}
            ).scalar_one()
            == 3
        )
    # The newest token wins; the event time never goes backwards.
    assert writer.load_checkpoint(stream) == Checkpoint(stream, b"t2", NOON)


def test_record_gap(shared_engine: Engine) -> None:
    writer = BatchWriter(shared_engine)
    end = NOON + timedelta(minutes=1)
    writer.record_gap("orders-aced0003", NOON, end, "websocket disconnected")
    with shared_engine.connect() as conn:
        assert conn.execute(
            text(
                "SELECT start_time, end_time, reason, backfilled_at FROM gap_window "
                "WHERE source = 'orders-aced0003'"
            )
        ).one() == (NOON, end, "websocket disconnected", None)
    with pytest.raises(ValueError, match="before it starts"):
        writer.record_gap("orders-aced0003", NOON, NOON - timedelta(seconds=1), "clock")


def test_a_dropped_partition_is_made_again(shared_engine: Engine) -> None:
    writer = BatchWriter(shared_engine)
    day, when = Day("aced0004"), DAY + timedelta(days=30)
    writer.write([parse.execution(day.execution(1, day=when))], [], None)
    with shared_engine.begin() as conn:
        conn.execute(text(f"DROP TABLE {partition_name('execution', when)}"))
    result = writer.write([parse.execution(day.execution(2, day=when))], [], None)
    assert result.rows["execution"] == 1


def test_concurrent_workers_on_new_days(shared_engine: Engine) -> None:
    """Shards writing at once, each needing partitions nobody has made yet."""
    failures: list[BaseException] = []

    def worker(k: int) -> None:
        # Half of them as DropCopy streams may run: not waiting for the WAL flush.
        writer = BatchWriter(shared_engine, synchronous_commit=bool(k % 2))
        day = Day(f"aced01{k:02d}")
        try:
            for offset in range(3):
                when = DAY + timedelta(days=10 + offset)
                events = [parse.execution(day.execution(n, day=when)) for n in range(20)]
                writer.write(events, [], Checkpoint(f"executions[aced01{k:02d}]", b"t", NOON))
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures
    assert not any(thread.is_alive() for thread in threads)
    with shared_engine.connect() as conn:
        written = "SELECT count(*) FROM execution WHERE id LIKE 'E-aced01%'"
        assert conn.execute(text(written)).scalar_one() == 4 * 3 * 20
        streams = "SELECT count(*) FROM stream_checkpoint WHERE stream LIKE 'executions[aced01%'"
        assert conn.execute(text(streams)).scalar_one() == 4


def test_a_lost_connection_is_not_reused(shared_engine: Engine) -> None:
    """A write that finds its session killed fails; the next one gets a fresh connection."""
    # No pre-ping, so the write itself meets the dead session; one connection, so it's that one.
    engine = create_engine(shared_engine.url, pool_size=1, max_overflow=0)
    try:
        writer = BatchWriter(engine)
        day = Day("aced0005")
        writer.write([parse.execution(day.execution(1))], [], None)
        pooled = engine.raw_connection()
        backend = pooled.driver_connection.info.backend_pid  # type: ignore[union-attr]
        pooled.close()
        with shared_engine.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
        with pytest.raises(errors.OperationalError):
            writer.write([parse.execution(day.execution(2))], [], None)
        assert writer.write([parse.execution(day.execution(2))], [], None).rows["execution"] == 1
    finally:
        engine.dispose()


def test_chain_rows_are_compressed_with_lz4(shared_engine: Engine) -> None:
    """A chain row with its raw frame passes the TOAST threshold; pglz compression of every such
    row cost about a third of the database's time per chain event, so the writer asks for lz4."""
    with shared_engine.connect() as conn:
        try:
            conn.execute(text("SET default_toast_compression = 'lz4'"))
        except sqlalchemy.exc.DataError:
            pytest.skip("this Postgres is built without lz4")
    day = Day("aced0009")
    # Descriptive fields as long as the venue's (title, slugs, image URL): a ~2 KB row.
    frame = day.fill(1, 1).replace(
        b'"version":1', b'"version":1,"title":"' + b"Up or Down " * 120 + b'"'
    )
    event = parse.orders_frame(frame)
    assert isinstance(event, parse.OrdersEvent)
    BatchWriter(shared_engine).write([event.event], [], Checkpoint("aced0009", None, NOON))
    with shared_engine.connect() as conn:
        method = conn.execute(
            text("SELECT pg_column_compression(raw) FROM order_filled WHERE tx_hash = :tx"),
            {"tx": day.hash(1, 1)},
        ).scalar_one()
    assert method == "lz4"


def test_a_fill_stored_before_sends_its_batch_through_the_merge(shared_engine: Engine) -> None:
    """Confirmed fills are COPYed straight into order_filled. A re-delivery of a stored one makes
    that COPY fail; the batch then merges its fills with ON CONFLICT, losing and doubling none,
    and the pending rows, refunds and checkpoint of the batch are written as usual."""
    ns = "aced000a"
    day = Day(ns)
    writer = BatchWriter(shared_engine)

    def events(*frames: bytes) -> list[Event]:
        parsed = [parse.orders_frame(raw) for raw in frames]
        return [p.event for p in parsed if isinstance(p, parse.OrdersEvent)]

    # Two deliveries of one fill in a batch: the direct COPY takes the first.
    first = writer.write(events(day.fill(1, 1), day.fill(1, 1)), [], Checkpoint(ns, None, NOON))
    assert first.rows["order_filled"] == 1
    second = writer.write(
        events(
            day.fill(1, 2, pending=True),
            day.fill(1, 1),  # stored by the first batch
            day.fill(1, 2),
            day.refund(1, 2),
        ),
        [],
        Checkpoint(ns, None, NOON),
    )
    assert (second.events, second.rows["order_filled"], second.rows["fee_refund"]) == (4, 1, 1)
    with shared_engine.connect() as conn:
        fills = conn.execute(
            text("SELECT log_index, price FROM order_filled WHERE tx_hash = :tx ORDER BY 1"),
            {"tx": day.hash(1, 1)},
        ).all()
        pending = conn.execute(
            text(
                f"SELECT {pending_confirmed('p')} FROM order_filled_pending AS p "
                "WHERE tx_hash = :tx"
            ),
            {"tx": day.hash(1, 1)},
        ).all()
    assert [tuple(row) for row in fills] == [(1, Decimal("0.53")), (2, Decimal("0.53"))]
    assert [tuple(row) for row in pending] == [(True,)]  # its confirmation came in its batch
    assert writer.load_checkpoint(ns) == Checkpoint(ns, None, NOON)


def test_a_batch_leaves_the_fills_of_the_batch_before_it_to_that_batch(
    shared_engine: Engine,
) -> None:
    """Two batches of a stream are in flight at once, and confirmed fills are COPYed before a
    batch's turn. A fill the batch before holds uncommitted would make the COPY wait for that
    commit, which waits for this turn: so the batch leaves the fills of `behind` to it. (Were it
    to wait, the lock timeout would end it in 2 s and the batch would merge instead.)"""
    ns = "aced000b"
    day = Day(ns)
    writer = BatchWriter(shared_engine)
    parsed = [parse.orders_frame(day.fill(1, n)) for n in (1, 2)]
    first, second = [p.event for p in parsed if isinstance(p, parse.OrdersEvent)]
    staged, release = threading.Event(), threading.Event()

    def hold() -> None:
        staged.set()
        release.wait(10)

    before = threading.Thread(
        target=writer.write,
        args=([first], [], Checkpoint(ns, None, NOON)),
        kwargs={"before_merge": hold},
    )
    before.start()
    assert staged.wait(10)
    started = time.monotonic()
    waited: list[float] = []

    def turn() -> None:
        waited.append(time.monotonic() - started)
        release.set()
        before.join(10)

    result = writer.write(
        [first, second], [], Checkpoint(ns, None, NOON), before_merge=turn, behind=[first]
    )
    assert waited[0] < 1.5
    assert result.rows["order_filled"] == 1
    with shared_engine.connect() as conn:
        stored = conn.execute(
            text("SELECT log_index FROM order_filled WHERE tx_hash = :tx ORDER BY 1"),
            {"tx": day.hash(1, 1)},
        ).scalars()
        assert list(stored) == [1, 2]
