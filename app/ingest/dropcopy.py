"""The four DropCopy stream consumers (executions, trade captures, instrument states, positions).

Per stream: open the server stream from the stored resume token (or by time after the token was
refused), turn each response's messages into events (a message the parser rejects becomes a dead
letter with its serialized bytes), and hand them with the response's resume token to the
stream's sink, which commits token and rows together. A worker opens one channel and four
streams on it; the venue allows 20 concurrent streams per firm, so at most five workers (shards)
per firm can run at once — the venue answers RESOURCE_EXHAUSTED beyond, which we treat as
transient and back off from, so a sixth worker waits for a slot instead of failing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

from app.config import grpc_target_host, is_loopback_host
from app.domain.events import DeadLetter, Event
from app.ingest import parse
from app.ingest.auth import TokenSource
from app.ingest.backoff import BackoffPolicy, BackoffState, connected, delivered, failed
from app.ingest.pipeline import SourceSink
from app.ingest.writer import Checkpoint
from app.observability import IngestMetrics
from polymarket.v1 import dropcopy_pb2

log = logging.getLogger(__name__)

TOKEN_EXPIRED = "resume token expired"  # noqa: S105 - the venue's status text, not a secret
# Generous: a response carries one batch (500 events by default) of small messages.
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    # A default gRPC server tolerates pings every 5 minutes on a stream without data (idle
    # streams are normal here); more often earns a GOAWAY "too_many_pings".
    ("grpc.keepalive_time_ms", 300_000),
    ("grpc.keepalive_timeout_ms", 20_000),
]
_FATAL_CODES = frozenset(
    {
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)
# How the venue refuses a resume token: expired, or malformed / for other filters. Without a
# token in the request the same codes mean our request itself is wrong.
_TOKEN_REFUSED = frozenset({grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT})


class IngestFatal(RuntimeError):
    """A problem retrying cannot fix (credentials, permissions, configuration)."""


class InsecureChannelRefused(IngestFatal):
    pass


@dataclass(frozen=True, slots=True)
class StreamSpec:
    name: str  # the venue's stream name, e.g. "executions"
    method: str  # DropCopyAPI RPC
    request_type: Callable[..., Message]
    items: str  # the response's repeated field
    parse: Callable[[Any], Event]
    event_time: Callable[[Any], datetime]
    account_scoped: bool  # sends x-participant-id and the firms filter

    @property
    def source(self) -> str:
        return f"dropcopy.{self.name}"


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec(
        "executions",
        "CreateDropCopySubscription",
        dropcopy_pb2.CreateDropCopySubscriptionRequest,
        "executions",
        parse.execution,
        lambda e: e.transact_time,
        account_scoped=True,
    ),
    StreamSpec(
        "trade_captures",
        "CreateTradeCaptureReportSubscription",
        dropcopy_pb2.CreateTradeCaptureReportSubscriptionRequest,
        "trade_capture_reports",
        parse.trade_capture,
        lambda e: e.update_time,
        account_scoped=True,
    ),
    StreamSpec(
        "instrument_states",
        "CreateInstrumentStateChangeSubscription",
        dropcopy_pb2.CreateInstrumentStateChangeSubscriptionRequest,
        "instruments",
        parse.instrument,
        lambda e: e.update_time,
        account_scoped=False,
    ),
    StreamSpec(
        "position_changes",
        "CreatePositionChangeSubscription",
        dropcopy_pb2.CreatePositionChangeSubscriptionRequest,
        "position_changes",
        parse.position_change,
        lambda e: e.change_time,
        account_scoped=True,
    ),
)


class _Corrupt(ValueError):
    def __init__(self, reason: str, at: int) -> None:
        super().__init__(reason)
        self.at = at  # where the readable part ends


def _varint(data: bytes, pos: int, field_start: int) -> tuple[int, int]:
    result = shift = 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
    raise _Corrupt(f"bad varint at byte {pos}", field_start)


def _wire_fields(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(field number, wire type, payload) of each top-level field; `_Corrupt` where the wire
    format stops making sense."""
    pos = 0
    while pos < len(data):
        start = pos
        key, pos = _varint(data, pos, start)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, end = _varint(data, pos, start)
        elif wire == 2:
            length, pos = _varint(data, pos, start)
            end = pos + length
        elif wire in (1, 5):
            end = pos + (8 if wire == 1 else 4)
        else:
            raise _Corrupt(f"unsupported wire type {wire} at byte {start}", start)
        if end > len(data):
            raise _Corrupt(f"field {number} at byte {start} runs past the end", start)
        yield number, wire, data[pos:end]
        pos = end


