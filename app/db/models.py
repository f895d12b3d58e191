"""Every polyrecon table. Table and column names are the contract other modules code against.

Fact tables are partitioned by day on `business_date` (see `ensure_partitions` in the initial
migration and `app.db.partitions`); their primary keys therefore lead with `business_date`.
The migrations build the schema; these models must match them (`alembic check` guards it).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    PrimaryKeyConstraint,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import (
    Base,
    BigSerial,
    BreakStatus,
    DefaultNow,
    ExecutionSource,
    FeeScope,
    FeeSource,
    FillRole,
    Int16,
    Int32,
    JsonEmpty,
    JsonObject,
    RunStatus,
    Severity,
    TextEnum,
    one_of,
)

PARTITION_BY_DAY = {"postgresql_partition_by": "RANGE (business_date)"}
# Declarative puts a subclass's columns before its mixin's; these keep keys first, extras last.
FIRST, LAST = -1, 1


def non_negative(*columns: str) -> list[CheckConstraint]:
    return [CheckConstraint(f"{column} >= 0", name=f"{column}_non_negative") for column in columns]


def probability(column: str) -> CheckConstraint:
    """Chain prices are dollars per share of a binary outcome, so they live in [0, 1]."""
    return CheckConstraint(f"{column} BETWEEN 0 AND 1", name=f"{column}_between_0_and_1")


# --- exchange (DropCopy and Report API) -------------------------------------------------------


class ExecutionColumns:
    """One venue Execution with its Order flattened in; shared by `execution` and its snapshot."""

    business_date: Mapped[date] = mapped_column(primary_key=True)
    id: Mapped[str] = mapped_column(primary_key=True)
    order_id: Mapped[str]
    clord_id: Mapped[str | None]
    symbol: Mapped[str]
    side: Mapped[str]
    order_type: Mapped[str]
    time_in_force: Mapped[str]
    order_qty: Mapped[int]
    order_price: Mapped[int]
    cum_qty: Mapped[int]
    leaves_qty: Mapped[int]
    avg_px: Mapped[int]
    order_state: Mapped[str]
    account: Mapped[str]
    participant: Mapped[str | None]
    exec_type: Mapped[str]
    last_shares: Mapped[int]
    last_px: Mapped[int]
    text: Mapped[str | None]
    transact_time: Mapped[datetime]
    trade_id: Mapped[str | None]
    aggressor: Mapped[bool]
    # Negative means a rebate paid to us, so no sign check.
    commission_notional_collected: Mapped[int]
    raw: Mapped[bytes]


def execution_table_args(*extra: Any) -> tuple[Any, ...]:
    return (
        *non_negative(
            "order_qty", "order_price", "cum_qty", "leaves_qty", "avg_px", "last_shares", "last_px"
        ),
        Index(None, "business_date", "trade_id"),
        Index(None, "business_date", "account", "symbol"),
        # Compliance order trails look an order up without knowing its business date; an order
        # has a handful of executions, so this serves lookups within one day as well.
        Index(None, "order_id"),
        *extra,
        PARTITION_BY_DAY,
    )


class Execution(ExecutionColumns, Base):
    __tablename__ = "execution"
    __table_args__ = execution_table_args(
        one_of("source", ExecutionSource),
        # An account's trades, or all trades, over any period, newest first, without sorting days.
        Index(None, "account", "transact_time"),
        Index(None, "transact_time"),
    )

    source: Mapped[ExecutionSource] = mapped_column(TextEnum(ExecutionSource), sort_order=LAST)
    received_at: Mapped[DefaultNow] = mapped_column(sort_order=LAST)


class ReportExecution(ExecutionColumns, Base):
    __tablename__ = "report_execution"
    __table_args__ = execution_table_args()

    fetched_at: Mapped[DefaultNow] = mapped_column(sort_order=LAST)


class TradeColumns:
    """One venue Trade: its aggressor and passive executions reduced to what matching needs."""

    # The aggressor's transact_trade_date.
    business_date: Mapped[date] = mapped_column(primary_key=True)
    id: Mapped[str] = mapped_column(primary_key=True)
    trade_type: Mapped[str]
    state: Mapped[str]
    text: Mapped[str | None]
    trade_link_id: Mapped[str | None]
    update_time: Mapped[datetime | None]
    symbol: Mapped[str]
    aggressor_execution_id: Mapped[str]
    passive_execution_id: Mapped[str]
    aggressor_account: Mapped[str]
    passive_account: Mapped[str]
    aggressor_side: Mapped[str]
    last_shares: Mapped[int]
    last_px: Mapped[int]
    aggressor_commission: Mapped[int]
    passive_commission: Mapped[int]
    transact_time: Mapped[datetime]
    busted: Mapped[bool] = mapped_column(server_default=false())
    raw: Mapped[bytes]


def trade_table_args() -> tuple[Any, ...]:
    return (*non_negative("last_shares", "last_px"), PARTITION_BY_DAY)


class TradeCapture(TradeColumns, Base):
    """The current state of each trade; a re-sent trade (same id, new state) replaces the row."""

    __tablename__ = "trade_capture"
    __table_args__ = trade_table_args()

    received_at: Mapped[DefaultNow] = mapped_column(sort_order=LAST)


class ReportTrade(TradeColumns, Base):
    __tablename__ = "report_trade"
    __table_args__ = trade_table_args()

    fetched_at: Mapped[DefaultNow] = mapped_column(sort_order=LAST)


class TradeCaptureState(Base):
    """Every state a trade was reported in; the key makes a re-delivery merge, not duplicate."""

    __tablename__ = "trade_capture_state"
    __table_args__ = (PARTITION_BY_DAY,)

    business_date: Mapped[date] = mapped_column(primary_key=True)
    trade_id: Mapped[str] = mapped_column(primary_key=True)
    state: Mapped[str] = mapped_column(primary_key=True)
    update_time: Mapped[datetime] = mapped_column(primary_key=True)
    raw: Mapped[bytes]
    received_at: Mapped[DefaultNow]


class Instrument(Base):
    """Current instrument definitions; the scales turn raw units into dollars and contracts."""

    __tablename__ = "instrument"
    __table_args__ = (
        CheckConstraint("price_scale > 0", name="price_scale_positive"),
        CheckConstraint("fractional_qty_scale > 0", name="fractional_qty_scale_positive"),
    )

    symbol: Mapped[str] = mapped_column(primary_key=True)
    name: Mapped[str]
    state: Mapped[str]
    price_scale: Mapped[int]
    fractional_qty_scale: Mapped[int]
    update_time: Mapped[datetime | None]
    raw: Mapped[bytes]
    received_at: Mapped[DefaultNow]


class InstrumentStateChange(Base):
    """Instrument history as streamed; business_date is the UTC date of update_time."""

    __tablename__ = "instrument_state_change"
    __table_args__ = (PARTITION_BY_DAY,)

    business_date: Mapped[date] = mapped_column(primary_key=True)
    symbol: Mapped[str] = mapped_column(primary_key=True)
    update_time: Mapped[datetime] = mapped_column(primary_key=True)
    state: Mapped[str] = mapped_column(primary_key=True)
    name: Mapped[str]
    price_scale: Mapped[int]
    fractional_qty_scale: Mapped[int]
    raw: Mapped[bytes]
    received_at: Mapped[DefaultNow]


class PositionColumns:
    """The venue Position numbers, all raw units."""

    account: Mapped[str]
    symbol: Mapped[str]
    net_position: Mapped[int]
    qty_bought: Mapped[int]
    qty_sold: Mapped[int]
    cost: Mapped[int]
    realized: Mapped[int]
    bod_position: Mapped[int]
    update_time: Mapped[datetime | None]
    raw: Mapped[bytes]


class PositionChange(PositionColumns, Base):
    """Position changes as streamed; business_date is the UTC date of change_time."""

    __tablename__ = "position_change"
    __table_args__ = (
        PrimaryKeyConstraint("business_date", "account", "symbol", "change_time"),
        *non_negative("qty_bought", "qty_sold"),
        PARTITION_BY_DAY,
    )

    business_date: Mapped[date] = mapped_column(sort_order=FIRST)
    change_time: Mapped[datetime] = mapped_column(sort_order=LAST)
    received_at: Mapped[DefaultNow] = mapped_column(sort_order=LAST)


class ReportPosition(PositionColumns, Base):
    """Report API `ListPositions` snapshots, one set per `as_of`."""

    __tablename__ = "report_position"
    __table_args__ = (
        PrimaryKeyConstraint("as_of", "account", "symbol"),
        *non_negative("qty_bought", "qty_sold"),
    )

    as_of: Mapped[datetime] = mapped_column(sort_order=FIRST)


# --- chain (websocket feeds) ------------------------------------------------------------------

# The chain's 0x-hex keys (lower-cased at parse) compare byte by byte. Under the database's
# C.UTF-8, which Postgres 15 does not treat as "C", every index comparison of them called
# strcoll; hex sorts the same either way. Every chain table uses it, so joins stay in one.
HexKey = Annotated[str, mapped_column(Text(collation="C"))]


class ChainFillColumns:
    """An `order_filled` event of the "orders" channel; business_date is the UTC date of it."""

    business_date: Mapped[date]
    tx_hash: Mapped[HexKey]
    order_hash: Mapped[HexKey]
    # A uint256 as its decimal string: too wide for any SQL integer type.
    token_id: Mapped[str]
    token_label: Mapped[str | None]
    complement_token_id: Mapped[str | None]
    complement_token_label: Mapped[str | None]
    side: Mapped[str]
    market_slug: Mapped[str | None]
    condition_id: Mapped[HexKey]
    market_id: Mapped[str | None]
    title: Mapped[str | None]
    outcome: Mapped[str | None]
    outcome_index: Mapped[Int32 | None]
    is_neg_risk: Mapped[bool | None]
    # Raw 6-decimal integer, as on chain.
    shares: Mapped[int]
    shares_normalized: Mapped[Decimal]
    price: Mapped[Decimal]
    # V1: gross (a fee_refund follows); V2: already net.
    fee: Mapped[Decimal]
    user_address: Mapped[HexKey]
    taker_address: Mapped[HexKey]
    role: Mapped[FillRole] = mapped_column(TextEnum(FillRole))
    version: Mapped[Int16]
    builder: Mapped[str | None]
    # `metadata` is taken by the declarative base.
    metadata_: Mapped[str | None] = mapped_column("metadata")
    event_time: Mapped[datetime]
    raw: Mapped[bytes]
    received_at: Mapped[DefaultNow]


def chain_fill_table_args(*extra: Any) -> tuple[Any, ...]:
    return (
        *non_negative("shares", "shares_normalized"),
        probability("price"),
        one_of("role", FillRole),
        CheckConstraint("version >= 1", name="version_positive"),
        *extra,
        PARTITION_BY_DAY,
    )


class OrderFilled(ChainFillColumns, Base):
    """CONFIRMED fills, keyed on chain position. One match is one row per maker plus one taker
    aggregate row covering the same shares: never sum both roles."""

    __tablename__ = "order_filled"
    __table_args__ = chain_fill_table_args(
        # Its leading (business_date, tx_hash) also serves lookups by transaction.
        PrimaryKeyConstraint("business_date", "tx_hash", "log_index"),
        *non_negative("log_index"),
        # By order within a window of days (refund dating, the refunds rule, the report). A hash
        # index on order_hash alone is cheaper to insert into, but then no one index serves both
        # conditions, and on stale statistics the planner ANDed it with the whole day's PK.
        Index(None, "business_date", "order_hash"),
        # Compliance lookups by wallet (as maker or taker) and by market over any period.
        Index(None, "user_address", "event_time"),
        # Only maker fills are looked up by taker; a taker aggregate's taker is the exchange.
        Index(
            "ix_order_filled_makers_taker_address_event_time",
            "taker_address",
            "event_time",
            postgresql_where=text("role = 'maker'"),
        ),
        Index(None, "condition_id", "event_time"),
        # Newest first, and each reconcile run's newest event. The cheapest index here (keys
        # arrive in time order, deduplicated); a BRIN would save ~1 us a row but make those
        # reads scan the newest block ranges, all of them until vacuum summarises them.
        Index(None, "event_time"),
    )

    # Parsed from the feed's hex string ("0x21e").
    log_index: Mapped[int] = mapped_column(sort_order=LAST)


# A day and its neighbours, for rows of one chain transaction that may straddle midnight: a pending
# fill is stamped a few seconds before its confirmation (with clock skew, after it). Three
# equalities, not a BETWEEN: a range on an index's leading column would scan every entry of those
# days per looked-up row, where this makes three point probes on (business_date, tx_hash, ...).
NEAR_DAYS = "= ANY(ARRAY[{day} - 1, {day}, {day} + 1])"


def pending_confirmed(pending: str, day: str | None = None) -> str:
    """SQL: the pending fill aliased `pending` has its confirmed order_filled (is superseded).

    `day`: the business_date of every pending row looked at, when the query has one (a
    parameter): the lookup then reads three day partitions, not all of them."""
    day = day or f"{pending}.business_date"
    return (
        "EXISTS (SELECT FROM order_filled AS confirmed "
        f"WHERE confirmed.tx_hash = {pending}.tx_hash "
        f"AND confirmed.order_hash = {pending}.order_hash "
        f"AND confirmed.business_date {NEAR_DAYS.format(day=day)})"
    )


class OrderFilledPending(ChainFillColumns, Base):
    """PENDING (mempool) fills: no log_index yet. Superseded by the confirmed order_filled of the
    same (tx_hash, order_hash), which readers look up (`pending_confirmed`): a pending row is
    written once and never updated, whichever of the two arrives first."""

    __tablename__ = "order_filled_pending"
    __table_args__ = chain_fill_table_args(
        PrimaryKeyConstraint("business_date", "tx_hash", "order_hash"),
    )


class FeeRefund(Base):
    """V1 maker fee rebates (`refund + fee_charged = order_filled.fee`). Not partitioned: the
    feed gives no timestamp, so business_date is the event's if present, else the receive date."""

    __tablename__ = "fee_refund"
    __table_args__ = (
        *non_negative("refund", "fee_charged"),
        Index(None, "order_hash"),
        Index(None, "business_date"),
        Index(None, "user_address"),
    )

    tx_hash: Mapped[HexKey] = mapped_column(primary_key=True)
    order_hash: Mapped[HexKey] = mapped_column(primary_key=True)
    business_date: Mapped[date]
    user_address: Mapped[HexKey]
    token_id: Mapped[str | None]
    condition_id: Mapped[HexKey | None]
    market_slug: Mapped[str | None]
    title: Mapped[str | None]
    refund: Mapped[Decimal]
    fee_charged: Mapped[Decimal]
    event_time: Mapped[datetime | None]
    raw: Mapped[bytes]
    received_at: Mapped[DefaultNow]


