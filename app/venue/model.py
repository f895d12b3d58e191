"""Configuration and value types of the simulated venue's trading day.

Exchange values mirror the `polymarket.v1` messages (integer prices and quantities, times in
microseconds since the epoch); chain values mirror the websocket feeds' `data` objects (Decimal
prices and fees, raw 6-decimal integer shares). Everything here is frozen and free of I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Literal

import orjson

from app.domain.breaks import BreakKind

# Bumped whenever the generator's output for a given config changes, so cached stores rebuild.
GENERATOR_VERSION = 2

StreamName = Literal["executions", "trade_captures", "instrument_states", "position_changes"]
STREAM_NAMES: tuple[StreamName, ...] = (
    "executions",
    "trade_captures",
    "instrument_states",
    "position_changes",
)
FeedName = Literal["orders", "trades"]

SHARE_UNIT = 1_000_000  # shares are raw integers with 6 decimals
US_PER_S = 1_000_000


# The venue injects every kind the reconciler knows except pending→confirmed drift beyond
# tolerance: its pending events drift within tolerance, so that rule must find nothing here.
INJECTABLE_KINDS: tuple[BreakKind, ...] = tuple(
    kind for kind in BreakKind if kind is not BreakKind.CHAIN_PENDING_DRIFT
)


def default_breaks() -> dict[str, int]:
    return dict.fromkeys(INJECTABLE_KINDS, 2)


@dataclass(frozen=True, slots=True)
class DayConfig:
    """One simulated trading day; equal configs generate byte-identical days.

    `scale` 1.0 is about 1,000,000 orders-feed events and 200,000 executions. `breaks` maps a
    break kind to how many to inject; each yields one ground-truth entry, except
    `chain_pending_unconfirmed`, where the count is of dropped transactions and each yields one
    entry per pending row it left behind (its maker row and its taker aggregate: two).
    """

    seed: int = 1
    business_date: date = date(2026, 5, 4)
    scale: float = 0.02
    instruments: int = 8
    firms: int = 3
    accounts_per_firm: int = 3
    markets: int = 24
    chain_version_split_date: date = date(2026, 4, 28)
    v1_fraction: float = 0.3
    pending_fraction: float = 0.5
    breaks: dict[str, int] = field(default_factory=default_breaks)

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ValueError(f"scale must be positive, got {self.scale}")
        for name in ("instruments", "firms", "accounts_per_firm", "markets"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.firms * self.accounts_per_firm < 2:
            raise ValueError("a trade needs two accounts: firms * accounts_per_firm >= 2")
        for name in ("v1_fraction", "pending_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        known = {str(kind) for kind in INJECTABLE_KINDS}
        for kind, count in self.breaks.items():
            if kind not in known:
                raise ValueError(f"unknown break kind {kind!r}; known: {', '.join(sorted(known))}")
            if count < 0:
                raise ValueError(f"break count for {kind} must not be negative")
        # One spelling per day: plain-string kinds, sorted, no zero counts.
        normal = {str(kind): count for kind, count in sorted(self.breaks.items()) if count}
        object.__setattr__(self, "breaks", normal)

    def __hash__(self) -> int:
        return hash(self.config_hash())

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, date):
                value = value.isoformat()
            elif isinstance(value, dict):
                value = dict(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, object]) -> DayConfig:
        values = dict(raw)
        for name in ("business_date", "chain_version_split_date"):
            values[name] = date.fromisoformat(str(values[name]))
        return cls(**values)  # type: ignore[arg-type]  # shapes are checked by __post_init__

    def config_hash(self) -> str:
        canonical = orjson.dumps(
            {"generator_version": GENERATOR_VERSION, **self.to_dict()},
            option=orjson.OPT_SORT_KEYS,
        )
        return hashlib.sha256(canonical).hexdigest()

    @property
    def day_start_us(self) -> int:
        midnight = datetime(
            self.business_date.year, self.business_date.month, self.business_date.day, tzinfo=UTC
        )
        return int(midnight.timestamp()) * US_PER_S

    @property
    def date_code(self) -> str:
        return self.business_date.strftime("%Y%m%d")


# --- exchange -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InstrumentSpec:
    symbol: str
    name: str
    price_scale: int
    fractional_qty_scale: int
    tick: int  # smallest price step, in price units
    taker_fee_bps: int
    maker_fee_bps: int  # negative = the passive side earns a rebate


@dataclass(frozen=True, slots=True)
class Account:
    account: str
    firm: str
    participant: str  # firms/<FIRM>/users/<USER>


@dataclass(frozen=True, slots=True)
class OrderSnapshot:
    id: str
    clord_id: str
    symbol: str
    side: int
    order_type: int
    time_in_force: int
    order_qty: int
    price: int
    cum_qty: int
    leaves_qty: int
    avg_px: int
    state: int
    account: str
    participant: str
    create_time_us: int


@dataclass(frozen=True, slots=True)
class Execution:
    id: str
    order: OrderSnapshot
    last_shares: int
    last_px: int
    exec_type: int
    text: str
    transact_time_us: int
    trade_id: str
    aggressor: bool
    commission: int  # notional units (price_scale * fractional_qty_scale); negative = rebate
    business_date: date


@dataclass(frozen=True, slots=True)
class TradeCapture:
    id: str
    aggressor: Execution
    passive: Execution
    trade_type: int
    state: int
    text: str
    update_time_us: int


@dataclass(frozen=True, slots=True)
class InstrumentStatus:
    spec: InstrumentSpec
    state: int
    update_time_us: int


@dataclass(frozen=True, slots=True)
class PositionState:
    account: str
    symbol: str
    net_position: int
    qty_bought: int
    qty_sold: int
    cost: int  # cost basis of the open position, notional units, signed like the position
    realized: int  # notional units
    update_time_us: int


# --- chain --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Token:
    token_id: str  # uint256 in decimal, as the feeds print it
    label: str
    outcome_index: int


@dataclass(frozen=True, slots=True)
class Market:
    condition_id: str
    market_slug: str
    title: str
    market_id: str
    image: str
    is_neg_risk: bool
    version: int  # 1: gross fee + fee_refund; 2: net fee, builder and metadata
    tokens: tuple[Token, Token]
    tick: Decimal


@dataclass(frozen=True, slots=True)
class OrderFilled:
    status: Literal["pending", "confirmed"]
    market: Market
    outcome_index: int
    side: Literal["BUY", "SELL"]
    shares: int  # raw, 6 decimals
    price: Decimal
    tx_hash: str
    log_index: int | None  # None while pending
    timestamp: int  # unix seconds
    order_hash: str
    user: str
    taker: str
    role: Literal["maker", "taker"]
    fee: Decimal


@dataclass(frozen=True, slots=True)
class FeeRefund:
    market: Market
    outcome_index: int
    user: str
    order_hash: str
    tx_hash: str
    refund: Decimal
    fee_charged: Decimal


@dataclass(frozen=True, slots=True)
class LegacyTrade:
    """One maker fill as the older "trade" provider reports it (shares already normalised)."""

    market: Market
    outcome_index: int
    shares: int  # raw, 6 decimals; the feed prints it normalised
    price: Decimal
    tx_hash: str
    timestamp: int
    order_hash: str
    user: str
    taker: str


# --- ground truth -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Break:
    kind: BreakKind
    key: str
    business_date: date
    details: Mapping[str, str | int]

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": str(self.kind),
            "key": self.key,
            "business_date": self.business_date.isoformat(),
            "details": dict(sorted(self.details.items())),
        }


# --- what the store serves ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamRow:
    seq: int
    event_time_us: int
    symbol: str
    firm: str
    payload: bytes  # serialized protobuf message


@dataclass(frozen=True, slots=True)
class FeedRow:
    seq: int
    event_time_us: int
    status: str  # 'confirmed' | 'pending' ('confirmed' for fee_refund)
    condition_id: str
    market_slug: str
    users: tuple[str, ...]  # user and taker addresses, for subscription filters
    data: bytes  # JSON of the event's `data` object, exactly as sent