def _culprit(descriptor: Descriptor, data: bytes, path: str = "") -> str | None:
    """Which field makes a message undecodable, when it is a string that is not UTF-8 or a
    sub-message that is corrupt; protobuf's own error names only the message type."""
    try:
        fields = list(_wire_fields(data))
    except _Corrupt as exc:
        return f"{path.rstrip('.') or descriptor.name}: wire format corrupt: {exc}"
    for number, wire, payload in fields:
        field = descriptor.fields_by_number.get(number)
        if field is None or wire != 2:
            continue
        name = f"{path}{field.name}"
        if field.type == FieldDescriptor.TYPE_STRING:
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError as exc:
                return f"{name} not valid UTF-8: {exc.reason} at byte {exc.start}"
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            inner = _culprit(cast(Descriptor, field.message_type), payload, f"{name}.")
            if inner is not None:
                return inner
    return None


def _serialize(request: Message) -> bytes:
    return request.SerializeToString()


@dataclass(frozen=True, slots=True)
class Salvaged:
    """A response that did not decode whole: its readable part, and (reason, bytes) of the rest."""

    response: Message
    undecodable: tuple[tuple[str, bytes], ...]


def response_decoder(method: str, items: str) -> Callable[[bytes], Message | Salvaged]:
    """The response deserializer of a DropCopy stream that never fails. grpc turns a failing
    deserializer into a `None` response, losing the whole batch; this keeps every item that
    decodes, and the resume token, and hands back the others for dead letters."""
    service = dropcopy_pb2.DESCRIPTOR.services_by_name["DropCopyAPI"]
    response_type = GetMessageClass(service.methods_by_name[method].output_type)
    item_field = response_type.DESCRIPTOR.fields_by_name[items]
    item_type = GetMessageClass(cast(Descriptor, item_field.message_type))
    token_number = response_type.DESCRIPTOR.fields_by_name["resume_token"].number

    def item_reason(payload: bytes, exc: DecodeError) -> str:
        descriptor = cast(Descriptor, item_type.DESCRIPTOR)
        return f"undecodable {descriptor.name}: {_culprit(descriptor, payload) or exc}"

    def decode(data: bytes) -> Message | Salvaged:
        try:
            return response_type.FromString(data)
        except DecodeError:
            pass
        response = response_type()
        undecodable: list[tuple[str, bytes]] = []
        try:
            for number, wire, payload in _wire_fields(data):
                if wire != 2:
                    continue
                if number == token_number:
                    response.resume_token = payload  # type: ignore[attr-defined]
                elif number == item_field.number:
                    try:
                        getattr(response, items).append(item_type.FromString(payload))
                    except DecodeError as exc:
                        undecodable.append((item_reason(payload, exc), payload))
        except _Corrupt as exc:
            # The items after this point can't be told apart: keep the rest as one letter.
            undecodable.append(
                (f"undecodable {response_type.DESCRIPTOR.name}: {exc}", data[exc.at :])
            )
        return Salvaged(response, tuple(undecodable))

    return decode


def shard_label(symbols: Sequence[str], firms: Sequence[str]) -> str:
    """A stable name for a symbols/firms filter; part of every checkpoint key of the shard."""
    parts = []
    if symbols:
        parts.append("symbols=" + ",".join(sorted(set(symbols))))
    if firms:
        parts.append("firms=" + ",".join(sorted(set(firms))))
    label = ";".join(parts) or "all"
    if len(label) > 80:
        label = "sha1=" + hashlib.sha1(label.encode(), usedforsecurity=False).hexdigest()
    return label


