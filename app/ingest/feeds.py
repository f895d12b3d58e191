"""Websocket clients of the two chain feeds: the "orders" channel and the legacy "trade" provider.

Connect (the API key is in the URL path; it is never logged), wait for `connected`, subscribe to
every user's events (pending ones too on the orders channel), wait for the ack, then read.

The websocket client is picows (Cython): it parses frames in `data_received` and hands each to
`_Receiver.on_ws_frame`, which only appends the payload; the consumer then takes every message
that arrived in one go, parses them and puts them with one checkpoint. With websockets each
message cost ~6 us of worker CPU in the library alone (frame parser generator, assembler queue,
a future per `recv`) against ~1.5 us here, and a `put` per frame a few more; at 30,000 events/s
that was a third of a core. picows answers the server's pings itself and pings a server that has
gone quiet, so a dead one is noticed too.

Feeds have no replay: whatever was published while we were away is lost. When events flow again
after an interruption (a disconnect, or this worker not running since its last stored event), the
window between the feed's low-water mark and the first event after is recorded as a gap, so the
reconciler knows which fills the feed may be missing. Both ends are on the feed's own clock (event
timestamps, one-second resolution). The low-water mark is the oldest time among the last few
dozen events read, not the newest: a feed reorders nearby frames (pending events are stamped
before their confirmations), so a lost frame may be older than the last one that arrived. A small
slack widens the window further.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import orjson
from picows import (
    WSAutoPingStrategy,
    WSCloseCode,
    WSError,
    WSFrame,
    WSHandshakeError,
    WSInvalidURL,
    WSListener,
    WSMsgType,
    WSTransport,
    ws_connect,
)
from picows.picows import WSCloseInfo

from app.config import is_loopback_host
from app.domain.events import DeadLetter, Event
from app.ingest import parse
from app.ingest.backoff import BackoffPolicy, BackoffState, connected, delivered, failed
from app.ingest.dropcopy import IngestFatal, checkpoint_key
from app.ingest.pipeline import SourceSink
from app.ingest.writer import Checkpoint
from app.observability import IngestMetrics

log = logging.getLogger(__name__)

FeedKind = Literal["orders", "trades"]
DISCONNECTED = "websocket disconnected"
NOT_RUNNING = "worker not connected since its last event"


@dataclass(frozen=True, slots=True)
class FeedSpec:
    kind: FeedKind
    subscribe_type: str
    status: str | None  # the orders channel's status filter; the legacy feed has none
    parse_frame: Callable[[bytes], parse.OrdersFrame | parse.TradesFrame]

    @property
    def source(self) -> str:
        return f"feed.{self.kind}"


ORDERS = FeedSpec("orders", "orders", "all", parse.orders_frame)
TRADES = FeedSpec("trades", "trades", None, parse.trades_frame)


@dataclass(frozen=True, slots=True)
class FeedSettings:
    handshake_timeout: float = 10.0
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    gap_slack: timedelta = timedelta(seconds=10)
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)


def subscribe_message(spec: FeedSpec) -> bytes:
    filters: dict[str, object] = {"users": ["*"]}
    if spec.status is not None:
        filters["status"] = spec.status
    return orjson.dumps(
        {
            "action": "subscribe",
            "platform": "polymarket",
            "version": 1,
            "type": spec.subscribe_type,
            "filters": filters,
        }
    )


def gap_window(
    mark: datetime | None,
    first_after: datetime,
    outage: timedelta | None,
    slack: timedelta,
) -> tuple[datetime, datetime] | None:
    """The window a feed interruption may have lost, or None if nothing can have been lost.

    `mark` is the feed's low-water mark before the interruption, `first_after` the first event
    time after it, `outage` how long we were disconnected by the wall clock (None when unknown).
    A feed that starts again well before the mark replays (test venues do): nothing was lost.
    """
    if mark is None:
        if outage is None:
            return None
        return first_after - outage - slack, first_after + slack
    if first_after < mark - slack:
        return None
    return mark - slack, first_after + slack


class LowWaterMark:
    """The oldest of (at least) the last `block` event times, in O(1) per event."""

    def __init__(self, stored: datetime | None = None, block: int = 32) -> None:
        self._stored = stored
        self._block = block
        self._previous: datetime | None = None
        self._current: datetime | None = None
        self._count = 0

    def add(self, when: datetime) -> None:
        if self._current is None or when < self._current:
            self._current = when
        self._count += 1
        if self._count == self._block:
            self._previous, self._current, self._count = self._current, None, 0

    @property
    def value(self) -> datetime | None:
        previous, current = self._previous, self._current
        if previous is None:
            return self._stored if current is None else current
        return previous if current is None or previous <= current else current


class _HandshakeFailed(Exception):
    pass


# Messages (frames once reassembled) taken from the socket before the consumer has read them;
# beyond this the connection stops reading, so a slow database holds the feed back over TCP.
MAX_QUEUE = 1024
# The kernel's receive buffer of a feed's socket, which bounds what one read brings. picows reads
# all the socket holds into its buffer and doubles the buffer whenever a read fills it; behind a
# slower database (a replayed day) reads grew to 32 MB, ~30,000 frames taken at once before the
# queue could pause the socket, and the worker peaked above 300 MB. 256 KB is ~200 frames a read,
# and at 100 ms round trip still a window of ~2,000 frames/s, far above a live feed's rate. (1 MB
# measured slower on a replayed 5M-event day: 30k against 32k events/s, side by side.)
RECEIVE_BUFFER = 256 * 1024
CLOSE_TIMEOUT = 2.0
OK_CLOSE_CODES = (WSCloseCode.OK.value, WSCloseCode.GOING_AWAY.value)
# picows logs each connection and disconnection at INFO; those stay out of the worker's log.
_WS_LOG = logging.getLogger(f"{__name__}.websocket")
_WS_LOG.setLevel(logging.WARNING)


@dataclass(frozen=True, slots=True)
class Close:
    """One side's close frame: its code and reason."""

    code: int
    reason: str


