"""The venue contract: generated code is fresh, and every message round-trips on the wire."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, timestamp_pb2
from google.protobuf.message import Message

from polymarket.v1 import dropcopy_pb2, enums_pb2, report_pb2, trading_pb2

ROOT = Path(__file__).resolve().parents[2]
MODULES = (enums_pb2, trading_pb2, dropcopy_pb2, report_pb2)


def test_generated_code_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _ts(seconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=123_000)


def _execution(n: int) -> trading_pb2.Execution:
    return trading_pb2.Execution(
        id=f"exec-{n}",
        order=trading_pb2.Order(
            id=f"ord-{n}",
            clord_id=f"cl-{n}",
            symbol="tec-nfl-sbw-2026-02-08-kc",
            side=enums_pb2.SIDE_SELL,
            type=enums_pb2.ORDER_TYPE_LIMIT,
            time_in_force=enums_pb2.TIME_IN_FORCE_GOOD_TILL_CANCEL,
            order_qty=1_000,
            price=525,
            cum_qty=100,
            leaves_qty=900,
            avg_px=525,
            state=enums_pb2.ORDER_STATE_PARTIALLY_FILLED,
            account="firms/F1/accounts/A1",
            participant="firms/F1/users/U1",
            create_time=_ts(1_763_700_000),
            insert_time=_ts(1_763_700_001),
        ),
        last_shares=100,
        last_px=525,
        type=enums_pb2.EXECUTION_TYPE_PARTIAL_FILL,
        text="partial",
        transact_time=_ts(1_763_700_002),
        trade_id="trade-1",
        aggressor=True,
        commission_notional_collected=-42,
        transact_trade_date=trading_pb2.TradeDate(year=2026, month=11, day=21),
    )


def _position() -> trading_pb2.Position:
    return trading_pb2.Position(
        account="firms/F1/accounts/A1",
        symbol="s",
        net_position=-5,
        qty_bought=10,
        qty_sold=15,
        cost=-2_625,
        realized=17,
        bod_position=3,
        update_time=_ts(1),
    )


SAMPLES: list[Message] = [
    _execution(1),
    trading_pb2.Trade(
        id="trade-1",
        aggressor=_execution(1),
        passive=_execution(2),
        trade_type=enums_pb2.TRADE_TYPE_BLOCK,
        state=enums_pb2.TRADE_STATE_BUSTED,
        text="busted by exchange",
        trade_link_id="link-1",
        update_time=_ts(5),
    ),
    trading_pb2.Instrument(
        symbol="s",
        state=enums_pb2.INSTRUMENT_STATE_HALTED,
        name="n",
        price_scale=1_000,
        fractional_qty_scale=100,
        update_time=_ts(2),
    ),
    trading_pb2.PositionChange(position=_position(), change_time=_ts(3)),
    dropcopy_pb2.CreateDropCopySubscriptionRequest(
        resume_token=b"\x00\xfftok", resume_time=_ts(4), symbols=["a", "b"], firms=["F1"]
    ),
    dropcopy_pb2.CreateDropCopySubscriptionResponse(
        resume_token=b"t", executions=[_execution(1), _execution(2)]
    ),
    dropcopy_pb2.CreateTradeCaptureReportSubscriptionRequest(
        resume_token=b"t", resume_time=_ts(4), symbols=["a"], firms=["F1"]
    ),
    dropcopy_pb2.CreateTradeCaptureReportSubscriptionResponse(
        resume_token=b"t", trade_capture_reports=[trading_pb2.Trade(id="x")]
    ),
    dropcopy_pb2.CreateInstrumentStateChangeSubscriptionRequest(
        resume_token=b"t", resume_time=_ts(4), symbols=["a"]
    ),
    dropcopy_pb2.CreateInstrumentStateChangeSubscriptionResponse(
        resume_token=b"t", instruments=[trading_pb2.Instrument(symbol="a")]
    ),
    dropcopy_pb2.CreatePositionChangeSubscriptionRequest(
        resume_token=b"t", resume_time=_ts(4), symbols=["a"], firms=["F1"]
    ),
    dropcopy_pb2.CreatePositionChangeSubscriptionResponse(
        resume_token=b"t",
        position_changes=[trading_pb2.PositionChange(position=_position(), change_time=_ts(9))],
    ),
    report_pb2.SearchExecutionsRequest(
        page_size=500,
        page_token="p",
        start_time=_ts(1),
        end_time=_ts(2),
        symbol="s",
        accounts=["a"],
        exec_ids=["e"],
        order_id="o",
        types=[enums_pb2.EXECUTION_TYPE_FILL],
    ),
    report_pb2.SearchExecutionsResponse(executions=[_execution(3)], next_page_token="n", eof=True),
    report_pb2.SearchTradesRequest(
        page_size=1,
        page_token="p",
        start_time=_ts(1),
        end_time=_ts(2),
        symbol="s",
        accounts=["a"],
        trade_ids=["t"],
        states=[enums_pb2.TRADE_STATE_CLEARED],
    ),
    report_pb2.SearchTradesResponse(trades=[trading_pb2.Trade(id="t")], next_page_token="n"),
    report_pb2.SearchOrdersRequest(
        page_size=1,
        page_token="p",
        start_time=_ts(1),
        end_time=_ts(2),
        symbol="s",
        accounts=["a"],
        order_ids=["o"],
    ),
    report_pb2.SearchOrdersResponse(orders=[_execution(4).order], next_page_token="n"),
    report_pb2.ListPositionsRequest(accounts=["a"], symbols=["s"]),
    report_pb2.ListPositionsResponse(positions=[_position()]),
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_message_round_trips(message: Message) -> None:
    wire = message.SerializeToString(deterministic=True)
    again = type(message).FromString(wire)
    assert again == message
    assert again.SerializeToString(deterministic=True) == wire
    assert wire, "a sample with every field set must not serialise to nothing"


def test_every_message_of_the_contract_is_sampled() -> None:
    sampled = {type(m).DESCRIPTOR.full_name for m in SAMPLES}
    sampled |= {"polymarket.v1.Order", "polymarket.v1.TradeDate", "polymarket.v1.Position"}
    declared = {
        f"polymarket.v1.{name}"
        for module in MODULES
        for name in module.DESCRIPTOR.message_types_by_name
    }
    assert declared <= sampled, declared - sampled


@pytest.mark.parametrize(
    ("enum", "expected"),
    [
        (enums_pb2.Side, {"SIDE_BUY": 1, "SIDE_SELL": 2}),
        (enums_pb2.TradeState, {"TRADE_STATE_BUSTED": 3, "TRADE_STATE_RETRY_REQUEST": 9}),
        (enums_pb2.ExecutionType, {"EXECUTION_TYPE_FILL": 2, "EXECUTION_TYPE_DONE_FOR_DAY": 7}),
        (enums_pb2.OrderState, {"ORDER_STATE_NEW": 0, "ORDER_STATE_PENDING_RISK": 10}),
        (enums_pb2.InstrumentState, {"INSTRUMENT_STATE_CLOSED": 0, "INSTRUMENT_STATE_HALTED": 6}),
        (enums_pb2.TradeType, {"TRADE_TYPE_REGULAR": 1, "TRADE_TYPE_CROSS": 4}),
    ],
)
def test_enum_numbers_follow_the_documented_contract(
    enum: object, expected: dict[str, int]
) -> None:
    for name, number in expected.items():
        assert enum.Value(name) == number  # type: ignore[attr-defined]


def test_field_numbers_follow_the_wire_contract() -> None:
    proto = descriptor_pb2.FileDescriptorProto()
    trading_pb2.DESCRIPTOR.CopyToProto(proto)
    fields = {(m.name, f.name): f.number for m in proto.message_type for f in m.field}
    assert fields[("Execution", "commission_notional_collected")] == 10
    assert fields[("Execution", "transact_trade_date")] == 11
    assert fields[("Order", "insert_time")] == 16
    assert fields[("Trade", "trade_link_id")] == 7
    assert fields[("Position", "bod_position")] == 8
    assert fields[("Instrument", "fractional_qty_scale")] == 5
