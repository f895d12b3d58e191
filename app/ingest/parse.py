"""The ingest boundary: venue protobuf messages and feed JSON frames become domain events.

Pure functions, no I/O. Anything that is not a valid event raises `Rejected` with a specific
reason; the consumer turns that into a dead letter with the raw bytes. A parser accepts only what
the database will also accept (sign and range checks, no NUL in text, sizes that fit the
columns), so one bad message can never make a whole batch fail to commit.

Feed JSON is decoded by msgspec into private wire structs: type, presence, literal and integer
range checks run in C and report the JSON path of what is wrong, and JSON numbers arrive as
`int` or exact `Decimal` (never float). The stdlib `json` with `parse_float=Decimal` is exact
too, but three times slower per frame before any validation (8 us against 2.5 us for a seed
order_filled here), which a 30,000 events/s budget can't spare. orjson is faster still but
parses numbers to float, which can't be made exact again.
"""

from __future__ import annotations

import functools
import operator
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.timestamp_pb2 import Timestamp

from app.domain.events import (
    ExecutionEvent,
    ExecutionSource,
    FeedTradeEvent,
    FeeRefundEvent,
    InstrumentEvent,
    OrderFilledEvent,
    PositionChangeEvent,
    TradeCaptureEvent,
)
from polymarket.v1 import enums_pb2, trading_pb2

MAX_FRAME_BYTES = 1 << 20

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_EPOCH_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z, the last second a datetime holds
MAX_BIGINT = (1 << 63) - 1
# Ids, symbols and accounts are indexed (and two share an index), and a btree entry holds at most
# 2704 bytes; Postgres refuses a longer one with an error that is not a constraint violation.
MAX_KEY_CHARS = 256
SHARE_DECIMALS = 6
# Chain amounts are dollars and shares: 18 decimal places is wei precision, 10^15 is far beyond
# any real amount. Outside that it is garbage, and NUMERIC would choke on some of it anyway.
MAX_DECIMAL_PLACES = 18
MAX_DECIMAL_ADJUSTED_EXPONENT = 15
CHAIN_VERSIONS = (1, 2)  # V1 fees are gross with refunds, V2 net; another version's are unknown


