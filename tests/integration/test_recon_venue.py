"""The whole engine against a simulated venue day: the day's streams and feeds go straight
through the ingest parsers and writer, the Report API snapshot comes over real gRPC on
loopback, and the breaks found must be exactly the venue's ground truth — all of them, nothing
else — on the first run and on a second one."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import Engine, text

from app.domain.breaks import RuleConfig
from app.domain.events import DeadLetter
from app.ingest import parse
from app.ingest.auth import StaticToken
from app.ingest.writer import BatchWriter
from app.recon.report_client import ReportClientConfig, ReportEndpoint
from app.recon.service import reconcile
from app.venue.grpc_server import GrpcOptions
from app.venue.model import DayConfig
from app.venue.run import VenueHandle, VenueOptions, open_store, serve_store
from app.venue.store import VenueStore
from polymarket.v1 import trading_pb2

# Every break kind, ~5,000 orders-channel events and ~1,000 executions.
DAY = DayConfig(seed=1, scale=0.005)

PAGE = 5000
STREAMS: dict[str, tuple[type[Any], Any]] = {
    "executions": (trading_pb2.Execution, parse.execution),
    "trade_captures": (trading_pb2.Trade, parse.trade_capture),
    "instrument_states": (trading_pb2.Instrument, parse.instrument),
    "position_changes": (trading_pb2.PositionChange, parse.position_change),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> VenueStore:
    return open_store(DAY, tmp_path_factory.getbasetemp() / "recon-venue-day")


@pytest.fixture
def venue(store: VenueStore) -> Iterator[VenueHandle]:
    options = VenueOptions(grpc=GrpcOptions(report_requests_per_min=100_000))
    with serve_store(store, options) as handle:
        yield handle


def ingest(engine: Engine, store: VenueStore) -> None:
    """What `recon ingest` would store from a fault-free delivery of the whole day."""
    writer = BatchWriter(engine)
    for name, (message, parser) in STREAMS.items():
        after = 0
        while rows := store.stream(name, after, [], [], PAGE):  # type: ignore[arg-type]
            events, dead = [], []
            for row in rows:
                try:
                    events.append(parser(message.FromString(row.payload)))
                except parse.Rejected as exc:
                    dead.append(DeadLetter(f"dropcopy.{name}", exc.reason, row.payload))
            writer.write(events, dead, None)
            after = rows[-1].seq
    for feed, frame, parser in (
        (store.orders_feed, b'{"type":"event","subscription_id":"s","data":', parse.orders_frame),
        (store.trades_feed, b'{"type":"trade","subscription_id":"s","data":', parse.trades_frame),
    ):
        after = 0
        while feed_rows := feed(after, PAGE):
            writer.write([parser(frame + r.data + b"}").event for r in feed_rows], [], None)
            after = feed_rows[-1].seq


def open_breaks(engine: Engine) -> set[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT kind, key FROM recon_break WHERE status = 'open'"))
        return {(row.kind, row.key) for row in rows}


def test_a_venue_day_gives_exactly_its_ground_truth(
    engine: Engine, store: VenueStore, venue: VenueHandle
) -> None:
    ingest(engine, store)
    endpoint = ReportEndpoint(
        target=venue.grpc_target,
        tls=False,
        allow_insecure=False,
        tokens=StaticToken("devtoken"),
        participant_id="firms/recon/users/tests",
        config=replace(ReportClientConfig(), requests_per_minute=100_000, page_size=500),
    )
    truth = store.truth()
    expected = {(b["kind"], b["key"]) for b in truth["breaks"]}  # type: ignore[index, union-attr]
    assert len(expected) >= 16

    first = reconcile(engine, DAY.business_date, report=endpoint, rules=RuleConfig())
    assert first.snapshot is not None
    assert first.snapshot["calls"] > 3  # it paged
    found = open_breaks(engine)
    assert sorted(found - expected) == []
    assert sorted(expected - found) == []
    assert sorted(expected - found) == []

    second = reconcile(engine, DAY.business_date, report=endpoint, rules=RuleConfig())
    assert open_breaks(engine) == expected
    assert second.lifecycle["opened"] == 0
    assert second.lifecycle["still_open"] == len(expected)
