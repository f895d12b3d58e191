"""Venue values to wire bytes: protobuf messages for the exchange, feed JSON for the chain.

Feed numbers (`price`, `fee`, `refund`, `fee_charged`, `shares_normalized`) are written from
Decimal digit for digit, never through a float, so 0.04 stays 0.04 on the wire.
"""

from __future__ import annotations

from decimal import Decimal

import orjson
from google.protobuf.timestamp_pb2 import Timestamp

from app.venue.model import (
    SHARE_UNIT,
    US_PER_S,
    Execution,
    FeeRefund,
    InstrumentStatus,
    LegacyTrade,
    OrderFilled,
    OrderSnapshot,
    PositionState,
    TradeCapture,
)
from polymarket.v1 import trading_pb2

ZERO_BYTES32 = "0x" + "00" * 32
LEGACY_SOURCE = "alchemy"


def set_time(field: Timestamp, time_us: int) -> None:
    seconds, micros = divmod(time_us, US_PER_S)
    field.seconds = seconds
    field.nanos = micros * 1000


# Messages are filled field by field in place: about three times faster than building nested
# messages from keyword arguments, which copies every sub-message into its parent.


def fill_order(message: trading_pb2.Order, order: OrderSnapshot) -> None:
    message.id = order.id
    message.clord_id = order.clord_id
    message.symbol = order.symbol
    message.side = order.side  # type: ignore[assignment]  # ints are the enum numbers
    message.type = order.order_type  # type: ignore[assignment]
    message.time_in_force = order.time_in_force  # type: ignore[assignment]
    message.order_qty = order.order_qty
    message.price = order.price
    message.cum_qty = order.cum_qty
    message.leaves_qty = order.leaves_qty
    message.avg_px = order.avg_px
    message.state = order.state  # type: ignore[assignment]
    message.account = order.account
    message.participant = order.participant
    set_time(message.create_time, order.create_time_us)
    set_time(message.insert_time, order.create_time_us)


def fill_execution(message: trading_pb2.Execution, execution: Execution) -> None:
    message.id = execution.id
    fill_order(message.order, execution.order)
    message.last_shares = execution.last_shares
    message.last_px = execution.last_px
    message.type = execution.exec_type  # type: ignore[assignment]
    message.text = execution.text
    set_time(message.transact_time, execution.transact_time_us)
    message.trade_id = execution.trade_id
    message.aggressor = execution.aggressor
    message.commission_notional_collected = execution.commission
    day = execution.business_date
    trade_date = message.transact_trade_date
    trade_date.year = day.year
    trade_date.month = day.month
    trade_date.day = day.day


def fill_position(message: trading_pb2.Position, position: PositionState) -> None:
    message.account = position.account
    message.symbol = position.symbol
    message.net_position = position.net_position
    message.qty_bought = position.qty_bought
    message.qty_sold = position.qty_sold
    message.cost = position.cost
    message.realized = position.realized
    message.bod_position = 0  # the simulated day starts flat
    set_time(message.update_time, position.update_time_us)


def encode_order(order: OrderSnapshot) -> bytes:
    message = trading_pb2.Order()
    fill_order(message, order)
    return message.SerializeToString()


def encode_execution(execution: Execution) -> bytes:
    message = trading_pb2.Execution()
    fill_execution(message, execution)
    return message.SerializeToString()


def encode_trade(trade: TradeCapture) -> bytes:
    message = trading_pb2.Trade(
        id=trade.id,
        trade_type=trade.trade_type,  # type: ignore[arg-type]  # ints are the enum numbers
        state=trade.state,  # type: ignore[arg-type]
        text=trade.text,
    )
    fill_execution(message.aggressor, trade.aggressor)
    fill_execution(message.passive, trade.passive)
    set_time(message.update_time, trade.update_time_us)
    return message.SerializeToString()


