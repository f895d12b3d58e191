"""The ingest boundary: valid venue input becomes exact domain values; anything else is
`Rejected` with a reason, never another exception and never a value the database would refuse."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, TypeVar

import msgspec
import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.domain.events import (
    TRADE_STATE_PRECEDENCE,
    ExecutionEvent,
    FeedTradeEvent,
    FeeRefundEvent,
    OrderFilledEvent,
    TradeCaptureEvent,
    trade_delivery_order,
)
from app.ingest import parse
from app.ingest.parse import Rejected
from polymarket.v1 import enums_pb2, trading_pb2

ENCODE = msgspec.json.Encoder(decimal_format="number").encode
M = TypeVar("M", bound=Message)
FUZZ = settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TX = "0x" + "ab" * 32
ORDER_HASH = "0x" + "CD" * 32
CONDITION = "0x" + "04f954e4" * 8
USER = "0x" + "e9" * 20
TAKER = "0x" + "98" * 20
TIMESTAMP = 1_770_244_731  # 2026-02-04T22:38:51Z


def order_filled_data(**changes: Any) -> dict[str, Any]:
    """The orders channel's order_filled `data` as in the seed (V2, confirmed)."""
    data: dict[str, Any] = {
        "status": "confirmed",
        "event_type": "order_filled",
        "token_id": "61192765571543" + "1" * 60,
        "token_label": "Up",
        "side": "SELL",
        "market_slug": "btc-updown-15m-1770244200",
        "condition_id": CONDITION,
        "shares": 2_000_000,
        "shares_normalized": 2,
        "price": Decimal("0.04"),
        "tx_hash": TX,
        "log_index": "0x21e",
        "title": "Bitcoin Up or Down - February 4, 5:30PM-5:45PM ET",
        "timestamp": TIMESTAMP,
        "order_hash": ORDER_HASH,
        "user": USER,
        "taker": TAKER,
        "role": "maker",
        "outcome": "Up",
        "outcome_index": 0,
        "complement_token_id": "9876543210",
        "complement_token_label": "Down",
        "is_neg_risk": False,
        "market_id": "1329542",
        "image": "https://polymarket-upload.s3.us-east-2.amazonaws.com/BTC+fullsize.png",
        "fee": Decimal("0.008"),
        "version": 2,
        "builder": "0x" + "00" * 32,
        "metadata": "0x" + "00" * 32,
    }
    data.update(changes)
    return data


def fee_refund_data(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "event_type": "fee_refund",
        "user": USER,
        "token_id": "53031995840519",
        "condition_id": CONDITION,
        "market_slug": "btc-updown-15m-1770242400",
        "title": "Bitcoin Up or Down - February 4, 5:00PM-5:15PM ET",
        "order_hash": ORDER_HASH,
        "tx_hash": TX,
        "refund": Decimal("9.9904"),
        "fee_charged": Decimal("0.0096"),
    }
    data.update(changes)
    return data


def legacy_trade_data(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "platform": "polymarket",
        "asset_id": "21742633143463906290569050155826241533067272736897614950488156847949938836455",
        "market_slug": "will-donald-trump-win-the-2024-us-presidential-election",
        "condition_id": CONDITION,
        "shares": Decimal("100.5"),
        "shares_normalized": Decimal("100.5"),
        "price": Decimal("0.65"),
        "tx_hash": TX,
        "title": "Will Trump win the 2024 election?",
        "timestamp": 1_704_067_200,
        "order_hash": ORDER_HASH,
        "user": USER,
        "taker": TAKER,
        "outcome": "Yes",
        "source": "alchemy",
    }
    data.update(changes)
    return data


def frame(data: dict[str, Any], kind: str = "event") -> bytes:
    return ENCODE({"type": kind, "subscription_id": "sub_2f4b15b33798", "data": data})


def orders_event(raw: bytes | str) -> OrderFilledEvent | FeeRefundEvent:
    parsed = parse.orders_frame(raw)
    assert isinstance(parsed, parse.OrdersEvent)
    return parsed.event


def rejected(call: Callable[[], object]) -> str:
    with pytest.raises(Rejected) as caught:
        call()
    return caught.value.reason


# --- the orders channel -----------------------------------------------------------------------


