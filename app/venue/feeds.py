"""Websocket trade feeds of the simulated venue, each on its own port at `/ws/<api_key>`: the
"orders" channel (seeds/004: `event` messages carrying order_filled / fee_refund, pending and
confirmed) and the legacy provider (seeds/003: `trade` messages).

Timeline. A feed is live: it has one position in the stored day ("now"), which starts to move when
the first subscription arrives and then delivers the day in order to every matching subscription.
A later connection joins at "now" — there is no replay on reconnect, so what a subscriber misses
while away (including frames queued to a connection that died) is gone, as on the real feeds. The
position only moves while someone is subscribed, so an unpaced feed does not race through the day
to an empty room. `replay=True` instead gives every subscription its own timeline from seq 0, for
tests that need each subscriber to see the whole day.

Frames are built by byte concatenation around the store's `data` bytes, so a consumer receives
exactly the JSON the ground truth was computed from.

Cost. On a small host the venue shares its cores with the consumer under test, so serving is
batched end to end: the timeline reads rows as plain tuples and builds the wire bytes (websocket
headers included) of a whole slice of rows per subscription in one join, queued as one item; the
connection's writer sends everything queued in one socket write. On a connection whose faults act
per event (duplicates, reordering, malformed frames, latency, cuts) the frames stay apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from app.venue.faults import FaultInjector, FaultPlan, FaultSpec
from app.venue.model import FeedName

if TYPE_CHECKING:
    from app.venue.store import FeedTuple, VenueStore

log = logging.getLogger(__name__)

_STATUSES = {
    "confirmed": frozenset({"confirmed"}),
    "pending": frozenset({"pending"}),
    "all": frozenset({"confirmed", "pending"}),
}
_FILTER_KEYS = ("users", "condition_ids", "market_slugs")


@dataclass(frozen=True, slots=True)
class FeedOptions:
    keys: frozenset[str] = frozenset({"devkey"})  # accepted API keys (the path's last segment)
    replay: bool = False  # every subscription gets the whole day from seq 0
    pace_events_per_s: float | None = None  # None = as fast as subscribers read
    ping_interval_s: float = 30.0
    ping_timeout_s: float = 30.0
    read_rows: int = 2000  # rows per store read
    outbox_frames: int = 2000  # frames queued per connection before the feed waits on it
    reorder_wait_s: float = 0.02  # how long a reorder window waits to fill before flushing


@dataclass(frozen=True, slots=True)
class FeedSpec:
    name: FeedName
    message_type: str  # the `type` of an event message: "event" or "trade"
    subscribe_types: frozenset[str]  # accepted `type` values of a subscribe/update request


ORDERS_FEED = FeedSpec("orders", "event", frozenset({"orders"}))
# The legacy provider shares the handshake; clients of it name the type in various ways.
TRADES_FEED = FeedSpec("trades", "trade", frozenset({"trades", "trade", "orders"}))


class RequestError(ValueError):
    """A client request the feed answers with `{"type":"error","message":...}`."""


@dataclass(frozen=True, slots=True)
class SubscriptionFilter:
    users: frozenset[str] | None  # lower-case addresses; None = every user ("*")
    condition_ids: frozenset[str] | None  # lower-case; None = any
    market_slugs: frozenset[str] | None  # None = any
    statuses: frozenset[str]

    def matches(self, row: FeedTuple) -> bool:
        _, status, condition_id, market_slug, users, _ = row
        return (
            status in self.statuses
            and (self.condition_ids is None or condition_id.lower() in self.condition_ids)
            and (self.market_slugs is None or market_slug in self.market_slugs)
            and (self.users is None or any(u.lower() in self.users for u in users.split()))
        )

    def matching(self, rows: Sequence[FeedTuple]) -> Iterator[bytes]:
        """The `data` of the rows this filter takes, in order."""
        if self.users is None and self.condition_ids is None and self.market_slugs is None:
            statuses = self.statuses  # "users": ["*"], the common subscription: status only
            return (row[5] for row in rows if row[1] in statuses)
        return (row[5] for row in rows if self.matches(row))


def _strings(value: object, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RequestError(f"filters.{key} must be a list of strings")
    return value


def parse_filters(raw: object) -> SubscriptionFilter:
    """The documented filters: any of users (or ["*"]), condition_ids, market_slugs; status."""
    if not isinstance(raw, dict):
        raise RequestError("filters must be an object")
    unknown = set(raw) - {*_FILTER_KEYS, "status"}
    if unknown:
        raise RequestError(f"unknown filter(s): {', '.join(sorted(unknown))}")
    status = raw.get("status", "confirmed")
    if status not in _STATUSES:
        raise RequestError('filters.status must be "confirmed", "pending" or "all"')
    sets: dict[str, frozenset[str] | None] = {}
    for key in _FILTER_KEYS:
        values = _strings(raw.get(key, []), key)
        sets[key] = frozenset(v if key == "market_slugs" else v.lower() for v in values) or None
    if all(v is None for v in sets.values()):
        raise RequestError("filters need at least one of users, condition_ids, market_slugs")
    users = sets["users"]
    return SubscriptionFilter(
        users=None if users is not None and "*" in users else users,
        condition_ids=sets["condition_ids"],
        market_slugs=sets["market_slugs"],
        statuses=_STATUSES[status],
    )


@dataclass(frozen=True, slots=True)
class Subscribe:
    filters: SubscriptionFilter


@dataclass(frozen=True, slots=True)
class Update:
    subscription_id: str
    filters: SubscriptionFilter


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    subscription_id: str


FeedRequest = Subscribe | Update | Unsubscribe


def parse_request(raw: str | bytes, feed: FeedSpec) -> FeedRequest:
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestError("request is not valid JSON") from exc
    if not isinstance(msg, dict):
        raise RequestError("request must be a JSON object")
    action = msg.get("action")
    if msg.get("version") != 1:
        raise RequestError("version must be 1")
    if action == "unsubscribe":
        return Unsubscribe(_subscription_id(msg))
    if action not in {"subscribe", "update"}:
        raise RequestError('action must be "subscribe", "update" or "unsubscribe"')
    if msg.get("platform") != "polymarket":
        raise RequestError('platform must be "polymarket"')
    if msg.get("type") not in feed.subscribe_types:
        raise RequestError(f"type must be {' or '.join(sorted(feed.subscribe_types))}")
    filters = parse_filters(msg.get("filters"))
    if action == "subscribe":
        return Subscribe(filters)
    return Update(_subscription_id(msg), filters)


def _subscription_id(msg: dict[str, object]) -> str:
    sid = msg.get("subscription_id")
    if not isinstance(sid, str) or not sid:
        raise RequestError("subscription_id is required")
    return sid


def frame_header(size: int) -> bytes:
    """The header of a websocket text frame from a server with a `size`-byte payload: final,
    unmasked, no extension bits (the feed serves without compression), the length in its
    shortest form — what websockets' own `Frame.serialize` writes, without its cost per frame."""
    if size < 126:
        return bytes((0x81, size))
    if size < 1 << 16:
        return b"\x81\x7e" + size.to_bytes(2, "big")
    return b"\x81\x7f" + size.to_bytes(8, "big")