def encode_instrument(status: InstrumentStatus) -> bytes:
    spec = status.spec
    message = trading_pb2.Instrument(
        symbol=spec.symbol,
        state=status.state,  # type: ignore[arg-type]  # ints are the enum numbers
        name=spec.name,
        price_scale=spec.price_scale,
        fractional_qty_scale=spec.fractional_qty_scale,
    )
    set_time(message.update_time, status.update_time_us)
    return message.SerializeToString()


def encode_position(position: PositionState) -> bytes:
    message = trading_pb2.Position()
    fill_position(message, position)
    return message.SerializeToString()


def encode_position_change(position: PositionState) -> bytes:
    message = trading_pb2.PositionChange()
    fill_position(message.position, position)
    set_time(message.change_time, position.update_time_us)
    return message.SerializeToString()


def decimal_text(value: Decimal) -> str:
    """Shortest exact decimal notation: 0.0400 -> 0.04, 2.000000 -> 2, never an exponent."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in {"", "-0"} else text


def json_number(value: Decimal) -> orjson.Fragment:
    return orjson.Fragment(decimal_text(value))


def shares_text(shares: int) -> str:
    """Raw 6-decimal shares as an exact decimal number: 2000000 -> 2, 100500000 -> 100.5."""
    whole, frac = divmod(shares, SHARE_UNIT)
    if not frac:
        return str(whole)
    return f"{whole}.{f'{frac:06d}'.rstrip('0')}"


def order_filled_json(event: OrderFilled) -> bytes:
    market = event.market
    token = market.tokens[event.outcome_index]
    complement = market.tokens[1 - event.outcome_index]
    data: dict[str, object] = {
        "status": event.status,
        "event_type": "order_filled",
        "token_id": token.token_id,
        "token_label": token.label,
        "side": event.side,
        "market_slug": market.market_slug,
        "condition_id": market.condition_id,
        "shares": event.shares,
        "shares_normalized": orjson.Fragment(shares_text(event.shares)),
        "price": json_number(event.price),
        "tx_hash": event.tx_hash,
        "log_index": None if event.log_index is None else hex(event.log_index),
        "title": market.title,
        "timestamp": event.timestamp,
        "order_hash": event.order_hash,
        "user": event.user,
        "taker": event.taker,
        "role": event.role,
        "outcome": token.label,
        "outcome_index": token.outcome_index,
        "complement_token_id": complement.token_id,
        "complement_token_label": complement.label,
        "is_neg_risk": market.is_neg_risk,
        "market_id": market.market_id,
        "image": market.image,
        "fee": json_number(event.fee),
        "version": market.version,
    }
    if market.version >= 2:
        data["builder"] = ZERO_BYTES32
        data["metadata"] = ZERO_BYTES32
    return orjson.dumps(data)


def fee_refund_json(event: FeeRefund) -> bytes:
    market = event.market
    return orjson.dumps(
        {
            "event_type": "fee_refund",
            "user": event.user,
            "token_id": market.tokens[event.outcome_index].token_id,
            "condition_id": market.condition_id,
            "market_slug": market.market_slug,
            "title": market.title,
            "order_hash": event.order_hash,
            "tx_hash": event.tx_hash,
            "refund": json_number(event.refund),
            "fee_charged": json_number(event.fee_charged),
        }
    )


def legacy_trade_json(event: LegacyTrade) -> bytes:
    market = event.market
    token = market.tokens[event.outcome_index]
    shares = orjson.Fragment(shares_text(event.shares))
    return orjson.dumps(
        {
            "platform": "polymarket",
            "asset_id": token.token_id,
            "market_slug": market.market_slug,
            "condition_id": market.condition_id,
            # The legacy provider prints shares already normalised (the seed shows 100.5 for both).
            "shares": shares,
            "shares_normalized": shares,
            "price": json_number(event.price),
            "tx_hash": event.tx_hash,
            "title": market.title,
            "timestamp": event.timestamp,
            "order_hash": event.order_hash,
            "user": event.user,
            "taker": event.taker,
            "outcome": token.label,
            "source": LEGACY_SOURCE,
        }
    )