def test_order_filled_from_the_seed() -> None:
    raw = frame(order_filled_data())
    parsed = parse.orders_frame(raw)
    assert isinstance(parsed, parse.OrdersEvent)
    assert parsed.subscription_id == "sub_2f4b15b33798"
    event = parsed.event
    assert isinstance(event, OrderFilledEvent)
    assert event.raw == raw
    assert event.status == "confirmed"
    assert event.log_index == 0x21E
    assert event.order_hash == ORDER_HASH.lower()
    assert (event.shares, event.shares_normalized) == (2_000_000, Decimal(2))
    assert (event.price, event.fee) == (Decimal("0.04"), Decimal("0.008"))
    assert (event.user_address, event.taker_address, event.role) == (USER, TAKER, "maker")
    assert event.event_time == datetime(2026, 2, 4, 22, 38, 51, tzinfo=UTC)
    assert event.business_date == date(2026, 2, 4)
    assert (event.version, event.outcome_index, event.is_neg_risk) == (2, 0, False)


def test_business_date_is_the_utc_date_of_the_timestamp() -> None:
    just_before_midnight = int(datetime(2026, 11, 20, 23, 59, 59, tzinfo=UTC).timestamp())
    event = orders_event(frame(order_filled_data(timestamp=just_before_midnight)))
    assert isinstance(event, OrderFilledEvent)
    assert event.business_date == date(2026, 11, 20)
    midnight = orders_event(frame(order_filled_data(timestamp=just_before_midnight + 1)))
    assert isinstance(midnight, OrderFilledEvent)
    assert midnight.business_date == date(2026, 11, 21)


def test_pending_event_has_no_log_index() -> None:
    event = orders_event(frame(order_filled_data(status="pending", log_index=None)))
    assert isinstance(event, OrderFilledEvent)
    assert (event.status, event.log_index) == ("pending", None)


def test_numbers_stay_exact() -> None:
    digits = Decimal("0.123456789012345678")
    event = orders_event(frame(order_filled_data(price=digits, fee=Decimal("1E-18"))))
    assert isinstance(event, OrderFilledEvent)
    assert event.price == digits
    assert str(event.price) == "0.123456789012345678"
    assert event.fee == Decimal("1E-18")


def test_v1_fee_refund() -> None:
    raw = frame(fee_refund_data())
    event = orders_event(raw)
    assert isinstance(event, FeeRefundEvent)
    assert (event.refund, event.fee_charged) == (Decimal("9.9904"), Decimal("0.0096"))
    assert (event.order_hash, event.tx_hash, event.user_address) == (ORDER_HASH.lower(), TX, USER)
    assert event.event_time is None
    assert event.raw == raw
    stamped = orders_event(frame(fee_refund_data(timestamp=TIMESTAMP)))
    assert isinstance(stamped, FeeRefundEvent)
    assert stamped.event_time == datetime(2026, 2, 4, 22, 38, 51, tzinfo=UTC)


def test_handshake_frames() -> None:
    assert parse.orders_frame(b'{"type":"connected","message":"hi"}') == parse.Connected()
    assert parse.orders_frame('{"type":"ack","subscription_id":"sub_1"}') == parse.Ack("sub_1")
    assert parse.trades_frame(b'{"type":"ack"}') == parse.Ack(None)
    assert parse.trades_frame(b'{"type":"error","message":"bad filter"}') == parse.Error(
        "bad filter"
    )


