"""Bad input through the real ingest worker into Postgres, over real sockets on loopback.

A scripted DropCopy server and two scripted websocket feeds send generated mixes of valid and
invalid messages (the unit properties' mutations, protobuf that can't be decoded, frames that
are not UTF-8 or too big); the worker must store every valid one exactly once, dead-letter every
invalid one with its bytes and a reason, and finish cleanly. Tests that bypass the parser show
that what it would let through by mistake is still isolated, never retried forever.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import grpc
import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text
from websockets.asyncio.server import ServerConnection, serve

from app.ingest import parse
from app.ingest.auth import StaticToken
from app.ingest.backoff import BackoffPolicy
from app.ingest.feeds import FeedSettings
from app.ingest.parse import MAX_BIGINT
from app.ingest.pipeline import SourceSink, SourceStatus
from app.ingest.worker import IngestConfig, IngestWorker
from app.ingest.writer import BatchWriter, Checkpoint
from app.observability import IngestMetrics
from polymarket.v1 import dropcopy_pb2, trading_pb2
from tests.guarantees import Record
from tests.unit.test_parse import execution_message, order_filled_data
from tests.unit.test_parse_properties import (
    EXECUTION,
    FEE_REFUND,
    INVALID_UTF8,
    LEGACY_TRADE,
    ORDER_FILLED,
    ChainKind,
    _break_utf8,
    _item,
    chain_message,
    out_of_range,
    proto_mutation,
    unknown_enum,
    valid_execution,
    wrong_type,
)

BAD_INPUT = "Bad input"
DAY = date(2026, 5, 4)
BASE = int(datetime(2026, 5, 4, 12, tzinfo=UTC).timestamp())
SUBSCRIBE_ACK = b'{"type":"ack","subscription_id":"sub-bad-input"}'


# --- scripted venue ------------------------------------------------------------------------------


@dataclass
class Feed:
    """What one websocket feed sends, in order, across connections: (frame, is_text, then wait
    for the client to hang up)."""

    frames: list[tuple[bytes, bool, bool]] = field(default_factory=list)
    connections: int = 0

    async def handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        await ws.send('{"type":"connected"}')
        await ws.recv()
        await ws.send(SUBSCRIBE_ACK, text=True)
        while self.frames:
            frame, is_text, hang_up = self.frames.pop(0)
            await ws.send(frame, text=is_text)
            if hang_up:
                break
        await ws.wait_closed()


def dropcopy_handler(responses: Sequence[bytes]) -> grpc.GenericRpcHandler:
    """CreateDropCopySubscription answering `responses` (raw bytes, each with resume token
    str(index)) from the requested token on, then holding the stream open like a live venue."""

    async def subscribe(
        request: dropcopy_pb2.CreateDropCopySubscriptionRequest, context: Any
    ) -> AsyncIterator[bytes]:
        start = int(request.resume_token or b"-1") + 1
        for response in responses[start:]:
            yield response
        await asyncio.Event().wait()

    return grpc.method_handlers_generic_handler(
        "polymarket.v1.DropCopyAPI",
        {
            "CreateDropCopySubscription": grpc.unary_stream_rpc_method_handler(
                subscribe,
                request_deserializer=dropcopy_pb2.CreateDropCopySubscriptionRequest.FromString,
            )
        },
    )


def dropcopy_responses(items: Sequence[bytes], per_response: int = 5) -> list[bytes]:
    return [
        _item(1, str(n).encode()) + b"".join(_item(2, item) for item in items[i : i + per_response])
        for n, i in enumerate(range(0, len(items), per_response))
    ]


@asynccontextmanager
async def venue(
    orders: Feed, trades: Feed, responses: Sequence[bytes]
) -> AsyncIterator[IngestConfig]:
    grpc_server = grpc.aio.server()
    grpc_server.add_generic_rpc_handlers([dropcopy_handler(responses)])
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()

    async def route(ws: ServerConnection) -> None:
        feed = orders if ws.request is not None and ws.request.path.endswith("orders") else trades
        await feed.handler(ws)

    try:
        async with serve(route, "127.0.0.1", 0, max_size=None, compression=None) as ws_server:
            ws_port = next(iter(ws_server.sockets)).getsockname()[1]
            yield IngestConfig(
                exchange_target=f"127.0.0.1:{port}",
                exchange_tls=False,
                orders_url=f"ws://127.0.0.1:{ws_port}/ws/key/orders",
                trades_url=f"ws://127.0.0.1:{ws_port}/ws/key/trades",
                sources=("dropcopy.executions", "feed.orders", "feed.trades"),
                exit_when_idle=1.0,
                batch_max_delay=0.01,
                backoff=BackoffPolicy(base=0.05, cap=0.2),
                feed=FeedSettings(backoff=BackoffPolicy(base=0.05, cap=0.2)),
            )
    finally:
        await grpc_server.stop(None)


async def ingest(engine: Engine, config: IngestConfig) -> IngestWorker:
    worker = IngestWorker(config, engine, StaticToken("bad-input-test"))
    code = await asyncio.wait_for(worker.run(), timeout=60)
    _, health = worker.health()
    failures = {name: s["failure"] for name, s in health["sources"].items() if s["failure"]}
    assert (code, failures) == (0, {})
    return worker


def dead_letters(engine: Engine) -> list[tuple[str, str, bytes]]:
    with engine.connect() as conn:
        return [
            (r.source, r.reason, bytes(r.raw))
            for r in conn.execute(text("SELECT source, reason, raw FROM dead_letter"))
        ]


def stored_keys(engine: Engine) -> Counter[str]:
    """Every stored event's natural key (execution id, chain tx hash), counted."""
    with engine.connect() as conn:
        keys = conn.execute(
            text(
                "SELECT id FROM execution UNION ALL SELECT tx_hash FROM order_filled"
                " UNION ALL SELECT tx_hash FROM order_filled_pending"
                " UNION ALL SELECT tx_hash FROM fee_refund UNION ALL SELECT tx_hash FROM feed_trade"
            )
        ).scalars()
        return Counter(keys)


