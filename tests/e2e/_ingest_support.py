"""Shared by the ingest e2e tests: the venue's truth as table keys, and the database's."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, text

from app.domain.events import (
    ExecutionEvent,
    FeedTradeEvent,
    FeeRefundEvent,
    InstrumentEvent,
    OrderFilledEvent,
    PositionChangeEvent,
    TradeCaptureEvent,
)
from app.ingest import parse
from app.ingest.auth import StaticToken
from app.ingest.worker import IngestConfig, IngestWorker
from app.venue.run import VenueHandle
from app.venue.store import VenueStore
from polymarket.v1 import trading_pb2

TOKEN = "tok-e2e-0123456789"
FEED_KEY = "feedkey-e2e-42"
PARTICIPANT = "firms/F1/users/ingest"
ALL = 10**8

Key = tuple[Any, ...]

# What must match per table: the natural key plus the values that matter downstream.
DB_QUERIES: dict[str, str] = {
    "execution": "SELECT id, exec_type, last_shares, last_px, commission_notional_collected"
    " FROM execution",
    "trade_capture": "SELECT id, state, busted FROM trade_capture",
    "trade_capture_state": "SELECT trade_id, state, update_time FROM trade_capture_state",
    "instrument_state_change": "SELECT symbol, state, update_time FROM instrument_state_change",
    "instrument": "SELECT symbol, state, update_time FROM instrument",
    "position_change": "SELECT account, symbol, change_time, net_position FROM position_change",
    "order_filled": "SELECT tx_hash, log_index, order_hash, shares, price, fee FROM order_filled",
    "order_filled_pending": "SELECT tx_hash, order_hash, shares, price FROM order_filled_pending",
    "fee_refund": "SELECT tx_hash, order_hash, refund, fee_charged FROM fee_refund",
    "feed_trade": "SELECT tx_hash, order_hash, shares, price FROM feed_trade",
}
EXCHANGE_TABLES = (
    "execution",
    "trade_capture",
    "trade_capture_state",
    "instrument_state_change",
    "instrument",
    "position_change",
)
FEED_TABLES = {
    "order_filled": "feed.orders",
    "order_filled_pending": "feed.orders",
    "fee_refund": "feed.orders",
    "feed_trade": "feed.trades",
}


@dataclass
class Truth:
    """Every table's expected rows, and when each chain row happened (for gap checks)."""

    rows: dict[str, set[Key]] = field(default_factory=dict)
    times: dict[str, dict[Key, datetime | None]] = field(default_factory=dict)
    served_executions: list[str] = field(default_factory=list)
    # Payloads the venue serves that our parser refuses: they must land as dead letters.
    rejected: dict[str, set[bytes]] = field(default_factory=dict)


def _stream(store: VenueStore, name: str) -> list[bytes]:
    return [row.payload for row in store.stream(name, 0, (), (), ALL)]  # type: ignore[arg-type]


def _parsed(truth: Truth, store: VenueStore, name: str, parser: Any, message: Any) -> list[Any]:
    """The stream's events in order; what the parser rejects is expected as a dead letter."""
    out = []
    for payload in _stream(store, name):
        try:
            out.append(parser(message.FromString(payload)))
        except parse.Rejected:
            truth.rejected.setdefault(f"dropcopy.{name}", set()).add(payload)
    return out


def venue_truth(store: VenueStore) -> Truth:
    truth = Truth()
    executions: dict[str, ExecutionEvent] = {}
    for ex in _parsed(truth, store, "executions", parse.execution, trading_pb2.Execution):
        executions[ex.id] = ex
        truth.served_executions.append(ex.id)
    truth.rows["execution"] = {
        (e.id, e.exec_type, e.last_shares, e.last_px, e.commission_notional_collected)
        for e in executions.values()
    }
    latest: dict[str, TradeCaptureEvent] = {}
    history: set[Key] = set()
    for trade in _parsed(truth, store, "trade_captures", parse.trade_capture, trading_pb2.Trade):
        latest[trade.id] = trade  # the stream's order is the venue's: the last one is current
        history.add((trade.id, trade.state, trade.update_time))
    truth.rows["trade_capture"] = {(t.id, t.state, t.busted) for t in latest.values()}
    truth.rows["trade_capture_state"] = history
    instruments: dict[str, InstrumentEvent] = {}
    changes: set[Key] = set()
    for inst in _parsed(
        truth, store, "instrument_states", parse.instrument, trading_pb2.Instrument
    ):
        changes.add((inst.symbol, inst.state, inst.update_time))
        current = instruments.get(inst.symbol)
        if current is None or inst.update_time >= current.update_time:
            instruments[inst.symbol] = inst
    truth.rows["instrument_state_change"] = changes
    truth.rows["instrument"] = {(i.symbol, i.state, i.update_time) for i in instruments.values()}
    positions: set[Key] = set()
    pc: PositionChangeEvent
    for pc in _parsed(
        truth, store, "position_changes", parse.position_change, trading_pb2.PositionChange
    ):
        positions.add((pc.account, pc.symbol, pc.change_time, pc.net_position))
    truth.rows["position_change"] = positions
    _chain_truth(store, truth)
    return truth