def test_text_frames_keep_their_utf8_bytes() -> None:
    raw = frame(order_filled_data(title="Élection — 2026"))
    event = orders_event(raw.decode())
    assert event.raw == raw
    assert event.title == "Élection — 2026"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"event_type": "order_teleported"}, "order_teleported"),
        ({"price": Decimal("1.04")}, "data.price above 1"),
        ({"price": True}, "data.price: expected a number, got bool"),
        ({"price": "0.04"}, "data.price: expected a number, got string"),
        ({"price": None}, "data.price: expected a number, got null"),
        ({"fee": Decimal("-0.001")}, "data.fee negative"),
        ({"fee": Decimal("1E-19")}, "data.fee has more than 18 decimal places"),
        ({"fee": Decimal("1E+16")}, "data.fee out of range"),
        ({"shares": -5}, "data.shares"),
        ({"shares": 0}, "data.shares"),
        ({"shares": True}, "data.shares"),
        ({"shares": Decimal("2.5")}, "data.shares"),
        ({"shares": 1 << 63}, "data.shares"),
        ({"shares_normalized": Decimal("2.5")}, "data.shares_normalized 2.5 is not shares"),
        ({"tx_hash": "0xabc"}, "data.tx_hash"),
        ({"tx_hash": "ab" * 33}, "data.tx_hash"),
        ({"tx_hash": "0x" + "zz" * 32}, "data.tx_hash"),
        ({"order_hash": None}, "data.order_hash"),
        ({"user": "0x1234"}, "data.user"),
        ({"log_index": "21e"}, "data.log_index"),
        ({"log_index": "0x" + "f" * 16}, "data.log_index"),
        ({"log_index": 542}, "data.log_index"),
        ({"log_index": None}, "data.log_index missing on a confirmed event"),
        ({"token_id": "0x12"}, "data.token_id"),
        ({"token_id": "１２３"}, "data.token_id"),
        ({"role": "broker"}, "data.role"),
        ({"side": "buy"}, "data.side"),
        ({"status": "maybe"}, "data.status"),
        ({"version": 3}, "data.version unknown: 3"),
        ({"version": "2"}, "data.version"),
        ({"timestamp": -1}, "data.timestamp"),
        ({"timestamp": 1e10}, "data.timestamp"),
        ({"timestamp": 10**12}, "data.timestamp"),
        ({"outcome_index": -1}, "data.outcome_index"),
        ({"is_neg_risk": "no"}, "data.is_neg_risk"),
        ({"title": "nul \x00 inside"}, "data.title contains a NUL character"),
        ({"builder": "0x00"}, "data.builder"),
    ],
)
def test_bad_order_filled_is_rejected_with_its_reason(change: dict[str, Any], reason: str) -> None:
    assert reason in rejected(lambda: parse.orders_frame(frame(order_filled_data(**change))))


@pytest.mark.parametrize(
    "required",
    [
        "tx_hash",
        "order_hash",
        "timestamp",
        "shares",
        "price",
        "fee",
        "role",
        "side",
        "user",
        "taker",
        "token_id",
        "condition_id",
        "version",
    ],
)
def test_missing_required_field_is_rejected(required: str) -> None:
    data = order_filled_data()
    del data[required]
    assert f"`{required}`" in rejected(lambda: parse.orders_frame(frame(data)))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"refund": Decimal("-1")}, "data.refund negative"),
        ({"fee_charged": False}, "data.fee_charged: expected a number"),
        ({"status": "pending"}, "data.status"),
        ({"order_hash": "0x1"}, "data.order_hash"),
    ],
)
def test_bad_fee_refund_is_rejected(change: dict[str, Any], reason: str) -> None:
    assert reason in rejected(lambda: parse.orders_frame(frame(fee_refund_data(**change))))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"type":"event","subscription_id":"s","data":{"event_type":"order_filled","sh', "JSON"),
        (b"", "JSON"),
        (b"[1, 2]", "invalid frame"),
        (b'"text"', "invalid frame"),
        (b'{"subscription_id":"s"}', "`type`"),
        (b'{"type":"trade_correction"}', "trade_correction"),
        (b'{"type":"event","subscription_id":"s"}', "`data`"),
        (b'{"type":"ack","subscription_id":5}', "subscription_id"),
        (b'{"type":"event","subscription_id":"s","data":{"price":NaN}}', "JSON"),
        (b'{"type":"connected"}\xff', "invalid UTF-8: invalid start byte at byte 20"),
        (b'{"type":"error","message":"\xc3\x28"}', "UTF-8"),
        ('{"type":"ack","subscription_id":"\ud800"}', "UTF-8"),
        (b'{"type":"connected","x":' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply"),
    ],
)
def test_malformed_frames_are_rejected(raw: bytes | str, reason: str) -> None:
    assert reason in rejected(lambda: parse.orders_frame(raw))