# --- generated mixes -----------------------------------------------------------------------------

_TX = itertools.count(1)


def _unique(kind: ChainKind, data: dict[str, Any], offset: int) -> tuple[bytes, str]:
    """A valid message with a fresh transaction (its natural key) on the test day."""
    tx_hash = f"0x{next(_TX):064x}"
    data = {**data, "tx_hash": tx_hash, "timestamp": BASE + offset}
    return kind.frame(data), tx_hash


def _truncated(raw: bytes, cut: int) -> bytes:
    return raw[: cut % len(raw)]


def _with_invalid_utf8(raw: bytes, bad: bytes, at: int) -> bytes:
    at %= len(raw)
    return raw[:at] + bad + raw[at:]


def _framed(case: tuple[ChainKind, dict[str, Any], str]) -> bytes:
    kind, data, _ = case
    return kind.frame(data)


# Invalid feed frames: one field changed by the unit properties' mutations, or the bytes broken.
BAD_FRAMES = st.one_of(
    wrong_type().map(_framed),
    unknown_enum().map(_framed),
    out_of_range().map(_framed),
    st.builds(
        _truncated, chain_message().map(lambda m: m[0].frame(m[1])), st.integers(min_value=0)
    ),
    st.builds(
        _with_invalid_utf8,
        chain_message().map(lambda m: m[0].frame(m[1])),
        INVALID_UTF8,
        st.integers(min_value=0),
    ),
    st.just(ORDER_FILLED.frame(order_filled_data(title="x" * parse.MAX_FRAME_BYTES))),
)
FEEDS = {"orders": (ORDER_FILLED, FEE_REFUND), "trades": (LEGACY_TRADE,)}


@dataclass
class Mix:
    """What was sent, and what must come out: valid keys stored once, invalid bytes dead."""

    orders: Feed = field(default_factory=Feed)
    trades: Feed = field(default_factory=Feed)
    execution_items: list[bytes] = field(default_factory=list)
    valid_keys: list[str] = field(default_factory=list)
    invalid: list[tuple[str, bytes]] = field(default_factory=list)  # (source, raw)