class Rejected(Exception):
    """Input that is not a valid event; `reason` says what is wrong with it, specifically."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def frame_bytes(raw: bytes | str) -> bytes:
    """The bytes of a frame for a dead letter, even when it is not valid UTF-8 text."""
    return raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")


# --- exchange: protobuf messages ---------------------------------------------------------------


def _names(enum: EnumDescriptor) -> dict[int, str]:
    return {value.number: value.name for value in enum.values}


SIDES = _names(enums_pb2.Side.DESCRIPTOR)
ORDER_TYPES = _names(enums_pb2.OrderType.DESCRIPTOR)
TIMES_IN_FORCE = _names(enums_pb2.TimeInForce.DESCRIPTOR)
ORDER_STATES = _names(enums_pb2.OrderState.DESCRIPTOR)
EXECUTION_TYPES = _names(enums_pb2.ExecutionType.DESCRIPTOR)
TRADE_STATES = _names(enums_pb2.TradeState.DESCRIPTOR)
TRADE_TYPES = _names(enums_pb2.TradeType.DESCRIPTOR)
INSTRUMENT_STATES = _names(enums_pb2.InstrumentState.DESCRIPTOR)


def _enum(names: dict[int, str], number: int, prefix: str, field: str) -> str:
    # Proto3 enums are open: an unknown number parses fine and must be caught here.
    name = names.get(number)
    if name is None:
        raise Rejected(f"{prefix}{field} unknown enum number {number}")
    return name


def _text(value: str, path: str) -> str:
    if "\x00" in value:
        raise Rejected(f"{path} contains a NUL character")
    return value


def _key(value: str, path: str) -> str:
    if len(value) > MAX_KEY_CHARS:
        raise Rejected(f"{path} longer than {MAX_KEY_CHARS} characters: {len(value)}")
    return _text(value, path)


def _required_key(value: str, path: str) -> str:
    if not value:
        raise Rejected(f"{path} missing")
    return _key(value, path)


def _positive(value: int, path: str) -> int:
    if value <= 0:
        raise Rejected(f"{path} not positive: {value}")
    return value


def _non_negative(value: int, path: str) -> int:
    if value < 0:
        raise Rejected(f"{path} negative: {value}")
    return value


def _timestamp(ts: Timestamp, path: str) -> datetime:
    if not 0 <= ts.seconds <= MAX_EPOCH_SECONDS or not 0 <= ts.nanos < 1_000_000_000:
        raise Rejected(f"{path} out of range: seconds={ts.seconds} nanos={ts.nanos}")
    # Postgres keeps microseconds; the nanoseconds below that are dropped, not rounded.
    return EPOCH + timedelta(0, ts.seconds, ts.nanos // 1000)


def _trade_date(td: trading_pb2.TradeDate, path: str) -> date:
    try:
        return date(td.year, td.month, td.day)
    except ValueError:
        raise Rejected(f"{path} not a date: {td.year}-{td.month}-{td.day}") from None


EXECUTION_QUANTITIES = (
    "order.order_qty",
    "order.price",
    "order.cum_qty",
    "order.leaves_qty",
    "order.avg_px",
    "last_shares",
    "last_px",
)
EXECUTION_TEXTS = (
    "id",
    "order.id",
    "order.clord_id",
    "order.symbol",
    "order.account",
    "order.participant",
    "text",
    "trade_id",
)
EXECUTION_FREE_TEXT = "text"


def _execution(
    ex: trading_pb2.Execution, prefix: str, raw: bytes, source: ExecutionSource
) -> ExecutionEvent:
    # Checked a group at a time, with the culprit looked for only on failure: this runs for
    # every execution and every trade leg, so each per-field call would cost.
    for message in ("order", "transact_time", "transact_trade_date"):
        if not ex.HasField(message):
            raise Rejected(f"{prefix}{message} missing")
    order = ex.order
    texts = (
        ex.id,
        order.id,
        order.clord_id,
        order.symbol,
        order.account,
        order.participant,
        ex.text,
        ex.trade_id,
    )
    execution_id, order_id, clord_id, symbol, account, participant, text, trade_id = texts
    for value, field in ((execution_id, "id"), (order_id, "order.id"), (symbol, "order.symbol")):
        if not value:
            raise Rejected(f"{prefix}{field} missing")
    joined = "".join(texts)
    if "\x00" in joined or len(joined) > MAX_KEY_CHARS:
        for value, field in zip(texts, EXECUTION_TEXTS, strict=True):
            check = _text if field == EXECUTION_FREE_TEXT else _key
            check(value, f"{prefix}{field}")
    quantities = (
        order.order_qty,
        order.price,
        order.cum_qty,
        order.leaves_qty,
        order.avg_px,
        ex.last_shares,
        ex.last_px,
    )
    if min(quantities) < 0:
        for quantity, field in zip(quantities, EXECUTION_QUANTITIES, strict=True):
            _non_negative(quantity, f"{prefix}{field}")
    if order.side == enums_pb2.SIDE_UNSPECIFIED:
        raise Rejected(f"{prefix}order.side unspecified")
    order_qty, order_price, cum_qty, leaves_qty, avg_px, last_shares, last_px = quantities
    return ExecutionEvent(
        business_date=_trade_date(ex.transact_trade_date, f"{prefix}transact_trade_date"),
        id=execution_id,
        order_id=order_id,
        # Proto3 can't tell an empty string from an absent one; the tables store absent as NULL.
        clord_id=clord_id or None,
        symbol=symbol,
        side=_enum(SIDES, order.side, prefix, "order.side"),
        order_type=_enum(ORDER_TYPES, order.type, prefix, "order.type"),
        time_in_force=_enum(TIMES_IN_FORCE, order.time_in_force, prefix, "order.time_in_force"),
        order_qty=order_qty,
        order_price=order_price,
        cum_qty=cum_qty,
        leaves_qty=leaves_qty,
        avg_px=avg_px,
        order_state=_enum(ORDER_STATES, order.state, prefix, "order.state"),
        account=account,
        participant=participant or None,
        exec_type=_enum(EXECUTION_TYPES, ex.type, prefix, "type"),
        last_shares=last_shares,
        last_px=last_px,
        text=text or None,
        transact_time=_timestamp(ex.transact_time, f"{prefix}transact_time"),
        trade_id=trade_id or None,
        aggressor=ex.aggressor,
        commission_notional_collected=ex.commission_notional_collected,
        raw=raw,
        source=source,
    )


def execution(ex: trading_pb2.Execution, *, source: ExecutionSource = "dropcopy") -> ExecutionEvent:
    """A DropCopy (or Report API) execution; business date = its transact_trade_date."""
    return _execution(ex, "", ex.SerializeToString(), source)


def trade_capture(t: trading_pb2.Trade) -> TradeCaptureEvent:
    """A trade capture report; business date = the aggressor's transact_trade_date."""
    trade_id = _required_key(t.id, "id")
    for leg in ("aggressor", "passive"):
        if not t.HasField(leg):
            raise Rejected(f"{leg} missing")
    aggressor = _execution(t.aggressor, "aggressor.", b"", "dropcopy")
    passive = _execution(t.passive, "passive.", b"", "dropcopy")
    state = _enum(TRADE_STATES, t.state, "", "state")
    if t.state == enums_pb2.TRADE_STATE_UNDEFINED:
        raise Rejected("state undefined")
    update_time = (
        _timestamp(t.update_time, "update_time")
        if t.HasField("update_time")
        else aggressor.transact_time
    )
    return TradeCaptureEvent(
        business_date=aggressor.business_date,
        id=trade_id,
        trade_type=_enum(TRADE_TYPES, t.trade_type, "", "trade_type"),
        state=state,
        text=_text(t.text, "text") or None,
        trade_link_id=_key(t.trade_link_id, "trade_link_id") or None,
        update_time=update_time,
        symbol=aggressor.symbol,
        aggressor_execution_id=aggressor.id,
        passive_execution_id=passive.id,
        aggressor_account=aggressor.account,
        passive_account=passive.account,
        aggressor_side=aggressor.side,
        last_shares=aggressor.last_shares,
        last_px=aggressor.last_px,
        aggressor_commission=aggressor.commission_notional_collected,
        passive_commission=passive.commission_notional_collected,
        transact_time=aggressor.transact_time,
        raw=t.SerializeToString(),
    )