def text_frame(payload: bytes) -> bytes:
    return frame_header(len(payload)) + payload


def _control(obj: dict[str, str]) -> _Outgoing:
    return _Outgoing([text_frame(orjson.dumps(obj))], 1)


@dataclass(slots=True)
class _Outgoing:
    # The item's frames on the wire, in order: one bytes per frame, or all of them in one where
    # no fault acts per frame (see `_Subscription.wire`).
    wire: list[bytes]
    count: int  # frames (messages) in `wire`
    # Event frames: the subscription and the filters the events matched; None for a control
    # frame (an item holds one control frame, or event frames of one subscription).
    subscription: _Subscription | None = None
    filters: SubscriptionFilter | None = None

    def split(self) -> Iterator[_Outgoing]:
        """One item per frame, for faults that act on events one by one."""
        return (_Outgoing([frame], 1, self.subscription, self.filters) for frame in self.wire)


class _Subscription:
    __slots__ = ("connection", "filters", "prefix", "sid", "timeline")

    def __init__(
        self, sid: str, filters: SubscriptionFilter, connection: _Connection, message_type: str
    ) -> None:
        self.sid = sid
        self.filters = filters
        self.connection = connection
        self.prefix = (
            b'{"type":"' + message_type.encode() + b'","subscription_id":"' + sid.encode() + b'"'
            b',"data":'
        )
        self.timeline: _Timeline | None = None

    def wire(
        self, filters: SubscriptionFilter, rows: Sequence[FeedTuple]
    ) -> tuple[list[bytes], int]:
        """The wire bytes of the frames of the rows `filters` takes, and how many frames: one
        join of headers, prefixes and data (no bytes object per frame, each `data` copied once)
        unless the connection's faults need the frames apart."""
        prefix = self.prefix
        if self.connection.per_event:
            frames = [text_frame(prefix + data + b"}") for data in filters.matching(rows)]
            return frames, len(frames)
        extra = len(prefix) + 1
        pieces = [
            piece
            for data in filters.matching(rows)
            for piece in (frame_header(extra + len(data)), prefix, data, b"}")
        ]
        return [b"".join(pieces)], len(pieces) // 4

    def current(self, item: _Outgoing) -> bool:
        """Whether event frames queued for this subscription are still to be sent: not if it
        was unsubscribed or updated since (the ack already told the client it is over)."""
        return self.connection.subscriptions.get(self.sid) is self and self.filters is item.filters