def test_the_venue_fault_injectors_malformed_frames_are_rejected() -> None:
    head = b'{"type":"event","subscription_id":"sub_1"'
    wrong_types = (
        head + b',"data":{"event_type":"order_filled","status":"confirmed","tx_hash":12345,'
        b'"shares":"many","price":[0.5],"timestamp":"soon","order_hash":null,"user":false}}'
    )
    unknown = head + b',"data":{"event_type":"order_teleported","status":"confirmed"}}'
    for raw in (head + b',"data":{"event_type":"order_filled","shares":', wrong_types, unknown):
        with pytest.raises(Rejected):
            parse.orders_frame(raw)


def test_oversized_frames_are_rejected_before_decoding() -> None:
    raw = frame(order_filled_data(title="x" * 2000))
    assert "exceeds 1000 bytes" in rejected(lambda: parse.orders_frame(raw, max_bytes=1000))
    assert "exceeds" in rejected(lambda: parse.trades_frame(b" " * (parse.MAX_FRAME_BYTES + 1)))
    assert isinstance(parse.orders_frame(raw, max_bytes=len(raw)), parse.OrdersEvent)


def test_frame_bytes_never_fails() -> None:
    assert parse.frame_bytes("a\ud800") == b"a\xed\xa0\x80"
    assert parse.frame_bytes(b"\xff") == b"\xff"


# --- the legacy trade provider ------------------------------------------------------------------


def test_legacy_trade_from_the_seed() -> None:
    raw = frame(legacy_trade_data(), kind="trade")
    parsed = parse.trades_frame(raw)
    assert isinstance(parsed, parse.TradeMessage)
    event = parsed.event
    assert isinstance(event, FeedTradeEvent)
    assert (event.shares, event.shares_normalized) == (Decimal("100.5"), Decimal("100.5"))
    assert event.price == Decimal("0.65")
    assert event.business_date == date(2024, 1, 1)
    assert event.feed_source == "alchemy"
    assert event.raw == raw


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"shares": 0}, "data.shares not positive"),
        ({"price": Decimal("-0.1")}, "data.price negative"),
        ({"platform": "kalshi"}, "data.platform"),
        ({"asset_id": "abc"}, "data.asset_id"),
        ({"timestamp": "1704067200"}, "data.timestamp"),
    ],
)
def test_bad_legacy_trade_is_rejected(change: dict[str, Any], reason: str) -> None:
    raw = frame(legacy_trade_data(**change), kind="trade")
    assert reason in rejected(lambda: parse.trades_frame(raw))


def test_each_feed_rejects_the_others_events() -> None:
    assert "`$.type`" in rejected(lambda: parse.trades_frame(frame(order_filled_data())))
    legacy = frame(legacy_trade_data(), kind="trade")
    assert "`$.type`" in rejected(lambda: parse.orders_frame(legacy))


# --- fuzzing: thousands of malformed inputs ------------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 70), max_value=1 << 70)
    | st.decimals(allow_nan=False, allow_infinity=False, places=None)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _outcome(parser: Callable[[bytes | str], object], raw: bytes | str) -> object:
    try:
        return parser(raw)
    except Rejected as exc:
        return exc


def _assert_total(parser: Callable[[bytes | str], object], raw: bytes | str) -> None:
    """A parser is total: it returns a frame or raises Rejected, whatever it is given."""
    outcome = _outcome(parser, raw)
    if isinstance(outcome, Rejected):
        assert outcome.reason
    else:
        assert isinstance(
            outcome,
            parse.Connected | parse.Ack | parse.Error | parse.OrdersEvent | parse.TradeMessage,
        )


@FUZZ
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash(raw: bytes) -> None:
    _assert_total(parse.orders_frame, raw)
    _assert_total(parse.trades_frame, raw)


@FUZZ
@given(st.text(max_size=200))
def test_arbitrary_text_never_crashes(raw: str) -> None:
    _assert_total(parse.orders_frame, raw)
    _assert_total(parse.trades_frame, raw)


FIELDS = sorted(order_filled_data())


@settings(FUZZ, max_examples=400)
@given(
    st.sampled_from(("event", "trade")),
    st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=6),
    st.sets(st.sampled_from(FIELDS), max_size=4),
)
def test_valid_frames_with_random_fields_changed_never_crash(
    kind: str, changes: dict[str, Any], dropped: set[str]
) -> None:
    base = order_filled_data() if kind == "event" else legacy_trade_data()
    data = {k: v for k, v in {**base, **changes}.items() if k not in dropped}
    raw = frame(data, kind=kind)
    for parser in (parse.orders_frame, parse.trades_frame):
        parsed = _outcome(parser, raw)
        if isinstance(parsed, parse.OrdersEvent | parse.TradeMessage):
            _assert_storable(parsed.event)
        else:
            assert isinstance(parsed, Rejected | parse.Connected | parse.Ack | parse.Error)


