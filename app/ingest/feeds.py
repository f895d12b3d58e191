"""Websocket clients of the two chain feeds: the "orders" channel and the legacy "trade" provider.

Connect (the API key is in the URL path; it is never logged), wait for `connected`, subscribe to
every user's events (pending ones too on the orders channel), wait for the ack, then read.
websockets answers the server's pings itself and sends its own, so a dead server is noticed too.

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
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.frames import CloseCode

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
                async with self._connect() as ws:
                    subscription = await self._handshake(ws)
                    self._status.touch()
                    self._backoff = connected(self._backoff, time.monotonic())
                    self._status.connected = True
                    self._metrics.connected.labels(self.spec.source).set(1)
                    log.info("%s: subscribed", self.key, extra={"subscription": subscription})
                    await self._read(ws)
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in (401, 403, 404):
                    raise IngestFatal(
                        f"{self.key}: the feed refused the connection (HTTP {status}); "
                        "check the API key in the feed URL"
                    ) from None
                reason = f"http_{status}"
            except InvalidURI:
                raise IngestFatal(f"{self.key}: the feed URL is not a websocket URL") from None
            except (ConnectionClosed, InvalidHandshake, _HandshakeFailed, OSError) as exc:
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

    def _connect(self) -> connect:
        return connect(
            self._url,
            # Loopback traffic must never go through a proxy from the environment.
            proxy=None if self._loopback else True,
            open_timeout=self._settings.handshake_timeout,
            ping_interval=self._settings.ping_interval,
            ping_timeout=self._settings.ping_timeout,
            close_timeout=2,
            # Oversized frames must reach the parser (and become dead letters) rather than
            # kill the connection; the parser enforces its own limit.
            max_size=16 * parse.MAX_FRAME_BYTES,
            max_queue=1024,
            compression=None,
        )

    async def _record_refused_frame(self, exc: Exception) -> None:
        """A frame over max_size is refused unread and the connection closed (1009): its bytes
        are gone, but a dead letter still says that it came and how big it was."""
        sent = exc.sent if isinstance(exc, ConnectionClosed) else None
        if sent is not None and sent.code == CloseCode.MESSAGE_TOO_BIG:
            reason = f"websocket frame refused unread, connection closed: {sent.reason}"
            await self._sink.put([], [DeadLetter(self.spec.source, reason, b"")], None)

    async def _handshake(self, ws: ClientConnection) -> str:
        try:
            async with asyncio.timeout(self._settings.handshake_timeout):
                return await self._subscribe(ws)
        except TimeoutError:
            raise _HandshakeFailed("no connected/ack frame in time") from None

    async def _subscribe(self, ws: ClientConnection) -> str:
        hello = await self._control(ws)
        if not isinstance(hello, parse.Connected):
            raise _HandshakeFailed(f"expected a connected frame, got {type(hello).__name__}")
        await ws.send(subscribe_message(self.spec), text=True)
        while True:
            answer = await self._control(ws)
            if isinstance(answer, parse.Error):
                raise IngestFatal(f"{self.key}: subscription refused: {answer.message}")
            if isinstance(answer, parse.Ack) and answer.subscription_id:
                return answer.subscription_id

    async def _control(self, ws: ClientConnection) -> object:
        """The next handshake frame; anything unreadable is dead-lettered and skipped."""
        while True:
            raw = await ws.recv(decode=False)
            try:
                return self.spec.parse_frame(raw)
            except parse.Rejected as exc:
                await self._sink.put([], [DeadLetter(self.spec.source, exc.reason, raw)], None)

    async def _read(self, ws: ClientConnection) -> None:
        """Parse frames and queue them with the feed's checkpoint until the connection ends."""
        source = self.spec.source
        sink = self._sink
        status = self._status
        while True:
            raw = await ws.recv(decode=False)
            status.touch()
            events: list[Event] = []
            dead: list[DeadLetter] = []
            try:
                frame = self.spec.parse_frame(raw)
            except parse.Rejected as exc:
                dead.append(DeadLetter(source, exc.reason, raw))
            else:
                if isinstance(frame, parse.OrdersEvent | parse.TradeMessage):
                    event = frame.event
                    events.append(event)
                    self._backoff = delivered(self._backoff)
                    when: datetime | None = event.event_time
                    if when is not None:
                        await self._on_event_time(when)
                elif isinstance(frame, parse.Error):
                    log.warning("%s: the feed reports an error: %s", self.key, frame.message)
                # Handshake frames after the ack (another ack, a hello) carry no data.
            # The mark, not the newest time, so a restart's gap also covers reordered frames.
            await sink.put(events, dead, Checkpoint(self.key, None, self._mark.value))

    async def _on_event_time(self, when: datetime) -> None:
        if self._interrupted is not None:
            why, since = self._interrupted
            self._interrupted = None
            outage = None if since is None else timedelta(seconds=time.time() - since)
            window = gap_window(self._mark.value, when, outage, self._settings.gap_slack)
            if window is not None:
                await self._record_gap(window, why)
        self._mark.add(when)

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
