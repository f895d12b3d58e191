"""What ingest stores: one frozen value per venue message, named and shaped like its table.

Field names are the column names of the table each value lands in, so the writer copies them by
name. Venue enums are kept as their full proto names (`SIDE_BUY`, `TRADE_STATE_BUSTED`); venue
integers stay raw units; chain amounts are exact `Decimal`s. Every value keeps `raw`, the bytes
it was parsed from (the serialized protobuf message, or the JSON frame exactly as received).

The values are frozen `msgspec.Struct`s rather than frozen dataclasses: the same immutable,
slotted value type, but built in C. A frozen dataclass of 29 fields takes ~11 us to construct
here (one `object.__setattr__` per field), a third of the per-event budget of 30,000 events/s;
the Struct takes under 1 us. `gc=False`: they hold only scalars, so can't be in a cycle.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Literal

import msgspec

ExecutionSource = Literal["dropcopy", "report_backfill"]
ChainStatus = Literal["confirmed", "pending"]
ChainRole = Literal["maker", "taker"]

TRADE_STATE_BUSTED = "TRADE_STATE_BUSTED"

# Which of two deliveries of one trade with the same update_time is the current one. A trade
# moves forward through these; BUSTED reverses it and nothing may follow it, so it ranks last
# (and the writer lets it win whatever the update times say).
TRADE_STATE_PRECEDENCE: dict[str, int] = {
    name: rank
    for rank, name in enumerate(
        (
            "TRADE_STATE_UNDEFINED",
            "TRADE_STATE_PENDING_RISK",
            "TRADE_STATE_INFLIGHT",
            "TRADE_STATE_NEW",
            "TRADE_STATE_RETRY_REQUEST",
            "TRADE_STATE_PENDING_CLEARED",
            "TRADE_STATE_CLEARING_ACKNOWLEDGED",
            "TRADE_STATE_CLEARED",
            "TRADE_STATE_REJECTED",
            TRADE_STATE_BUSTED,
        )
    )
}


class ExecutionEvent(msgspec.Struct, frozen=True, gc=False):
    """A DropCopy execution report with its order flattened in (table `execution`)."""

    business_date: date  # transact_trade_date
    id: str
    order_id: str
    clord_id: str | None
    symbol: str
    side: str
    order_type: str
    time_in_force: str
    order_qty: int
    order_price: int
    cum_qty: int
    leaves_qty: int
    avg_px: int
    order_state: str
    account: str
    participant: str | None
    exec_type: str
    last_shares: int
    last_px: int
    text: str | None
    transact_time: datetime
    trade_id: str | None
    aggressor: bool
    commission_notional_collected: int  # negative = rebate
    raw: bytes
    source: ExecutionSource = "dropcopy"


class TradeCaptureEvent(msgspec.Struct, frozen=True, gc=False):
    """One delivery of a trade capture report: the trade in one state (tables `trade_capture`
    for the current state and `trade_capture_state` for the history)."""

    business_date: date  # the aggressor's transact_trade_date
    id: str
    trade_type: str
    state: str
    text: str | None
    trade_link_id: str | None
    # The venue's update_time, else the aggressor's transact_time: never empty, because it
    # orders the deliveries of one trade and keys its state history.
    update_time: datetime
    symbol: str
    aggressor_execution_id: str
    passive_execution_id: str
    aggressor_account: str
    passive_account: str
    aggressor_side: str
    last_shares: int
    last_px: int
    aggressor_commission: int
    passive_commission: int
    transact_time: datetime
    raw: bytes

    @property
    def busted(self) -> bool:
        return self.state == TRADE_STATE_BUSTED


def trade_delivery_order(event: TradeCaptureEvent) -> tuple[bool, datetime, int, bytes]:
    """Sort key of the deliveries of one trade: the greatest is its current state.

    BUSTED is terminal, then the later update wins, then the further state; the raw bytes only
    break ties between different payloads, so the outcome never depends on arrival order.
    """
    return (
        event.busted,
        event.update_time,
        TRADE_STATE_PRECEDENCE[event.state],
        event.raw,
    )


class InstrumentEvent(msgspec.Struct, frozen=True, gc=False):
    """An instrument state change (tables `instrument_state_change` and `instrument`)."""

    business_date: date  # UTC date of update_time
    symbol: str
    state: str
    name: str
    price_scale: int
    fractional_qty_scale: int
    update_time: datetime
    raw: bytes


class PositionChangeEvent(msgspec.Struct, frozen=True, gc=False):
    """A position after a change (table `position_change`)."""

    business_date: date  # UTC date of change_time
    account: str
    symbol: str
    net_position: int
    qty_bought: int
    qty_sold: int
    cost: int
    realized: int
    bod_position: int
    update_time: datetime | None
    change_time: datetime
    raw: bytes


class OrderFilledEvent(msgspec.Struct, frozen=True, gc=False):
    """An on-chain `order_filled` (table `order_filled` when confirmed, `order_filled_pending`
    when pending). Hex strings are lower-cased so providers that differ in case still join."""

    business_date: date  # UTC date of event_time
    status: ChainStatus
    tx_hash: str
    log_index: int | None  # None exactly when pending
    order_hash: str
    token_id: str  # uint256 as a decimal string
    token_label: str | None
    complement_token_id: str | None
    complement_token_label: str | None
    side: str
    market_slug: str | None
    condition_id: str
    market_id: str | None
    title: str | None
    outcome: str | None
    outcome_index: int | None
    is_neg_risk: bool | None
    shares: int  # raw 6-decimal integer
    shares_normalized: Decimal
    price: Decimal
    fee: Decimal  # V1 gross (a fee_refund follows), V2 net
    user_address: str
    taker_address: str
    role: ChainRole
    version: int
    builder: str | None
    metadata: str | None
    event_time: datetime
    raw: bytes


class FeeRefundEvent(msgspec.Struct, frozen=True, gc=False):
    """A V1 maker fee rebate (table `fee_refund`). The feed gives it no time, so the writer
    dates it from its order_filled, else its own timestamp if a frame has one, else the feed's
    current day."""

    tx_hash: str
    order_hash: str
    user_address: str
    token_id: str | None
    condition_id: str | None
    market_slug: str | None
    title: str | None
    refund: Decimal
    fee_charged: Decimal
    event_time: datetime | None
    raw: bytes


class FeedTradeEvent(msgspec.Struct, frozen=True, gc=False):
    """A maker fill from the legacy "trade" message provider (table `feed_trade`)."""

    business_date: date  # UTC date of event_time
    tx_hash: str
    order_hash: str
    asset_id: str
    condition_id: str
    market_slug: str | None
    title: str | None
    outcome: str | None
    shares: Decimal  # already normalised by this provider
    shares_normalized: Decimal
    price: Decimal
    user_address: str
    taker_address: str
    event_time: datetime
    feed_source: str | None
    raw: bytes


class DeadLetter(msgspec.Struct, frozen=True, gc=False):
    """Input we could not turn into an event: kept with why, never dropped (table `dead_letter`)."""

    source: str
    reason: str
    raw: bytes


Event = (
    ExecutionEvent
    | TradeCaptureEvent
    | InstrumentEvent
    | PositionChangeEvent
    | OrderFilledEvent
    | FeeRefundEvent
    | FeedTradeEvent
)
