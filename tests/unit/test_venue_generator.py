"""The simulated day as the generator produces it: deterministic, internally consistent, and broken
exactly where the ground truth says."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

import orjson
import pytest

from app.domain.breaks import BreakKind
from app.venue.breaks import KIND_POOL, reported_position
from app.venue.encode import (
    decimal_text,
    encode_execution,
    fee_refund_json,
    legacy_trade_json,
    order_filled_json,
)
from app.venue.generator import (
    ExecutionItem,
    FeedItem,
    PositionItem,
    ReportOrderItem,
    ReportTradeItem,
    StreamItem,
    apply_fill,
    build_universe,
    generate_day,
)
from app.venue.model import (
    INJECTABLE_KINDS,
    Break,
    DayConfig,
    FeeRefund,
    InstrumentStatus,
    LegacyTrade,
    OrderFilled,
    PositionState,
    TradeCapture,
)
from polymarket.v1 import enums_pb2 as pb
from polymarket.v1 import trading_pb2

SCALE = 0.005
FILL_TYPES = (pb.EXECUTION_TYPE_PARTIAL_FILL, pb.EXECUTION_TYPE_FILL)

# Field lists of the seeds (004: orders channel, 003: legacy "trade" provider).
ORDER_FILLED_FIELDS = [
    "status", "event_type", "token_id", "token_label", "side", "market_slug", "condition_id",
    "shares", "shares_normalized", "price", "tx_hash", "log_index", "title", "timestamp",
    "order_hash", "user", "taker", "role", "outcome", "outcome_index", "complement_token_id",
    "complement_token_label", "is_neg_risk", "market_id", "image", "fee", "version", "builder",
    "metadata",
]  # fmt: skip
FEE_REFUND_FIELDS = [
    "event_type", "user", "token_id", "condition_id", "market_slug", "title", "order_hash",
    "tx_hash", "refund", "fee_charged",
]  # fmt: skip
LEGACY_FIELDS = [
    "platform", "asset_id", "market_slug", "condition_id", "shares", "shares_normalized", "price",
    "tx_hash", "title", "timestamp", "order_hash", "user", "taker", "outcome", "source",
]  # fmt: skip


@dataclass
class Day:
    """One generated day, sorted by where each item goes."""

    config: DayConfig
    executions: list[ExecutionItem] = field(default_factory=list)
    streams: dict[str, list[StreamItem]] = field(default_factory=lambda: defaultdict(list))
    report_trades: list[ReportTradeItem] = field(default_factory=list)
    report_orders: list[ReportOrderItem] = field(default_factory=list)
    positions: list[PositionItem] = field(default_factory=list)
    orders_feed: list[FeedItem] = field(default_factory=list)
    trades_feed: list[FeedItem] = field(default_factory=list)
    breaks: list[Break] = field(default_factory=list)

    def broken(self, kind: BreakKind) -> set[str]:
        return {b.key for b in self.breaks if b.kind is kind}


def collect(config: DayConfig) -> Day:
    day = Day(config)
    for item in generate_day(config):
        if isinstance(item, ExecutionItem):
            day.executions.append(item)
        elif isinstance(item, StreamItem):
            day.streams[item.stream].append(item)
        elif isinstance(item, ReportTradeItem):
            day.report_trades.append(item)
        elif isinstance(item, ReportOrderItem):
            day.report_orders.append(item)
        elif isinstance(item, PositionItem):
            day.positions.append(item)
        elif isinstance(item, FeedItem):
            (day.orders_feed if item.feed == "orders" else day.trades_feed).append(item)
        else:
            day.breaks.append(item)
    return day


@pytest.fixture(
    scope="module",
    params=[
        DayConfig(seed=7, scale=SCALE),
        DayConfig(seed=8, scale=SCALE, breaks=dict.fromkeys(INJECTABLE_KINDS, 3)),
        DayConfig(seed=9, scale=SCALE, breaks={}),
    ],
    ids=["two-of-each", "three-of-each", "clean"],
)
def day(request: pytest.FixtureRequest) -> Day:
    """Several seeds, so that a rule broken only by some draw of the dice still shows, and a day
    without breaks, in which nothing may look like one."""
    return collect(request.param)


def fingerprint(config: DayConfig) -> str:
    digest = hashlib.sha256()
    for item in generate_day(config):
        digest.update(repr(item).encode())
    return digest.hexdigest()


def test_same_seed_same_day_and_another_seed_another_day() -> None:
    config = DayConfig(seed=3, scale=0.002)
    assert fingerprint(config) == fingerprint(DayConfig(seed=3, scale=0.002))
    assert fingerprint(config) != fingerprint(DayConfig(seed=4, scale=0.002))


def test_every_configured_break_is_injected_once_and_objects_take_one_break_each(
    day: Day,
) -> None:
    counts = Counter(b.kind for b in day.breaks)
    for kind in INJECTABLE_KINDS:
        # a dropped transaction leaves two unconfirmed pending rows: its maker's and the aggregate
        per_break = 2 if kind is BreakKind.CHAIN_PENDING_UNCONFIRMED else 1
        assert counts[kind] == day.config.breaks.get(kind, 0) * per_break, kind
    assert len({(b.kind, b.key) for b in day.breaks}) == len(day.breaks)
    assert all(b.business_date == date(2026, 5, 4) for b in day.breaks)
    kinds_of: dict[str, set[BreakKind]] = defaultdict(set)
    for b in day.breaks:
        if KIND_POOL[b.kind] == "trade":
            kinds_of[str(b.details.get("trade_id", b.key))].add(b.kind)
        elif KIND_POOL[b.kind] == "tx":
            kinds_of[str(b.details.get("tx_hash", b.key.split("|")[0]))].add(b.kind)
    assert all(len(kinds) == 1 for kinds in kinds_of.values())
    configured = sum(
        n for k, n in day.config.breaks.items() if KIND_POOL[BreakKind(k)] != "position"
    )
    order_events = sum(1 for b in day.breaks if KIND_POOL[b.kind] == "order_event")
    assert len(kinds_of) == configured - order_events  # every trade or transaction break alone


def test_too_small_a_day_for_its_breaks_is_refused() -> None:
    with pytest.raises(ValueError, match="too small"):
        collect(DayConfig(scale=0.0001))


def test_each_stream_is_in_time_order_and_report_keys_grow_with_time(day: Day) -> None:
    for items in day.streams.values():
        times = [i.time_us for i in items]
        assert times == sorted(times)
        assert len(set(times)) == len(times)
    stream_execs = [i.execution for i in day.executions]
    assert [e.id for e in stream_execs] == sorted(e.id for e in stream_execs)
    assert [e.transact_time_us for e in stream_execs] == sorted(
        e.transact_time_us for e in stream_execs
    )
    trades = [t.trade for t in day.report_trades]
    assert [t.id for t in trades] == sorted(t.id for t in trades)
    assert [t.aggressor.transact_time_us for t in trades] == sorted(
        t.aggressor.transact_time_us for t in trades
    )
    for feed in (day.orders_feed, day.trades_feed):
        assert [f.time_us for f in feed] == sorted(f.time_us for f in feed)
    start = DayConfig().day_start_us
    everything = [*day.orders_feed, *day.trades_feed, *(i for s in day.streams.values() for i in s)]
    assert all(start <= item.time_us < start + 86_400_000_000 for item in everything)
    assert all(start <= e.transact_time_us < start + 86_400_000_000 for e in stream_execs)


def test_executions_differ_between_stream_and_report_only_where_injected(day: Day) -> None:
    in_stream_only = {i.execution.id for i in day.executions if i.in_stream and i.report is None}
    in_report_only = {
        i.execution.id for i in day.executions if not i.in_stream and i.report is not None
    }
    in_neither = {i.execution.id for i in day.executions if not i.in_stream and i.report is None}
    assert in_stream_only == day.broken(BreakKind.EXECUTION_MISSING_FROM_REPORT)
    assert in_report_only == day.broken(BreakKind.EXECUTION_MISSING_FROM_STREAM)
    assert in_neither == day.broken(BreakKind.TRADE_LEG_MISSING)
    differing: dict[str, set[str]] = defaultdict(set)
    for item in day.executions:
        stream, report = item.execution, item.report
        if report is None or report is stream:
            continue
        for name, kind in (
            ("last_shares", BreakKind.EXECUTION_QUANTITY_MISMATCH),
            ("last_px", BreakKind.EXECUTION_PRICE_MISMATCH),
            ("commission", BreakKind.EXECUTION_FEE_MISMATCH),
        ):
            if getattr(stream, name) != getattr(report, name):
                differing[kind].add(stream.id)
    for kind in (
        BreakKind.EXECUTION_QUANTITY_MISMATCH,
        BreakKind.EXECUTION_PRICE_MISMATCH,
        BreakKind.EXECUTION_FEE_MISMATCH,
    ):
        assert differing[kind] == day.broken(kind)


def test_normal_trades_have_both_legs_and_agree_on_state(day: Day) -> None:
    delivered = {i.execution.id for i in day.executions if i.in_stream}
    reported = {i.execution.id for i in day.executions if i.report is not None}
    legs_missing = day.broken(BreakKind.TRADE_LEG_MISSING)
    final_stream_state: dict[str, int] = {}
    for item in day.streams["trade_captures"]:
        assert isinstance(item.value, TradeCapture)
        final_stream_state[item.value.id] = item.value.state
    mismatched = set()
    for item in day.streams["trade_captures"]:
        assert isinstance(item.value, TradeCapture)
        agg, passive = item.value.aggressor, item.value.passive
        assert agg.aggressor
        assert not passive.aggressor
        assert (agg.last_shares, agg.last_px) == (passive.last_shares, passive.last_px)
        assert agg.order.side != passive.order.side
        assert agg.order.account != passive.order.account
    for item in day.report_trades:
        trade = item.trade
        for leg in (trade.aggressor.id, trade.passive.id):
            if leg not in legs_missing:
                assert leg in delivered
                assert leg in reported
        if final_stream_state[trade.id] != trade.state:
            mismatched.add(trade.id)
    assert mismatched == day.broken(BreakKind.TRADE_STATE_MISMATCH)
    busted = {t for t, state in final_stream_state.items() if state == pb.TRADE_STATE_BUSTED}
    assert busted == day.broken(BreakKind.TRADE_BUSTED)
    resent = Counter(item.value.id for item in day.streams["trade_captures"])
    assert max(resent.values()) == 2, "some trades are re-sent (NEW then CLEARED, or busted)"


def test_positions_equal_the_fills_except_where_injected(day: Day) -> None:
    final_state = {}
    for item in day.streams["trade_captures"]:
        assert isinstance(item.value, TradeCapture)
        final_state[item.value.id] = item.value.state
    fills: dict[str, int] = Counter()
    for item in day.executions:
        execution = item.execution
        if not item.in_stream or execution.exec_type not in FILL_TYPES:
            continue
        if final_state[execution.trade_id] == pb.TRADE_STATE_BUSTED:
            continue
        sign = 1 if execution.order.side == pb.SIDE_BUY else -1
        fills[f"{execution.order.account}|{execution.order.symbol}"] += sign * execution.last_shares
    last_change: dict[str, PositionState] = {}
    for item in day.streams["position_changes"]:
        assert isinstance(item.value, PositionState)
        last_change[f"{item.value.account}|{item.value.symbol}"] = item.value
    listed = {f"{p.position.account}|{p.position.symbol}": p.position for p in day.positions}
    assert listed == last_change
    wrong = {key for key, p in listed.items() if p.net_position != fills[key]}
    assert wrong == day.broken(BreakKind.POSITION_MISMATCH)
    assert all(p.net_position == p.qty_bought - p.qty_sold for p in listed.values())


def test_apply_fill_keeps_net_equal_to_bought_minus_sold_and_reversal_undoes_quantities() -> None:
    flat = PositionState("A", "S", 0, 0, 0, 0, 0, 0)
    long = apply_fill(flat, pb.SIDE_BUY, 10, 40, 1)
    assert (long.net_position, long.cost, long.realized) == (10, 400, 0)
    reduced = apply_fill(long, pb.SIDE_SELL, 4, 50, 2)
    assert (reduced.net_position, reduced.qty_sold, reduced.cost, reduced.realized) == (
        6,
        4,
        240,
        40,
    )
    flipped = apply_fill(reduced, pb.SIDE_SELL, 10, 60, 3)
    assert (flipped.net_position, flipped.cost, flipped.realized) == (-4, -240, 160)
    undone = apply_fill(flipped, pb.SIDE_SELL, 10, 60, 4, reverse=True)
    assert (undone.net_position, undone.qty_bought, undone.qty_sold) == (6, 10, 4)
    for p in (long, reduced, flipped, undone):
        assert p.net_position == p.qty_bought - p.qty_sold


@pytest.mark.parametrize(
    ("bought", "sold"),
    [(0, 7), (7, 0), (3, 3), (0, 0), (9, 2)],
    ids=["short-only", "long-only", "flat", "untouched", "net-long"],
)
@pytest.mark.parametrize("offset", [-5, -1, 1, 5])
def test_reported_position_moves_net_by_the_offset_and_keeps_quantities_valid(
    bought: int, sold: int, offset: int
) -> None:
    """A venue's position bug must still be a valid Position: the ingest parser dead-letters a
    negative qty_bought or qty_sold, and the break would then be lost with it."""
    true = PositionState("A", "S", bought - sold, bought, sold, 0, 0, 1)
    reported = reported_position(true, offset)
    assert reported.net_position == true.net_position + offset
    assert reported.net_position == reported.qty_bought - reported.qty_sold
    assert reported.qty_bought >= true.qty_bought >= 0
    assert reported.qty_sold >= true.qty_sold >= 0
    assert (reported.cost, reported.realized) == (true.cost, true.realized)


def confirmed_fills(day: Day) -> list[OrderFilled]:
    return [
        f.event
        for f in day.orders_feed
        if isinstance(f.event, OrderFilled) and f.event.status == "confirmed"
    ]


def test_maker_rows_sum_to_the_taker_aggregate_except_where_injected(day: Day) -> None:
    makers: dict[tuple[str, str], int] = Counter()
    aggregates: dict[tuple[str, str], int] = {}
    for row in confirmed_fills(day):
        token = row.market.tokens[row.outcome_index].token_id
        if row.role == "maker":
            makers[(row.tx_hash, token)] += row.shares
            assert row.taker != row.user
        else:
            assert row.taker in {
                "0x4bfb41d5b3570defd03c39a9a4d8de6bd8b8982e",
                "0xc5d563a36ae78145c45a50134d48a1215220f80a",
            }
            aggregates[(row.tx_hash, token)] = row.shares
    assert {tx for tx, _ in makers} - {tx for tx, _ in aggregates} == day.broken(
        BreakKind.CHAIN_TAKER_MISSING
    )
    unequal = {tx for (tx, token), shares in aggregates.items() if makers[(tx, token)] != shares}
    assert unequal == day.broken(BreakKind.CHAIN_MAKER_TAKER_MISMATCH)


def test_v1_refunds_add_up_and_belong_to_fills_except_where_injected(day: Day) -> None:
    fee_of = {row.order_hash: row for row in confirmed_fills(day)}
    orphans, wrong = set(), set()
    refunds = [f.event for f in day.orders_feed if isinstance(f.event, FeeRefund)]
    assert refunds
    for refund in refunds:
        filled = fee_of.get(refund.order_hash)
        if filled is None:
            orphans.add(refund.order_hash)
            continue
        assert filled.market.version == 1
        assert filled.role == "maker"
        assert filled.tx_hash == refund.tx_hash
        if refund.refund + refund.fee_charged != filled.fee:
            wrong.add(refund.order_hash)
    assert orphans == day.broken(BreakKind.CHAIN_REFUND_ORPHAN)
    assert wrong == day.broken(BreakKind.CHAIN_REFUND_ARITHMETIC)
    v1_makers = {
        r.order_hash for r in fee_of.values() if r.market.version == 1 and r.role == "maker"
    }
    assert v1_makers == {r.order_hash for r in refunds} - orphans
    assert {r.market.version for r in fee_of.values()} == {1, 2}


def test_pending_events_precede_their_confirmation_within_tolerance(day: Day) -> None:
    confirmed = {
        (f.event.tx_hash, f.event.order_hash): f
        for f in day.orders_feed
        if isinstance(f.event, OrderFilled) and f.event.status == "confirmed"
    }
    unconfirmed = set()
    pending_rows = [
        f
        for f in day.orders_feed
        if isinstance(f.event, OrderFilled) and f.event.status == "pending"
    ]
    assert len(pending_rows) > len(confirmed) // 4
    drifted = 0
    for item in pending_rows:
        event = item.event
        assert isinstance(event, OrderFilled)
        assert event.log_index is None
        match = confirmed.get((event.tx_hash, event.order_hash))
        if match is None:
            unconfirmed.add(f"{event.tx_hash}|{event.order_hash}")
            continue
        final = match.event
        assert isinstance(final, OrderFilled)
        assert 3_000_000 <= match.time_us - item.time_us <= 5_000_010
        assert final.role == event.role
        for name in ("price", "shares", "fee"):
            ours, theirs = Decimal(getattr(event, name)), Decimal(getattr(final, name))
            assert abs(ours - theirs) <= theirs / 100, name
        drifted += event.shares != final.shares or event.price != final.price
    assert drifted > 0
    assert unconfirmed == day.broken(BreakKind.CHAIN_PENDING_UNCONFIRMED)


def test_legacy_feed_has_one_matching_row_per_confirmed_maker_fill_except_injected(
    day: Day,
) -> None:
    legacy: dict[str, LegacyTrade] = {}
    for item in day.trades_feed:
        assert isinstance(item.event, LegacyTrade)
        key = f"{item.event.tx_hash}|{item.event.order_hash}"
        assert key not in legacy
        legacy[key] = item.event
    makers = {f"{r.tx_hash}|{r.order_hash}": r for r in confirmed_fills(day) if r.role == "maker"}
    assert set(makers) - set(legacy) == day.broken(BreakKind.FEED_PROVIDER_MISSING)
    assert set(legacy) <= set(makers)
    disagreeing = {
        key
        for key, trade in legacy.items()
        if (trade.shares, trade.price) != (makers[key].shares, makers[key].price)
    }
    assert disagreeing == day.broken(BreakKind.FEED_PROVIDER_MISMATCH)


def test_feed_json_has_the_seed_fields_and_exact_numbers(day: Day) -> None:
    versions = set()
    for item in day.orders_feed[:400]:
        event = item.event
        if isinstance(event, OrderFilled):
            raw = order_filled_json(event)
            data = orjson.loads(raw)
            expected = (
                ORDER_FILLED_FIELDS if event.market.version == 2 else ORDER_FILLED_FIELDS[:-2]
            )
            assert list(data) == expected
            versions.add(data["version"])
            assert data["shares"] == event.shares
            assert isinstance(data["shares"], int)
            assert (data["log_index"] is None) == (event.status == "pending")
            assert data["event_type"] == "order_filled"
            for name in ("price", "fee"):
                assert f'"{name}":{decimal_text(getattr(event, name))},'.encode() in raw
        else:
            assert isinstance(event, FeeRefund)
            data = orjson.loads(fee_refund_json(event))
            assert list(data) == FEE_REFUND_FIELDS
    assert versions == {1, 2}
    event = day.trades_feed[0].event
    assert isinstance(event, LegacyTrade)
    assert list(orjson.loads(legacy_trade_json(event))) == LEGACY_FIELDS


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("0.04", "0.04"),
        ("0.0400", "0.04"),
        ("2.000000", "2"),
        ("0E-6", "0"),
        ("1E+1", "10"),
        ("9.9904", "9.9904"),
        ("0.000001", "0.000001"),
    ],
)
def test_decimal_text_is_exact_and_short(value: str, text: str) -> None:
    assert decimal_text(Decimal(value)) == text


def test_day_config_hash_is_stable_and_round_trips() -> None:
    config = DayConfig(seed=5, breaks={"trade_busted": 3})
    again = DayConfig.from_dict(orjson.loads(orjson.dumps(config.to_dict())))
    assert again == config
    assert again.config_hash() == config.config_hash()
    assert DayConfig(seed=6).config_hash() != DayConfig(seed=5).config_hash()
    with pytest.raises(ValueError, match="unknown break kind"):
        DayConfig(breaks={"nope": 1})


def test_exchange_payloads_are_valid_protobuf(day: Day) -> None:
    execution = day.executions[0].execution
    message = trading_pb2.Execution.FromString(encode_execution(execution))
    assert message.id == execution.id
    assert message.order.account == execution.order.account
    assert message.type == execution.exec_type
    assert (message.transact_trade_date.year, message.transact_trade_date.day) == (2026, 4)
    assert message.transact_time.ToMicroseconds() == execution.transact_time_us


def test_commissions_are_charged_to_takers_and_some_makers_earn_rebates(day: Day) -> None:
    fills = [i.execution for i in day.executions if i.execution.exec_type in FILL_TYPES]
    assert all(e.commission >= 0 for e in fills if e.aggressor)
    assert any(e.commission < 0 for e in fills if not e.aggressor)
    assert all(e.last_shares > 0 and e.last_px > 0 for e in fills)
    types = Counter(i.execution.exec_type for i in day.executions)
    for exec_type in (
        pb.EXECUTION_TYPE_NEW,
        pb.EXECUTION_TYPE_PARTIAL_FILL,
        pb.EXECUTION_TYPE_FILL,
        pb.EXECUTION_TYPE_CANCELED,
        pb.EXECUTION_TYPE_REJECTED,
    ):
        assert types[exec_type] > 0, exec_type
    states = [
        i.value.state
        for i in day.streams["instrument_states"]
        if isinstance(i.value, InstrumentStatus)
    ]
    assert set(states) >= {
        pb.INSTRUMENT_STATE_PREOPEN,
        pb.INSTRUMENT_STATE_OPEN,
        pb.INSTRUMENT_STATE_CLOSED,
    }


def test_a_day_before_the_v2_switch_is_all_v1_and_after_it_mixes_both() -> None:
    before = build_universe(DayConfig(business_date=date(2026, 4, 20)))
    assert {m.version for m in before.markets} == {1}
    after = build_universe(DayConfig(business_date=date(2026, 5, 20), v1_fraction=0.25))
    assert sum(m.version == 1 for m in after.markets) == 6
    assert {m.version for m in after.markets} == {1, 2}
