"""The feed client's websocket behaviour, against servers on loopback: pings both ways, refused
handshakes, oversized and fragmented messages, TLS, proxies, closing, reconnecting, and what the
consumer puts (in order, with the low-water mark of what was put) and when it stops reading."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from app.domain.events import DeadLetter, Event, OrderFilledEvent
from app.ingest import feeds, parse
from app.ingest.backoff import BackoffPolicy
from app.ingest.dropcopy import IngestFatal
from app.ingest.pipeline import SourceStatus
from app.ingest.writer import Checkpoint
from app.observability import IngestMetrics
from tests.unit.test_parse import TIMESTAMP, frame, order_filled_data

CONNECTED = b'{"type":"connected"}'
ACK = b'{"type":"ack","subscription_id":"sub-1"}'
FAST = BackoffPolicy(base=0.01, cap=0.05)
SETTINGS = feeds.FeedSettings(handshake_timeout=2.0, backoff=FAST)
BOUND = 20.0  # seconds any one test may take
KEY = "s3cr3t-k3y"


def event_frame(n: int, *, seconds: int = 0) -> bytes:
    """A valid confirmed order_filled, told apart by its log index."""
    return frame(order_filled_data(log_index=hex(n + 1), timestamp=TIMESTAMP + seconds))


def log_index(event: Event) -> int:
    assert isinstance(event, OrderFilledEvent)
    assert event.log_index is not None
    return event.log_index - 1


# --- a sink that keeps what is put ---------------------------------------------------------------


@dataclass
class Put:
    events: list[Event]
    dead: list[DeadLetter]
    checkpoint: Checkpoint | None


@dataclass
class Writer:
    gaps: list[tuple[datetime, datetime, str]] = field(default_factory=list)

    def load_checkpoint(self, stream: str) -> Checkpoint | None:
        return None

    def record_gap(self, source: str, start: datetime, end: datetime, reason: str) -> None:
        self.gaps.append((start, end, reason))


class Sink:
    """What SourceSink offers the consumer, keeping every put (and gap) in order."""

    def __init__(self) -> None:
        self.status = SourceStatus("feed.orders")
        self.puts: list[Put] = []
        self.log: list[str] = []  # "put" / "gap", in the order they happened
        self.writer = Writer()
        self.open = asyncio.Event()  # cleared: put blocks, as a full SourceSink does
        self.open.set()
        self.changed = asyncio.Event()

    async def put(
        self, events: Sequence[Event], dead: Sequence[DeadLetter], checkpoint: Checkpoint | None
    ) -> None:
        await self.open.wait()
        self.puts.append(Put(list(events), list(dead), checkpoint))
        self.log.append("put")
        self.changed.set()

    async def call(self, fn: Callable[[Writer], Any]) -> Any:
        gaps = len(self.writer.gaps)
        result = fn(self.writer)
        if len(self.writer.gaps) > gaps:
            self.log.append("gap")
        return result

    @property
    def events(self) -> list[Event]:
        return [e for p in self.puts for e in p.events]

    @property
    def dead(self) -> list[DeadLetter]:
        return [d for p in self.puts for d in p.dead]

    async def wait_for(self, done: Callable[[], bool]) -> None:
        while not done():
            self.changed.clear()
            await self.changed.wait()


def consumer(url: str, sink: Sink, settings: feeds.FeedSettings = SETTINGS) -> feeds.FeedConsumer:
    return feeds.FeedConsumer(
        feeds.ORDERS,
        url=url,
        sink=sink,  # type: ignore[arg-type]
        settings=settings,
        metrics=IngestMetrics(),
    )


@asynccontextmanager
async def running(c: feeds.FeedConsumer) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(c.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def reconnects(c: feeds.FeedConsumer, reason: str) -> float:
    value = c._metrics.registry.get_sample_value(
        "recon_ingest_reconnects_total", {"source": "feed.orders", "reason": reason}
    )
    return value or 0.0


def run(test: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(BOUND):
            await test()

    asyncio.run(bounded())


# --- a feed served by websockets -----------------------------------------------------------------

Script = Callable[[ServerConnection], Awaitable[None]]


@dataclass
class Feed:
    """Runs `scripts[n]` for the n-th connection (the last one for any after it), after the
    connected / subscribe / ack handshake; records each connection's close code."""

    scripts: list[Script]
    connections: int = 0
    close_codes: list[int | None] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def handler(self, ws: ServerConnection) -> None:
        script = self.scripts[min(self.connections, len(self.scripts) - 1)]
        self.connections += 1
        try:
            await ws.send(CONNECTED, text=True)
            await ws.recv()
            await ws.send(ACK, text=True)
            await script(ws)
            await ws.wait_closed()
        finally:
            self.close_codes.append(ws.close_code)
            self.closed.set()


