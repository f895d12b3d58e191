"""Break injection for the simulated day: where each configured break lands, how it alters what
the venue serves, and the ground-truth record a reconciler must reproduce.

Every break kind belongs to one pool of objects (non-trade executions, trades, position updates,
chain transactions). Before the day is generated, each configured break gets a slot: an index in
its pool drawn from the seed. While the day streams by, the first eligible object at or after the
slot takes the break, and one object takes at most one break, so breaks never overlap.

Conventions a reconciler relies on:
- the DropCopy stream carries the venue's true fills; mismatches alter the Report API's copy;
- a missing trade leg is absent from the executions stream, the Report API's executions and the
  venue's positions alike, so positions still equal the fills that were delivered;
- positions are checked against fills net of busted trades;
- a trade_state_mismatch is a CLEARED re-send that never reached the stream (stream NEW, report
  CLEARED); a busted trade is CLEARED then BUSTED on the stream and BUSTED in the report;
- execution_missing_* breaks hit acks, cancels, rejects and expiries, never fills, so they move
  no position;
- a chain_pending_unconfirmed transaction (one maker) was dropped: its two pending rows, maker
  and aggregate, are each a break; transactions with a taker-side break have no pending rows,
  and every other pending row is confirmed within 1% on price, shares and fee.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import replace
from decimal import Decimal
from enum import StrEnum

from app.domain.breaks import BreakKind
from app.venue.model import (
    Break,
    DayConfig,
    Execution,
    FeeRefund,
    LegacyTrade,
    OrderFilled,
    PositionState,
)


class Pool(StrEnum):
    ORDER_EVENT = "order_event"  # executions that are not fills: acks, cancels, rejects, expiries
    TRADE = "trade"
    POSITION = "position"  # one object per fill applied to a position
    TX = "tx"  # one matchOrders transaction


KIND_POOL: Mapping[BreakKind, Pool] = {
    BreakKind.EXECUTION_MISSING_FROM_STREAM: Pool.ORDER_EVENT,
    BreakKind.EXECUTION_MISSING_FROM_REPORT: Pool.ORDER_EVENT,
    BreakKind.EXECUTION_QUANTITY_MISMATCH: Pool.TRADE,
    BreakKind.EXECUTION_PRICE_MISMATCH: Pool.TRADE,
    BreakKind.EXECUTION_FEE_MISMATCH: Pool.TRADE,
    BreakKind.TRADE_STATE_MISMATCH: Pool.TRADE,
    BreakKind.TRADE_BUSTED: Pool.TRADE,
    BreakKind.TRADE_LEG_MISSING: Pool.TRADE,
    BreakKind.POSITION_MISMATCH: Pool.POSITION,
    BreakKind.CHAIN_MAKER_TAKER_MISMATCH: Pool.TX,
    BreakKind.CHAIN_TAKER_MISSING: Pool.TX,
    BreakKind.CHAIN_REFUND_ORPHAN: Pool.TX,
    BreakKind.CHAIN_REFUND_ARITHMETIC: Pool.TX,
    BreakKind.CHAIN_PENDING_UNCONFIRMED: Pool.TX,
    BreakKind.FEED_PROVIDER_MISMATCH: Pool.TX,
    BreakKind.FEED_PROVIDER_MISSING: Pool.TX,
}

# Kinds where the Report API's copy of a fill disagrees with the stream's.
REPORT_MISMATCHES = frozenset(
    {
        BreakKind.EXECUTION_QUANTITY_MISMATCH,
        BreakKind.EXECUTION_PRICE_MISMATCH,
        BreakKind.EXECUTION_FEE_MISMATCH,
    }
)

# Slots land between these fractions of a pool's expected size, so that a day somewhat smaller
# than estimated still reaches every slot.
_SLOT_FROM = 0.02
_SLOT_TO = 0.6


class BreakAssigner:
    """Hands the breaks of one pool to that pool's objects, in the order the day produces them."""

    def __init__(self, pool: Pool, slots: Mapping[BreakKind, list[int]]) -> None:
        self.pool = pool
        self._queues = {kind: deque(sorted(indices)) for kind, indices in slots.items() if indices}
        self._kinds = sorted(self._queues)

    def claim(
        self, index: int, eligible: Callable[[BreakKind], bool] | None = None
    ) -> BreakKind | None:
        """The break that object number `index` of the pool takes, if any (at most one)."""
        for kind in self._kinds:
            queue = self._queues[kind]
            if queue and queue[0] <= index and (eligible is None or eligible(kind)):
                queue.popleft()
                return kind
        return None

    def unplaced(self) -> dict[str, int]:
        return {str(kind): len(queue) for kind, queue in self._queues.items() if queue}