def instrument(i: trading_pb2.Instrument) -> InstrumentEvent:
    """An instrument state change; business date = UTC date of update_time."""
    if not i.HasField("update_time"):
        raise Rejected("update_time missing")
    update_time = _timestamp(i.update_time, "update_time")
    return InstrumentEvent(
        business_date=update_time.date(),
        symbol=_required_key(i.symbol, "symbol"),
        state=_enum(INSTRUMENT_STATES, i.state, "", "state"),
        name=_text(i.name, "name"),
        price_scale=_positive(i.price_scale, "price_scale"),
        fractional_qty_scale=_positive(i.fractional_qty_scale, "fractional_qty_scale"),
        update_time=update_time,
        raw=i.SerializeToString(),
    )


def position_change(pc: trading_pb2.PositionChange) -> PositionChangeEvent:
    """A position change; business date = UTC date of change_time."""
    if not pc.HasField("position"):
        raise Rejected("position missing")
    if not pc.HasField("change_time"):
        raise Rejected("change_time missing")
    position = pc.position
    change_time = _timestamp(pc.change_time, "change_time")
    return PositionChangeEvent(
        business_date=change_time.date(),
        account=_required_key(position.account, "position.account"),
        symbol=_required_key(position.symbol, "position.symbol"),
        net_position=position.net_position,
        qty_bought=_non_negative(position.qty_bought, "position.qty_bought"),
        qty_sold=_non_negative(position.qty_sold, "position.qty_sold"),
        cost=position.cost,
        realized=position.realized,
        bod_position=position.bod_position,
        update_time=(
            _timestamp(position.update_time, "position.update_time")
            if position.HasField("update_time")
            else None
        ),
        change_time=change_time,
        raw=pc.SerializeToString(),
    )


# --- chain: websocket JSON frames ---------------------------------------------------------------

EpochSeconds = Annotated[int, msgspec.Meta(ge=0, le=MAX_EPOCH_SECONDS)]
RawShares = Annotated[int, msgspec.Meta(gt=0, le=MAX_BIGINT)]
OutcomeIndex = Annotated[int, msgspec.Meta(ge=0, le=(1 << 31) - 1)]
# Amounts are typed Any so the decoder's float_hook makes them exact Decimals (a typed Decimal
# field would also accept a JSON string); _amount() then insists on a JSON number.
Amount = Any
# Hex and digit strings are checked by precompiled regexes here, not by a msgspec `pattern`,
# which costs more than all the rest of the decoding together.
HASH = re.compile(r"0x[0-9a-fA-F]{64}")  # tx and order hashes, condition ids, other bytes32
ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
LOG_INDEX = re.compile(r"0x[0-9a-fA-F]{1,15}")  # at most 2^60 - 1, so it fits a bigint
TOKEN_ID = re.compile(r"[0-9]{1,78}")  # a uint256 in decimal