class FeedTrade(Base):
    """The legacy "trade" message feed; `shares` there is already a decimal number."""

    __tablename__ = "feed_trade"
    __table_args__ = (
        *non_negative("shares", "shares_normalized"),
        probability("price"),
        PARTITION_BY_DAY,
    )

    business_date: Mapped[date] = mapped_column(primary_key=True)
    tx_hash: Mapped[HexKey] = mapped_column(primary_key=True)
    order_hash: Mapped[HexKey] = mapped_column(primary_key=True)
    asset_id: Mapped[str]
    condition_id: Mapped[HexKey]
    market_slug: Mapped[str | None]
    title: Mapped[str | None]
    outcome: Mapped[str | None]
    shares: Mapped[Decimal]
    shares_normalized: Mapped[Decimal]
    price: Mapped[Decimal]
    user_address: Mapped[HexKey]
    taker_address: Mapped[HexKey]
    event_time: Mapped[datetime]
    # The message's own "source" field (e.g. "alchemy").
    feed_source: Mapped[str | None]
    raw: Mapped[bytes]
    received_at: Mapped[DefaultNow]


# --- ingest bookkeeping -----------------------------------------------------------------------


class StreamCheckpoint(Base):
    """Where each stream resumes; written in the same transaction as the rows it covers."""

    __tablename__ = "stream_checkpoint"

    stream: Mapped[str] = mapped_column(primary_key=True)
    resume_token: Mapped[bytes | None]
    last_event_time: Mapped[datetime | None]
    events_total: Mapped[int] = mapped_column(server_default=text("0"))
    updated_at: Mapped[DefaultNow]