class _Outbox:
    """The items queued to one connection, bounded by the frames they hold: an item waits
    while it would take the outbox past `limit` frames (an empty outbox takes any item), so a
    slow reader holds its feed back."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: deque[_Outgoing] = deque()
        self.frames = 0
        self.closed = False
        self._ready = asyncio.Event()
        self._room = asyncio.Event()

    def full(self) -> bool:
        return self.frames >= self.limit

    def room(self) -> int:
        """Frames it takes without waiting (a closed outbox takes and drops anything)."""
        return self.limit if self.closed else self.limit - self.frames

    def empty(self) -> bool:
        return not self.items

    async def put(self, item: _Outgoing) -> None:
        while self.items and self.frames + item.count > self.limit and not self.closed:
            self._room.clear()
            await self._room.wait()
        if self.closed:
            return
        self.items.append(item)
        self.frames += item.count
        self._ready.set()

    async def get(self) -> _Outgoing:
        while not self.items:
            self._ready.clear()
            await self._ready.wait()
        item = self.items.popleft()
        self.frames -= item.count
        self._room.set()
        return item

    def close(self) -> None:
        """Drop what is queued and take nothing more; frees a feed blocked on this outbox."""
        self.closed = True
        self.items.clear()
        self.frames = 0
        self._room.set()


class _Connection:
    def __init__(self, ws: ServerConnection, plan: FaultPlan, outbox_frames: int) -> None:
        self.ws = ws
        self.plan = plan
        self.per_event = _acts_per_event(plan.spec)
        self.outbox = _Outbox(outbox_frames)
        self.subscriptions: dict[str, _Subscription] = {}

    async def put(self, item: _Outgoing) -> None:
        await self.outbox.put(item)

    def close(self) -> None:
        # The frames still queued were in flight and are lost, as on the real feeds.
        self.outbox.close()


class _Timeline:
    """A position in the stored day and the subscriptions it feeds."""

    def __init__(self, feed: FeedServer) -> None:
        self.feed = feed
        self.after = 0
        self.subscriptions: dict[str, _Subscription] = {}
        self.wake = asyncio.Event()
        self.task = asyncio.create_task(self.run())
        self.task.add_done_callback(_log_failure)

    def add(self, sub: _Subscription) -> None:
        sub.timeline = self
        self.subscriptions[sub.sid] = sub
        self.wake.set()

    def remove(self, sub: _Subscription) -> None:
        self.subscriptions.pop(sub.sid, None)

    async def run(self) -> None:
        pace = self.feed.options.pace_events_per_s
        started: float | None = None
        played = 0
        while True:
            if not self.subscriptions:
                while not self.subscriptions:
                    self.wake.clear()
                    await self.wake.wait()
                # A paused timeline resumes at its pace, not in a burst to catch up.
                started, played = None, 0
            rows = await asyncio.to_thread(
                self.feed.store.feed_slice,
                self.feed.spec.name,
                self.after,
                self.feed.options.read_rows,
            )
            if not rows:
                return  # the stored day is over; subscribers stay connected and hear nothing
            started = time.monotonic() if started is None else started
            done = 0
            while done < len(rows) and self.subscriptions:
                count = len(rows) - done
                if pace:
                    # Row k of a run is due at started + k / pace.
                    due = int((time.monotonic() - started) * pace) + 1 - played
                    if due <= 0:
                        await asyncio.sleep(started + played / pace - time.monotonic())
                        continue
                    count = min(count, due)
                # As many rows as every subscriber's outbox has room for, so a connection that
                # dies loses no more than it had queued; one row at a time (waiting on the
                # fullest) while one is full.
                room = min(sub.connection.outbox.room() for sub in self.subscriptions.values())
                part = rows[done : done + min(count, max(1, room))]
                await self._deliver(part)
                self.after = part[-1][0]
                done += len(part)
                played += len(part)

    async def _deliver(self, rows: Sequence[FeedTuple]) -> None:
        """Queue the rows' frames to every subscription that takes them, one item each."""
        for sub in tuple(self.subscriptions.values()):
            filters = sub.filters
            wire, count = sub.wire(filters, rows)
            if count:
                await sub.connection.put(_Outgoing(wire, count, sub, filters))


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("feed timeline stopped: its subscribers hear nothing more", exc_info=exc)


