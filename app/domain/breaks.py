"""Break kinds and the pure rules around them: severity, age buckets, tolerance.

The kind strings are the contract with the simulated venue's ground truth and with users'
saved filters: never rename one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from app.db.base import BreakStatus, Severity


class BreakKind(StrEnum):
    EXECUTION_MISSING_FROM_STREAM = "execution_missing_from_stream"
    EXECUTION_MISSING_FROM_REPORT = "execution_missing_from_report"
    EXECUTION_QUANTITY_MISMATCH = "execution_quantity_mismatch"
    EXECUTION_PRICE_MISMATCH = "execution_price_mismatch"
    EXECUTION_FEE_MISMATCH = "execution_fee_mismatch"
    TRADE_STATE_MISMATCH = "trade_state_mismatch"
    TRADE_BUSTED = "trade_busted"
    TRADE_LEG_MISSING = "trade_leg_missing"
    POSITION_MISMATCH = "position_mismatch"
    CHAIN_MAKER_TAKER_MISMATCH = "chain_maker_taker_mismatch"
    CHAIN_TAKER_MISSING = "chain_taker_missing"
    CHAIN_PENDING_UNCONFIRMED = "chain_pending_unconfirmed"
    CHAIN_PENDING_DRIFT = "chain_pending_drift"
    CHAIN_REFUND_ORPHAN = "chain_refund_orphan"
    CHAIN_REFUND_ARITHMETIC = "chain_refund_arithmetic"
    FEED_PROVIDER_MISSING = "feed_provider_missing"
    FEED_PROVIDER_MISMATCH = "feed_provider_mismatch"


# Money or position is wrong or unknown → critical; a record disagrees → high; fee-only or
# informational differences rank lower so the queue is worked in the order that costs most.
_SEVERITY: dict[BreakKind, Severity] = {
    BreakKind.EXECUTION_MISSING_FROM_STREAM: Severity.CRITICAL,
    BreakKind.TRADE_LEG_MISSING: Severity.CRITICAL,
    BreakKind.POSITION_MISMATCH: Severity.CRITICAL,
    BreakKind.EXECUTION_MISSING_FROM_REPORT: Severity.HIGH,
    BreakKind.EXECUTION_QUANTITY_MISMATCH: Severity.HIGH,
    BreakKind.EXECUTION_PRICE_MISMATCH: Severity.HIGH,
    BreakKind.TRADE_STATE_MISMATCH: Severity.HIGH,
    BreakKind.CHAIN_MAKER_TAKER_MISMATCH: Severity.HIGH,
    BreakKind.CHAIN_TAKER_MISSING: Severity.HIGH,
    BreakKind.CHAIN_PENDING_UNCONFIRMED: Severity.HIGH,
    BreakKind.EXECUTION_FEE_MISMATCH: Severity.MEDIUM,
    BreakKind.CHAIN_PENDING_DRIFT: Severity.MEDIUM,
    BreakKind.CHAIN_REFUND_ORPHAN: Severity.MEDIUM,
    BreakKind.CHAIN_REFUND_ARITHMETIC: Severity.MEDIUM,
    BreakKind.FEED_PROVIDER_MISMATCH: Severity.MEDIUM,
    BreakKind.FEED_PROVIDER_MISSING: Severity.LOW,
    BreakKind.TRADE_BUSTED: Severity.LOW,
}


def severity_of(kind: BreakKind) -> Severity:
    return _SEVERITY[kind]


def severity_map() -> dict[str, str]:
    """kind → severity as plain strings, for SQL that stamps severities set-wise."""
    return {kind.value: severity.value for kind, severity in _SEVERITY.items()}


class AgeBucket(StrEnum):
    DAYS_0_1 = "0-1"
    DAYS_2_7 = "2-7"
    DAYS_8_30 = "8-30"
    OVER_30 = ">30"


@dataclass(frozen=True, slots=True)
class DayRange:
    """Whole days, both ends inclusive; `last` None means unbounded."""

    first: int
    last: int | None


_BUCKET_DAYS: dict[AgeBucket, DayRange] = {
    AgeBucket.DAYS_0_1: DayRange(0, 1),
    AgeBucket.DAYS_2_7: DayRange(2, 7),
    AgeBucket.DAYS_8_30: DayRange(8, 30),
    AgeBucket.OVER_30: DayRange(31, None),
}


def age_days(first_seen_at: datetime, now: datetime) -> int:
    """Whole days a break has been outstanding; a clock running behind never makes it negative."""
    return max((now - first_seen_at) // timedelta(days=1), 0)


def age_bucket(days: int) -> AgeBucket:
    for bucket, span in _BUCKET_DAYS.items():
        if days >= span.first and (span.last is None or days <= span.last):
            return bucket
    raise ValueError(f"age in days must be >= 0, got {days}")


def bucket_days(bucket: AgeBucket) -> DayRange:
    return _BUCKET_DAYS[bucket]


def exceeds_tolerance(expected: Decimal, actual: Decimal, tolerance: Decimal) -> bool:
    """True when `actual` is further from `expected` than `tolerance` (a fraction of `expected`).

    Against an expected zero any difference exceeds: there is nothing to take a fraction of.
    The SQL rules apply the same test: `abs(actual - expected) > tolerance * abs(expected)`.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    return abs(actual - expected) > tolerance * abs(expected)


@dataclass(frozen=True, slots=True)
class RuleConfig:
    """Knobs of the rules; defaults follow the venue's documented behaviour."""

    pending_grace: timedelta = timedelta(minutes=10)
    drift_tolerance: Decimal = Decimal("0.01")
    # A live DropCopy stream lags the Report API by seconds, and may still deliver events a
    # little older than its newest (shards, reordering): intraday, what is newer than a
    # stream's newest event less this grace waits for a later run.
    stream_grace: timedelta = timedelta(minutes=1)

    def __post_init__(self) -> None:
        if self.pending_grace < timedelta(0):
            raise ValueError("pending_grace must not be negative")
        if self.stream_grace < timedelta(0):
            raise ValueError("stream_grace must not be negative")
        if not Decimal(0) <= self.drift_tolerance < Decimal(1):
            raise ValueError("drift_tolerance must be a fraction in [0, 1)")


class ManualAction(StrEnum):
    ACKNOWLEDGE = "acknowledge"
    RESOLVE = "resolve"


# What a person may do from each status; the engine's own moves live in the lifecycle merge.
_MANUAL: dict[ManualAction, tuple[frozenset[BreakStatus], BreakStatus, str]] = {
    ManualAction.ACKNOWLEDGE: (
        frozenset({BreakStatus.OPEN}),
        BreakStatus.ACKNOWLEDGED,
        "acknowledged",
    ),
    ManualAction.RESOLVE: (
        frozenset({BreakStatus.OPEN, BreakStatus.ACKNOWLEDGED}),
        BreakStatus.RESOLVED,
        "resolved",
    ),
}


@dataclass(frozen=True, slots=True)
class Transition:
    to_status: BreakStatus
    audit_action: str


def manual_transition(action: ManualAction, current: BreakStatus) -> Transition:
    """Where `action` takes a break in status `current`; ValueError if it is not allowed."""
    allowed_from, to_status, audit_action = _MANUAL[action]
    if current not in allowed_from:
        raise ValueError(f"cannot {action} a break that is {current}")
    return Transition(to_status, audit_action)
