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


def timestamp(time_us: int) -> Timestamp:
    seconds, micros = divmod(time_us, US_PER_S)
    return Timestamp(seconds=seconds, nanos=micros * 1000)


def order_message(order: OrderSnapshot) -> trading_pb2.Order:
    created = timestamp(order.create_time_us)
    return trading_pb2.Order(
        id=order.id,
        clord_id=order.clord_id,
        symbol=order.symbol,
        side=order.side,  # type: ignore[arg-type]  # ints are the enum numbers
        type=order.order_type,  # type: ignore[arg-type]
        time_in_force=order.time_in_force,  # type: ignore[arg-type]
        order_qty=order.order_qty,
        price=order.price,
        cum_qty=order.cum_qty,
        leaves_qty=order.leaves_qty,
        avg_px=order.avg_px,
        state=order.state,  # type: ignore[arg-type]
        account=order.account,
        participant=order.participant,
        create_time=created,
        insert_time=created,
    )


def execution_message(execution: Execution) -> trading_pb2.Execution:
    day = execution.business_date
    return trading_pb2.Execution(
        id=execution.id,
        order=order_message(execution.order),
        last_shares=execution.last_shares,
        last_px=execution.last_px,
        type=execution.exec_type,  # type: ignore[arg-type]
        text=execution.text,
        transact_time=timestamp(execution.transact_time_us),
        trade_id=execution.trade_id,
        aggressor=execution.aggressor,
        commission_notional_collected=execution.commission,
        transact_trade_date=trading_pb2.TradeDate(year=day.year, month=day.month, day=day.day),
    )


def encode_order(order: OrderSnapshot) -> bytes:
    return order_message(order).SerializeToString()


def encode_execution(execution: Execution) -> bytes:
    return execution_message(execution).SerializeToString()


def encode_trade(trade: TradeCapture) -> bytes:
    return trading_pb2.Trade(
        id=trade.id,
        aggressor=execution_message(trade.aggressor),
        passive=execution_message(trade.passive),
        trade_type=trade.trade_type,  # type: ignore[arg-type]
        state=trade.state,  # type: ignore[arg-type]
        text=trade.text,
        update_time=timestamp(trade.update_time_us),
    ).SerializeToString()


def encode_instrument(status: InstrumentStatus) -> bytes:
    spec = status.spec
    return trading_pb2.Instrument(
        symbol=spec.symbol,
        state=status.state,  # type: ignore[arg-type]
        name=spec.name,
        price_scale=spec.price_scale,
        fractional_qty_scale=spec.fractional_qty_scale,
        update_time=timestamp(status.update_time_us),
    ).SerializeToString()


def position_message(position: PositionState) -> trading_pb2.Position:
    return trading_pb2.Position(
        account=position.account,
        symbol=position.symbol,
        net_position=position.net_position,
        qty_bought=position.qty_bought,
        qty_sold=position.qty_sold,
        cost=position.cost,
        realized=position.realized,
        bod_position=0,  # the simulated day starts flat
        update_time=timestamp(position.update_time_us),
    )


def encode_position(position: PositionState) -> bytes:
    return position_message(position).SerializeToString()


def encode_position_change(position: PositionState) -> bytes:
    return trading_pb2.PositionChange(
        position=position_message(position), change_time=timestamp(position.update_time_us)
    ).SerializeToString()


def decimal_text(value: Decimal) -> str:
    """Shortest exact decimal notation: 0.0400 -> 0.04, 2.000000 -> 2, never an exponent."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in {"", "-0"} else text


def json_number(value: Decimal) -> orjson.Fragment:
    return orjson.Fragment(decimal_text(value))


def shares_normalized(shares: int) -> orjson.Fragment:
    whole, frac = divmod(shares, SHARE_UNIT)
    if not frac:
        return orjson.Fragment(str(whole))
    digits = f"{frac:06d}".rstrip("0")
    return orjson.Fragment(f"{whole}.{digits}")


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
        "shares_normalized": shares_normalized(event.shares),
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
    shares = shares_normalized(event.shares)
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