def _chain_truth(store: VenueStore, truth: Truth) -> None:
    for table in FEED_TABLES:
        truth.rows[table] = set()
        truth.times[table] = {}
    filled_times: dict[str, datetime] = {}
    refunds: list[FeeRefundEvent] = []
    for row in store.orders_feed(0, ALL):
        frame = b'{"type":"event","subscription_id":"s","data":' + row.data + b"}"
        parsed = parse.orders_frame(frame)
        assert isinstance(parsed, parse.OrdersEvent)
        event = parsed.event
        if isinstance(event, OrderFilledEvent):
            if event.status == "confirmed":
                key: Key = (
                    event.tx_hash,
                    event.log_index,
                    event.order_hash,
                    event.shares,
                    event.price,
                    event.fee,
                )
                table = "order_filled"
            else:
                key = (event.tx_hash, event.order_hash, event.shares, event.price)
                table = "order_filled_pending"
            truth.rows[table].add(key)
            truth.times[table][key] = event.event_time
            filled_times.setdefault(event.order_hash, event.event_time)
        else:
            refunds.append(event)
    for refund in refunds:
        key = (refund.tx_hash, refund.order_hash, refund.refund, refund.fee_charged)
        truth.rows["fee_refund"].add(key)
        # A refund carries no time: it happens with its order_filled.
        truth.times["fee_refund"][key] = refund.event_time or filled_times.get(refund.order_hash)
    for row in store.trades_feed(0, ALL):
        frame = b'{"type":"trade","subscription_id":"s","data":' + row.data + b"}"
        parsed_trade = parse.trades_frame(frame)
        assert isinstance(parsed_trade, parse.TradeMessage)
        ft: FeedTradeEvent = parsed_trade.event
        key = (ft.tx_hash, ft.order_hash, ft.shares, ft.price)
        truth.rows["feed_trade"].add(key)
        truth.times["feed_trade"][key] = ft.event_time


def db_rows(engine: Engine, tables: Iterable[str] = DB_QUERIES) -> dict[str, list[Key]]:
    """Each table's rows as a list, so a duplicate would show."""
    with engine.connect() as conn:
        return {t: [tuple(r) for r in conn.execute(text(DB_QUERIES[t]))] for t in tables}


def gap_windows(engine: Engine) -> dict[str, list[tuple[datetime, datetime]]]:
    out: dict[str, list[tuple[datetime, datetime]]] = {}
    with engine.connect() as conn:
        for source, start, end in conn.execute(
            text("SELECT source, start_time, end_time FROM gap_window")
        ):
            out.setdefault(source, []).append((start, end))
    return out


def worker_config(venue: VenueHandle, **overrides: Any) -> IngestConfig:
    base: dict[str, Any] = {
        "exchange_target": venue.grpc_target,
        "exchange_tls": False,
        "participant_id": PARTICIPANT,
        "orders_url": venue.orders_url,
        "trades_url": venue.trades_url,
        "exit_when_idle": 1.5,
        "progress_interval": 5.0,
    }
    base.update(overrides)
    return IngestConfig(**base)


def run_worker(config: IngestConfig, engine: Engine) -> IngestWorker:
    """Run a worker in this process until it stops by itself; returns it for inspection."""

    async def main() -> IngestWorker:
        worker = IngestWorker(config, engine, StaticToken(TOKEN))
        code = await asyncio.wait_for(worker.run(), timeout=120)
        assert code == 0, worker.health()
        return worker

    return asyncio.run(main())