def _assert_storable(event: object) -> None:
    """What the database's checks and types demand of every accepted chain event."""
    assert isinstance(event, OrderFilledEvent | FeeRefundEvent | FeedTradeEvent)
    if isinstance(event, OrderFilledEvent):
        assert 0 < event.shares < 1 << 63
        assert 0 <= event.price <= 1
        assert event.fee >= 0
        assert event.role in {"maker", "taker"}
        assert event.version in {1, 2}
        assert (event.log_index is None) == (event.status == "pending")
        assert event.business_date == event.event_time.date()
    for name in event.__struct_fields__:
        value = getattr(event, name)
        if isinstance(value, str):
            assert "\x00" not in value
            value.encode("utf-8")
        if isinstance(value, Decimal):
            assert value >= 0
            assert value.is_finite()


WRONG_TYPED = st.sampled_from([True, False, None, "0.5", [0.5], {"v": 1}, "", -1, 10**30])


REQUIRED = ("tx_hash", "order_hash", "timestamp", "shares", "price", "fee", "user", "taker")


@FUZZ
@given(st.sampled_from(REQUIRED), WRONG_TYPED)
def test_a_wrong_value_in_a_required_field_is_rejected(field: str, value: object) -> None:
    data = order_filled_data(**{field: value})
    reason = rejected(lambda: parse.orders_frame(frame(data)))
    assert field in reason


@FUZZ
@given(
    price=st.decimals(min_value=0, max_value=1, places=6),
    fee=st.decimals(min_value=0, max_value=10**6, places=8),
    shares=st.integers(min_value=1, max_value=10**15),
    timestamp=st.integers(min_value=0, max_value=4_102_444_800),
    pending=st.booleans(),
)
def test_valid_order_filled_round_trips_exactly(
    price: Decimal, fee: Decimal, shares: int, timestamp: int, pending: bool
) -> None:
    data = order_filled_data(
        price=price,
        fee=fee,
        shares=shares,
        shares_normalized=Decimal(shares).scaleb(-6),
        timestamp=timestamp,
        status="pending" if pending else "confirmed",
        log_index=None if pending else "0x21e",
    )
    raw = frame(data)
    event = orders_event(raw)
    assert isinstance(event, OrderFilledEvent)
    assert (event.price, event.fee, event.shares) == (price, fee, shares)
    assert event.event_time == datetime.fromtimestamp(timestamp, UTC)
    assert event.raw == raw
    _assert_storable(event)


# --- exchange: protobuf messages ----------------------------------------------------------------


def ts(seconds: int, nanos: int = 0) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=nanos)


def _apply(message: M, changes: dict[str, Any]) -> M:
    """Set (or clear, for None) fields by dotted path, e.g. {"order.side": 0}."""
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        target: Any = message
        for parent in parents:
            target = getattr(target, parent)
        if value is None:
            target.ClearField(leaf)
        elif isinstance(value, Message):
            getattr(target, leaf).CopyFrom(value)
        else:
            setattr(target, leaf, value)
    return message


def execution_message(**changes: Any) -> trading_pb2.Execution:
    ex = trading_pb2.Execution(
        id="E-20261120-1",
        order=trading_pb2.Order(
            id="O-1",
            clord_id="C-1",
            symbol="tec-nfl-sbw-2026-02-08-kc",
            side=enums_pb2.SIDE_BUY,
            type=enums_pb2.ORDER_TYPE_LIMIT,
            time_in_force=enums_pb2.TIME_IN_FORCE_DAY,
            order_qty=100,
            price=525,
            cum_qty=100,
            leaves_qty=0,
            avg_px=525,
            state=enums_pb2.ORDER_STATE_FILLED,
            account="firms/F/accounts/A",
            participant="firms/F/users/U",
            create_time=ts(1_795_000_000),
        ),
        last_shares=100,
        last_px=525,
        type=enums_pb2.EXECUTION_TYPE_FILL,
        transact_time=ts(1_795_000_001, 123_456_789),
        trade_id="T-1",
        aggressor=True,
        commission_notional_collected=-7,
        transact_trade_date=trading_pb2.TradeDate(year=2026, month=11, day=20),
    )
    return _apply(ex, changes)


