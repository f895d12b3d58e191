"""The chain parsers' shortcuts (one shape test over all of an event's ids, a string test for
decimal places, events built positionally) accept exactly what the field-by-field checks accept,
reject with the same reason, and put every value in its own field."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.events import FeeRefundEvent, OrderFilledEvent
from app.ingest import parse
from tests.unit.test_parse import (
    CONDITION,
    ORDER_HASH,
    TAKER,
    TIMESTAMP,
    TX,
    USER,
    fee_refund_data,
    frame,
    order_filled_data,
    orders_event,
    rejected,
)

HASH = "0x" + "ab" * 32
ADDRESS = "0x" + "cd" * 20
MIXED_CONDITION = "0x" + CONDITION[2:].upper()  # "0X" would be no id at all


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        # Two ids in one field, the next one short: the joined ids still count nine.
        ({"tx_hash": f"{HASH} {HASH}", "builder": None}, "data.tx_hash is not"),
        ({"taker": f"{ADDRESS} 1", "complement_token_id": None}, "data.taker is not"),
        ({"complement_token_id": f"1 {HASH}", "metadata": None}, "data.complement_token_id"),
        # A present but empty optional id is no absent one.
        ({"builder": ""}, "data.builder is not"),
        ({"complement_token_id": ""}, "data.complement_token_id is not a uint256"),
        # The first bad field in field order is the one named, as the field checks did.
        ({"order_hash": "0x1", "user": "0x2"}, "data.order_hash is not"),
        ({"price": Decimal("2"), "user": "0x2"}, "data.price above 1"),
    ],
)
def test_joined_ids_cannot_hide_a_bad_one(change: dict[str, Any], reason: str) -> None:
    assert reason in rejected(lambda: parse.orders_frame(frame(order_filled_data(**change))))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"user": f"{ADDRESS} {HASH}", "condition_id": None}, "data.user is not"),
        ({"token_id": ""}, "data.token_id is not a uint256"),
        ({"condition_id": ""}, "data.condition_id is not"),
    ],
)
def test_joined_refund_ids_cannot_hide_a_bad_one(change: dict[str, Any], reason: str) -> None:
    assert reason in rejected(lambda: parse.orders_frame(frame(fee_refund_data(**change))))


def test_absent_optional_ids_stay_absent_and_mixed_case_is_lowered() -> None:
    event = orders_event(
        frame(
            order_filled_data(
                tx_hash="0x" + TX[2:].upper(),
                builder=None,
                metadata=None,
                complement_token_id=None,
            )
        )
    )
    assert isinstance(event, parse.OrderFilledEvent)
    assert (event.tx_hash, event.builder, event.metadata) == (TX, None, None)
    assert event.complement_token_id is None
    refund = orders_event(frame(fee_refund_data(token_id=None, condition_id=MIXED_CONDITION)))
    assert isinstance(refund, parse.FeeRefundEvent)
    assert (refund.token_id, refund.condition_id) == (None, CONDITION)


@pytest.mark.parametrize(
    ("fee", "accepted"),
    [
        (Decimal("0.123456789012345678"), True),  # 18 places, the longest short string
        (Decimal("0.1234567890123456789"), False),
        (Decimal("1.000000000000000000000"), False),  # zeros are places too
        (Decimal("123456789012345.12"), True),  # long, but few places
        (Decimal("1E-18"), True),  # printed with an exponent
        (Decimal("1.5E-19"), False),
        (Decimal("0E-18"), True),
        (Decimal("0E-19"), False),
        (Decimal("1E+3"), True),
    ],
)
def test_decimal_places_are_counted_exactly(fee: Decimal, accepted: bool) -> None:
    raw = frame(order_filled_data(fee=fee))
    if accepted:
        event = orders_event(raw)
        assert isinstance(event, parse.OrderFilledEvent)
        assert event.fee == fee
    else:
        assert "data.fee has more than 18 decimal places" in rejected(
            lambda: parse.orders_frame(raw)
        )


# --- the ids' shape test against each field's own regex ----------------------------------------

LOWER_HASH = re.compile(parse.HASH.pattern.replace("a-fA-F", "a-f"))
LOWER_ADDRESS = re.compile(parse.ADDRESS.pattern.replace("a-fA-F", "a-f"))
# Characters an id must not have, or only in some places: digits of other scripts, upper case,
# "x" and spaces out of place, a newline (which `$` would let through), non-ASCII letters.
TRICKY = "0aAfFgxX \n\u0660\u00e9\ud800"


@st.composite
def id_like(draw: st.DrawFn, valid: st.SearchStrategy[str]) -> str:
    """A valid id, or one a single edit away from valid, or anything short."""
    value = draw(valid)
    edit = draw(st.sampled_from(["keep", "insert", "replace", "delete", "upper", "any"]))
    at = draw(st.integers(0, len(value)))
    char = draw(st.sampled_from(TRICKY))
    if edit == "insert":
        return value[:at] + char + value[at:]
    if edit == "replace":
        return value[:at] + char + value[at + 1 :]
    if edit == "delete":
        return value[:at] + value[at + 1 :]
    if edit == "upper":
        return value.upper()
    if edit == "any":
        return draw(st.text(TRICKY + "0123456789abcdef", max_size=80))
    return value


def hex_id(digits: int) -> st.SearchStrategy[str]:
    return id_like(st.text("0123456789abcdef", min_size=digits, max_size=digits).map("0x".__add__))


TOKEN = id_like(st.text("0123456789", min_size=1, max_size=78))


FILL_IDS = {
    "tx_hash": (LOWER_HASH, hex_id(64)),
    "order_hash": (LOWER_HASH, hex_id(64)),
    "condition_id": (LOWER_HASH, hex_id(64)),
    "user": (LOWER_ADDRESS, hex_id(40)),
    "taker": (LOWER_ADDRESS, hex_id(40)),
    "token_id": (parse.TOKEN_ID, TOKEN),
    "complement_token_id": (parse.TOKEN_ID, st.none() | TOKEN),
    "builder": (LOWER_HASH, st.none() | hex_id(64)),
    "metadata": (LOWER_HASH, st.none() | hex_id(64)),
}
REFUND_IDS = {
    "tx_hash": (LOWER_HASH, hex_id(64)),
    "order_hash": (LOWER_HASH, hex_id(64)),
    "user": (LOWER_ADDRESS, hex_id(40)),
    "token_id": (parse.TOKEN_ID, st.none() | TOKEN),
    "condition_id": (LOWER_HASH, st.none() | hex_id(64)),
}


def clean(
    patterns: Mapping[str, tuple[re.Pattern[str], object]], ids: dict[str, str | None]
) -> bool:
    """What the field-by-field checks accept without lower-casing anything."""
    return all(v is None or patterns[name][0].fullmatch(v) for name, v in ids.items())


def strategies(
    patterns: dict[str, tuple[re.Pattern[str], st.SearchStrategy[str | None]]],
) -> st.SearchStrategy[dict[str, str | None]]:
    return st.fixed_dictionaries({name: strategy for name, (_, strategy) in patterns.items()})


@settings(max_examples=1500)
@given(ids=strategies(FILL_IDS))
def test_fill_ids_shape_test_is_each_fields_regex(ids: dict[str, str | None]) -> None:
    fill = msgspec.structs.replace(parse._ORDERS.decode(frame(order_filled_data())).data, **ids)
    assert parse._fill_ids_clean(fill) == clean(FILL_IDS, ids)


@settings(max_examples=800)
@given(ids=strategies(REFUND_IDS))
def test_refund_ids_shape_test_is_each_fields_regex(ids: dict[str, str | None]) -> None:
    refund = msgspec.structs.replace(parse._ORDERS.decode(frame(fee_refund_data())).data, **ids)
    assert parse._refund_ids_clean(refund) == clean(REFUND_IDS, ids)


# --- events built positionally: every value in its own field -----------------------------------


def fields(event: msgspec.Struct) -> dict[str, tuple[type, object]]:
    return {name: (type(v), v) for name in event.__struct_fields__ if (v := getattr(event, name))}


def test_every_value_of_an_order_filled_lands_in_its_own_field() -> None:
    # Values that no two fields share (0 == False and 1 == True, so neither is used).
    data = order_filled_data(
        token_label="Up label",
        outcome="Up outcome",
        outcome_index=3,
        is_neg_risk=True,
        builder="0x" + "11" * 32,
        metadata="0x" + "22" * 32,
    )
    raw = frame(data)
    event = orders_event(raw)
    assert fields(event) == fields(
        OrderFilledEvent(
            business_date=date(2026, 2, 4),
            status="confirmed",
            tx_hash=TX,
            log_index=0x21E,
            order_hash=ORDER_HASH.lower(),
            token_id=data["token_id"],
            token_label="Up label",
            complement_token_id="9876543210",
            complement_token_label="Down",
            side="SELL",
            market_slug="btc-updown-15m-1770244200",
            condition_id=CONDITION,
            market_id="1329542",
            title=data["title"],
            outcome="Up outcome",
            outcome_index=3,
            is_neg_risk=True,
            shares=2_000_000,
            shares_normalized=Decimal(2),
            price=Decimal("0.04"),
            fee=Decimal("0.008"),
            user_address=USER,
            taker_address=TAKER,
            role="maker",
            version=2,
            builder="0x" + "11" * 32,
            metadata="0x" + "22" * 32,
            event_time=datetime.fromtimestamp(TIMESTAMP, UTC),
            raw=raw,
        )
    )


def test_every_value_of_a_fee_refund_lands_in_its_own_field() -> None:
    raw = frame(fee_refund_data(timestamp=TIMESTAMP))
    event = orders_event(raw)
    assert fields(event) == fields(
        FeeRefundEvent(
            tx_hash=TX,
            order_hash=ORDER_HASH.lower(),
            user_address=USER,
            token_id="53031995840519",
            condition_id=CONDITION,
            market_slug="btc-updown-15m-1770242400",
            title="Bitcoin Up or Down - February 4, 5:00PM-5:15PM ET",
            refund=Decimal("9.9904"),
            fee_charged=Decimal("0.0096"),
            event_time=datetime.fromtimestamp(TIMESTAMP, UTC),
            raw=raw,
        )
    )
