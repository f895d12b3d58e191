"""The chain parsers' shortcuts (one regex over all of an event's ids, a string test for decimal
places) accept exactly what the field-by-field checks accept, and reject with the same reason."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from app.ingest import parse
from tests.unit.test_parse import (
    CONDITION,
    TX,
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
