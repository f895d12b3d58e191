"""Property tests of the ingest boundary: start from a valid message of every kind, change one
thing, and check the answer. Valid input parses to the same domain value however it is encoded;
every change that makes it invalid is `Rejected` with a reason naming what is wrong, and nothing
else is ever raised.

Decided here: unknown extra fields are accepted and ignored, in JSON and in protobuf (providers
add fields, as V2 added `builder` and `metadata`; the venue's protos may grow), and the event is
the same as without them; the raw payload keeps them for audit. Prices 0 and 1 are accepted (the
database's range is [0, 1]); exchange prices are raw integers whose scale is per instrument, so
"beyond scale" is judged there, not by the parser.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from google.protobuf.message import DecodeError, Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.ingest import parse
from app.ingest.dropcopy import STREAMS, Salvaged, response_decoder
from app.ingest.parse import MAX_BIGINT, MAX_KEY_CHARS, Rejected
from app.recon.report_client import ReportError, execution_rows, position_rows, trade_rows
from polymarket.v1 import enums_pb2, trading_pb2
from tests.guarantees import Record
from tests.unit.test_parse import (
    ENCODE,
    _apply,
    execution_message,
    fee_refund_data,
    frame,
    legacy_trade_data,
    order_filled_data,
    trade_message,
    ts,
)

# Reproducible in CI, and small: the whole file runs in seconds.
PROPERTY = settings(
    max_examples=100,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
BAD_INPUT = "Bad input"

# --- valid chain messages, generated ------------------------------------------------------------

HASHES = st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex())
MIXED_CASE_HASHES = st.tuples(HASHES, st.booleans()).map(
    lambda h: "0x" + h[0][2:].upper() if h[1] else h[0]
)
ADDRESSES = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
TOKEN_IDS = st.integers(min_value=0, max_value=(1 << 256) - 1).map(str)
EPOCHS = st.integers(min_value=0, max_value=parse.MAX_EPOCH_SECONDS)
PRICES = st.decimals(min_value=0, max_value=1, places=6)
AMOUNTS = st.decimals(min_value=0, max_value=10**9, places=8)
SHORT_TEXT = st.text(st.characters(blacklist_characters="\x00", codec="utf-8"), max_size=30)


@st.composite
def order_filled(draw: st.DrawFn) -> dict[str, Any]:
    """An orders-channel order_filled: V1 or V2, pending or confirmed."""
    version = draw(st.sampled_from(parse.CHAIN_VERSIONS))
    status = draw(st.sampled_from(("confirmed", "pending")))
    shares = draw(st.integers(min_value=1, max_value=MAX_BIGINT))
    data = order_filled_data(
        tx_hash=draw(MIXED_CASE_HASHES),
        order_hash=draw(MIXED_CASE_HASHES),
        condition_id=draw(HASHES),
        user=draw(ADDRESSES),
        taker=draw(ADDRESSES),
        token_id=draw(TOKEN_IDS),
        side=draw(st.sampled_from(("BUY", "SELL"))),
        role=draw(st.sampled_from(("maker", "taker"))),
        shares=shares,
        shares_normalized=Decimal(shares).scaleb(-parse.SHARE_DECIMALS),
        price=draw(PRICES),
        fee=draw(AMOUNTS),
        timestamp=draw(EPOCHS),
        version=version,
        status=status,
        log_index=hex(draw(st.integers(min_value=0, max_value=(1 << 60) - 1))),
        title=draw(SHORT_TEXT),
    )
    if status == "pending":
        del data["log_index"]
    if version == 1:
        del data["builder"], data["metadata"]
    return data


@st.composite
def fee_refund(draw: st.DrawFn) -> dict[str, Any]:
    return fee_refund_data(
        tx_hash=draw(HASHES),
        order_hash=draw(MIXED_CASE_HASHES),
        user=draw(ADDRESSES),
        refund=draw(AMOUNTS),
        fee_charged=draw(AMOUNTS),
        title=draw(SHORT_TEXT),
    )


@st.composite
def legacy_trade(draw: st.DrawFn) -> dict[str, Any]:
    shares = draw(st.decimals(min_value=Decimal("0.000001"), max_value=10**9, places=6))
    return legacy_trade_data(
        tx_hash=draw(HASHES),
        order_hash=draw(HASHES),
        asset_id=draw(TOKEN_IDS),
        shares=shares,
        shares_normalized=shares,
        price=draw(PRICES),
        timestamp=draw(EPOCHS),
        title=draw(SHORT_TEXT),
    )


class ChainKind:
    """One kind of feed message: how to make a valid one, frame it, parse it; its fields."""

    def __init__(
        self,
        name: str,
        valid: st.SearchStrategy[dict[str, Any]],
        message_type: str,
        parser: Callable[..., object],
        *,
        required: tuple[str, ...],
        enums: dict[str, tuple[object, ...]],
        types: dict[str, tuple[type, ...]],
    ) -> None:
        self.name = name
        self.valid = valid
        self.message_type = message_type
        self.parser = parser
        self.required = required
        self.enums = enums  # field -> its allowed values
        self.types = types  # field -> the JSON types it takes (None: `type(None)`)

    def frame(self, data: dict[str, Any]) -> bytes:
        return frame(data, kind=self.message_type)

    def event(self, raw: bytes | str) -> Any:
        parsed = self.parser(raw)
        assert isinstance(parsed, parse.OrdersEvent | parse.TradeMessage), parsed
        return parsed.event

    def __repr__(self) -> str:
        return self.name


NUMBER = (int, Decimal)
TEXT = (str,)
OPTIONAL_TEXT = (str, type(None))
ORDER_FILLED = ChainKind(
    "order_filled",
    order_filled(),
    "event",
    parse.orders_frame,
    required=(
        "tx_hash",
        "order_hash",
        "timestamp",
        "token_id",
        "condition_id",
        "side",
        "role",
        "shares",
        "price",
        "fee",
        "user",
        "taker",
        "version",
    ),
    enums={
        "side": ("BUY", "SELL"),
        "role": ("maker", "taker"),
        "status": ("confirmed", "pending"),
        "version": parse.CHAIN_VERSIONS,
        "event_type": ("order_filled", "fee_refund"),
    },
    types={
        **dict.fromkeys(
            ("tx_hash", "order_hash", "token_id", "condition_id", "user", "taker", "status"), TEXT
        ),
        **dict.fromkeys(("side", "role", "event_type"), TEXT),
        **dict.fromkeys(
            (
                "log_index",
                "token_label",
                "complement_token_id",
                "complement_token_label",
                "market_slug",
                "market_id",
                "title",
                "outcome",
                "builder",
                "metadata",
            ),
            OPTIONAL_TEXT,
        ),
        "timestamp": (int,),
        "version": (int,),
        "shares": (int,),
        "price": NUMBER,
        "fee": NUMBER,
        "shares_normalized": (*NUMBER, type(None)),
        "outcome_index": (int, type(None)),
        "is_neg_risk": (bool, type(None)),
    },
)
FEE_REFUND = ChainKind(
    "fee_refund",
    fee_refund(),
    "event",
    parse.orders_frame,
    required=("tx_hash", "order_hash", "user", "refund", "fee_charged"),
    enums={"event_type": ("order_filled", "fee_refund")},
    types={
        **dict.fromkeys(("tx_hash", "order_hash", "user", "event_type"), TEXT),
        **dict.fromkeys(("token_id", "condition_id", "market_slug", "title"), OPTIONAL_TEXT),
        "refund": NUMBER,
        "fee_charged": NUMBER,
        "timestamp": (int, type(None)),
    },
)
LEGACY_TRADE = ChainKind(
    "legacy trade",
    legacy_trade(),
    "trade",
    parse.trades_frame,
    required=(
        "tx_hash",
        "order_hash",
        "timestamp",
        "asset_id",
        "condition_id",
        "shares",
        "price",
        "user",
        "taker",
    ),
    enums={"platform": ("polymarket",)},
    types={
        **dict.fromkeys(
            ("tx_hash", "order_hash", "asset_id", "condition_id", "user", "taker", "platform"),
            TEXT,
        ),
        **dict.fromkeys(("market_slug", "title", "outcome", "source"), OPTIONAL_TEXT),
        "timestamp": (int,),
        "shares": NUMBER,
        "price": NUMBER,
        "shares_normalized": (*NUMBER, type(None)),
    },
)
CHAIN_KINDS = (ORDER_FILLED, FEE_REFUND, LEGACY_TRADE)
# The frame's event field -> the domain value's, where the names differ.
RENAMED = {"user": "user_address", "taker": "taker_address", "source": "feed_source"}


def chain_message(kinds: tuple[ChainKind, ...] = CHAIN_KINDS) -> st.SearchStrategy[Any]:
    return st.sampled_from(kinds).flatmap(lambda k: st.tuples(st.just(k), k.valid))


def without_raw(event: Any) -> Any:
    return msgspec.structs.replace(event, raw=b"")


def reason(call: Callable[[], object]) -> str:
    with pytest.raises(Rejected) as caught:
        call()
    assert caught.value.reason
    return caught.value.reason


def count_examples(check: Callable[[], None], tried: list[object]) -> int:
    """Run a @given check and say how many examples it really tried."""
    before = len(tried)
    check()
    return len(tried) - before


# --- chain: valid input round-trips -------------------------------------------------------------


def _mirrors(event: Any, data: dict[str, Any]) -> None:
    """Every field the frame gave is in the domain value, exactly (hex lower-cased)."""
    for key, value in data.items():
        name = RENAMED.get(key, key)
        if name not in event.__struct_fields__ or value is None:
            continue
        got = getattr(event, name)
        if name == "log_index":
            assert got == (int(value, 16) if event.status == "confirmed" else None)
        elif name == "timestamp":
            continue
        elif isinstance(value, str) and value.startswith("0x"):
            assert got == value.lower()
        else:
            assert got == value, name
    if "timestamp" in data:
        assert event.event_time == datetime.fromtimestamp(data["timestamp"], UTC)


def test_valid_chain_messages_round_trip(guarantee: Record) -> None:
    tried: list[object] = []

    @PROPERTY
    @given(chain_message(), st.randoms(use_true_random=False))
    def check(message: tuple[ChainKind, dict[str, Any]], rnd: random.Random) -> None:
        kind, data = message
        raw = kind.frame(data)
        event = kind.event(raw)
        assert event.raw == raw
        _mirrors(event, data)
        # Key order, spacing and text vs bytes don't change the value; only `raw` differs.
        keys = list(data)
        rnd.shuffle(keys)
        spaced = msgspec.json.format(
            kind.frame({k: data[k] for k in keys}), indent=rnd.randint(0, 3)
        )
        assert without_raw(kind.event(spaced.decode())) == without_raw(event)
        tried.append(data)

    n = count_examples(check, tried)
    guarantee(
        BAD_INPUT, "valid feed messages of every kind, re-encoded", n, "parsed exactly, same value"
    )


def test_unknown_extra_fields_are_accepted_and_ignored() -> None:
    @PROPERTY
    @given(chain_message(), st.text(min_size=1, max_size=10), st.sampled_from(("data", "frame")))
    def check(message: tuple[ChainKind, dict[str, Any]], key: str, where: str) -> None:
        kind, data = message
        event = kind.event(kind.frame(data))
        extra = {"x_" + key: {"nested": [1, "two", None]}}
        if where == "data":
            raw = kind.frame({**data, **extra})
        else:
            raw = ENCODE({"type": kind.message_type, "subscription_id": "s", "data": data, **extra})
        assert without_raw(kind.event(raw)) == without_raw(event)

    check()


# --- chain: one thing changed -------------------------------------------------------------------

JSON_VALUES: dict[type, st.SearchStrategy[Any]] = {
    type(None): st.none(),
    bool: st.booleans(),
    int: st.integers(min_value=-(1 << 70), max_value=1 << 70),
    Decimal: st.decimals(allow_nan=False, allow_infinity=False).filter(
        lambda d: d != d.to_integral_value()
    ),
    str: st.text(max_size=10),
    list: st.lists(st.integers(), max_size=2),
    dict: st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
}


@st.composite
def wrong_type(draw: st.DrawFn) -> tuple[ChainKind, dict[str, Any], str]:
    kind, data = draw(chain_message())
    field = draw(st.sampled_from(sorted(kind.types)))
    accepted = kind.types[field]
    other = [t for t in JSON_VALUES if t not in accepted]
    value = draw(st.sampled_from(other).flatmap(JSON_VALUES.__getitem__))
    return kind, {**data, field: value}, field


def test_wrong_json_types_are_rejected_naming_the_field(guarantee: Record) -> None:
    tried: list[object] = []

    @PROPERTY
    @given(wrong_type())
    def check(case: tuple[ChainKind, dict[str, Any], str]) -> None:
        kind, data, field = case
        assert field in reason(lambda: kind.parser(kind.frame(data)))
        tried.append(case)

    n = count_examples(check, tried)
    guarantee(
        BAD_INPUT, "feed fields of the wrong JSON type", n, "rejected, reason names the field"
    )


def test_missing_required_fields_are_rejected_naming_the_field(guarantee: Record) -> None:
    tried: list[object] = []

    @PROPERTY
    @given(chain_message().flatmap(lambda m: st.tuples(st.just(m), st.sampled_from(m[0].required))))
    def check(case: tuple[tuple[ChainKind, dict[str, Any]], str]) -> None:
        (kind, data), field = case
        del data[field]
        assert field in reason(lambda: kind.parser(kind.frame(data)))
        tried.append(case)

    n = count_examples(check, tried)
    guarantee(
        BAD_INPUT, "feed messages missing a required field", n, "rejected, reason names the field"
    )


@st.composite
def unknown_enum(draw: st.DrawFn) -> tuple[ChainKind, dict[str, Any], str]:
    kind, data = draw(chain_message())
    field = draw(st.sampled_from(sorted(kind.enums)))
    allowed = kind.enums[field]
    sample = allowed[0]
    values = st.text(max_size=12) if isinstance(sample, str) else st.integers(-(1 << 40), 1 << 40)
    value = draw(values.filter(lambda v: v not in allowed))
    return kind, {**data, field: value}, field


# An unknown event_type is reported by the tag's name in msgspec's words.
ENUM_REASON = {"event_type": "`$.data.event_type`"}


def test_unknown_enum_values_are_rejected_naming_the_field(guarantee: Record) -> None:
    tried: list[object] = []

    @PROPERTY
    @given(unknown_enum())
    def check(case: tuple[ChainKind, dict[str, Any], str]) -> None:
        kind, data, field = case
        assert ENUM_REASON.get(field, field) in reason(lambda: kind.parser(kind.frame(data)))
        tried.append(case)

    n = count_examples(check, tried)
    guarantee(
        BAD_INPUT, "unknown enum values in feed messages", n, "rejected, reason names the field"
    )


HUGE = st.integers(min_value=MAX_BIGINT + 1, max_value=1 << 200) | st.decimals(
    min_value=Decimal("1E+16"), max_value=Decimal("1E+400"), allow_nan=False
)
NEGATIVE = st.integers(max_value=-1, min_value=-(1 << 80)) | st.decimals(
    max_value=Decimal("-1E-18"), min_value=-(10**20), places=18
)
TOO_PRECISE = st.integers(min_value=19, max_value=60).map(lambda places: Decimal(1).scaleb(-places))
ABOVE_ONE = st.decimals(min_value=Decimal("1.000001"), max_value=10**6, places=6)
# Per field, values out of its range: negative, zero (for shares), too big, too many places.
OUT_OF_RANGE: dict[str, st.SearchStrategy[Any]] = {
    "shares": NEGATIVE | st.just(0) | HUGE,
    "price": NEGATIVE | HUGE | TOO_PRECISE | ABOVE_ONE,
    "fee": NEGATIVE | HUGE | TOO_PRECISE,
    "refund": NEGATIVE | HUGE | TOO_PRECISE,
    "fee_charged": NEGATIVE | HUGE | TOO_PRECISE,
    "timestamp": st.integers(max_value=-1) | st.integers(min_value=parse.MAX_EPOCH_SECONDS + 1),
}


@st.composite
def out_of_range(draw: st.DrawFn) -> tuple[ChainKind, dict[str, Any], str]:
    kind, data = draw(chain_message())
    field = draw(st.sampled_from(sorted(set(OUT_OF_RANGE) & set(data))))
    return kind, {**data, field: draw(OUT_OF_RANGE[field])}, field


def test_quantities_and_prices_out_of_range_are_rejected(guarantee: Record) -> None:
    tried: list[object] = []

    @PROPERTY
    @given(out_of_range())
    def check(case: tuple[ChainKind, dict[str, Any], str]) -> None:
        kind, data, field = case
        assert field in reason(lambda: kind.parser(kind.frame(data)))
        tried.append(case)

    n = count_examples(check, tried)
    guarantee(
        BAD_INPUT,
        "negative, zero, oversized or over-precise amounts and prices",
        n,
        "rejected, reason names the field",
    )


def test_nul_in_any_stored_text_is_rejected_naming_the_field() -> None:
    @PROPERTY
    @given(chain_message(), st.data())
    def check(message: tuple[ChainKind, dict[str, Any]], data: st.DataObject) -> None:
        kind, fields = message
        texts = sorted(k for k, t in kind.types.items() if t in (TEXT, OPTIONAL_TEXT))
        field = data.draw(st.sampled_from(texts))
        raw = kind.frame({**fields, field: "a\x00b"})
        assert field in reason(lambda: kind.parser(raw))

    check()


def test_every_truncation_of_every_kind_is_rejected(guarantee: Record) -> None:
    cuts = 0
    for kind in CHAIN_KINDS:
        raw = kind.frame(_seed(kind))
        for cut in range(len(raw)):
            assert reason(lambda: kind.parser(raw[:cut]))  # noqa: B023 -- called at once
            cuts += 1
    guarantee(BAD_INPUT, "feed frames truncated at every byte", cuts, "all rejected")


def _seed(kind: ChainKind) -> dict[str, Any]:
    return {
        ORDER_FILLED.name: order_filled_data,
        FEE_REFUND.name: fee_refund_data,
        LEGACY_TRADE.name: legacy_trade_data,
    }[kind.name]()


INVALID_UTF8 = st.sampled_from(
    [
        b"\xff",
        b"\xfe\xff",
        b"\xc3\x28",
        b"\xc0\xaf",
        b"\xed\xa0\x80",
        b"\xe2\x82",
        b"\xf4\x90\x80\x80",
    ]
)


def test_invalid_utf8_anywhere_is_rejected_with_its_position(guarantee: Record) -> None:
    tried: list[object] = []

    @PROPERTY
    @given(chain_message(), INVALID_UTF8, st.data())
    def check(message: tuple[ChainKind, dict[str, Any]], bad: bytes, data: st.DataObject) -> None:
        kind, fields = message
        raw = kind.frame(fields)
        # Any byte boundary that is not inside a multi-byte character of the valid text.
        text = raw.decode()
        at = len(text[: data.draw(st.integers(0, len(text)))].encode())
        broken = raw[:at] + bad + raw[at:]
        why = reason(lambda: kind.parser(broken))
        assert why.startswith("invalid UTF-8"), why
        assert f"at byte {at}" in why, why
        tried.append(broken)

    n = count_examples(check, tried)
    guarantee(BAD_INPUT, "invalid UTF-8 bytes in feed frames", n, "rejected with the byte position")


# Found by the property above: invalid UTF-8 in a field the parser does not read, or in a key,
# was accepted and stored in `raw`; in a read field the position was the string's, not the frame's.
@pytest.mark.parametrize(
    ("anchor", "offset"), [(b'"image":"', 9), (b'"title":"', 9), (b'"role"', 1)]
)
def test_regression_invalid_utf8_outside_the_read_strings(anchor: bytes, offset: int) -> None:
    raw = frame(order_filled_data())
    at = raw.index(anchor) + offset
    broken = raw[:at] + b"\xff" + raw[at:]
    assert reason(lambda: parse.orders_frame(broken)) == (
        f"invalid UTF-8: invalid start byte at byte {at}"
    )


def test_oversized_frames_are_rejected_before_decoding(guarantee: Record) -> None:
    tried: list[object] = []

    @PROPERTY
    @given(chain_message(), st.integers(min_value=1, max_value=5000))
    def check(message: tuple[ChainKind, dict[str, Any]], over: int) -> None:
        kind, data = message
        raw = kind.frame(data)
        limit = len(raw)
        assert kind.event(raw)
        padded = kind.frame({**data, "title": data["title"] + "x" * over})
        for frame_ in (padded, padded.decode()):
            assert "exceeds" in reason(lambda: kind.parser(frame_, max_bytes=limit))  # noqa: B023
        tried.append(padded)

    n = count_examples(check, tried)
    # And once at the real limit.
    big = ORDER_FILLED.frame(order_filled_data(title="x" * parse.MAX_FRAME_BYTES))
    assert f"exceeds {parse.MAX_FRAME_BYTES} bytes" in reason(lambda: parse.orders_frame(big))
    guarantee(BAD_INPUT, "feed frames over the size limit", n + 1, "rejected before decoding")


# --- exchange: protobuf messages ----------------------------------------------------------------

KEYS = st.text(st.characters(codec="utf-8", blacklist_characters="\x00"), min_size=1, max_size=40)
INT64 = st.integers(min_value=-(1 << 63), max_value=MAX_BIGINT)
NON_NEGATIVE = st.integers(min_value=0, max_value=MAX_BIGINT)
NEGATIVE_INT64 = st.integers(min_value=-(1 << 63), max_value=-1)
SECONDS = st.integers(min_value=0, max_value=parse.MAX_EPOCH_SECONDS)
NANOS = st.integers(min_value=0, max_value=999_999_999)
DATES = st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31))


def _enum_values(enum: Any, *, unspecified: bool = True) -> st.SearchStrategy[int]:
    numbers = [v.number for v in enum.DESCRIPTOR.values]
    return st.sampled_from([n for n in numbers if unspecified or n != 0])


@st.composite
def valid_execution(draw: st.DrawFn, prefix: str = "") -> dict[str, Any]:
    """Changes that keep an execution valid, as dotted paths for `_apply`."""
    day = draw(DATES)
    return {
        "id": draw(KEYS),
        "order.id": draw(KEYS),
        "order.symbol": draw(KEYS),
        "order.account": draw(KEYS),
        "order.clord_id": draw(KEYS),
        "trade_id": draw(KEYS),
        "text": draw(st.text(max_size=300).filter(lambda t: "\x00" not in t)),
        "order.side": draw(_enum_values(enums_pb2.Side, unspecified=False)),
        "order.type": draw(_enum_values(enums_pb2.OrderType)),
        "order.time_in_force": draw(_enum_values(enums_pb2.TimeInForce)),
        "order.state": draw(_enum_values(enums_pb2.OrderState)),
        "type": draw(_enum_values(enums_pb2.ExecutionType)),
        **{path: draw(NON_NEGATIVE) for path in parse.EXECUTION_QUANTITIES},
        "commission_notional_collected": draw(INT64),
        "aggressor": draw(st.booleans()),
        "transact_time": ts(draw(SECONDS), draw(NANOS)),
        "transact_trade_date": trading_pb2.TradeDate(year=day.year, month=day.month, day=day.day),
    }


@st.composite
def valid_instrument(draw: st.DrawFn) -> trading_pb2.Instrument:
    return trading_pb2.Instrument(
        symbol=draw(KEYS),
        state=draw(_enum_values(enums_pb2.InstrumentState)),
        name=draw(st.text(max_size=40).filter(lambda t: "\x00" not in t)),
        price_scale=draw(st.integers(min_value=1, max_value=MAX_BIGINT)),
        fractional_qty_scale=draw(st.integers(min_value=1, max_value=MAX_BIGINT)),
        update_time=ts(draw(SECONDS), draw(NANOS)),
    )


@st.composite
def valid_position_change(draw: st.DrawFn) -> trading_pb2.PositionChange:
    return trading_pb2.PositionChange(
        position=trading_pb2.Position(
            account=draw(KEYS),
            symbol=draw(KEYS),
            net_position=draw(INT64),
            qty_bought=draw(NON_NEGATIVE),
            qty_sold=draw(NON_NEGATIVE),
            cost=draw(INT64),
            realized=draw(INT64),
            bod_position=draw(INT64),
            update_time=ts(draw(SECONDS)),
        ),
        change_time=ts(draw(SECONDS), draw(NANOS)),
    )


def _trade(aggressor: dict[str, Any], passive: dict[str, Any], state: int) -> trading_pb2.Trade:
    return _apply(
        trade_message(state),  # type: ignore[arg-type]
        {
            **{f"aggressor.{k}": v for k, v in aggressor.items()},
            **{f"passive.{k}": v for k, v in passive.items()},
        },
    )


TRADE_STATES = [v.number for v in enums_pb2.TradeState.DESCRIPTOR.values if v.number]


class ProtoKind:
    """One venue message kind: a valid-message strategy and its parser."""

    def __init__(
        self,
        name: str,
        valid: st.SearchStrategy[Message],
        parser: Callable[[Any], Any],
        *,
        enums: dict[str, Any],
        non_negative: tuple[str, ...],
        positive: tuple[str, ...],
        required: tuple[str, ...],
        keys: tuple[str, ...],
        times: tuple[str, ...],
    ) -> None:
        self.name = name
        self.valid = valid
        self.parser = parser
        self.enums = enums  # path -> enum type
        self.non_negative = non_negative
        self.positive = positive
        self.required = required  # paths whose absence (empty or unset) is rejected
        self.keys = keys  # identifier text paths, bounded in length
        self.times = times

    def __repr__(self) -> str:
        return self.name


def _prefixed(prefix: str, paths: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(prefix + p for p in paths)


EXECUTION_ENUMS = {
    "order.side": enums_pb2.Side,
    "order.type": enums_pb2.OrderType,
    "order.time_in_force": enums_pb2.TimeInForce,
    "order.state": enums_pb2.OrderState,
    "type": enums_pb2.ExecutionType,
}
EXECUTION_REQUIRED = (
    "id",
    "order",
    "order.id",
    "order.symbol",
    "transact_time",
    "transact_trade_date",
)
EXECUTION_KEYS = ("id", "order.id", "order.clord_id", "order.symbol", "order.account", "trade_id")
EXECUTION = ProtoKind(
    "execution",
    valid_execution().map(lambda changes: execution_message(**changes)),
    parse.execution,
    enums=EXECUTION_ENUMS,
    non_negative=parse.EXECUTION_QUANTITIES,
    positive=(),
    required=EXECUTION_REQUIRED,
    keys=EXECUTION_KEYS,
    times=("transact_time",),
)
LEGS = ("aggressor.", "passive.")
TRADE = ProtoKind(
    "trade capture",
    st.builds(_trade, valid_execution(), valid_execution(), st.sampled_from(TRADE_STATES)),
    parse.trade_capture,
    enums={
        "state": enums_pb2.TradeState,
        "trade_type": enums_pb2.TradeType,
        **{leg + k: v for leg in LEGS for k, v in EXECUTION_ENUMS.items()},
    },
    non_negative=tuple(p for leg in LEGS for p in _prefixed(leg, parse.EXECUTION_QUANTITIES)),
    positive=(),
    required=(
        "id",
        "aggressor",
        "passive",
        *(p for leg in LEGS for p in _prefixed(leg, EXECUTION_REQUIRED)),
    ),
    keys=("id", "trade_link_id", *(p for leg in LEGS for p in _prefixed(leg, EXECUTION_KEYS))),
    times=("update_time", "aggressor.transact_time", "passive.transact_time"),
)
INSTRUMENT = ProtoKind(
    "instrument state",
    valid_instrument(),
    parse.instrument,
    enums={"state": enums_pb2.InstrumentState},
    non_negative=(),
    positive=("price_scale", "fractional_qty_scale"),
    required=("symbol", "update_time"),
    keys=("symbol",),
    times=("update_time",),
)
POSITION_CHANGE = ProtoKind(
    "position change",
    valid_position_change(),
    parse.position_change,
    enums={},
    non_negative=("position.qty_bought", "position.qty_sold"),
    positive=(),
    required=("position", "change_time", "position.account", "position.symbol"),
    keys=("position.account", "position.symbol"),
    times=("change_time", "position.update_time"),
)
PROTO_KINDS = (EXECUTION, TRADE, INSTRUMENT, POSITION_CHANGE)
# ExecutionEvent field -> the Execution path it comes from.
EXECUTION_FIELDS = {
    "id": "id",
    "order_id": "order.id",
    "symbol": "order.symbol",
    "account": "order.account",
    "order_qty": "order.order_qty",
    "order_price": "order.price",
    "cum_qty": "order.cum_qty",
    "leaves_qty": "order.leaves_qty",
    "avg_px": "order.avg_px",
    "last_shares": "last_shares",
    "last_px": "last_px",
    "commission_notional_collected": "commission_notional_collected",
    "aggressor": "aggressor",
}
EXECUTION_ENUM_FIELDS = {
    "side": "order.side",
    "order_type": "order.type",
    "time_in_force": "order.time_in_force",
    "order_state": "order.state",
    "exec_type": "type",
}


def proto_message(kinds: tuple[ProtoKind, ...] = PROTO_KINDS) -> st.SearchStrategy[Any]:
    return st.sampled_from(kinds).flatmap(lambda k: st.tuples(st.just(k), k.valid))


def _get(message: Message, path: str) -> Any:
    target: Any = message
    for part in path.split("."):
        target = getattr(target, part)
    return target


def test_valid_venue_messages_round_trip(guarantee: Record) -> None:
    tried: list[object] = []

    @PROPERTY
    @given(proto_message())
    def check(case: tuple[ProtoKind, Message]) -> None:
        kind, message = case
        event = kind.parser(message)
        assert event.raw in (message.SerializeToString(), b"")
        # The bytes on the wire give the same value, and extra unknown fields change nothing.
        wire = message.SerializeToString()
        again = kind.parser(type(message).FromString(wire))
        assert again == event
        extended = type(message).FromString(wire + b"\xf8\x3e\x07" + b"\x82\x3f\x03abc")
        assert without_raw(kind.parser(extended)) == without_raw(event)
        if kind is EXECUTION:
            for name, path in EXECUTION_FIELDS.items():
                assert getattr(event, name) == _get(message, path), name
            for name, path in EXECUTION_ENUM_FIELDS.items():
                assert getattr(event, name) == EXECUTION_ENUMS[path].Name(_get(message, path))
        tried.append(message)

    n = count_examples(check, tried)
    guarantee(
        BAD_INPUT,
        "valid DropCopy and Report API messages, with unknown extra fields",
        n,
        "parsed exactly, same value",
    )


@st.composite
def proto_mutation(draw: st.DrawFn) -> tuple[ProtoKind, Message, str, str]:
    """A valid message with one thing changed so that it is invalid; the path it names."""
    kind, message = draw(proto_message())
    choices = ["key", "required", "time"]
    if kind.enums:
        choices.append("enum")
    if kind.non_negative:
        choices.append("negative")
    if kind.positive:
        choices.append("positive")
    what = draw(st.sampled_from(choices))
    if what == "enum":
        path = draw(st.sampled_from(sorted(kind.enums)))
        known = {v.number for v in kind.enums[path].DESCRIPTOR.values}
        value = draw(st.integers(-(1 << 31), (1 << 31) - 1).filter(lambda v: v not in known))
        _apply(message, {path: value})
    elif what == "negative":
        path = draw(st.sampled_from(kind.non_negative))
        _apply(message, {path: draw(NEGATIVE_INT64)})
    elif what == "positive":
        path = draw(st.sampled_from(kind.positive))
        _apply(message, {path: draw(st.integers(min_value=-(1 << 63), max_value=0))})
    elif what == "required":
        path = draw(st.sampled_from(kind.required))
        parent, _, leaf = path.rpartition(".")
        (_get(message, parent) if parent else message).ClearField(leaf)
    elif what == "key":
        path = draw(st.sampled_from(kind.keys))
        _apply(message, {path: draw(st.text(min_size=MAX_KEY_CHARS + 1, max_size=3000))})
        if "\x00" in _get(message, path):
            what = "nul"
    else:
        path = draw(st.sampled_from(kind.times))
        bad = draw(
            st.tuples(st.integers(min_value=-(1 << 63), max_value=-1), NANOS)
            | st.tuples(
                st.integers(min_value=parse.MAX_EPOCH_SECONDS + 1, max_value=MAX_BIGINT), NANOS
            )
            | st.tuples(SECONDS, st.integers(min_value=1_000_000_000, max_value=(1 << 31) - 1))
            | st.tuples(SECONDS, st.integers(min_value=-(1 << 31), max_value=-1))
        )
        _apply(message, {path: ts(*bad)})
    return kind, message, what, path


def test_bad_venue_messages_are_rejected_naming_the_field(guarantee: Record) -> None:
    tried: dict[str, int] = {}

    @settings(PROPERTY, max_examples=250)
    @given(proto_mutation())
    def check(case: tuple[ProtoKind, Message, str, str]) -> None:
        kind, message, what, path = case
        why = reason(lambda: kind.parser(message))
        # A trade leg's own problems come first; with the leg dropped, its own absence.
        assert why.startswith(path) or why == f"{path} missing", (what, path, why)
        tried[what] = tried.get(what, 0) + 1

    check()
    guarantee(
        BAD_INPUT,
        "DropCopy messages with unknown enums, negative quantities, bad times, missing or "
        "over-long ids",
        sum(tried.values()),
        "rejected, reason names the field",
    )


# Found by the property above: ids, symbols and accounts of any length were accepted, and
# Postgres refuses an index entry over 2704 bytes with an error the pipeline took for a lost
# connection, retrying the batch forever.
@pytest.mark.parametrize(
    ("message", "path"),
    [
        (execution_message(id="E" * (MAX_KEY_CHARS + 1)), "id"),
        (execution_message(**{"order.account": "\u00e9" * 3000}), "order.account"),
        (trade_message(trade_link_id="L" * 3000), "trade_link_id"),
        (trade_message(**{"passive.trade_id": "T" * 3000}), "passive.trade_id"),
        (
            trading_pb2.Instrument(
                symbol="S" * 3000, price_scale=1, fractional_qty_scale=1, update_time=ts(0)
            ),
            "symbol",
        ),
        (
            trading_pb2.PositionChange(
                position=trading_pb2.Position(account="A", symbol="S" * 3000),
                change_time=ts(0),
            ),
            "position.symbol",
        ),
    ],
)
def test_regression_over_long_ids_are_rejected(message: Message, path: str) -> None:
    parser = {
        "Execution": parse.execution,
        "Trade": parse.trade_capture,
        "Instrument": parse.instrument,
        "PositionChange": parse.position_change,
    }[message.DESCRIPTOR.name]
    assert reason(lambda: parser(message)).startswith(
        f"{path} longer than {MAX_KEY_CHARS} characters"
    )


def test_the_report_api_mapping_refuses_what_the_parser_rejects(guarantee: Record) -> None:
    tried: list[object] = []
    rows = {
        EXECUTION.name: lambda m: execution_rows([m], date(2026, 1, 1)),
        TRADE.name: lambda m: trade_rows([m], date(2026, 1, 1)),
        POSITION_CHANGE.name: lambda m: position_rows([m.position], datetime.now(UTC)),
    }

    @PROPERTY
    @given(proto_mutation().filter(lambda c: c[0].name in rows and c[3] != "change_time"))
    def check(case: tuple[ProtoKind, Message, str, str]) -> None:
        kind, message, _, path = case
        with pytest.raises(ReportError, match="Report API returned a malformed") as caught:
            rows[kind.name](message)
        assert path in str(caught.value)
        tried.append(case)

    n = count_examples(check, tried)
    guarantee(
        BAD_INPUT,
        "malformed Report API executions, trades, positions",
        n,
        "snapshot refused with the reason",
    )


def test_a_truncated_message_parses_or_is_rejected_never_crashes() -> None:
    message = trade_message()
    wire = message.SerializeToString()
    outcomes = dict.fromkeys(("undecodable", "rejected", "parsed"), 0)
    reasons: list[str] = []
    for cut in range(len(wire)):
        try:
            partial = trading_pb2.Trade.FromString(wire[:cut])
        except DecodeError:
            outcomes["undecodable"] += 1
            continue
        try:
            parse.trade_capture(partial)
        except Rejected as exc:
            reasons.append(exc.reason)
            outcomes["rejected"] += 1
        else:
            outcomes["parsed"] += 1
    assert all(reasons)
    assert sum(outcomes.values()) == len(wire)


# --- exchange: responses that protobuf itself can't decode --------------------------------------


def _item(number: int, payload: bytes) -> bytes:
    return bytes([number << 3 | 2]) + _varint(len(payload)) + payload


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append(n & 0x7F | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _break_utf8(message: Message, path: str, bad: bytes) -> bytes:
    """The message's wire bytes with the text at `path` replaced by `bad` (not UTF-8)."""
    field, _, rest = path.partition(".")
    if rest:
        # A sub-message is re-framed with its new length; a repeated occurrence of a message
        # field merges into the first, so it may simply follow the rest.
        inner = _break_utf8(getattr(message, field), rest, bad)
        outer = type(message)()
        outer.CopyFrom(message)
        outer.ClearField(field)
        return outer.SerializeToString() + _item(
            message.DESCRIPTOR.fields_by_name[field].number, inner
        )
    marker = ("\u2603" * 8).encode()
    _apply(message, {path: marker.decode()})
    wire = message.SerializeToString()
    assert wire.count(marker) == 1
    return wire.replace(_varint(len(marker)) + marker, _varint(len(bad)) + bad)