class FeedServer:
    """One websocket feed (orders channel or legacy trades) on its own port."""

    def __init__(
        self,
        spec: FeedSpec,
        store: VenueStore,
        options: FeedOptions,
        faults: FaultInjector,
    ) -> None:
        self.spec = spec
        self.store = store
        self.options = options
        self.faults = faults
        self._live: _Timeline | None = None
        self._private: set[_Timeline] = set()
        self._server: Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        if not self.options.replay:
            self._live = _Timeline(self)
        self._server = await serve(
            self._handle,
            host,
            port,
            process_request=self._check_key,
            ping_interval=self.options.ping_interval_s,
            ping_timeout=self.options.ping_timeout_s,
            # Loopback JSON does not need deflate, and compressing every frame costs more CPU
            # than everything else the feed does.
            compression=None,
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        timelines = [t for t in (self._live, *self._private) if t is not None]
        for timeline in timelines:
            timeline.task.cancel()
        await asyncio.gather(*(t.task for t in timelines), return_exceptions=True)

    def _check_key(self, connection: ServerConnection, request: Request) -> Response | None:
        prefix, _, key = request.path.partition("?")[0].rpartition("/")
        if prefix != "/ws":
            return connection.respond(HTTPStatus.NOT_FOUND, "feed path is /ws/<api_key>\n")
        if key not in self.options.keys:
            return connection.respond(HTTPStatus.UNAUTHORIZED, "unknown API key\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        conn = _Connection(
            ws,
            self.faults.plan(f"ws.{self.spec.name}", link_droppable=True),
            self.options.outbox_frames,
        )
        writer = asyncio.create_task(self._write(conn))
        try:
            await conn.put(_control({"type": "connected"}))
            async for message in ws:
                await self._on_request(conn, message)
        except ConnectionClosed:
            pass
        finally:
            for sub in conn.subscriptions.values():
                self._detach(sub)
            conn.close()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def _on_request(self, conn: _Connection, message: str | bytes) -> None:
        try:
            request = parse_request(message, self.spec)
            if isinstance(request, Subscribe):
                sid = f"sub_{secrets.token_hex(6)}"
                sub = _Subscription(sid, request.filters, conn, self.spec.message_type)
                conn.subscriptions[sid] = sub
                # The ack is queued before the subscription joins a timeline, so it comes first.
                await conn.put(_control({"type": "ack", "subscription_id": sid}))
                self._attach(sub)
                return
            sub_or_none = conn.subscriptions.get(request.subscription_id)
            if sub_or_none is None:
                raise RequestError(f"unknown subscription_id {request.subscription_id}")
            if isinstance(request, Update):
                sub_or_none.filters = request.filters
            else:
                del conn.subscriptions[request.subscription_id]
                self._detach(sub_or_none)
            ack = {"type": "ack", "subscription_id": request.subscription_id}
            await conn.put(_control(ack))
        except RequestError as exc:
            await conn.put(_control({"type": "error", "message": str(exc)}))

    def _attach(self, sub: _Subscription) -> None:
        if self._live is not None:
            self._live.add(sub)
            return
        timeline = _Timeline(self)
        self._private.add(timeline)
        timeline.add(sub)

    def _detach(self, sub: _Subscription) -> None:
        timeline = sub.timeline
        if timeline is None:
            return
        timeline.remove(sub)
        if timeline in self._private:
            self._private.discard(timeline)
            timeline.task.cancel()

    async def _write(self, conn: _Connection) -> None:
        """Drain the connection's outbox to the socket, applying its faults to event frames.

        Frames are gathered while the outbox has more (up to an outbox's worth) and written
        together: one socket write per frame costs the venue about three times the CPU per
        event, and on a small host the venue shares its cores with the consumer under test.
        Each frame is still one message. Without faults that act per event, a queued item's
        frames go out as they are; with them, one frame at a time.
        """
        plan = conn.plan
        per_event = conn.per_event
        out: list[bytes] = []
        backlog: deque[_Outgoing] = deque()  # single frames of an item taken apart
        pending: _Outgoing | None = None
        with contextlib.suppress(ConnectionClosed):
            while True:
                if pending is None and (
                    len(out) >= self.options.outbox_frames or (not backlog and conn.outbox.empty())
                ):
                    await _flush(conn.ws, out)
                item = pending or await _take(conn, backlog, per_event)
                pending = None
                sub = item.subscription
                if sub is None:
                    out.extend(item.wire)
                    continue
                if not per_event:
                    if sub.current(item):
                        out.extend(item.wire)
                        plan.count(item.count)
                    continue
                window = [item]
                if plan.spec.reorder_window >= 2:
                    pending = await self._fill_window(conn, window, backlog)
                for event in plan.reorder(window):
                    if not await self._send_event(conn, plan, event, out):
                        return

    async def _fill_window(
        self, conn: _Connection, window: list[_Outgoing], backlog: deque[_Outgoing]
    ) -> _Outgoing | None:
        """Gather up to reorder_window adjacent event frames; return a control frame met on
        the way, to be sent after them."""
        deadline = time.monotonic() + self.options.reorder_wait_s
        while len(window) < conn.plan.spec.reorder_window:
            try:
                item = await asyncio.wait_for(
                    _take(conn, backlog, True), timeout=max(0.0, deadline - time.monotonic())
                )
            except TimeoutError:
                return None
            if item.subscription is None:
                return item
            window.append(item)
        return None

    async def _send_event(
        self, conn: _Connection, plan: FaultPlan, event: _Outgoing, out: list[bytes]
    ) -> bool:
        """Queue one event frame in `out` with its faults; False once the fault plan cut the
        connection (what was queued before the cut is sent first)."""
        sub = event.subscription
        if sub is None or not sub.current(event):
            return True
        if plan.latency_s:
            await _flush(conn.ws, out)
            await asyncio.sleep(plan.latency_s)
        (frame,) = event.wire
        out.append(frame)
        if plan.duplicate():
            plan.log.record(plan.channel, "duplicate", connection=plan.ordinal)
            out.append(frame)
        if plan.malformed():
            out.append(text_frame(plan.malformed_frame(self.spec.message_type, sub.sid)))
        cut = plan.count(1)
        if cut is None:
            return True
        await _flush(conn.ws, out)
        if cut == "disconnect":
            await conn.ws.close(1012, "injected disconnect")
        else:
            conn.ws.transport.abort()
        return False


def _acts_per_event(spec: FaultSpec) -> bool:
    """Whether a connection's faults act on its event frames one by one."""
    return bool(
        spec.duplicate_rate
        or spec.malformed_rate
        or spec.reorder_window >= 2
        or spec.latency_ms
        or spec.disconnect_every is not None
        or spec.ws_drop_every is not None
    )


async def _take(conn: _Connection, backlog: deque[_Outgoing], one_frame: bool) -> _Outgoing:
    """The next item to send: as queued, or (`one_frame`) one frame of it at a time."""
    if backlog:
        return backlog.popleft()
    item = await conn.outbox.get()
    if not one_frame or item.count == 1:
        return item
    backlog.extend(item.split())
    return backlog.popleft()


async def _flush(ws: ServerConnection, out: list[bytes]) -> None:
    """Write the wire frames in `out` in a single socket write."""
    if not out:
        return
    async with ws.send_context():
        # send_context checked that the connection is open; it applies flow control after this.
        ws.transport.write(b"".join(out))
    out.clear()