# An absent optional id is checked as a valid stand-in, so only the ids present are checked.
ABSENT_HASH = "0x" + "0" * 64
ABSENT_UINT256 = "0"


class _HexIds:
    """The test that several hex ids, joined by spaces, are each "0x" and the right number of
    lower-case hex digits: what a `fullmatch` of each field's pattern (lower case only) tells.

    A regex checked the joined ids at ~5 ns a character, a quarter of an event's parse. Here the
    bytes are mapped in C (hex digit -> "h", "x" and space kept, anything else -> "?") and must
    equal the one shape that valid ids have, whose "x"s and spaces sit at fixed places; then the
    character before each "x" must be "0". A non-ASCII id never matches: the mapping needs the
    ASCII bytes, and a valid id is ASCII.
    """

    _MAP = bytes(
        ord("h") if c in b"0123456789abcdef" else c if c in b"x " else ord("?") for c in range(256)
    )

    def __init__(self, *digits: int) -> None:
        fields = [b"hx" + b"h" * n for n in digits]
        self._shape = b" ".join(fields)
        starts = [sum(len(f) + 1 for f in fields[:i]) for i in range(len(fields))]
        self._starts = operator.itemgetter(*starts)
        self._zeros = (ord("0"),) * len(fields)

    def match(self, joined: str) -> bool:
        if not joined.isascii():
            return False
        data = joined.encode()
        return data.translate(self._MAP) == self._shape and self._starts(data) == self._zeros


def _decimal_ids(first: str, second: str = ABSENT_UINT256) -> bool:
    """Both are what TOKEN_ID matches: 1 to 78 ASCII digits (bytes.isdigit is ASCII-only;
    str.isdigit takes other scripts' digits too, and costs a few times more)."""
    joined = first + second
    return (
        0 < len(first) <= 78
        and 0 < len(second) <= 78
        and joined.isascii()
        and joined.encode().isdigit()
    )


# Hex digits of each id, in the order the clean checks below join them: tx, order, condition,
# builder and metadata hashes, then user and taker addresses; for a refund tx, order, condition
# hashes, then the user's address.
FILL_HEX_IDS = _HexIds(64, 64, 64, 64, 64, 40, 40)
REFUND_HEX_IDS = _HexIds(64, 64, 64, 40)


class _Connected(msgspec.Struct, tag_field="type", tag="connected"):
    pass


class _Ack(msgspec.Struct, tag_field="type", tag="ack"):
    subscription_id: str | None = None


class _Error(msgspec.Struct, tag_field="type", tag="error"):
    message: str = ""


# The wire structs of the orders feed, decoded for every chain event, hold only strings, numbers
# and each other: they can't be part of a cycle, so the cyclic GC needn't track them (gc=False).
class _OrderFilled(msgspec.Struct, tag_field="event_type", tag="order_filled", gc=False):
    tx_hash: str
    order_hash: str
    timestamp: EpochSeconds
    token_id: str
    condition_id: str
    side: Literal["BUY", "SELL"]
    role: Literal["maker", "taker"]
    shares: RawShares
    price: Amount
    fee: Amount
    user: str
    taker: str
    version: int
    # The docs' default subscription delivers confirmed events only.
    status: Literal["confirmed", "pending"] = "confirmed"
    log_index: str | None = None
    shares_normalized: Amount = None
    token_label: str | None = None
    complement_token_id: str | None = None
    complement_token_label: str | None = None
    market_slug: str | None = None
    market_id: str | None = None
    title: str | None = None
    outcome: str | None = None
    outcome_index: OutcomeIndex | None = None
    is_neg_risk: bool | None = None
    builder: str | None = None
    metadata: str | None = None


class _FeeRefund(msgspec.Struct, tag_field="event_type", tag="fee_refund", gc=False):
    tx_hash: str
    order_hash: str
    user: str
    refund: Amount
    fee_charged: Amount
    # Refunds are read from chain logs; a pending one would be a guess we must not store.
    status: Literal["confirmed"] | None = None
    timestamp: EpochSeconds | None = None
    token_id: str | None = None
    condition_id: str | None = None
    market_slug: str | None = None
    title: str | None = None