@st.composite
def mixes(draw: st.DrawFn) -> Mix:
    mix = Mix()
    for name, kinds in FEEDS.items():
        feed = mix.orders if name == "orders" else mix.trades
        for offset in range(draw(st.integers(min_value=1, max_value=25))):
            if draw(st.booleans()):
                kind, data = draw(chain_message(kinds))
                raw, key = _unique(kind, data, offset)
                mix.valid_keys.append(key)
            else:
                raw = draw(BAD_FRAMES)
                mix.invalid.append((f"feed.{name}", raw))
            feed.frames.append((raw, True, False))
    for n in range(draw(st.integers(min_value=1, max_value=25))):
        choice = draw(st.sampled_from(("valid", "mutated", "undecodable")))
        if choice == "mutated":
            _, message, _, _ = draw(proto_mutation().filter(lambda c: c[0] is EXECUTION))
            raw = message.SerializeToString()
        else:
            changes = draw(valid_execution())
            changes["transact_trade_date"] = trading_pb2.TradeDate(
                year=DAY.year, month=DAY.month, day=DAY.day
            )
            message = execution_message(**{**changes, "id": f"E-{next(_TX)}-{n}"})
            raw = message.SerializeToString()
            if choice == "undecodable":
                raw = _break_utf8(message, draw(st.sampled_from(("text", "order.symbol"))), b"\xff")
        mix.execution_items.append(raw)
        if choice == "valid":
            mix.valid_keys.append(message.id)
        else:
            mix.invalid.append(("dropcopy.executions", raw))
    return mix


def _reset(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "TRUNCATE execution, order_filled, order_filled_pending, fee_refund, feed_trade,"
                " dead_letter, stream_checkpoint, gap_window"
            )
        )


