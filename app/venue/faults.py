"""Fault injection for the simulated venue's servers: what a flaky exchange and flaky feeds do to a
consumer. Every fault is off by default and configured by one spec string, e.g.

    disconnect_every=5000,duplicate_rate=0.01,reorder_window=8,latency_ms=2,token_ttl_s=30,
    ws_drop_every=20000,malformed_rate=0.001,seed=7

Each stream or websocket connection gets its own `FaultPlan` whose random choices are seeded from
(seed, channel, ordinal of the connection on that channel), so a run is reproducible as long as the
clients connect in the same order. Injected messages that are not ground truth (malformed ones) and
every other fault fired are written to a `FaultLog`, which tests and the e2e harness read.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, Literal, TypeVar

import orjson

T = TypeVar("T")

# Not a number of any polymarket.v1 enum: a consumer must dead-letter it rather than guess.
UNKNOWN_ENUM = 99


@dataclass(frozen=True, slots=True)
class FaultSpec:
    disconnect_every: int | None = None  # events per stream/connection before a forced disconnect
    duplicate_rate: float = 0.0  # chance that a gRPC batch / ws event is delivered twice
    reorder_window: int = 0  # shuffle events within windows of this many (0/1 = in order)
    latency_ms: float = 0.0  # added before every gRPC response / ws event
    token_ttl_s: float | None = None  # resume token lifetime; None = tokens never expire
    ws_drop_every: int | None = None  # ws events per connection before the TCP link is cut
    malformed_rate: float = 0.0  # chance per event of an extra malformed message
    seed: int = 0

    @classmethod
    def parse(cls, spec: str) -> FaultSpec:
        """Parse "key=value,..."; an empty spec (or "none") is no faults. Raises ValueError."""
        spec = spec.strip()
        if spec in {"", "none"}:
            return cls()
        known = [f.name for f in fields(cls)]
        values: dict[str, int | float | None] = {}
        for item in spec.split(","):
            key, sep, raw = (part.strip() for part in item.partition("="))
            if not sep or key not in known:
                raise ValueError(
                    f"bad fault {item.strip()!r}: expected key=value with key one of "
                    + ", ".join(known)
                )
            values[key] = _parse_value(key, raw)
        return cls(**values)  # type: ignore[arg-type]  # keys and types checked above

    def __post_init__(self) -> None:
        for name in ("duplicate_rate", "malformed_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {rate}")
        for name in ("disconnect_every", "ws_drop_every"):
            every = getattr(self, name)
            if every is not None and every < 1:
                raise ValueError(f"{name} must be at least 1, got {every}")
        if self.reorder_window < 0 or self.latency_ms < 0:
            raise ValueError("reorder_window and latency_ms must not be negative")
        if self.token_ttl_s is not None and self.token_ttl_s <= 0:
            raise ValueError("token_ttl_s must be positive")

    def describe(self) -> str:
        default = FaultSpec()
        active = [
            f"{f.name}={getattr(self, f.name)}"
            for f in fields(self)
            if f.name != "seed" and getattr(self, f.name) != getattr(default, f.name)
        ]
        return ",".join([*active, f"seed={self.seed}"]) if active else "none"


_INT_KEYS = {"disconnect_every", "reorder_window", "ws_drop_every", "seed"}


def _parse_value(key: str, raw: str) -> int | float | None:
    if key in {"disconnect_every", "ws_drop_every", "token_ttl_s"} and raw in {"", "none", "0"}:
        return None
    try:
        value = int(raw) if key in _INT_KEYS else float(raw)
    except ValueError:
        value = math.nan
    # float() also reads "nan" and "inf", which would slip past every range check after it.
    if not math.isfinite(value):
        raise ValueError(f"bad value for fault {key}: {raw!r}")
    return value


@dataclass(frozen=True, slots=True)
class FaultRecord:
    channel: str  # e.g. "grpc.executions", "ws.orders"
    kind: str  # disconnect | drop | duplicate | malformed | token_expired
    detail: Mapping[str, str | int] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return orjson.dumps({"channel": self.channel, "kind": self.kind, **self.detail})


class FaultLog:
    """Append-only record of injected faults: in memory, and as JSON lines when given a path.

    A fault is recorded when it is injected, which can be before the client reads it: a
    consumer that leaves early may never see the last few recorded ones.
    """

    def __init__(self, path: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._records: list[FaultRecord] = []
        self._file: IO[bytes] | None = path.open("ab") if path is not None else None

    def record(self, channel: str, kind: str, **detail: str | int) -> None:
        entry = FaultRecord(channel, kind, detail)
        with self._lock:
            self._records.append(entry)
            if self._file is not None:
                self._file.write(entry.to_json() + b"\n")
                self._file.flush()

    def records(self, kind: str | None = None, channel: str | None = None) -> list[FaultRecord]:
        with self._lock:
            return [
                r
                for r in self._records
                if (kind is None or r.kind == kind) and (channel is None or r.channel == channel)
            ]

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read_fault_log(path: Path) -> Iterator[FaultRecord]:
    """Records of a JSON-lines fault log written by another process (e.g. `recon venue`)."""
    with path.open("rb") as fh:
        for line in fh:
            obj = orjson.loads(line)
            channel, kind = obj.pop("channel"), obj.pop("kind")
            yield FaultRecord(channel, kind, obj)


Interruption = Literal["disconnect", "drop"]


@dataclass(frozen=True, slots=True)
class Defect:
    """One way to break a DropCopy message: the varint field at `path` (field numbers from the
    message down to the field) set to `value`, or to a random negative quantity when None."""

    name: str  # e.g. unknown_execution_type, negative_quantity
    path: tuple[int, ...]
    value: int | None = None


@dataclass(frozen=True, slots=True)
class MessageDefect:
    """A malformed copy of a message: its identifying key replaced, one defect applied."""

    key: str
    defect: Defect
    value: int


class FaultPlan:
    """The faults of one stream or connection, drawn from its own seeded generator."""

    def __init__(
        self, spec: FaultSpec, channel: str, ordinal: int, log: FaultLog, *, link_droppable: bool
    ) -> None:
        self.spec = spec
        self.channel = channel
        # Only a websocket owns its TCP link; a gRPC stream shares an HTTP/2 connection.
        self.link_droppable = link_droppable
        self.ordinal = ordinal
        self.log = log
        self.rng = random.Random(f"{spec.seed}:{channel}:{ordinal}")
        self.delivered = 0
        self.cut: Interruption | None = None
        self.malformed_count = 0
        self.latency_s = spec.latency_ms / 1000.0

    def duplicate(self) -> bool:
        return self.spec.duplicate_rate > 0 and self.rng.random() < self.spec.duplicate_rate

    def malformed(self) -> bool:
        return self.spec.malformed_rate > 0 and self.rng.random() < self.spec.malformed_rate

    def reorder(self, items: Sequence[T]) -> list[T]:
        """Shuffle within consecutive windows of `reorder_window` items."""
        out = list(items)
        window = self.spec.reorder_window
        if window < 2:
            return out
        for start in range(0, len(out), window):
            chunk = out[start : start + window]
            self.rng.shuffle(chunk)
            out[start : start + window] = chunk
        return out

    def count(self, events: int) -> Interruption | None:
        """Account `events` more delivered; say whether this connection must now be cut."""
        before, self.delivered = self.delivered, self.delivered + events
        due: list[tuple[Interruption, int | None]] = [("disconnect", self.spec.disconnect_every)]
        if self.link_droppable:
            due.append(("drop", self.spec.ws_drop_every))
        for kind, every in due:
            if every is not None and before < every <= self.delivered:
                self.log.record(self.channel, kind, connection=self.ordinal, after=self.delivered)
                self.cut = kind
                return kind
        return None

    def message_defect(self, key_name: str, defects: Sequence[Defect]) -> MessageDefect:
        """What to break in the next malformed message, under a fresh key; logged as
        `key_name` (e.g. execution_id) so that a test can find the copy by its key."""
        self.malformed_count += 1
        key = f"MALFORMED-{self.channel}-{self.ordinal}-{self.malformed_count}"
        defect = defects[self.rng.randrange(len(defects))]
        value = -self.rng.randint(1, 10**6) if defect.value is None else defect.value
        self.log.record(
            self.channel,
            "malformed",
            **{key_name: key},
            defect=defect.name,
            connection=self.ordinal,
        )
        return MessageDefect(key, defect, value)

    def malformed_frame(self, message_type: str, subscription_id: str) -> bytes:
        """A websocket frame that a consumer must reject: bad JSON, wrong types, unknown event.

        `message_type` is the feed's event message type ("event" on the orders channel, "trade" on
        the legacy provider); the unknown-event variant is an unknown `event_type` on the orders
        channel and an unknown message `type` on the legacy feed, which has no event types.
        """
        self.malformed_count += 1
        sid = subscription_id.encode()
        head = b'{"type":"' + message_type.encode() + b'","subscription_id":"' + sid + b'"'
        defect = self.rng.choice(("invalid_json", "wrong_types", "unknown_event_type"))
        if defect == "invalid_json":
            frame = head + b',"data":{"event_type":"order_filled","shares":'
        elif defect == "wrong_types":
            frame = (
                head + b',"data":{"event_type":"order_filled","status":"confirmed",'
                b'"tx_hash":12345,"shares":"many","price":[0.5],"timestamp":"soon",'
                b'"order_hash":null,"user":false}}'
            )
        elif message_type == "event":
            frame = head + b',"data":{"event_type":"order_teleported","status":"confirmed"}}'
        else:
            frame = b'{"type":"trade_correction","subscription_id":"' + sid + b'","data":{}}'
        self.log.record(
            self.channel,
            "malformed",
            defect=defect,
            subscription_id=subscription_id,
            connection=self.ordinal,
            number=self.malformed_count,
        )
        return frame


class FaultInjector:
    """Hands each new stream/connection its plan; ordinals count per channel from 0."""

    def __init__(self, spec: FaultSpec, log: FaultLog) -> None:
        self.spec = spec
        self.log = log
        self._lock = threading.Lock()
        self._ordinals: dict[str, int] = {}

    def plan(self, channel: str, *, link_droppable: bool = False) -> FaultPlan:
        with self._lock:
            ordinal = self._ordinals.get(channel, 0)
            self._ordinals[channel] = ordinal + 1
        return FaultPlan(self.spec, channel, ordinal, self.log, link_droppable=link_droppable)