def test_execution_from_the_seed() -> None:
    ex = execution_message()
    event = parse.execution(ex)
    assert event.raw == ex.SerializeToString()
    assert event.business_date == date(2026, 11, 20)
    assert (event.side, event.order_state, event.exec_type) == (
        "SIDE_BUY",
        "ORDER_STATE_FILLED",
        "EXECUTION_TYPE_FILL",
    )
    assert (event.last_shares, event.last_px, event.commission_notional_collected) == (100, 525, -7)
    assert event.transact_time == datetime.fromtimestamp(1_795_000_001, UTC).replace(
        microsecond=123_456
    )
    assert (event.trade_id, event.text, event.source) == ("T-1", None, "dropcopy")
    assert parse.execution(ex, source="report_backfill").source == "report_backfill"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"id": ""}, "id missing"),
        ({"order": None}, "order missing"),
        ({"order.id": ""}, "order.id missing"),
        ({"order.symbol": ""}, "order.symbol missing"),
        ({"transact_time": None}, "transact_time missing"),
        ({"transact_trade_date": None}, "transact_trade_date missing"),
        ({"transact_trade_date.month": 13}, "transact_trade_date not a date: 2026-13-20"),
        ({"last_shares": -5}, "last_shares negative: -5"),
        ({"last_px": -1}, "last_px negative: -1"),
        ({"order.leaves_qty": -1}, "order.leaves_qty negative"),
        ({"type": 99}, "type unknown enum number 99"),
        ({"order.side": 0}, "order.side unspecified"),
        ({"order.side": 7}, "order.side unknown enum number 7"),
        ({"order.state": 42}, "order.state unknown enum number 42"),
        ({"order.type": 9}, "order.type unknown enum number 9"),
        ({"order.time_in_force": 6}, "order.time_in_force unknown enum number 6"),
        ({"text": "a\x00b"}, "text contains a NUL character"),
        ({"transact_time.seconds": -1}, "transact_time out of range"),
        ({"transact_time.seconds": 10**13}, "transact_time out of range"),
    ],
)
def test_bad_execution_is_rejected(change: dict[str, Any], reason: str) -> None:
    assert rejected(lambda: parse.execution(execution_message(**change))).startswith(reason)


def trade_message(
    state: enums_pb2.TradeState.ValueType = enums_pb2.TRADE_STATE_CLEARED, **changes: Any
) -> trading_pb2.Trade:
    passive = execution_message(id="E-20261120-2", aggressor=False, **{"order.side": 2})
    trade = trading_pb2.Trade(
        id="T-1",
        aggressor=execution_message(),
        passive=passive,
        trade_type=enums_pb2.TRADE_TYPE_REGULAR,
        state=state,
        update_time=ts(1_795_000_002),
    )
    return _apply(trade, changes)


def test_trade_capture_takes_its_legs_and_dates_from_the_aggressor() -> None:
    trade = _apply(trade_message(), {"passive.transact_trade_date.day": 21})
    event = parse.trade_capture(trade)
    assert isinstance(event, TradeCaptureEvent)
    assert event.business_date == date(2026, 11, 20)
    assert (event.aggressor_execution_id, event.passive_execution_id) == (
        "E-20261120-1",
        "E-20261120-2",
    )
    assert (event.aggressor_side, event.symbol, event.last_shares, event.passive_commission) == (
        "SIDE_BUY",
        "tec-nfl-sbw-2026-02-08-kc",
        100,
        -7,
    )
    assert event.update_time == datetime.fromtimestamp(1_795_000_002, UTC)
    assert event.raw == trade.SerializeToString()
    assert not event.busted
    assert parse.trade_capture(trade_message(enums_pb2.TRADE_STATE_BUSTED)).busted


