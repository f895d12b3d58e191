"""The simulated venue's websocket feeds over real sockets: handshake, subscriptions and their
filters, live timeline, byte-exact events, pings and injected faults."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from app.venue.faults import FaultSpec
from app.venue.feeds import FeedOptions
from app.venue.model import FeedRow
from app.venue.run import VenueHandle, VenueOptions, serve_store

from ._venue_day import VenueStore, small_store

RECV_S = 5.0


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> VenueStore:
    return small_store(tmp_path_factory)


@pytest.fixture(scope="module")
def replay_venue(store: VenueStore) -> Iterator[VenueHandle]:
    with serve_store(store, VenueOptions(feeds=FeedOptions(replay=True))) as handle:
        yield handle


@pytest.fixture(scope="module")
def orders(store: VenueStore) -> list[FeedRow]:
    return store.orders_feed(0, 10**7)


def request(action: str = "subscribe", kind: str = "orders", **fields: Any) -> str:
    return json.dumps(
        {"action": action, "platform": "polymarket", "version": 1, "type": kind, **fields}
    )


def recv_json(ws: ClientConnection) -> dict[str, Any]:
    message = json.loads(ws.recv(timeout=RECV_S))
    assert isinstance(message, dict)
    return message


def subscribe(ws: ClientConnection, kind: str = "orders", **filters: Any) -> str:
    ws.send(request(kind=kind, filters=filters))
    reply = recv_json(ws)
    assert reply["type"] == "ack", reply
    sid = reply["subscription_id"]
    assert isinstance(sid, str)
    assert sid.startswith("sub_")
    int(sid.removeprefix("sub_"), 16)
    return sid


def frame(message_type: str, sid: str, row: FeedRow) -> str:
    prefix = f'{{"type":"{message_type}","subscription_id":"{sid}","data":'
    return prefix + row.data.decode() + "}"


def receive(ws: ClientConnection, n: int) -> list[str]:
    out = []
    for _ in range(n):
        message = ws.recv(timeout=RECV_S)
        assert isinstance(message, str), "events are text frames"
        out.append(message)
    return out


def assert_silent(ws: ClientConnection, seconds: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        ws.recv(timeout=seconds)


@contextmanager
def connected(url: str) -> Iterator[ClientConnection]:
    with connect(url, open_timeout=5, close_timeout=0.2) as ws:
        assert recv_json(ws) == {"type": "connected"}
        yield ws


def test_unknown_key_gets_http_401(replay_venue: VenueHandle) -> None:
    url = replay_venue.orders_url.rsplit("/", 1)[0] + "/wrong"
    with pytest.raises(InvalidStatus) as info, connect(url, open_timeout=5):
        pass
    assert info.value.response.status_code == 401


def test_whole_day_byte_exact_then_silence(
    store: VenueStore, replay_venue: VenueHandle, orders: list[FeedRow]
) -> None:
    assert {r.status for r in orders} == {"confirmed", "pending"}
    with connected(replay_venue.orders_url) as ws:
        sid = subscribe(ws, users=["*"], status="all")
        assert receive(ws, len(orders)) == [frame("event", sid, r) for r in orders]
        assert_silent(ws)
    trades = store.trades_feed(0, 10**7)
    assert trades
    with connected(replay_venue.trades_url) as ws:
        sid = subscribe(ws, kind="trades", users=["*"])
        assert receive(ws, len(trades)) == [frame("trade", sid, r) for r in trades]
        assert_silent(ws)


def test_filters(replay_venue: VenueHandle, orders: list[FeedRow]) -> None:
    """Several subscriptions on one connection, each with its own filter and own timeline."""
    cid, slug = orders[0].condition_id, orders[-1].market_slug
    user = orders[len(orders) // 2].users[0]
    cases: list[tuple[dict[str, Any], list[FeedRow]]] = [
        ({"condition_ids": [cid], "status": "all"}, [r for r in orders if r.condition_id == cid]),
        (
            {"market_slugs": [slug]},
            [r for r in orders if r.market_slug == slug and r.status == "confirmed"],
        ),
        ({"users": [user.upper()], "status": "all"}, [r for r in orders if user in r.users]),
        ({"users": ["*"], "status": "pending"}, [r for r in orders if r.status == "pending"]),
        ({"users": ["*"]}, [r for r in orders if r.status == "confirmed"]),
        (
            {"condition_ids": [cid], "market_slugs": [slug], "status": "all"},
            [r for r in orders if r.condition_id == cid and r.market_slug == slug],
        ),
    ]
    for filters, want in cases[:-1]:
        assert 0 < len(want) < len(orders), filters
    with connected(replay_venue.orders_url) as ws:
        for filters, _ in cases:
            ws.send(request(filters=filters))
        acks: list[str] = []  # in request order, among the first subscriptions' events
        got: dict[str, list[str]] = {}
        for message in receive(ws, len(cases) + sum(len(want) for _, want in cases)):
            parsed = json.loads(message)
            if parsed["type"] == "ack":
                acks.append(parsed["subscription_id"])
            else:
                got.setdefault(parsed["subscription_id"], []).append(message)
        assert_silent(ws)
    assert len(acks) == len(cases)
    for sid, (_, want) in zip(acks, cases, strict=True):
        assert got.get(sid, []) == [frame("event", sid, r) for r in want]


def test_update_and_unsubscribe(store: VenueStore, orders: list[FeedRow]) -> None:
    options = VenueOptions(feeds=FeedOptions(replay=True, pace_events_per_s=4000))
    first, second = (
        orders[0].condition_id,
        next(r.condition_id for r in orders if r.condition_id != orders[0].condition_id),
    )
    with serve_store(store, options) as venue, connected(venue.orders_url) as ws:
        sid = subscribe(ws, condition_ids=[first], status="all")
        for message in receive(ws, 5):
            assert json.loads(message)["data"]["condition_id"] == first
        ws.send(request("update", subscription_id=sid, filters={"condition_ids": [second]}))
        for _ in range(len(orders)):  # events queued before the update, then the ack
            message = recv_json(ws)
            if message["type"] == "ack":
                break
            assert message["data"]["condition_id"] == first
        assert message == {"type": "ack", "subscription_id": sid}
        for message in receive(ws, 5):
            event = json.loads(message)
            assert event["subscription_id"] == sid
            assert event["data"]["condition_id"] == second
            assert event["data"]["status"] == "confirmed"
        ws.send(json.dumps({"action": "unsubscribe", "version": 1, "subscription_id": sid}))
        for _ in range(len(orders)):
            message = recv_json(ws)
            if message["type"] == "ack":
                break
        assert message == {"type": "ack", "subscription_id": sid}
        assert_silent(ws)


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("{not json", "JSON"),
        ("[1, 2]", "object"),
        (request(filters={"users": ["*"]}, version=2), "version"),
        (request(filters={"users": ["*"]}, platform="kalshi"), "platform"),
        (request(filters={"users": ["*"]}, kind="prices"), "type"),
        (request(action="subscribe"), "filters"),
        (request(filters={}), "at least one"),
        (request(filters={"users": "0xabc"}), "users"),
        (request(filters={"users": ["*"], "status": "mined"}), "status"),
        (request(filters={"users": ["*"], "wallets": []}), "unknown filter"),
        (request(action="update", subscription_id="sub_00", filters={"users": ["*"]}), "unknown"),
        (json.dumps({"action": "unsubscribe", "version": 1}), "subscription_id"),
        (request(action="replay"), "action"),
    ],
)
def test_bad_requests_get_an_error_and_keep_the_connection(
    replay_venue: VenueHandle, message: str, error: str
) -> None:
    with connected(replay_venue.orders_url) as ws:
        ws.send(message)
        reply = recv_json(ws)
        assert reply["type"] == "error"
        assert error in reply["message"]
        subscribe(ws, users=["*"])


def test_live_feed_starts_at_the_first_subscriber_and_never_replays(
    store: VenueStore, orders: list[FeedRow]
) -> None:
    options = VenueOptions(feeds=FeedOptions(pace_events_per_s=2000))
    index = {r.data: i for i, r in enumerate(orders)}
    with serve_store(store, options) as venue:
        with connected(venue.orders_url) as first:
            time.sleep(0.2)  # a connection alone does not start the day
            sid = subscribe(first, users=["*"], status="all")
            seen = [data_of(m, sid) for m in receive(first, 100)]
        assert seen[0] == orders[0].data
        time.sleep(0.2)
        with connected(venue.orders_url) as second:
            sid = subscribe(second, users=["*"], status="all")
            message = second.recv(timeout=RECV_S)
        assert index[data_of(message, sid)] > index[seen[-1]]


def data_of(message: str | bytes, sid: str) -> bytes:
    """The raw `data` bytes of an event frame."""
    prefix = f'{{"type":"event","subscription_id":"{sid}","data":'
    assert isinstance(message, str)
    assert message.startswith(prefix)
    assert message.endswith("}")
    return message[len(prefix) : -1].encode()


def test_served_counts_match_the_truth(store: VenueStore, orders: list[FeedRow]) -> None:
    counts = store.truth()["counts"]
    assert counts["orders_feed"] == len(orders)
    assert counts["trades_feed"] == len(store.trades_feed(0, 10**7))


def test_ws_faults_disconnect_drop_duplicate_malformed(
    store: VenueStore, orders: list[FeedRow]
) -> None:
    spec = FaultSpec(disconnect_every=300, duplicate_rate=0.05, malformed_rate=0.05, seed=11)
    options = VenueOptions(feeds=FeedOptions(replay=True), faults=spec)
    with serve_store(store, options) as venue:
        with connected(venue.orders_url) as ws:
            subscribe(ws, users=["*"], status="all")
            messages, closed = read_until_closed(ws)
        valid = [m for m in messages if is_valid_event(m)]
        events, bad = len(valid), len(messages) - len(valid)
        assert closed.rcvd is not None
        assert closed.rcvd.code == 1012
        log = venue.fault_log
        duplicates = len(log.records(kind="duplicate", channel="ws.orders"))
        malformed = len(log.records(kind="malformed", channel="ws.orders"))
        assert duplicates > 0
        assert malformed > 0
        assert bad == malformed
        assert events == 300 + duplicates
        assert log.records(kind="disconnect", channel="ws.orders")

    drop = VenueOptions(feeds=FeedOptions(replay=True), faults=FaultSpec(ws_drop_every=250))
    with serve_store(store, drop) as venue, connected(venue.trades_url) as ws:
        subscribe(ws, kind="trades", users=["*"])
        receive(ws, 250)
        with pytest.raises(ConnectionClosedError) as dropped:
            ws.recv(timeout=RECV_S)
        assert dropped.value.rcvd is None, "a dropped link sends no close frame"
        assert venue.fault_log.records(kind="drop", channel="ws.trades")


def read_until_closed(ws: ClientConnection) -> tuple[list[str | bytes], ConnectionClosed]:
    messages: list[str | bytes] = []
    try:
        for _ in range(100_000):
            messages.append(ws.recv(timeout=RECV_S))
    except ConnectionClosed as exc:
        return messages, exc
    pytest.fail("the server never closed the connection")


def is_valid_event(message: str | bytes) -> bool:
    try:
        data = json.loads(message)["data"]
        return data["event_type"] in {"order_filled", "fee_refund"} and isinstance(
            data["tx_hash"], str
        )
    except (ValueError, KeyError, TypeError):
        return False


def test_reorder_window_keeps_every_event(store: VenueStore, orders: list[FeedRow]) -> None:
    window = 6
    options = VenueOptions(
        feeds=FeedOptions(replay=True), faults=FaultSpec(reorder_window=window, seed=5)
    )
    with serve_store(store, options) as venue, connected(venue.orders_url) as ws:
        sid = subscribe(ws, users=["*"], status="all")
        got = receive(ws, len(orders))
        assert_silent(ws)
    want = [frame("event", sid, r) for r in orders]
    assert got != want
    assert sorted(got) == sorted(want)
    position = {f: i for i, f in enumerate(want)}
    assert max(abs(position[f] - i) for i, f in enumerate(got)) < window


def test_ping_drops_a_client_that_never_answers(store: VenueStore) -> None:
    options = VenueOptions(feeds=FeedOptions(ping_interval_s=0.2, ping_timeout_s=0.2))
    with serve_store(store, options) as venue:
        host, port = venue.orders_url.removeprefix("ws://").split("/")[0].split(":")
        key = base64.b64encode(os.urandom(16)).decode()
        with socket.create_connection((host, int(port)), timeout=1) as raw:
            raw.sendall(
                (
                    "GET /ws/devkey HTTP/1.1\r\n"
                    f"Host: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            received = b""
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # read frames, answer nothing, until closed
                try:
                    chunk = raw.recv(4096)
                except TimeoutError:
                    continue
                if not chunk:
                    break
                received += chunk
            else:
                pytest.fail("the server kept a silent client")
        assert received.startswith(b"HTTP/1.1 101")
        assert b"\x89" in received  # at least one ping frame (FIN + opcode 9) came first