class _OrdersEvent(msgspec.Struct, tag_field="type", tag="event", gc=False):
    subscription_id: str
    data: _OrderFilled | _FeeRefund


class _LegacyTrade(msgspec.Struct):
    tx_hash: str
    order_hash: str
    timestamp: EpochSeconds
    asset_id: str
    condition_id: str
    shares: Amount
    price: Amount
    user: str
    taker: str
    platform: Literal["polymarket"] = "polymarket"
    shares_normalized: Amount = None
    market_slug: str | None = None
    title: str | None = None
    outcome: str | None = None
    source: str | None = None


class _TradeMessage(msgspec.Struct, tag_field="type", tag="trade"):
    subscription_id: str
    data: _LegacyTrade


_ORDERS = msgspec.json.Decoder(_Connected | _Ack | _Error | _OrdersEvent, float_hook=Decimal)
_TRADES = msgspec.json.Decoder(_Connected | _Ack | _Error | _TradeMessage, float_hook=Decimal)


class Connected(msgspec.Struct, frozen=True, gc=False):
    """The server's hello; subscribe after it."""


class Ack(msgspec.Struct, frozen=True, gc=False):
    subscription_id: str | None


class Error(msgspec.Struct, frozen=True, gc=False):
    message: str


class OrdersEvent(msgspec.Struct, frozen=True, gc=False):
    subscription_id: str
    event: OrderFilledEvent | FeeRefundEvent


class TradeMessage(msgspec.Struct, frozen=True, gc=False):
    subscription_id: str
    event: FeedTradeEvent


OrdersFrame = Connected | Ack | Error | OrdersEvent
TradesFrame = Connected | Ack | Error | TradeMessage

ZERO = Decimal(0)  # compared against as a Decimal: an int is converted on every comparison
ONE = Decimal(1)
JSON_TYPES: dict[type, str] = {type(None): "null", bool: "bool", str: "string", list: "array"}


def _amount(value: object, path: str, *, at_most: Decimal | None = None) -> Decimal:
    """An exact, non-negative JSON number of a sane size."""
    if type(value) is Decimal:
        if not _few_places(value):
            raise Rejected(f"{path} has more than {MAX_DECIMAL_PLACES} decimal places: {value}")
        amount = value
    elif type(value) is int:
        amount = Decimal(value)
    else:
        raise Rejected(f"{path}: expected a number, got {JSON_TYPES.get(type(value), 'object')}")
    if amount.adjusted() > MAX_DECIMAL_ADJUSTED_EXPONENT:
        raise Rejected(f"{path} out of range: {value}")
    if amount < ZERO:
        raise Rejected(f"{path} negative: {value}")
    if at_most is not None and amount > at_most:
        raise Rejected(f"{path} above {at_most}: {value}")
    return amount


def _few_places(value: Decimal) -> bool:
    """At most MAX_DECIMAL_PLACES digits after the point.

    A short plain string proves it: str() prints the exponent ("E") when it is positive or the
    number is tiny, and otherwise exactly -exponent digits after the point. That costs a
    quarter of as_tuple(), which builds a tuple of every digit; as_tuple() decides the rest.
    """
    text = str(value)
    if len(text) <= MAX_DECIMAL_PLACES + 2 and "E" not in text:  # "0." + 18 digits
        return True
    exponent = value.as_tuple().exponent
    return not isinstance(exponent, int) or exponent >= -MAX_DECIMAL_PLACES


def _price(value: object) -> Decimal:
    return _amount(value, "data.price", at_most=ONE)


def _hex(pattern: re.Pattern[str], value: str, path: str) -> str:
    """Lower-cased, so providers that differ in case still join."""
    if pattern.fullmatch(value) is None:
        raise Rejected(f"{path} is not {pattern.pattern}: {value[:80]!r}")
    return value.lower()


def _optional_hex(pattern: re.Pattern[str], value: str | None, path: str) -> str | None:
    return None if value is None else _hex(pattern, value, path)


def _token_id(value: str, path: str) -> str:
    if TOKEN_ID.fullmatch(value) is None:
        raise Rejected(f"{path} is not a uint256 in decimal: {value[:80]!r}")
    return value


def _optional_token_id(value: str | None, path: str) -> str | None:
    return None if value is None else _token_id(value, path)


def _log_index(value: str | None) -> int:
    if value is None:
        raise Rejected("data.log_index missing on a confirmed event")
    return int(_hex(LOG_INDEX, value, "data.log_index"), 16)


