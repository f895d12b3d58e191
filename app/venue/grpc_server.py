"""The simulated exchange's gRPC endpoint: DropCopyAPI streams and ReportAPI searches.

grpc.aio, not the thread-pool server: DropCopy streams stay open and idle once the stored day is
sent (real streams never end), and an idle coroutine costs nothing where an idle stream would pin
a pool thread. SQLite reads run in worker threads (asyncio.to_thread) so one slow query never
stalls the other streams or the websocket feeds sharing the loop.

Responses are assembled as bytes: the store keeps every message serialized, and on the wire a
repeated message field is just the concatenation of its length-prefixed elements, so the hot path
neither parses nor re-encodes (handlers are registered with no response serializer).

Paced, the venue plays the day live, and its Report API knows only what has happened: what the
DropCopy stream of the same events has played so far (the newest event time any connection of
that stream was sent). Unpaced, the stored day is history and the Report API serves all of it.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]  # stubs predate it
from grpc_reflection.v1alpha import reflection

from app.venue.faults import UNKNOWN_ENUM, Defect, FaultInjector, FaultPlan
from app.venue.model import StreamName
from app.venue.tokens import (
    ExpiredTokenError,
    TokenError,
    TokenSigner,
    filters_digest,
    stream_filters_digest,
)
from polymarket.v1 import dropcopy_pb2, report_pb2, trading_pb2

if TYPE_CHECKING:
    from app.venue.store import VenueStore

DROPCOPY_SERVICE = "polymarket.v1.DropCopyAPI"
REPORT_SERVICE = "polymarket.v1.ReportAPI"
PARTICIPANT_ID = re.compile(r"firms/[^/\s]+/users/[^/\s]+")
# gRPC clients refuse messages over 4 MiB by default, so a page of 10,000 trades is cut short
# (with a next_page_token), as a real server bounds its pages in bytes too.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024 - 64 * 1024


@dataclass(frozen=True, slots=True)
class GrpcOptions:
    tokens: frozenset[str] = frozenset({"devtoken"})  # accepted bearer tokens
    batch_size: int = 500  # events per DropCopy response (500 trades are ~250 kB)
    pace_events_per_s: float | None = None  # None = as fast as the client reads
    report_requests_per_min: int = 12  # Report API search calls per token per minute
    max_streams_per_token: int = 20
    default_page_size: int = 1000
    max_page_size: int = 10000


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, data: bytes) -> bytes:
    """A length-delimited field (bytes, string or embedded message) in protobuf wire format."""
    return _varint((number << 3) | 2) + _varint(len(data)) + data


def _varint_field(number: int, value: int) -> bytes:
    """An int64/enum field; negatives are ten-byte two's complement, as protobuf encodes them."""
    return _varint(number << 3) + _varint(value & 0xFFFF_FFFF_FFFF_FFFF)


def _nested(path: Sequence[int], leaf: bytes) -> bytes:
    """`leaf`, a field of the innermost message, inside the sub-message fields of `path`."""
    for number in reversed(path):
        leaf = _field(number, leaf)
    return leaf


def _repeated(number: int, payloads: Sequence[bytes]) -> bytes:
    tag = _varint((number << 3) | 2)
    return b"".join(tag + _varint(len(p)) + p for p in payloads)


class _Timestamp(Protocol):
    seconds: int
    nanos: int


def _micros(ts: _Timestamp) -> int:
    return ts.seconds * 1_000_000 + ts.nanos // 1000


class _HasTimeWindow(Protocol):
    def HasField(self, field_name: Any) -> bool: ...

    @property
    def start_time(self) -> _Timestamp: ...

    @property
    def end_time(self) -> _Timestamp: ...


def _window(request: _HasTimeWindow) -> tuple[int | None, int | None]:
    start = _micros(request.start_time) if request.HasField("start_time") else None
    end = _micros(request.end_time) if request.HasField("end_time") else None
    return start, end