def test_a_mix_of_valid_and_invalid_messages_through_the_worker(
    engine: Engine, guarantee: Record
) -> None:
    sent: list[int] = []

    @settings(
        max_examples=4,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(mixes())
    def check(mix: Mix) -> None:
        _reset(engine)

        async def run() -> None:
            responses = dropcopy_responses(mix.execution_items)
            async with venue(mix.orders, mix.trades, responses) as config:
                await ingest(engine, config)

        asyncio.run(run())
        assert stored_keys(engine) == Counter(mix.valid_keys)
        letters = dead_letters(engine)
        assert Counter((source, raw) for source, _, raw in letters) == Counter(mix.invalid)
        assert all(reason for _, reason, _ in letters)
        sent.append(len(mix.valid_keys) + len(mix.invalid))

    check()
    guarantee(
        BAD_INPUT,
        "mixed valid and invalid messages through the running worker (gRPC and websockets)",
        sum(sent),
        "valid stored exactly once; invalid dead-lettered with bytes and reason; worker ran on",
    )


# --- frames the websocket layer refuses -----------------------------------------------------------


def test_frames_over_the_websocket_limit_are_recorded_and_the_feed_goes_on(
    engine: Engine, guarantee: Record
) -> None:
    limit = 16 * parse.MAX_FRAME_BYTES  # the feed client's max_size
    valid = [_unique(ORDER_FILLED, order_filled_data(), offset)[0] for offset in range(4)]
    too_big = ORDER_FILLED.frame(order_filled_data(title="x" * limit))
    over_parser = ORDER_FILLED.frame(order_filled_data(title="y" * parse.MAX_FRAME_BYTES))
    not_utf8 = _with_invalid_utf8(valid[0], b"\xc3\x28", 300)
    orders = Feed(
        [
            (valid[0], True, False),
            (not_utf8, True, False),
            (over_parser, True, False),
            (valid[1], True, False),
            (too_big, True, True),
            (valid[2], True, False),
            (too_big, False, True),
            (valid[3], True, False),
        ]
    )

    async def run() -> None:
        async with venue(orders, Feed(), []) as config:
            await ingest(engine, replace(config, sources=("feed.orders",)))

    asyncio.run(run())
    assert orders.connections == 3
    assert stored_keys(engine) == Counter(
        parse.orders_frame(raw).event.tx_hash  # type: ignore[union-attr]
        for raw in valid
    )
    letters = sorted(dead_letters(engine), key=lambda letter: len(letter[2]))
    assert [(source, raw) for source, _, raw in letters] == [
        ("feed.orders", b""),
        ("feed.orders", b""),
        ("feed.orders", not_utf8),
        ("feed.orders", over_parser),
    ]
    reasons = [reason for _, reason, _ in letters]
    assert all(f"exceeds limit of {limit} bytes" in r for r in reasons[:2]), reasons
    assert reasons[2] == "invalid UTF-8: invalid continuation byte at byte 300"
    assert reasons[3].startswith(f"frame of {len(over_parser)} bytes exceeds")
    guarantee(
        BAD_INPUT,
        "websocket frames over 16 MiB, over 1 MiB, or not UTF-8",
        len(letters),
        "recorded as dead letters; feed reconnects; valid frames kept",
    )


# --- what the parser should have refused ----------------------------------------------------------


def test_rows_the_database_refuses_are_isolated_not_retried_forever(engine: Engine) -> None:
    """An index entry over 2704 bytes is a ProgramLimitExceeded to Postgres: an OperationalError
    to psycopg, once retried as if the database were down, wedging the source for good."""
    good = parse.execution(execution_message(id="E-good"))
    unindexable = "".join(chr(0x4E00 + i % 20000) for i in range(1500))
    bad = msgspec.structs.replace(good, id=unindexable, raw=b"bad raw")
    status = SourceStatus("dropcopy.executions")
    sink = SourceSink(status, BatchWriter(engine), IngestMetrics(), max_rows=100, max_delay=0.01)

    async def run() -> None:
        sink.start()
        await sink.put([good, bad], [], Checkpoint("dropcopy.executions[all]", b"tok", None))
        await asyncio.wait_for(sink.flush(), timeout=30)
        await sink.close(5)

    asyncio.run(run())
    assert status.db_retries == 0
    assert stored_keys(engine) == Counter(["E-good"])
    [(source, reason, raw)] = dead_letters(engine)
    assert (source, raw) == ("dropcopy.executions", b"bad raw")
    assert reason.startswith("database refused the row: index row size")


def _extreme_execution(**changes: Any) -> trading_pb2.Execution:
    return execution_message(
        **{
            "order.id": "O" * parse.MAX_KEY_CHARS,
            "order.symbol": "\U0001f600" * parse.MAX_KEY_CHARS,
            "order.account": "\u00e9" * parse.MAX_KEY_CHARS,
            "trade_id": "T" * parse.MAX_KEY_CHARS,
            **dict.fromkeys(parse.EXECUTION_QUANTITIES, MAX_BIGINT),
            "commission_notional_collected": -(1 << 63),
            "text": "long free text " * 2000,
            **changes,
        }
    )


def test_the_largest_values_the_parsers_accept_are_stored(engine: Engine) -> None:
    """Whatever the parsers accept, the database stores: the extremes of every range."""
    extremes = [
        parse.execution(
            _extreme_execution(
                id="\U0001f600" * parse.MAX_KEY_CHARS,
                transact_trade_date=trading_pb2.TradeDate(year=9999, month=12, day=31),
            )
        ),
        parse.execution(
            _extreme_execution(
                id="E-first-day",
                transact_trade_date=trading_pb2.TradeDate(year=1, month=1, day=1),
            )
        ),
        *(
            event.event  # type: ignore[union-attr]
            for event in (
                parse.orders_frame(
                    ORDER_FILLED.frame(
                        order_filled_data(
                            tx_hash=f"0x{n:064x}",
                            shares=MAX_BIGINT,
                            shares_normalized=None,
                            price=price,
                            fee=Decimal("999999999999999.999999999999999999"),
                            timestamp=timestamp,
                            log_index="0x" + "f" * 15,
                        )
                    )
                )
                for n, (price, timestamp) in enumerate(
                    [(Decimal(1), parse.MAX_EPOCH_SECONDS), (Decimal(0), 0)]
                )
            )
        ),
    ]
    sink = SourceSink(
        SourceStatus("extremes"), BatchWriter(engine), IngestMetrics(), max_rows=10, max_delay=0
    )

    async def run() -> None:
        sink.start()
        await sink.put(extremes, [], None)
        await asyncio.wait_for(sink.flush(), timeout=30)
        await sink.close(5)

    asyncio.run(run())
    assert dead_letters(engine) == []
    assert sum(stored_keys(engine).values()) == len(extremes)
    with engine.connect() as conn:
        assert conn.execute(
            text("SELECT max(last_shares), min(business_date) FROM execution")
        ).one() == (
            MAX_BIGINT,
            date(1, 1, 1),
        )