def test_undecodable_items_of_a_response_are_kept_for_dead_letters(guarantee: Record) -> None:
    decoders = {spec.name: response_decoder(spec.method, spec.items) for spec in STREAMS}
    tried: list[object] = []

    @PROPERTY
    @given(
        st.lists(valid_execution().map(lambda c: execution_message(**c)), min_size=1, max_size=4),
        st.sets(st.integers(0, 3)),
        st.sampled_from(("id", "text", "order.symbol", "order.account")),
        INVALID_UTF8,
        st.binary(max_size=40),
    )
    def check(
        executions: list[trading_pb2.Execution],
        broken: set[int],
        path: str,
        bad: bytes,
        token: bytes,
    ) -> None:
        decode = decoders["executions"]
        items = [
            _break_utf8(ex, path, bad) if i in broken else ex.SerializeToString()
            for i, ex in enumerate(executions)
        ]
        data = _item(1, token) + b"".join(_item(2, item) for item in items)
        decoded = decode(data)
        good = [item for i, item in enumerate(items) if i not in broken]
        bad_items = [item for i, item in enumerate(items) if i in broken]
        if not bad_items:
            assert not isinstance(decoded, Salvaged)
            return
        assert isinstance(decoded, Salvaged)
        response: Any = decoded.response
        assert response.resume_token == token
        assert [e.SerializeToString() for e in response.executions] == good
        assert [raw for _, raw in decoded.undecodable] == bad_items
        for why, _ in decoded.undecodable:
            assert why.startswith(f"undecodable Execution: {path} not valid UTF-8"), why
        tried.append(data)

    n = count_examples(check, tried)
    # Garbage where a response should be: never raises, and no byte is lost.
    for spec_name, decode in decoders.items():
        for garbage in (b"\xff", b"\x12\x50abc", b"\x0b", b"\x12\x03\xff\xff\xff"):
            decoded = decode(garbage)
            assert isinstance(decoded, Salvaged), spec_name
            assert b"".join(raw for _, raw in decoded.undecodable) in (garbage, garbage[2:])
            n += 1
    guarantee(
        BAD_INPUT,
        "DropCopy responses protobuf can't decode (invalid UTF-8, corrupt wire)",
        n,
        "good items kept, bad ones dead-lettered with the field",
    )