class _PlayedPositions:
    """Positions as the venue held them at a play position: the latest change of each account
    and symbol at or before it. Read incrementally, as the play position only moves on."""

    CHUNK = 5_000

    def __init__(self, store: VenueStore) -> None:
        self._store = store
        self._lock = threading.Lock()  # ListPositions calls run in worker threads
        self._after = 0  # the last position_changes seq applied
        self._latest: dict[tuple[str, str], bytes] = {}

    def at(self, until_us: int, accounts: Sequence[str], symbols: Sequence[str]) -> list[bytes]:
        with self._lock:
            while True:
                rows = self._store.stream("position_changes", self._after, (), (), self.CHUNK)
                played = [row for row in rows if row.event_time_us <= until_us]
                for row in played:
                    position = trading_pb2.PositionChange.FromString(row.payload).position
                    self._latest[(position.account, position.symbol)] = position.SerializeToString()
                if played:
                    self._after = played[-1].seq
                if len(played) < self.CHUNK:
                    break
            latest = sorted(self._latest.items())
        return [
            payload
            for (account, symbol), payload in latest
            if (not accounts or account in accounts) and (not symbols or symbol in symbols)
        ]


class _RateLimiter:
    """Sliding one-minute window per bearer token; refused calls do not count."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._calls: defaultdict[str, deque[float]] = defaultdict(deque)

    def allow(self, key: str, now: float) -> bool:
        calls = self._calls[key]
        while calls and now - calls[0] >= 60.0:
            calls.popleft()
        if len(calls) >= self.per_minute:
            return False
        calls.append(now)
        return True


@dataclass(frozen=True, slots=True)
class _Malformed:
    """How the malformed fault breaks a stream's messages: a fresh key in the string field at
    `key_path` (logged as `key_name`), and one of `defects`, each one our parser refuses."""

    key_name: str
    key_path: tuple[int, ...]
    defects: tuple[Defect, ...]


@dataclass(frozen=True, slots=True)
class _StreamSpec:
    name: StreamName
    method: str
    request_type: type[Message]
    account_scoped: bool  # instrument states need no x-participant-id
    has_firms: bool
    malformed: _Malformed


_STREAMS = (
    _StreamSpec(
        "executions",
        "CreateDropCopySubscription",
        dropcopy_pb2.CreateDropCopySubscriptionRequest,
        account_scoped=True,
        has_firms=True,
        malformed=_Malformed(
            "execution_id",
            (1,),  # Execution.id
            (
                Defect("unknown_execution_type", (5,), UNKNOWN_ENUM),  # Execution.type
                Defect("negative_quantity", (3,)),  # Execution.last_shares
            ),
        ),
    ),
    _StreamSpec(
        "trade_captures",
        "CreateTradeCaptureReportSubscription",
        dropcopy_pb2.CreateTradeCaptureReportSubscriptionRequest,
        account_scoped=True,
        has_firms=True,
        malformed=_Malformed(
            "trade_id",
            (1,),  # Trade.id
            (
                Defect("unknown_trade_state", (5,), UNKNOWN_ENUM),  # Trade.state
                Defect("negative_quantity", (2, 3)),  # Trade.aggressor.last_shares
            ),
        ),
    ),
    _StreamSpec(
        "instrument_states",
        "CreateInstrumentStateChangeSubscription",
        dropcopy_pb2.CreateInstrumentStateChangeSubscriptionRequest,
        account_scoped=False,
        has_firms=False,
        malformed=_Malformed(
            "symbol",
            (1,),  # Instrument.symbol
            (
                Defect("unknown_instrument_state", (2,), UNKNOWN_ENUM),  # Instrument.state
                Defect("negative_price_scale", (4,)),  # Instrument.price_scale
            ),
        ),
    ),
    _StreamSpec(
        "position_changes",
        "CreatePositionChangeSubscription",
        dropcopy_pb2.CreatePositionChangeSubscriptionRequest,
        account_scoped=True,
        has_firms=True,
        malformed=_Malformed(
            "account",
            (1, 1),  # PositionChange.position.account
            (
                Defect("negative_quantity", (1, 4)),  # PositionChange.position.qty_bought
                Defect("negative_quantity", (1, 5)),  # PositionChange.position.qty_sold
            ),
        ),
    ),
)


class _SearchRequest(Protocol):
    page_size: int
    page_token: str

    def SerializeToString(self, *, deterministic: bool = ...) -> bytes: ...


Context = grpc.aio.ServicerContext[Any, Any]


class VenueGrpc:
    """DropCopyAPI and ReportAPI servicers sharing auth, stream slots, pacing and faults."""

    def __init__(
        self,
        store: VenueStore,
        options: GrpcOptions,
        signer: TokenSigner,
        faults: FaultInjector,
    ) -> None:
        self.store = store
        self.options = options
        self.signer = signer
        self.faults = faults
        self.stopping = asyncio.Event()
        self._streams: defaultdict[str, int] = defaultdict(int)
        self._limiter = _RateLimiter(options.report_requests_per_min)
        ttl_s = faults.spec.token_ttl_s
        self._ttl_ms = None if ttl_s is None else int(ttl_s * 1000)
        # Paced: the newest event time each stream has sent on any connection (its play position).
        self._played: dict[StreamName, int] = {}
        self._positions = _PlayedPositions(store)

    # -- auth ---------------------------------------------------------------------------------

    async def _authorize(self, context: Context, *, account_scoped: bool) -> str:
        """The caller's bearer token, or abort UNAUTHENTICATED / PERMISSION_DENIED."""
        metadata = {k.lower(): v for k, v in context.invocation_metadata() or ()}
        scheme, _, token = str(metadata.get("authorization", "")).partition(" ")
        if scheme.lower() != "bearer" or not token:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing bearer token")
        if token.strip() not in self.options.tokens:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token")
        if account_scoped and not PARTICIPANT_ID.fullmatch(
            str(metadata.get("x-participant-id", ""))
        ):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                "x-participant-id metadata must be firms/<FIRM>/users/<USER>",
            )
        return token.strip()

    # -- DropCopyAPI --------------------------------------------------------------------------

    def _stream_handler(
        self, spec: _StreamSpec
    ) -> Callable[[Message, Context], AsyncIterator[bytes]]:
        async def handler(request: Message, context: Context) -> AsyncIterator[bytes]:
            async for response in self._stream(spec, request, context):
                yield response

        return handler

    async def _stream(
        self, spec: _StreamSpec, request: Any, context: Context
    ) -> AsyncIterator[bytes]:
        token = await self._authorize(context, account_scoped=spec.account_scoped)
        symbols = tuple(request.symbols)
        firms = tuple(request.firms) if spec.has_firms else ()
        digest = stream_filters_digest(symbols, firms)
        after = await self._start_after(spec, request, digest, context)
        if self._streams[token] >= self.options.max_streams_per_token:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many concurrent streams for this token "
                f"(max {self.options.max_streams_per_token})",
            )
        self._streams[token] += 1
        try:
            plan = self.faults.plan(f"grpc.{spec.name}")
            async for response in self._deliver(
                spec, plan, after=after, symbols=symbols, firms=firms, digest=digest
            ):
                yield response
            if plan.cut is not None:
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE, "stream disconnected (injected fault); resume"
                )
            # The stored day is over; a live stream stays open, silent, until either side leaves.
            await self.stopping.wait()
            await context.abort(grpc.StatusCode.UNAVAILABLE, "venue shutting down")
        finally:
            self._streams[token] -= 1

    async def _start_after(
        self, spec: _StreamSpec, request: Any, digest: bytes, context: Context
    ) -> int:
        """The seq to serve after: the resume token's when given (it is the more precise
        position), else the first event at or after resume_time, else the start of the day."""
        if request.resume_token:
            try:
                return self.signer.read_resume_token(
                    bytes(request.resume_token),
                    stream=spec.name,
                    digest=digest,
                    now_ms=int(time.time() * 1000),
                    ttl_ms=self._ttl_ms,
                )
            except ExpiredTokenError as exc:
                self.faults.log.record(f"grpc.{spec.name}", "token_expired", detail=str(exc))
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            except TokenError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if request.HasField("resume_time"):
            return await asyncio.to_thread(
                self.store.first_seq_at_or_after, spec.name, _micros(request.resume_time)
            )
        return 0

    async def _deliver(
        self,
        spec: _StreamSpec,
        plan: FaultPlan,
        *,
        after: int,
        symbols: tuple[str, ...],
        firms: tuple[str, ...],
        digest: bytes,
    ) -> AsyncIterator[bytes]:
        """Responses from `after` to the end of the stored day, with this stream's faults."""
        pace = self.options.pace_events_per_s
        # Paced, a response carries about a tenth of a second of events, not one long burst.
        limit = (
            self.options.batch_size
            if not pace
            else max(1, min(self.options.batch_size, int(pace / 10)))
        )
        started = time.monotonic()
        sent = 0
        while not self.stopping.is_set():
            rows = await asyncio.to_thread(
                self.store.stream, spec.name, after, symbols, firms, limit
            )
            if not rows:
                return
            after = rows[-1].seq
            payloads = plan.reorder([row.payload for row in rows])
            if plan.spec.malformed_rate > 0:
                payloads = self._with_malformed(plan, spec.malformed, payloads)
            resume_token = self.signer.resume_token(
                spec.name, after, digest, int(time.time() * 1000)
            )
            response = _field(1, resume_token) + _repeated(2, payloads)
            if plan.latency_s:
                await asyncio.sleep(plan.latency_s)
            yield response
            if pace:
                # Stream rows come in time order; the first connection to send an event plays it.
                newest = rows[-1].event_time_us
                self._played[spec.name] = max(self._played.get(spec.name, newest), newest)
            if plan.duplicate():
                plan.log.record(plan.channel, "duplicate", connection=plan.ordinal, after=after)
                yield response
            sent += len(rows)
            if pace:
                await asyncio.sleep(max(0.0, started + sent / pace - time.monotonic()))
            if plan.count(len(rows)) is not None:
                return

    @staticmethod
    def _with_malformed(plan: FaultPlan, shape: _Malformed, payloads: list[bytes]) -> list[bytes]:
        """Follow some messages with a broken copy. Fields appended to a serialized message
        override earlier ones and sub-messages merge (protobuf merge semantics), so no parse is
        needed."""
        out: list[bytes] = []
        for payload in payloads:
            out.append(payload)
            if plan.malformed():
                broken = plan.message_defect(shape.key_name, shape.defects)
                *key_outer, key_field = shape.key_path
                *outer, number = broken.defect.path
                out.append(
                    payload
                    + _nested(key_outer, _field(key_field, broken.key.encode()))
                    + _nested(outer, _varint_field(number, broken.value))
                )
        return out

    # -- ReportAPI ----------------------------------------------------------------------------

    def _known_end(self, stream: StreamName, end_us: int | None) -> int | None:
        """The exclusive end of a search window: paced, no later than just after the stream's
        play position (nothing at all before it has played)."""
        if not self.options.pace_events_per_s:
            return end_us
        known = self._played.get(stream, -1) + 1
        return known if end_us is None else min(end_us, known)

    async def _page(
        self,
        search: str,
        request: _SearchRequest,
        context: Context,
        query: Callable[[str | None, int], tuple[list[bytes], str | None]],
        *,
        with_eof: bool,
    ) -> bytes:
        token = await self._authorize(context, account_scoped=True)
        if not self._limiter.allow(token, time.monotonic()):
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"Report API rate limit: {self.options.report_requests_per_min} requests "
                "per minute per token",
            )
        if request.page_size < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "page_size must not be negative")
        page_size = min(
            request.page_size or self.options.default_page_size, self.options.max_page_size
        )
        page_token = request.page_token
        # A page token is bound to the filters, not to the page size, which may change per page.
        request.page_size, request.page_token = 0, ""
        digest = filters_digest([search.encode(), request.SerializeToString(deterministic=True)])
        after_key = None
        if page_token:
            try:
                after_key = self.signer.read_page_token(page_token, search=search, digest=digest)
            except TokenError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        payloads, next_key = await asyncio.to_thread(query, after_key, page_size)
        while page_size > 1 and sum(map(len, payloads)) > MAX_RESPONSE_BYTES:
            page_size //= 2
            payloads, next_key = await asyncio.to_thread(query, after_key, page_size)
        response = _repeated(1, payloads)
        if next_key is not None:
            response += _field(2, self.signer.page_token(search, next_key, digest).encode())
        elif with_eof:
            response += b"\x18\x01"  # field 3 (eof), varint true
        return response

    async def search_executions(
        self, request: report_pb2.SearchExecutionsRequest, context: Context
    ) -> bytes:
        start, end = _window(request)
        end = self._known_end("executions", end)
        return await self._page(
            "executions",
            request,
            context,
            lambda after_key, limit: self.store.search_executions(
                start_us=start,
                end_us=end,
                symbol=request.symbol or None,
                accounts=list(request.accounts),
                exec_ids=list(request.exec_ids),
                order_id=request.order_id or None,
                types=[int(t) for t in request.types],
                after_key=after_key,
                limit=limit,
            ),
            with_eof=True,
        )

    async def search_trades(
        self, request: report_pb2.SearchTradesRequest, context: Context
    ) -> bytes:
        start, end = _window(request)
        end = self._known_end("trade_captures", end)
        return await self._page(
            "trades",
            request,
            context,
            lambda after_key, limit: self.store.search_trades(
                start_us=start,
                end_us=end,
                symbol=request.symbol or None,
                accounts=list(request.accounts),
                trade_ids=list(request.trade_ids),
                states=[int(s) for s in request.states],
                after_key=after_key,
                limit=limit,
            ),
            with_eof=False,
        )

    async def search_orders(
        self, request: report_pb2.SearchOrdersRequest, context: Context
    ) -> bytes:
        start, end = _window(request)
        # An order is created by the execution that acknowledges it.
        end = self._known_end("executions", end)
        return await self._page(
            "orders",
            request,
            context,
            lambda after_key, limit: self.store.search_orders(
                start_us=start,
                end_us=end,
                symbol=request.symbol or None,
                accounts=list(request.accounts),
                order_ids=list(request.order_ids),
                after_key=after_key,
                limit=limit,
            ),
            with_eof=False,
        )

    async def list_positions(
        self, request: report_pb2.ListPositionsRequest, context: Context
    ) -> bytes:
        # Not a search: the documented pacing limit covers search calls only.
        await self._authorize(context, account_scoped=True)
        accounts, symbols = list(request.accounts), list(request.symbols)
        if self.options.pace_events_per_s:
            played = self._played.get("position_changes", -1)
            payloads = await asyncio.to_thread(self._positions.at, played, accounts, symbols)
        else:
            payloads = await asyncio.to_thread(self.store.list_positions, accounts, symbols)
        return _repeated(1, payloads)

    # -- wiring -------------------------------------------------------------------------------

    def handlers(self) -> list[grpc.GenericRpcHandler[Any, Any]]:
        dropcopy = {
            spec.method: grpc.unary_stream_rpc_method_handler(
                self._stream_handler(spec),
                request_deserializer=spec.request_type.FromString,
            )
            for spec in _STREAMS
        }
        searches: dict[str, tuple[Callable[[Any, Context], Awaitable[bytes]], type[Message]]] = {
            "SearchExecutions": (self.search_executions, report_pb2.SearchExecutionsRequest),
            "SearchTrades": (self.search_trades, report_pb2.SearchTradesRequest),
            "SearchOrders": (self.search_orders, report_pb2.SearchOrdersRequest),
            "ListPositions": (self.list_positions, report_pb2.ListPositionsRequest),
        }
        report = {
            name: grpc.unary_unary_rpc_method_handler(
                behaviour, request_deserializer=request_type.FromString
            )
            for name, (behaviour, request_type) in searches.items()
        }
        return [
            grpc.method_handlers_generic_handler(DROPCOPY_SERVICE, dropcopy),
            grpc.method_handlers_generic_handler(REPORT_SERVICE, report),
        ]


@dataclass(slots=True)
class GrpcEndpoint:
    server: grpc.aio.Server
    port: int
    venue: VenueGrpc
    health: health_aio.HealthServicer

    async def stop(self, grace_s: float) -> None:
        self.venue.stopping.set()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)


async def start_grpc(venue: VenueGrpc, host: str, port: int) -> GrpcEndpoint:
    """Bind and start the gRPC server (port 0 = ephemeral) with health and reflection."""
    # Without SO_REUSEPORT a second venue on a taken port fails loudly instead of silently
    # sharing the port (and the clients) with the first.
    server = grpc.aio.server(handlers=venue.handlers(), options=[("grpc.so_reuseport", 0)])
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    services = (DROPCOPY_SERVICE, REPORT_SERVICE, reflection.SERVICE_NAME, "grpc.health.v1.Health")
    reflection.enable_server_reflection(services, server)
    bound = server.add_insecure_port(f"{host}:{port}")  # raises RuntimeError when taken
    await server.start()
    for name in ("", DROPCOPY_SERVICE, REPORT_SERVICE):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    return GrpcEndpoint(server, bound, venue, health)