@asynccontextmanager
async def feed_server(
    feed: Feed,
    *,
    process_request: Callable[[ServerConnection, Request], Response | None] | None = None,
    tls: ssl.SSLContext | None = None,
    host: str = "127.0.0.1",
) -> AsyncIterator[str]:
    async with serve(
        feed.handler,
        host,
        0,
        process_request=process_request,
        ssl=tls,
        max_size=None,
        compression=None,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        scheme = "wss" if tls is not None else "ws"
        yield f"{scheme}://{'localhost' if tls is not None else host}:{port}/ws/{KEY}"


async def hold(ws: ServerConnection) -> None:
    await ws.wait_closed()


def sending(*messages: bytes, then: Script = hold) -> Script:
    async def script(ws: ServerConnection) -> None:
        for message in messages:
            await ws.send(message, text=True)
        await then(ws)

    return script


# --- tests ---------------------------------------------------------------------------------------


def test_events_arrive_in_order_with_the_low_water_mark_of_what_was_put() -> None:
    # Seconds go back and forth, as a feed reorders pending and confirmed events.
    seconds = [(n * 7) % 40 for n in range(3000)]
    messages = [event_frame(n, seconds=s) for n, s in enumerate(seconds)]
    feed = Feed([sending(*messages)])

    async def test() -> None:
        sink = Sink()
        async with feed_server(feed) as url, running(consumer(url, sink)):
            await sink.wait_for(lambda: len(sink.events) == len(messages))
        assert [log_index(e) for e in sink.events] == list(range(len(messages)))
        assert len(sink.puts) < len(messages) / 10  # one put per read, not per message
        mark = feeds.LowWaterMark()
        for put in sink.puts:
            for event in put.events:
                assert isinstance(event, OrderFilledEvent)
                mark.add(event.event_time)
            assert put.checkpoint == Checkpoint("feed.orders[all]", None, mark.value)

    run(test)


def test_unreadable_frames_are_dead_lettered_in_between() -> None:
    bad = b'{"type":"event","subscription_id":"sub-1","data":{"event_type":"nope"}}'
    feed = Feed([sending(event_frame(0), bad, b"\xff not json", event_frame(1))])

    async def test() -> None:
        sink = Sink()
        async with feed_server(feed) as url, running(consumer(url, sink)):
            await sink.wait_for(lambda: len(sink.events) == 2 and len(sink.dead) == 2)
        assert [d.raw for d in sink.dead] == [bad, b"\xff not json"]
        assert all(d.reason for d in sink.dead)

    run(test)


def test_the_servers_pings_are_answered() -> None:
    pongs: list[float] = []

    async def ping(ws: ServerConnection) -> None:
        for _ in range(3):
            pongs.append(await asyncio.wait_for(await ws.ping(), timeout=2))
        await ws.send(event_frame(0), text=True)
        await hold(ws)

    feed = Feed([ping])

    async def test() -> None:
        sink = Sink()
        async with feed_server(feed) as url, running(consumer(url, sink)):
            await sink.wait_for(lambda: len(sink.events) == 1)
        assert len(pongs) == 3

    run(test)


async def client_frame(reader: asyncio.StreamReader) -> int:
    """Read one (masked) frame from the client; its opcode."""
    head = await reader.readexactly(2)
    size = head[1] & 0x7F
    if size >= 126:
        size = int.from_bytes(await reader.readexactly(2 if size == 126 else 8), "big")
    await reader.readexactly(4 + size)  # the mask, then the payload
    return head[0] & 0x0F


@dataclass
class SilentFeed:
    """A websocket server by hand that never answers a ping (websockets always does)."""

    connections: int = 0
    opcodes: list[int] = field(default_factory=list)  # of the client's frames after the ack

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        request = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(
            hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()  # noqa: S324
        )
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        writer.write(bytes((0x81, len(CONNECTED))) + CONNECTED)
        await client_frame(reader)  # the subscription
        writer.write(bytes((0x81, len(ACK))) + ACK)
        try:
            while True:
                self.opcodes.append(await client_frame(reader))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def test_a_server_that_stops_answering_pings_is_dropped_and_reconnected() -> None:
    silent = SilentFeed()
    settings = feeds.FeedSettings(
        handshake_timeout=2.0, ping_interval=0.2, ping_timeout=0.2, backoff=FAST
    )

    async def test() -> None:
        server = await asyncio.start_server(silent.handle, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            sink = Sink()
            c = consumer(f"ws://127.0.0.1:{port}/ws/key", sink, settings)
            async with running(c):
                while silent.connections < 2:
                    await asyncio.sleep(0.05)
            assert reconnects(c, "ConnectionClosedError") >= 1
        assert 0x9 in silent.opcodes  # the client pinged before it gave up

    run(test)


@pytest.mark.parametrize("status", [HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN, 404])
def test_a_refused_key_stops_the_worker(status: int) -> None:
    def refuse(connection: ServerConnection, request: Request) -> Response:
        return connection.respond(HTTPStatus(status), "no\n")

    async def test() -> None:
        async with feed_server(Feed([hold]), process_request=refuse) as url:
            with pytest.raises(IngestFatal, match=f"HTTP {int(status)}") as caught:
                await consumer(url, Sink()).run()
        assert KEY not in str(caught.value)

    run(test)


def test_other_refusals_are_retried() -> None:
    answers = [HTTPStatus.SERVICE_UNAVAILABLE, HTTPStatus.INTERNAL_SERVER_ERROR]

    def refuse_twice(connection: ServerConnection, request: Request) -> Response | None:
        return connection.respond(answers.pop(0), "later\n") if answers else None

    async def test() -> None:
        sink = Sink()
        feed = Feed([sending(event_frame(0))])
        async with feed_server(feed, process_request=refuse_twice) as url:
            c = consumer(url, sink)
            async with running(c):
                await sink.wait_for(lambda: len(sink.events) == 1)
        assert reconnects(c, "http_503") == reconnects(c, "http_500") == 1

    run(test)


def test_a_url_that_is_not_a_websocket_url_stops_the_worker() -> None:
    async def test() -> None:
        with pytest.raises(IngestFatal, match="not a websocket URL"):
            await consumer("http://127.0.0.1:1/ws/key", Sink()).run()

    run(test)


def test_nothing_listening_is_retried() -> None:
    async def test() -> None:
        listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        listener.close()
        await listener.wait_closed()
        c = consumer(f"ws://127.0.0.1:{port}/ws/key", Sink())
        async with running(c):
            while reconnects(c, "ConnectionRefusedError") < 2:
                await asyncio.sleep(0.02)

    run(test)


def test_oversized_messages_are_refused_with_1009_and_dead_lettered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(parse, "MAX_FRAME_BYTES", 1024)  # the client's limit becomes 16 KiB
    limit = 16 * 1024
    too_big = frame(order_filled_data(title="x" * limit))

    async def fragments(ws: ServerConnection) -> None:
        await ws.send([too_big[:10_000], too_big[10_000:]], text=True)
        await hold(ws)

    feed = Feed(
        [
            sending(event_frame(0), too_big),  # one frame over the limit
            fragments,  # a message over the limit in two frames, each under it
            sending(event_frame(1)),
        ]
    )

    async def test() -> None:
        sink = Sink()
        async with feed_server(feed) as url, running(consumer(url, sink)):
            await sink.wait_for(lambda: len(sink.events) == 2)
            while len(feed.close_codes) < 2:
                await asyncio.sleep(0.01)
        assert [e.raw for e in sink.events] == [event_frame(0), event_frame(1)]
        assert feed.close_codes[:2] == [1009, 1009]
        assert [d.raw for d in sink.dead] == [b"", b""]
        assert all(f"exceeds limit of {limit} bytes" in d.reason for d in sink.dead)

    run(test)


def test_fragmented_messages_are_put_together() -> None:
    whole = event_frame(7)

    async def fragments(ws: ServerConnection) -> None:
        await ws.send([whole[:5], whole[5:600], whole[600:]], text=True)
        await ws.send([whole[:100], whole[100:]], text=False)
        await hold(ws)

    feed = Feed([fragments])

    async def test() -> None:
        sink = Sink()
        async with feed_server(feed) as url, running(consumer(url, sink)):
            await sink.wait_for(lambda: len(sink.events) == 2)
        assert [e.raw for e in sink.events] == [whole, whole]

    run(test)


@pytest.mark.parametrize(
    ("close", "reason"),
    [((1001, "going away"), "ConnectionClosedOK"), ((1011, "oops"), "ConnectionClosedError")],
)
def test_a_server_close_is_answered_and_reconnected(close: tuple[int, str], reason: str) -> None:
    async def close_after_one(ws: ServerConnection) -> None:
        await ws.send(event_frame(0), text=True)
        await ws.close(*close)

    feed = Feed([close_after_one, sending(event_frame(1))])

    async def test() -> None:
        sink = Sink()
        async with feed_server(feed) as url:
            c = consumer(url, sink)
            async with running(c):
                await sink.wait_for(lambda: len(sink.events) == 2)
        assert feed.close_codes[0] == close[0]  # the client echoed the server's code
        assert reconnects(c, reason) == 1

    run(test)


def test_a_reconnect_records_the_gap_before_the_events_after_it() -> None:
    async def drop(ws: ServerConnection) -> None:
        await ws.send(event_frame(0), text=True)
        await asyncio.sleep(0.2)
        ws.transport.abort()

    feed = Feed([drop, sending(event_frame(1, seconds=60), event_frame(2, seconds=61))])

    async def test() -> None:
        sink = Sink()
        async with feed_server(feed) as url:
            c = consumer(url, sink)
            async with running(c):
                await sink.wait_for(lambda: len(sink.events) == 3)
        assert reconnects(c, "ConnectionClosedError") == 1
        ((start, end, why),) = sink.writer.gaps
        assert why == feeds.DISCONNECTED
        first = datetime.fromtimestamp(TIMESTAMP, UTC)
        assert (start, end) == (first - SETTINGS.gap_slack, first + dt.timedelta(seconds=70))
        after = sink.log.index("gap")
        assert [log_index(e) for p in sink.puts[:after] for e in p.events] == [0]
        assert sink.status.gaps == 1

    run(test)


def test_stopping_closes_the_connection_cleanly() -> None:
    feed = Feed([sending(event_frame(0))])

    async def test() -> None:
        sink = Sink()
        async with feed_server(feed) as url:
            async with running(consumer(url, sink)):
                await sink.wait_for(lambda: len(sink.events) == 1)
            await feed.closed.wait()
        assert feed.close_codes == [1000]

    run(test)


def test_a_slow_sink_stops_the_reading_and_loses_nothing() -> None:
    count = 20_000  # ~20 MB: more than the loopback socket buffers hold
    sent = asyncio.Event()

    async def flood(ws: ServerConnection) -> None:
        for n in range(count):
            await ws.send(event_frame(n), text=True)
        sent.set()
        await hold(ws)

    feed = Feed([flood])

    async def test() -> None:
        sink = Sink()
        async with feed_server(feed) as url, running(consumer(url, sink)):
            await sink.wait_for(lambda: len(sink.events) > 0)
            sink.open.clear()
            await asyncio.sleep(1.0)
            assert not sent.is_set()  # TCP held the server back: the client stopped reading
            sink.open.set()
            await sink.wait_for(lambda: len(sink.events) == count)
        assert [log_index(e) for e in sink.events] == list(range(count))

    run(test)


def test_a_feed_faster_than_the_sink_is_read_in_bounded_amounts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """picows grows its read buffer whenever a read fills it: behind a slow sink each read took
    megabytes, thousands of frames held at once (the worker peaked above 300 MB on a replayed
    day). The socket's receive buffer bounds every read."""
    count = 20_000
    size = len(event_frame(0))
    peak = 0

    class Counting(feeds._Receiver):
        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            nonlocal peak
            super().on_ws_frame(transport, frame)
            peak = max(peak, len(self.messages))

    monkeypatch.setattr(feeds, "_Receiver", Counting)

    async def flood(ws: ServerConnection) -> None:
        for n in range(count):
            await ws.send(event_frame(n), text=True)
        await hold(ws)

    class SlowSink(Sink):
        async def put(
            self, events: Sequence[Event], dead: Sequence[DeadLetter], checkpoint: Checkpoint | None
        ) -> None:
            await asyncio.sleep(0.002 * len(events) / 100)  # slower than loopback
            await super().put(events, dead, checkpoint)

    async def test() -> None:
        sink = SlowSink()
        async with feed_server(Feed([flood])) as url, running(consumer(url, sink)):
            await sink.wait_for(lambda: len(sink.events) == count)
        assert [log_index(e) for e in sink.events] == list(range(count))
        # What one read can bring (the kernel reports twice the buffer it was asked for) on top
        # of a full queue.
        assert peak <= feeds.MAX_QUEUE + 2 * feeds.RECEIVE_BUFFER // size, peak

    run(test)


def test_loopback_never_goes_through_a_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "ws_proxy", "socks_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # the discard port: nothing there
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    feed = Feed([sending(event_frame(0))])

    async def test() -> None:
        sink = Sink()
        async with feed_server(feed) as url, running(consumer(url, sink)):
            await sink.wait_for(lambda: len(sink.events) == 1)

    run(test)


def test_other_hosts_use_the_proxy_the_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http", "https", "ws", "wss", "socks", "all", "no"):
        for variant in (f"{name}_proxy", f"{name}_proxy".upper()):
            monkeypatch.delenv(variant, raising=False)
    assert feeds._proxy("wss://feeds.example.com/ws/k") is None
    monkeypatch.setenv("http_proxy", "http://proxy.example.com:8080")
    assert feeds._proxy("wss://feeds.example.com/ws/k") is None  # HTTP's proxy is not for TLS
    assert feeds._proxy("ws://feeds.example.com/ws/k") == "http://proxy.example.com:8080"
    monkeypatch.setenv("https_proxy", "http://proxy.example.com:3128")
    assert feeds._proxy("wss://feeds.example.com/ws/k") == "http://proxy.example.com:3128"
    monkeypatch.setenv("socks_proxy", "http://proxy.example.com:1080")
    assert feeds._proxy("wss://feeds.example.com/ws/k") == "socks5h://proxy.example.com:1080"
    monkeypatch.setenv("no_proxy", "example.com")
    assert feeds._proxy("wss://feeds.example.com/ws/k") is None


def _self_signed(directory: Path) -> tuple[ssl.SSLContext, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path


def test_wss_verifies_the_servers_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls, cert = _self_signed(tmp_path)
    feed = Feed([sending(event_frame(0))])

    async def test() -> None:
        async with feed_server(feed, tls=tls) as url:
            untrusted = consumer(url, Sink())
            async with running(untrusted):
                while reconnects(untrusted, "SSLCertVerificationError") < 1:
                    await asyncio.sleep(0.02)
            monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the default context trusts it now
            sink = Sink()
            async with running(consumer(url, sink)):
                await sink.wait_for(lambda: len(sink.events) == 1)

    run(test)