class GapWindow(Base):
    """A time window a stream may have missed, to be filled from the Report API."""

    __tablename__ = "gap_window"
    __table_args__ = (
        CheckConstraint("end_time >= start_time", name="window_ordered"),
        Index(None, "source", "backfilled_at"),
    )

    id: Mapped[BigSerial]
    source: Mapped[str]
    start_time: Mapped[datetime]
    end_time: Mapped[datetime]
    reason: Mapped[str]
    detected_at: Mapped[DefaultNow]
    backfilled_at: Mapped[datetime | None]


class DeadLetter(Base):
    """Input that could not be parsed or stored, kept with the reason instead of dropped."""

    __tablename__ = "dead_letter"
    __table_args__ = (Index(None, "source", "received_at"),)

    id: Mapped[BigSerial]
    source: Mapped[str]
    reason: Mapped[str]
    raw: Mapped[bytes]
    received_at: Mapped[DefaultNow]


# --- reconciliation ---------------------------------------------------------------------------


class ReconRun(Base):
    __tablename__ = "recon_run"
    __table_args__ = (
        one_of("status", RunStatus),
        CheckConstraint(
            "(status = 'running') = (finished_at IS NULL)", name="finished_iff_not_running"
        ),
        Index(None, "job", "business_date"),
    )

    id: Mapped[BigSerial]
    job: Mapped[str]
    business_date: Mapped[date]
    started_at: Mapped[DefaultNow]
    finished_at: Mapped[datetime | None]
    status: Mapped[RunStatus] = mapped_column(TextEnum(RunStatus), server_default=text("'running'"))
    counts: Mapped[JsonEmpty]
    timings: Mapped[JsonEmpty]
    error: Mapped[str | None]