def plan_pool(config: DayConfig, pool: Pool, expected: int, rng: random.Random) -> BreakAssigner:
    """Draw slots for the configured breaks of `pool`, whose day holds about `expected` objects."""
    kinds = [
        kind
        for kind in sorted(KIND_POOL)
        if KIND_POOL[kind] is pool
        for _ in range(config.breaks.get(kind, 0))
    ]
    low = int(expected * _SLOT_FROM)
    high = int(expected * _SLOT_TO)
    if high - low < len(kinds):
        raise ValueError(
            f"scale {config.scale} is too small for {len(kinds)} breaks in the {pool} pool "
            f"(about {expected} objects); raise the scale or lower the break counts"
        )
    indices = sorted(rng.sample(range(low, high), len(kinds)))
    rng.shuffle(kinds)
    slots: dict[BreakKind, list[int]] = {}
    for kind, index in zip(kinds, indices, strict=True):
        slots.setdefault(kind, []).append(index)
    return BreakAssigner(pool, slots)


def assert_all_placed(assigners: list[BreakAssigner]) -> None:
    left = {kind: n for a in assigners for kind, n in a.unplaced().items()}
    if left:
        raise ValueError(f"the day ended before these breaks found a place: {left}")


# --- exchange ------------------------------------------------------------------------------------


def report_execution(kind: BreakKind, execution: Execution, tick: int, fqs: int) -> Execution:
    """The Report API's copy of a fill whose stream and report values disagree."""
    if kind is BreakKind.EXECUTION_QUANTITY_MISMATCH:
        shares = execution.last_shares
        return replace(execution, last_shares=shares - fqs if shares > fqs else shares + fqs)
    if kind is BreakKind.EXECUTION_PRICE_MISMATCH:
        px = execution.last_px
        return replace(execution, last_px=px - tick if px > tick else px + tick)
    if kind is BreakKind.EXECUTION_FEE_MISMATCH:
        return replace(execution, commission=execution.commission + max(1, execution.last_px))
    raise ValueError(f"{kind} does not alter an execution")


def execution_break(kind: BreakKind, stream: Execution, report: Execution | None) -> Break:
    details: dict[str, str | int] = {
        "account": stream.order.account,
        "symbol": stream.order.symbol,
        "order_id": stream.order.id,
        "exec_type": stream.exec_type,
    }
    if stream.trade_id:
        details["trade_id"] = stream.trade_id
    if report is not None and report is not stream:
        for name, stream_value, report_value in (
            ("last_shares", stream.last_shares, report.last_shares),
            ("last_px", stream.last_px, report.last_px),
            ("commission", stream.commission, report.commission),
        ):
            if stream_value != report_value:
                details[f"stream_{name}"] = stream_value
                details[f"report_{name}"] = report_value
    return Break(kind, stream.id, stream.business_date, details)


def reported_position(true: PositionState, offset: int) -> PositionState:
    """What a venue with a position bug reports: `offset` phantom contracts bought, or sold when
    negative. Taking them off qty_bought instead could drive it below zero (an account that
    only sold), which no valid Position holds, and a consumer would reject the whole message."""
    if not offset:
        return true
    return replace(
        true,
        net_position=true.net_position + offset,
        qty_bought=true.qty_bought + max(offset, 0),
        qty_sold=true.qty_sold + max(-offset, 0),
    )


# --- chain ---------------------------------------------------------------------------------------


def mismatched_aggregate_shares(total: int, rng: random.Random) -> int:
    """Aggregate shares that no longer equal the makers' sum (off by 2% to 10%, at least 1)."""
    delta = max(1, total * rng.randint(2, 10) // 100)
    return total - delta if rng.random() < 0.5 and total > delta else total + delta


def broken_refund(refund: FeeRefund) -> FeeRefund:
    """refund + fee_charged no longer adds up to the fee of the order_filled."""
    return replace(refund, refund=refund.refund + Decimal("0.01"))


def mismatched_legacy(trade: LegacyTrade, rng: random.Random) -> LegacyTrade:
    if rng.random() < 0.5:
        step = Decimal("0.01")
        price = trade.price + step if trade.price + step < 1 else trade.price - step
        return replace(trade, price=price)
    return replace(trade, shares=trade.shares + 10**4 * rng.randint(1, 500))


def fill_key(event: OrderFilled | LegacyTrade) -> str:
    return f"{event.tx_hash}|{event.order_hash}"
