"""A sweep over seeds: every payload the venue serves on a day with every break kind injected is
one our consumers accept. A break must be found by the reconciler, never dead-lettered by ingest
or refused by the Report API snapshot, and a generator draw that breaks this shows only on some
seeds. No sockets: the stored payloads are what the servers send, byte for byte (the gRPC and
websocket tests check that), wrapped here in the messages and frames they travel in."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.protobuf.message import Message

from app.ingest import parse
from app.ingest.dropcopy import STREAMS
from app.recon.report_client import execution_rows, position_rows, trade_rows
from app.venue.feeds import ORDERS_FEED, TRADES_FEED, FeedSpec
from app.venue.model import INJECTABLE_KINDS, DayConfig, StreamName
from app.venue.store import VenueStore
from polymarket.v1 import dropcopy_pb2, report_pb2, trading_pb2

SEEDS = range(100, 120)
SCALE = 0.003  # small, yet every seed of the sweep places two breaks of every kind
EVERYTHING = 10**7
RESPONSES: dict[str, type[Message]] = {
    "executions": dropcopy_pb2.CreateDropCopySubscriptionResponse,
    "trade_captures": dropcopy_pb2.CreateTradeCaptureReportSubscriptionResponse,
    "instrument_states": dropcopy_pb2.CreateInstrumentStateChangeSubscriptionResponse,
    "position_changes": dropcopy_pb2.CreatePositionChangeSubscriptionResponse,
}
FRAME_PARSERS: dict[str, Callable[[bytes], object]] = {
    "orders": parse.orders_frame,
    "trades": parse.trades_frame,
}


@pytest.fixture(params=SEEDS, ids=lambda seed: f"seed{seed}")
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VenueStore]:
    config = DayConfig(seed=request.param, scale=SCALE)
    assert config.breaks == {str(kind): 2 for kind in INJECTABLE_KINDS}
    with VenueStore.build(config, tmp_path / "day.sqlite", parallel=False) as built:
        yield built


def rejections(items: Sequence[Any], accept: Callable[[Any], object]) -> list[str]:
    out = []
    for item in items:
        try:
            accept(item)
        except parse.Rejected as exc:
            out.append(exc.reason)
    return out


def test_every_served_payload_parses(store: VenueStore) -> None:
    counts = store.truth()["counts"]
    assert isinstance(counts, dict)
    business_date = store.config.business_date
    refused: dict[str, list[str]] = {}

    # DropCopy: each stream's messages in the response type the consumer reads, through the
    # consumer's own field name and parser.
    executions: list[trading_pb2.Execution] = []
    for spec in STREAMS:
        name: StreamName = spec.name  # type: ignore[assignment]  # the venue's stream names
        rows = store.stream(name, 0, [], [], EVERYTHING)
        delivered = answer(RESPONSES[name], spec.items, [row.payload for row in rows])
        assert len(delivered) == counts[name] > 0
        refused[spec.source] = rejections(delivered, spec.parse)
        if name == "executions":
            executions = delivered

    # Report API: what the snapshot does with each answer; it refuses a whole day on one bad row.
    search: dict[str, Any] = {
        "start_us": None,
        "end_us": None,
        "symbol": None,
        "accounts": [],
        "after_key": None,
        "limit": EVERYTHING,
    }
    payloads, _ = store.search_executions(**search, exec_ids=[], order_id=None, types=[])
    page = answer(report_pb2.SearchExecutionsResponse, "executions", payloads)
    kept, other_dates = execution_rows(page, business_date)
    assert (len(kept), other_dates) == (counts["report_executions"], 0)

    payloads, _ = store.search_trades(**search, trade_ids=[], states=[])
    kept, other_dates = trade_rows(
        answer(report_pb2.SearchTradesResponse, "trades", payloads), business_date
    )
    assert (len(kept), other_dates) == (counts["report_trades"], 0)

    listed = answer(report_pb2.ListPositionsResponse, "positions", store.list_positions([], []))
    assert len(position_rows(listed, datetime.now(UTC))) == counts["positions"] > 0

    # No consumer reads SearchOrders yet; an order must pass the checks the execution parser
    # makes of the order inside an execution.
    payloads, _ = store.search_orders(**search, order_ids=[])
    orders = answer(report_pb2.SearchOrdersResponse, "orders", payloads)
    assert len(orders) == counts["report_orders"] > 0
    refused["report.orders"] = rejections(orders, lambda order: as_execution(executions[0], order))

    # Websocket feeds: every stored event in the frame the feed sends it in.
    for feed, read in ((ORDERS_FEED, store.orders_feed), (TRADES_FEED, store.trades_feed)):
        frames = [event_frame(feed, row.data) for row in read(0, EVERYTHING)]
        assert len(frames) == counts[f"{feed.name}_feed"] > 0
        refused[f"ws.{feed.name}"] = rejections(frames, FRAME_PARSERS[feed.name])

    assert {source: reasons for source, reasons in refused.items() if reasons} == {}


def answer(response_type: type[Message], field: str, payloads: Sequence[bytes]) -> list[Any]:
    """The elements of a response carrying `payloads` in its repeated `field`, as a client
    decodes them from the wire."""
    response = response_type()
    items = getattr(response, field)
    for payload in payloads:
        items.add().MergeFromString(payload)
    return list(getattr(response_type.FromString(response.SerializeToString()), field))


def as_execution(template: trading_pb2.Execution, order: trading_pb2.Order) -> object:
    execution = trading_pb2.Execution()
    execution.CopyFrom(template)
    execution.order.CopyFrom(order)
    return parse.execution(execution)


def event_frame(feed: FeedSpec, data: bytes) -> bytes:
    return orjson.dumps(
        {"type": feed.message_type, "subscription_id": "sub_sweep", "data": orjson.Fragment(data)}
    )