def checkpoint_key(source: str, shard: str) -> str:
    return f"{source}[{shard}]"


def open_channel(target: str, *, tls: bool, allow_insecure: bool) -> grpc.aio.Channel:
    """TLS by default; plaintext only to loopback, or anywhere when explicitly allowed."""
    if tls:
        return grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(), _CHANNEL_OPTIONS)
    host = grpc_target_host(target)
    if not (is_loopback_host(host) or allow_insecure):
        raise InsecureChannelRefused(
            f"refusing plaintext gRPC to {host}: set RECON_EXCHANGE_TLS=true, or "
            "RECON_EXCHANGE_ALLOW_INSECURE=true if you really mean it"
        )
    return grpc.aio.insecure_channel(target, _CHANNEL_OPTIONS)


@dataclass(frozen=True, slots=True)
class StreamSettings:
    symbols: tuple[str, ...] = ()
    firms: tuple[str, ...] = ()
    participant_id: str | None = None
    resume_overlap: timedelta = timedelta(seconds=60)
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)

    @property
    def shard(self) -> str:
        return shard_label(self.symbols, self.firms)


class DropCopyConsumer:
    """Reads one DropCopy stream forever (until cancelled), resuming after every interruption."""

    def __init__(
        self,
        spec: StreamSpec,
        *,
        channel: grpc.aio.Channel,
        tokens: TokenSource,
        sink: SourceSink,
        settings: StreamSettings,
        metrics: IngestMetrics,
        rng: random.Random | None = None,
    ) -> None:
        self.spec = spec
        self.key = checkpoint_key(spec.source, settings.shard)
        self._call_method = channel.unary_stream(
            f"/polymarket.v1.DropCopyAPI/{spec.method}",
            request_serializer=_serialize,
            response_deserializer=response_decoder(spec.method, spec.items),
            # As the generated stubs do (grpc-stubs predates the keyword). Without it the
            # worker's peak RSS grew to 1 GB over 200k executions, 130 MB with it
            # (scripts/bench_ingest.py --scale 1 --runs executions).
            _registered_method=True,  # type: ignore[call-arg]
        )
        self._tokens = tokens
        self._sink = sink
        self._settings = settings
        self._metrics = metrics
        self._rng = rng or random.Random()
        self._status = sink.status
        self._resume_token: bytes | None = None
        self._resume_time: datetime | None = None
        self._last_event_time: datetime | None = None
        self._unauthenticated = 0  # consecutive UNAUTHENTICATED answers

    def _metadata(self) -> list[tuple[str, str]]:
        # Read per stream open: the venue authorises a stream when it opens, so a refreshed
        # token is picked up by the next stream while live ones keep running.
        metadata = [("authorization", f"Bearer {self._tokens.current()}")]
        if self.spec.account_scoped and self._settings.participant_id:
            metadata.append(("x-participant-id", self._settings.participant_id))
        return metadata

    def _request(self) -> Message:
        fields: dict[str, Any] = {"symbols": list(self._settings.symbols)}
        if self.spec.account_scoped:
            fields["firms"] = list(self._settings.firms)
        request = self.spec.request_type(**fields)
        if self._resume_token:
            request.resume_token = self._resume_token  # type: ignore[attr-defined]
        elif self._resume_time is not None:
            request.resume_time.FromDatetime(self._resume_time)  # type: ignore[attr-defined]
        return request

    async def run(self) -> None:
        stored = await self._sink.call(lambda w: w.load_checkpoint(self.key))
        if stored is not None:
            self._resume_token = stored.resume_token
            self._last_event_time = stored.last_event_time
            log.info(
                "resuming %s from its checkpoint",
                self.key,
                extra={"last_event_time": str(stored.last_event_time)},
            )
        backoff = BackoffState()
        while True:
            sent_token = self._resume_token
            bearer = self._tokens.current()
            call = self._call_method(self._request(), metadata=self._metadata())
            backoff = connected(backoff, time.monotonic())
            self._status.connected = True
            self._metrics.connected.labels(self.spec.source).set(1)
            try:
                async for response in call:
                    backoff = delivered(backoff)
                    self._unauthenticated = 0
                    await self._on_response(response)
                reason = "stream ended"
                log.info("%s: the venue ended the stream; reconnecting", self.key)
            except grpc.aio.AioRpcError as exc:
                reason = exc.code().name.lower()
                if await self._recovered_at_once(exc, sent_token, bearer):
                    self._count_reconnect(reason)
                    continue
            finally:
                call.cancel()
                self._status.connected = False
                self._metrics.connected.labels(self.spec.source).set(0)
            self._count_reconnect(reason)
            delay, backoff = failed(
                self._settings.backoff, backoff, time.monotonic(), self._rng.random()
            )
            await asyncio.sleep(delay)

    async def _recovered_at_once(
        self, exc: grpc.aio.AioRpcError, sent_token: bytes | None, bearer: str
    ) -> bool:
        """Decide what a failed stream means: True to reopen it at once (the cause is fixed),
        False to reopen after a backoff; raises IngestFatal when retrying cannot help."""
        code, details = exc.code(), exc.details() or ""
        if code == grpc.StatusCode.UNAUTHENTICATED:
            self._unauthenticated += 1
            if self._unauthenticated > 1:
                raise IngestFatal(f"{self.key}: the venue refuses our credentials ({details})")
            log.warning("%s: token refused, refreshing it and retrying", self.key)
            await self._tokens.refresh(rejected=bearer)
            return True
        if sent_token and code in _TOKEN_REFUSED:
            await self._resume_by_time(code, details)
            return True
        if code in _FATAL_CODES or code in _TOKEN_REFUSED:
            raise IngestFatal(f"{self.key}: {code.name} {details}")
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            log.warning(
                "%s: the venue refused another stream (%s); the limit is 20 per firm "
                "and each worker opens 4 — backing off",
                self.key,
                details,
            )
        else:
            log.info("%s: stream interrupted (%s %s)", self.key, code.name, details)
        return False

    async def finish(self) -> None:
        """Nothing to close: the stored checkpoint is exactly where the stream resumes."""

    def _count_reconnect(self, reason: str) -> None:
        self._status.reconnects += 1
        self._metrics.reconnects.labels(self.spec.source, reason).inc()

    async def _on_response(self, response: Any) -> None:
        self._status.touch()
        spec = self.spec
        events: list[Event] = []
        dead: list[DeadLetter] = []
        if isinstance(response, Salvaged):
            dead.extend(DeadLetter(spec.source, why, raw) for why, raw in response.undecodable)
            response = response.response
        latest = self._last_event_time
        for item in getattr(response, spec.items):
            try:
                event = spec.parse(item)
            except parse.Rejected as exc:
                dead.append(DeadLetter(spec.source, exc.reason, item.SerializeToString()))
                continue
            events.append(event)
            when = spec.event_time(event)
            if latest is None or when > latest:
                latest = when
        if response.resume_token:
            self._resume_token = bytes(response.resume_token)
            self._resume_time = None
        self._last_event_time = latest
        await self._sink.put(events, dead, Checkpoint(self.key, self._resume_token, latest))

    async def _resume_by_time(self, code: grpc.StatusCode, details: str) -> None:
        """The stored token is refused: go back `overlap` before the last event, record a gap."""
        reason = (
            TOKEN_EXPIRED if TOKEN_EXPIRED in details else f"resume token refused ({code.name})"
        )
        self._resume_token = None
        last = self._last_event_time
        if last is None:
            log.warning("%s: %s, no event time known: replaying from the start", self.key, reason)
            self._resume_time = None
            return
        start = last - self._settings.resume_overlap
        end = max(datetime.now(UTC), start)
        self._resume_time = start
        log.warning(
            "%s: %s; resuming by time from %s and recording the gap for backfill",
            self.key,
            reason,
            start.isoformat(),
        )
        source = self.spec.source
        await self._sink.call(lambda w: w.record_gap(source, start, end, reason))
        self._status.gaps += 1
        self._metrics.gaps.labels(source).inc()