class JobTick(Base):
    """One row per scheduled job tick: the primary key is what makes replicas run a tick once."""

    __tablename__ = "job_tick"

    job: Mapped[str] = mapped_column(primary_key=True)
    tick: Mapped[str] = mapped_column(primary_key=True)
    business_date: Mapped[date]
    owner: Mapped[str]
    claimed_at: Mapped[DefaultNow]
    finished_at: Mapped[datetime | None]


class Break(Base):
    """A reconciliation break, one per (kind, business_date, key); it recurs rather than repeats."""

    __tablename__ = "recon_break"
    __table_args__ = (
        UniqueConstraint("kind", "business_date", "key"),
        one_of("severity", Severity),
        one_of("status", BreakStatus),
        CheckConstraint(
            "(status = 'resolved') = (resolved_at IS NOT NULL)", name="resolved_iff_resolved_at"
        ),
        CheckConstraint("occurrences >= 1", name="occurrences_positive"),
        Index(None, "status", "business_date"),
        # Order trails find the breaks of an order's executions and trades by their keys.
        Index(None, "key"),
    )

    id: Mapped[BigSerial]
    kind: Mapped[str]
    business_date: Mapped[date]
    key: Mapped[str]
    severity: Mapped[Severity] = mapped_column(TextEnum(Severity))
    status: Mapped[BreakStatus] = mapped_column(
        TextEnum(BreakStatus), server_default=text("'open'")
    )
    expected: Mapped[JsonObject | None]
    actual: Mapped[JsonObject | None]
    details: Mapped[JsonEmpty]
    first_seen_at: Mapped[DefaultNow]
    last_seen_at: Mapped[DefaultNow]
    resolved_at: Mapped[datetime | None]
    occurrences: Mapped[Int32] = mapped_column(server_default=text("1"))
    assignee: Mapped[str | None]
    notes: Mapped[str | None]
    last_run_id: Mapped[int | None] = mapped_column(ForeignKey("recon_run.id", ondelete="SET NULL"))