@functools.lru_cache(maxsize=1024)
def _epoch(seconds: int) -> datetime:
    # Events of a feed come in bursts of the same second; a cached (immutable) datetime costs a
    # third of building one.
    return datetime.fromtimestamp(seconds, UTC)


def _no_nul(data: msgspec.Struct) -> None:
    for name in data.__struct_fields__:
        value = getattr(data, name)
        if isinstance(value, str) and "\x00" in value:
            raise Rejected(f"data.{name} contains a NUL character")


def _decode(
    decoder: msgspec.json.Decoder[Any], raw: bytes | str, max_bytes: int
) -> tuple[Any, bytes]:
    if len(raw) > max_bytes:
        unit = "characters" if isinstance(raw, str) else "bytes"
        raise Rejected(f"frame of {len(raw)} {unit} exceeds {max_bytes} bytes")
    if isinstance(raw, str):
        try:
            data = raw.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise Rejected(f"invalid UTF-8: {exc.reason} at character {exc.start}") from None
    else:
        data = raw
    if len(data) > max_bytes:
        raise Rejected(f"frame of {len(data)} bytes exceeds {max_bytes} bytes")
    # The whole frame, not only the strings msgspec decodes: JSON text is UTF-8 (RFC 8259), and
    # an unread field or key must not smuggle bytes into `raw` that no text tool can read. The
    # ASCII test costs nanoseconds; the full check runs only on frames that need it.
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Rejected(f"invalid UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        frame = decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise Rejected(f"invalid frame: {exc}") from None
    except msgspec.DecodeError as exc:
        raise Rejected(f"unparseable JSON: {exc}") from None
    except RecursionError:
        raise Rejected("unparseable JSON: nested too deeply") from None
    # The only way a JSON string holds NUL, which Postgres text can't store; rare, so the
    # per-field check runs only when the escape is there at all. Looking for any backslash
    # first (memchr) costs a sixth of the substring search, and most frames have none.
    if b"\\" in data and b"\\u0000" in data and hasattr(frame, "data"):
        _no_nul(frame.data)
    return frame, data


def _fill_ids_clean(d: _OrderFilled) -> bool:
    c, b, m = d.complement_token_id, d.builder, d.metadata
    return FILL_HEX_IDS.match(
        f"{d.tx_hash} {d.order_hash} {d.condition_id} {ABSENT_HASH if b is None else b} "
        f"{ABSENT_HASH if m is None else m} {d.user} {d.taker}"
    ) and _decimal_ids(d.token_id, ABSENT_UINT256 if c is None else c)


def _refund_ids_clean(d: _FeeRefund) -> bool:
    t, c = d.token_id, d.condition_id
    return REFUND_HEX_IDS.match(
        f"{d.tx_hash} {d.order_hash} {ABSENT_HASH if c is None else c} {d.user}"
    ) and _decimal_ids(ABSENT_UINT256 if t is None else t)


# The ids are checked one by one, in field order, only when the joined check fails: so the
# reason names the same field as before, the first bad one.
def _order_filled(d: _OrderFilled, raw: bytes) -> OrderFilledEvent:
    if d.version not in CHAIN_VERSIONS:
        raise Rejected(f"data.version unknown: {d.version}")
    shares_normalized = Decimal(d.shares).scaleb(-SHARE_DECIMALS)
    if d.shares_normalized is not None:
        given = _amount(d.shares_normalized, "data.shares_normalized")
        if given != shares_normalized:
            raise Rejected(
                f"data.shares_normalized {given} is not shares {d.shares} / 10^{SHARE_DECIMALS}"
            )
        shares_normalized = given
    event_time = _epoch(d.timestamp)
    clean = _fill_ids_clean(d)
    # Positional, in field order: msgspec matches 29 keywords to fields at ~45 ns each, which
    # cost more than all the rest of building the event. Each line names its field;
    # test_parse_fast_paths checks every field of a parsed event by name.
    return OrderFilledEvent(
        event_time.date(),  # business_date
        d.status,
        d.tx_hash if clean else _hex(HASH, d.tx_hash, "data.tx_hash"),
        # log_index: a pending event has no place in a block yet, whatever the frame says.
        _log_index(d.log_index) if d.status == "confirmed" else None,
        d.order_hash if clean else _hex(HASH, d.order_hash, "data.order_hash"),
        d.token_id if clean else _token_id(d.token_id, "data.token_id"),
        d.token_label,
        (
            d.complement_token_id
            if clean
            else _optional_token_id(d.complement_token_id, "data.complement_token_id")
        ),
        d.complement_token_label,
        d.side,
        d.market_slug,
        d.condition_id if clean else _hex(HASH, d.condition_id, "data.condition_id"),
        d.market_id,
        d.title,
        d.outcome,
        d.outcome_index,
        d.is_neg_risk,
        d.shares,
        shares_normalized,
        _price(d.price),
        _amount(d.fee, "data.fee"),
        d.user if clean else _hex(ADDRESS, d.user, "data.user"),  # user_address
        d.taker if clean else _hex(ADDRESS, d.taker, "data.taker"),  # taker_address
        d.role,
        d.version,
        d.builder if clean else _optional_hex(HASH, d.builder, "data.builder"),
        d.metadata if clean else _optional_hex(HASH, d.metadata, "data.metadata"),
        event_time,
        raw,
    )


def _fee_refund(d: _FeeRefund, raw: bytes) -> FeeRefundEvent:
    clean = _refund_ids_clean(d)
    return FeeRefundEvent(  # positional in field order, as OrderFilledEvent above
        d.tx_hash if clean else _hex(HASH, d.tx_hash, "data.tx_hash"),
        d.order_hash if clean else _hex(HASH, d.order_hash, "data.order_hash"),
        d.user if clean else _hex(ADDRESS, d.user, "data.user"),  # user_address
        d.token_id if clean else _optional_token_id(d.token_id, "data.token_id"),
        d.condition_id if clean else _optional_hex(HASH, d.condition_id, "data.condition_id"),
        d.market_slug,
        d.title,
        _amount(d.refund, "data.refund"),
        _amount(d.fee_charged, "data.fee_charged"),
        None if d.timestamp is None else _epoch(d.timestamp),  # event_time
        raw,
    )


def _feed_trade(d: _LegacyTrade, raw: bytes) -> FeedTradeEvent:
    shares = _amount(d.shares, "data.shares")
    if not shares:
        raise Rejected("data.shares not positive: 0")
    event_time = _epoch(d.timestamp)
    return FeedTradeEvent(
        business_date=event_time.date(),
        tx_hash=_hex(HASH, d.tx_hash, "data.tx_hash"),
        order_hash=_hex(HASH, d.order_hash, "data.order_hash"),
        asset_id=_token_id(d.asset_id, "data.asset_id"),
        condition_id=_hex(HASH, d.condition_id, "data.condition_id"),
        market_slug=d.market_slug,
        title=d.title,
        outcome=d.outcome,
        shares=shares,
        # This provider already prints shares normalised; the seed shows both equal.
        shares_normalized=(
            shares
            if d.shares_normalized is None
            else _amount(d.shares_normalized, "data.shares_normalized")
        ),
        price=_price(d.price),
        user_address=_hex(ADDRESS, d.user, "data.user"),
        taker_address=_hex(ADDRESS, d.taker, "data.taker"),
        event_time=event_time,
        feed_source=d.source,
        raw=raw,
    )


def orders_frame(raw: bytes | str, *, max_bytes: int = MAX_FRAME_BYTES) -> OrdersFrame:
    """One frame of the "orders" channel (order_filled, fee_refund and the handshake)."""
    frame, data = _decode(_ORDERS, raw, max_bytes)
    if isinstance(frame, _OrdersEvent):
        body = frame.data
        event = (
            _order_filled(body, data) if isinstance(body, _OrderFilled) else _fee_refund(body, data)
        )
        return OrdersEvent(subscription_id=frame.subscription_id, event=event)
    return _handshake(frame)


def trades_frame(raw: bytes | str, *, max_bytes: int = MAX_FRAME_BYTES) -> TradesFrame:
    """One frame of the legacy "trade" message provider."""
    frame, data = _decode(_TRADES, raw, max_bytes)
    if isinstance(frame, _TradeMessage):
        return TradeMessage(
            subscription_id=frame.subscription_id, event=_feed_trade(frame.data, data)
        )
    return _handshake(frame)


def _handshake(frame: _Connected | _Ack | _Error) -> Connected | Ack | Error:
    if isinstance(frame, _Ack):
        return Ack(subscription_id=frame.subscription_id)
    if isinstance(frame, _Error):
        return Error(message=frame.message)
    return Connected()