class ConnectionClosed(Exception):
    """The feed connection ended; `rcvd` and `sent` are the close frames exchanged, if any.

    Named, with the two below, as websockets named its exceptions: the class name is the reason
    label of the reconnects metric, and dashboards keep working across the change of library.
    """

    def __init__(self, rcvd: Close | None, sent: Close | None) -> None:
        self.rcvd = rcvd
        self.sent = sent
        received = "no close frame received" if rcvd is None else f"received {rcvd}"
        sent_text = "no close frame sent" if sent is None else f"sent {sent}"
        super().__init__(f"{received}; {sent_text}")


class ConnectionClosedOK(ConnectionClosed):
    """Both sides closed with 1000 or 1001."""


class ConnectionClosedError(ConnectionClosed):
    """Anything else: an error code, or the TCP connection went without a close handshake."""


def _close(info: WSCloseInfo | None) -> Close | None:
    return None if info is None else Close(WSCloseCode(info.code).value, info.reason)


class _Receiver(WSListener):
    """One connection's incoming messages, collected for the consumer.

    picows calls `on_ws_frame` from `data_received` for each frame of a read; this keeps the data
    messages (reassembled if fragmented) and wakes the consumer once per read, not per frame.
    Pings are answered by picows itself, before they get here.
    """

    def __init__(self, max_size: int) -> None:
        self.messages: list[bytes] = []
        self.disconnected = False
        self._closing = False  # a close was sent or received: nothing more is taken
        self._max_size = max_size
        self._fragments: list[bytes] = []
        self._fragments_size = 0
        self._transport: WSTransport | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if not self._closing:
            self._take(transport, frame)
        if frame.last_in_buffer:
            if len(self.messages) >= MAX_QUEUE and not self._paused:
                self._paused = True
                transport.underlying_transport.pause_reading()
            self._wake()

    def _take(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.payload_size > self._max_size:
            # A frame picows refused (it closed with 1009) but went on reading until it hung up:
            # neither it nor anything after it counts, as with any refused frame.
            self._closing = True
            return
        msg_type = frame.msg_type
        if msg_type is WSMsgType.TEXT or msg_type is WSMsgType.BINARY:
            if self._fragments:
                self._fail(transport, WSCloseCode.PROTOCOL_ERROR, "expected a continuation frame")
            elif frame.fin:
                self.messages.append(frame.get_payload_as_bytes())
            else:
                self._fragment(transport, frame)
        elif msg_type is WSMsgType.CONTINUATION:
            if not self._fragments:
                self._fail(transport, WSCloseCode.PROTOCOL_ERROR, "unexpected continuation frame")
            else:
                self._fragment(transport, frame)
        elif msg_type is WSMsgType.CLOSE:
            # Echo the server's close, then hang up: the close handshake of RFC 6455.
            self._closing = True
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        # Pongs (to our pings) are picows' business; an unasked one means nothing.

    def _fragment(self, transport: WSTransport, frame: WSFrame) -> None:
        self._fragments_size += frame.payload_size
        if self._fragments_size > self._max_size:
            self._fail(
                transport,
                WSCloseCode.MESSAGE_TOO_BIG,
                f"message of {self._fragments_size}+ bytes exceeds limit of {self._max_size} bytes",
            )
            return
        self._fragments.append(frame.get_payload_as_bytes())
        if frame.fin:
            self.messages.append(b"".join(self._fragments))
            self._fragments.clear()
            self._fragments_size = 0

    def _fail(self, transport: WSTransport, code: WSCloseCode, reason: str) -> None:
        self._closing = True
        self._fragments.clear()
        self._fragments_size = 0
        transport.send_close(code, reason.encode())
        transport.disconnect()

    def send(self, message: bytes) -> None:
        assert self._transport is not None
        self._transport.send(WSMsgType.TEXT, message)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.disconnected = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        if self.disconnected:
            raise self._closed()
        self._waiter = asyncio.get_running_loop().create_future()
        await self._waiter

    async def receive(self) -> list[bytes]:
        """The messages received and not yet taken (at least one, at most MAX_QUEUE); raises
        ConnectionClosed once the connection is over and every message it brought is taken.

        One read of the socket can bring thousands of messages: they are handed out MAX_QUEUE
        at a time, with a turn of the event loop in between, so other sources are not starved.
        """
        if self.messages:
            await asyncio.sleep(0)
        while not self.messages:
            await self._wait()
        messages = self.messages
        if len(messages) > MAX_QUEUE:
            messages, self.messages = messages[:MAX_QUEUE], messages[MAX_QUEUE:]
        else:
            self.messages = []
        if self._paused and len(self.messages) < MAX_QUEUE and self._transport is not None:
            self._paused = False
            self._transport.underlying_transport.resume_reading()
        return messages

    async def receive_one(self) -> bytes:
        """The next message alone (the handshake's), leaving the rest for `receive`."""
        while not self.messages:
            await self._wait()
        return self.messages.pop(0)

    def _closed(self) -> ConnectionClosed:
        handshake = None if self._transport is None else self._transport.close_handshake
        rcvd = None if handshake is None else _close(handshake.recv)
        sent = None if handshake is None else _close(handshake.sent)
        if (
            rcvd is not None
            and sent is not None
            and rcvd.code in OK_CLOSE_CODES
            and sent.code in OK_CLOSE_CODES
        ):
            return ConnectionClosedOK(rcvd, sent)
        return ConnectionClosedError(rcvd, sent)


def _proxy(url: str) -> str | None:
    """The proxy the environment names for this websocket URL (as websockets' `proxy=True`):
    none if the host is bypassed, else SOCKS, then the HTTPS proxy, then (ws://) the HTTP one."""
    parts = urllib.parse.urlsplit(url)
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    if urllib.request.proxy_bypass(f"{parts.hostname}:{port}"):
        return None
    proxies = urllib.request.getproxies()
    for scheme in ("wss", "socks", "https") if secure else ("ws", "socks", "https", "http"):
        proxy = proxies.get(scheme)
        if proxy is not None:
            if scheme == "socks" and proxy.startswith("http://"):
                proxy = "socks5h://" + proxy[len("http://") :]
            return proxy
    return None


class FeedConsumer:
    """Reads one websocket feed forever (until cancelled), reconnecting with backoff."""

    def __init__(
        self,
        spec: FeedSpec,
        *,
        url: str,
        sink: SourceSink,
        settings: FeedSettings,
        metrics: IngestMetrics,
        rng: random.Random | None = None,
    ) -> None:
        self.spec = spec
        self.key = checkpoint_key(spec.source, "all")
        self._url = url
        self._loopback = is_loopback_host(urllib.parse.urlsplit(url).hostname or "")
        self._sink = sink
        self._settings = settings
        self._metrics = metrics
        self._rng = rng or random.Random()
        self._status = sink.status
        self._backoff = BackoffState()
        self._mark = LowWaterMark()
        # Set while events may have been missed: (why, wall-clock start of the outage or None).
        self._interrupted: tuple[str, float | None] | None = None

    async def run(self) -> None:
        stored = await self._sink.call(lambda w: w.load_checkpoint(self.key))
        if stored is not None and stored.last_event_time is not None:
            self._mark = LowWaterMark(stored.last_event_time)
            self._interrupted = (NOT_RUNNING, None)
        while True:
            reason = "closed"
            try:
                async with self._open() as receiver:
                    subscription = await self._handshake(receiver)
                    self._status.touch()
                    self._backoff = connected(self._backoff, time.monotonic())
                    self._status.connected = True
                    self._metrics.connected.labels(self.spec.source).set(1)
                    log.info("%s: subscribed", self.key, extra={"subscription": subscription})
                    await self._read(receiver)
            except WSHandshakeError as exc:
                if exc.response is None:
                    reason = type(exc).__name__
                    log.info("%s: connection lost (%s)", self.key, exc)
                else:
                    status = int(exc.response.status)
                    if status in (401, 403, 404):
                        raise IngestFatal(
                            f"{self.key}: the feed refused the connection (HTTP {status}); "
                            "check the API key in the feed URL"
                        ) from None
                    reason = f"http_{status}"
            except WSInvalidURL:
                raise IngestFatal(f"{self.key}: the feed URL is not a websocket URL") from None
            except (ConnectionClosed, WSError, _HandshakeFailed, OSError) as exc:
                reason = type(exc).__name__
                log.info("%s: connection lost (%s)", self.key, exc)
                await self._record_refused_frame(exc)
                # Not on cancellation: a stopping worker leaves its checkpoint, and the next
                # run records the window from there.
                if self._status.connected and self._interrupted is None:
                    self._interrupted = (DISCONNECTED, time.time())
            finally:
                self._status.connected = False
                self._metrics.connected.labels(self.spec.source).set(0)
            self._status.reconnects += 1
            self._metrics.reconnects.labels(self.spec.source, reason).inc()
            delay, self._backoff = failed(
                self._settings.backoff, self._backoff, time.monotonic(), self._rng.random()
            )
            await asyncio.sleep(delay)

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[_Receiver]:
        """A connection to the feed for the duration of the block, closed (1000) after it."""
        settings = self._settings
        max_size = 16 * parse.MAX_FRAME_BYTES
        async with asyncio.timeout(settings.handshake_timeout):
            transport, receiver = await ws_connect(
                lambda: _Receiver(max_size),
                self._url,
                # Loopback traffic must never go through a proxy from the environment.
                proxy=None if self._loopback else _proxy(self._url),
                websocket_handshake_timeout=settings.handshake_timeout,
                logger_name=_WS_LOG,
                enable_auto_ping=True,
                # A ping after this long without data from the server, and the connection is
                # dropped when its pong is not back in ping_timeout (picows pings only an idle
                # peer, and wants the wait for the pong no longer than the idle time).
                auto_ping_idle_timeout=max(settings.ping_interval, settings.ping_timeout),
                auto_ping_reply_timeout=settings.ping_timeout,
                auto_ping_strategy=WSAutoPingStrategy.PING_WHEN_IDLE,
                enable_auto_pong=True,
                # Oversized frames must reach the parser (and become dead letters) rather than
                # kill the connection; the parser enforces its own limit.
                max_frame_size=max_size,
                use_aiofastnet=False,
            )
        assert isinstance(receiver, _Receiver)
        sock = transport.underlying_transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        try:
            yield receiver
        finally:
            if not transport.is_close_frame_sent:
                transport.send_close(WSCloseCode.OK)
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await transport.wait_disconnected()
            except TimeoutError:
                transport.disconnect(graceful=False)
            except WSError:
                pass  # what ended the connection; `receive` has reported it already

    async def _record_refused_frame(self, exc: Exception) -> None:
        """A frame over max_size is refused unread and the connection closed (1009): its bytes
        are gone, but a dead letter still says that it came and how big it was."""
        sent = exc.sent if isinstance(exc, ConnectionClosed) else None
        if sent is not None and sent.code == WSCloseCode.MESSAGE_TOO_BIG.value:
            limit = 16 * parse.MAX_FRAME_BYTES
            reason = (
                "websocket frame refused unread, connection closed: "
                f"frame exceeds limit of {limit} bytes ({sent.reason})"
            )
            await self._sink.put([], [DeadLetter(self.spec.source, reason, b"")], None)

    async def _handshake(self, receiver: _Receiver) -> str:
        try:
            async with asyncio.timeout(self._settings.handshake_timeout):
                return await self._subscribe(receiver)
        except TimeoutError:
            raise _HandshakeFailed("no connected/ack frame in time") from None

    async def _subscribe(self, receiver: _Receiver) -> str:
        hello = await self._control(receiver)
        if not isinstance(hello, parse.Connected):
            raise _HandshakeFailed(f"expected a connected frame, got {type(hello).__name__}")
        receiver.send(subscribe_message(self.spec))
        while True:
            answer = await self._control(receiver)
            if isinstance(answer, parse.Error):
                raise IngestFatal(f"{self.key}: subscription refused: {answer.message}")
            if isinstance(answer, parse.Ack) and answer.subscription_id:
                return answer.subscription_id

    async def _control(self, receiver: _Receiver) -> object:
        """The next handshake frame; anything unreadable is dead-lettered and skipped."""
        while True:
            raw = await receiver.receive_one()
            try:
                return self.spec.parse_frame(raw)
            except parse.Rejected as exc:
                await self._sink.put([], [DeadLetter(self.spec.source, exc.reason, raw)], None)

    async def _read(self, receiver: _Receiver) -> None:
        """Parse what arrived and queue it with the feed's checkpoint until the connection ends.

        Everything received since the last turn is parsed and put at once, with the checkpoint
        after its last frame: a put per frame cost as much CPU as the websocket layer.
        """
        source = self.spec.source
        parse_frame = self.spec.parse_frame
        sink = self._sink
        status = self._status
        mark = self._mark
        data_frames = parse.OrdersEvent | parse.TradeMessage
        while True:
            messages = await receiver.receive()
            status.touch()
            events: list[Event] = []
            dead: list[DeadLetter] = []
            for raw in messages:
                try:
                    frame = parse_frame(raw)
                except parse.Rejected as exc:
                    dead.append(DeadLetter(source, exc.reason, raw))
                    continue
                if isinstance(frame, data_frames):
                    event = frame.event
                    when: datetime | None = event.event_time
                    if when is not None:
                        if self._interrupted is not None:
                            # What came before the first event after an outage goes first.
                            if events or dead:
                                checkpoint = Checkpoint(self.key, None, mark.value)
                                await sink.put(events, dead, checkpoint)
                                events, dead = [], []
                            await self._close_interruption(when)
                        mark.add(when)
                    events.append(event)
                elif isinstance(frame, parse.Error):
                    log.warning("%s: the feed reports an error: %s", self.key, frame.message)
                # Handshake frames after the ack (another ack, a hello) carry no data.
            if events:
                self._backoff = delivered(self._backoff)
            # The mark, not the newest time, so a restart's gap also covers reordered frames.
            await sink.put(events, dead, Checkpoint(self.key, None, mark.value))

    async def _close_interruption(self, when: datetime) -> None:
        """The first event time after an interruption: record what it may have lost."""
        assert self._interrupted is not None
        why, since = self._interrupted
        self._interrupted = None
        outage = None if since is None else timedelta(seconds=time.time() - since)
        window = gap_window(self._mark.value, when, outage, self._settings.gap_slack)
        if window is not None:
            await self._record_gap(window, why)

    async def finish(self) -> None:
        """At shutdown: an interruption no event has closed yet may have lost events up to now."""
        if self._interrupted is None:
            return
        why, since = self._interrupted
        self._interrupted = None
        slack = self._settings.gap_slack
        mark = self._mark.value
        if mark is not None:
            start = mark - slack
        elif since is not None:
            start = datetime.fromtimestamp(since, UTC) - slack
        else:
            return
        await self._record_gap((start, max(datetime.now(UTC), start)), why)

    async def _record_gap(self, window: tuple[datetime, datetime], why: str) -> None:
        start, end = window
        log.warning(
            "%s: events between %s and %s may be lost (%s); recorded as a gap",
            self.key,
            start.isoformat(),
            end.isoformat(),
            why,
        )
        source = self.spec.source
        await self._sink.call(lambda w: w.record_gap(source, start, end, why))
        self._status.gaps += 1
        self._metrics.gaps.labels(source).inc()