class BreakAudit(Base):
    """Append-only trail of every change to a break; a trigger refuses UPDATE/DELETE/TRUNCATE."""

    __tablename__ = "break_audit"
    __table_args__ = (
        one_of("from_status", BreakStatus, nullable=True),
        one_of("to_status", BreakStatus, nullable=True),
        Index(None, "break_id", "at"),
    )

    id: Mapped[BigSerial]
    break_id: Mapped[int] = mapped_column(ForeignKey("recon_break.id"))
    at: Mapped[DefaultNow]
    actor: Mapped[str]
    action: Mapped[str]
    from_status: Mapped[BreakStatus | None] = mapped_column(TextEnum(BreakStatus))
    to_status: Mapped[BreakStatus | None] = mapped_column(TextEnum(BreakStatus))
    note: Mapped[str | None]
    data: Mapped[JsonEmpty]


class AlertOutbox(Base):
    """Alerts to deliver, at most one per (break, occurrence, notifier)."""

    __tablename__ = "alert_outbox"
    __table_args__ = (
        UniqueConstraint("break_id", "occurrence", "notifier"),
        CheckConstraint("occurrence >= 1", name="occurrence_positive"),
        CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        Index(
            "ix_alert_outbox_undelivered",
            "next_attempt_at",
            postgresql_where=text("delivered_at IS NULL"),
        ),
    )

    id: Mapped[BigSerial]
    break_id: Mapped[int] = mapped_column(ForeignKey("recon_break.id"))
    occurrence: Mapped[Int32]
    notifier: Mapped[str]
    payload: Mapped[JsonObject]
    created_at: Mapped[DefaultNow]
    attempts: Mapped[Int32] = mapped_column(server_default=text("0"))
    next_attempt_at: Mapped[DefaultNow]
    delivered_at: Mapped[datetime | None]
    last_error: Mapped[str | None]