def test_trade_without_update_time_is_ordered_by_its_transact_time() -> None:
    event = parse.trade_capture(trade_message(update_time=None))
    assert event.update_time == event.transact_time


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"id": ""}, "id missing"),
        ({"passive": None}, "passive missing"),
        ({"state": 0}, "state undefined"),
        ({"state": 12}, "state unknown enum number 12"),
        ({"trade_type": 8}, "trade_type unknown enum number 8"),
        ({"aggressor.last_shares": -5}, "aggressor.last_shares negative: -5"),
        ({"passive.type": 99}, "passive.type unknown enum number 99"),
    ],
)
def test_bad_trade_is_rejected(change: dict[str, Any], reason: str) -> None:
    assert rejected(lambda: parse.trade_capture(trade_message(**change))) == reason


def test_instrument_and_position_dates() -> None:
    update = ts(int(datetime(2026, 11, 20, 23, 59, tzinfo=UTC).timestamp()))
    inst = trading_pb2.Instrument(
        symbol="sym",
        state=enums_pb2.INSTRUMENT_STATE_HALTED,
        name="Sym",
        price_scale=1000,
        fractional_qty_scale=100,
        update_time=update,
    )
    event = parse.instrument(inst)
    assert (event.business_date, event.state) == (date(2026, 11, 20), "INSTRUMENT_STATE_HALTED")
    no_scale = trading_pb2.Instrument(symbol="s", update_time=update)
    assert rejected(lambda: parse.instrument(no_scale)) == "price_scale not positive: 0"
    no_time = trading_pb2.Instrument(symbol="s", price_scale=1)
    assert rejected(lambda: parse.instrument(no_time)) == "update_time missing"
    change = trading_pb2.PositionChange(
        position=trading_pb2.Position(account="A", symbol="sym", net_position=-5, qty_sold=5),
        change_time=ts(int(datetime(2026, 11, 21, 0, 0, 1, tzinfo=UTC).timestamp())),
    )
    position = parse.position_change(change)
    assert (position.business_date, position.net_position, position.update_time) == (
        date(2026, 11, 21),
        -5,
        None,
    )
    change.position.qty_bought = -1
    assert rejected(lambda: parse.position_change(change)) == "position.qty_bought negative: -1"
    assert rejected(lambda: parse.position_change(trading_pb2.PositionChange())) == (
        "position missing"
    )


INT64 = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
ENUM_NUMBER = st.integers(min_value=-3, max_value=20)


@FUZZ
@given(
    st.fixed_dictionaries(
        {
            "last_shares": INT64,
            "last_px": INT64,
            "type": ENUM_NUMBER,
            "text": st.text(max_size=5),
            "order.order_qty": INT64,
            "order.side": ENUM_NUMBER,
            "order.state": ENUM_NUMBER,
            "transact_time.seconds": st.integers(min_value=-(10**12), max_value=10**12),
            "transact_time.nanos": st.integers(min_value=-5, max_value=1_000_000_005),
            "transact_trade_date.day": st.integers(min_value=0, max_value=32),
        }
    )
)
def test_random_executions_are_accepted_only_when_storable(fields: dict[str, Any]) -> None:
    outcome = _outcome(lambda _: parse.execution(execution_message(**fields)), b"")
    if isinstance(outcome, Rejected):
        assert outcome.reason
        return
    assert isinstance(outcome, ExecutionEvent)
    assert outcome.last_shares >= 0
    assert outcome.last_px >= 0
    assert outcome.order_qty >= 0
    assert outcome.side in {"SIDE_BUY", "SIDE_SELL"}
    assert outcome.exec_type in enums_pb2.ExecutionType.keys()  # noqa: SIM118 -- not a dict
    assert outcome.order_state in enums_pb2.OrderState.keys()  # noqa: SIM118 -- not a dict
    assert outcome.text is None or "\x00" not in outcome.text


def test_every_trade_state_has_a_precedence_and_busted_is_greatest() -> None:
    assert set(TRADE_STATE_PRECEDENCE) == set(enums_pb2.TradeState.keys())
    assert max(TRADE_STATE_PRECEDENCE, key=TRADE_STATE_PRECEDENCE.__getitem__) == (
        "TRADE_STATE_BUSTED"
    )


def test_busted_wins_over_a_later_update() -> None:
    busted = parse.trade_capture(trade_message(enums_pb2.TRADE_STATE_BUSTED))
    later_cleared = parse.trade_capture(trade_message(update_time=ts(1_795_000_100)))
    assert trade_delivery_order(busted) > trade_delivery_order(later_cleared)