class NetFeeDaily(Base):
    """Net fees per day and scope: exchange commissions, chain `fee - refund` (V2: refund 0)."""

    __tablename__ = "net_fee_daily"
    __table_args__ = (
        one_of("scope", FeeScope),
        one_of("source", FeeSource),
        CheckConstraint("net_fee = gross_fee - refund", name="net_fee_is_gross_minus_refund"),
        *non_negative("refund", "fills"),
    )

    business_date: Mapped[date] = mapped_column(primary_key=True)
    scope: Mapped[FeeScope] = mapped_column(TextEnum(FeeScope), primary_key=True)
    scope_key: Mapped[str] = mapped_column(primary_key=True)
    source: Mapped[FeeSource] = mapped_column(TextEnum(FeeSource), primary_key=True)
    gross_fee: Mapped[Decimal]
    refund: Mapped[Decimal]
    net_fee: Mapped[Decimal]
    fills: Mapped[int]
    computed_at: Mapped[DefaultNow]


# --- what users read --------------------------------------------------------------------------


class ReconReport(Base):
    """Every nightly report built: its summary (for the next day's comparison) and its HTML."""

    __tablename__ = "recon_report"
    __table_args__ = (Index(None, "business_date", "built_at"),)

    id: Mapped[BigSerial]
    business_date: Mapped[date]
    built_at: Mapped[DefaultNow]
    summary: Mapped[JsonObject]
    html: Mapped[str]
