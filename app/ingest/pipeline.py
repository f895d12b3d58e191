"""One source's path to the database: batch what the consumer parsed, write it in order.

Each source (a DropCopy stream or a websocket feed) owns one `SourceSink`: the consumer `put`s
the events, dead letters and checkpoint of what it just read, and the sink's flusher combines
puts that arrive close together into one `BatchWriter.write` (bounded by rows and by delay) on
a thread of the source's own, so a slow source never blocks another and each stays ordered.
The checkpoint that goes with a batch is the last one put before it was cut, so a resume token
is never stored before the rows it covers, and always in the same transaction.

The database may go away (restart, failover): writes are retried with backoff until they
commit; nothing is dropped and the consumer is throttled meanwhile. A batch the database
refuses for its content (a check constraint the parser did not foresee) is split until the
offending input is isolated and dead-lettered, so one bad row never stops a source.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import psycopg
import sqlalchemy.exc

from app.domain.events import DeadLetter, Event
from app.ingest.writer import BatchWriter, Checkpoint
from app.observability import IngestMetrics

log = logging.getLogger(__name__)

T = TypeVar("T")


class WriteAbandoned(RuntimeError):
    """The database stayed unreachable past the shutdown deadline; pending rows were not written."""


@dataclass(slots=True)
class SourceStatus:
    """What the worker knows about one source, for health, progress and idle detection."""

    name: str
    connected: bool = False
    last_activity: float = field(default_factory=time.monotonic)  # last frame/response read
    heard: bool = False  # the venue has answered at least once (a response, a feed's ack)
    last_event_time: datetime | None = None
    events_committed: int = 0
    dead_committed: int = 0
    reconnects: int = 0
    gaps: int = 0
    db_retrying: bool = False
    db_retries: int = 0
    failure: str | None = None

    def touch(self) -> None:
        self.last_activity = time.monotonic()
        self.heard = True


def _is_connection_error(exc: BaseException) -> bool:
    """Errors after which the same batch may well succeed: the server went away, or a deadlock."""
    if _is_content_error(exc):
        return False
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        exc = exc.orig if exc.orig is not None else exc
    return isinstance(
        exc,
        psycopg.OperationalError
        | psycopg.InterfaceError
        | sqlalchemy.exc.OperationalError
        | sqlalchemy.exc.InterfaceError
        | sqlalchemy.exc.DisconnectionError
        | ConnectionError,
    )


def _is_content_error(exc: BaseException) -> bool:
    """Errors caused by the rows themselves (constraint, value out of range, a value too big for
    an index). ProgramLimitExceeded is an OperationalError to psycopg, but retrying the same rows
    can never succeed."""
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig is not None:
        exc = exc.orig
    return isinstance(
        exc,
        psycopg.errors.DataError
        | psycopg.errors.IntegrityError
        | psycopg.errors.ProgramLimitExceeded,
    )


@dataclass(slots=True)
class _Pending:
    events: list[Event] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    checkpoint: Checkpoint | None = None
    since: float | None = None  # monotonic time of the first put into this batch

    @property
    def rows(self) -> int:
        return len(self.events) + len(self.dead)

    @property
    def empty(self) -> bool:
        return self.rows == 0 and self.checkpoint is None


class SourceSink:
    """Batches one source's puts and writes them, in order, on the source's own thread."""

    def __init__(
        self,
        status: SourceStatus,
        writer: BatchWriter,
        metrics: IngestMetrics,
        *,
        max_rows: int,
        max_delay: float,
        retry_cap: float = 5.0,
    ) -> None:
        self.status = status
        self._writer = writer
        self._metrics = metrics
        self._max_rows = max_rows
        self._max_delay = max_delay
        self._retry_cap = retry_cap
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=status.name)
        self._pending = _Pending()
        self._changed = asyncio.Event()  # a put or a flush request arrived
        self._room = asyncio.Event()  # the pending batch has room again
        self._room.set()
        self._idle = asyncio.Event()  # nothing pending and nothing being written
        self._idle.set()
        self._urgent = False  # flush without waiting for the delay
        self._give_up = threading.Event()  # shutdown deadline passed while the DB was away
        self._failure: BaseException | None = None
        self._task: asyncio.Task[None] | None = None

    # -- the consumer's side ------------------------------------------------------------------

    async def put(
        self, events: Sequence[Event], dead: Sequence[DeadLetter], checkpoint: Checkpoint | None
    ) -> None:
        """Queue what one response or frame batch produced. Atomic: cancelled before or after."""
        self._raise_failure()
        while self._pending.rows >= 2 * self._max_rows:
            self._room.clear()
            await self._room.wait()
            self._raise_failure()
        pending = self._pending
        pending.events.extend(events)
        pending.dead.extend(dead)
        if checkpoint is not None:
            pending.checkpoint = checkpoint
        if pending.since is None:
            pending.since = time.monotonic()
        self._idle.clear()
        self._changed.set()

    async def flush(self) -> None:
        """Write everything put so far and wait until it has committed."""
        self._ensure_task()
        self._urgent = True
        self._changed.set()
        # The flusher sets `_idle` when done, and also when it dies, so this cannot hang on it.
        await self._idle.wait()
        self._urgent = False
        self._raise_failure()

    async def call(self, fn: Callable[[BatchWriter], T]) -> T:
        """Run `fn(writer)` on the source's thread, after the writes queued before it."""
        await self.flush()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._retrying, lambda: fn(self._writer))

    def start(self) -> None:
        self._ensure_task()

    @property
    def drained(self) -> bool:
        """Nothing put is waiting to be written or being written."""
        return self._idle.is_set()

    async def close(self, deadline: float) -> None:
        """Flush within `deadline` seconds (the DB may be down), then release the thread."""
        try:
            await asyncio.wait_for(self.flush(), timeout=deadline)
        except TimeoutError:
            self._give_up.set()
            raise WriteAbandoned(
                f"{self.status.name}: database unreachable at shutdown; "
                f"{self._pending.rows} rows not written (they will be re-read on restart)"
            ) from None
        finally:
            if self._task is not None:
                self._task.cancel()
            self._executor.shutdown(wait=False, cancel_futures=True)

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _ensure_task(self) -> asyncio.Task[None]:
        if self._task is None:
            self._task = asyncio.create_task(self._flusher(), name=f"sink:{self.status.name}")
        return self._task

    # -- the flusher --------------------------------------------------------------------------

    async def _flusher(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._changed.wait()
                self._changed.clear()
                if self._pending.empty:
                    self._idle.set()
                    continue
                await self._fill()
                batch, self._pending = self._pending, _Pending()
                self._room.set()
                await loop.run_in_executor(self._executor, self._write_batch, batch)
                if self._pending.empty:
                    self._idle.set()
                else:
                    self._changed.set()
        except asyncio.CancelledError:
            self._idle.set()
            self._room.set()
            raise
        except Exception as exc:
            # Kept for the consumer: its next put (or flush) raises it and stops the source.
            log.exception("writer for %s failed", self.status.name)
            self._failure = exc
            self.status.failure = f"writer failed: {exc}"
            self._idle.set()
            self._room.set()

    async def _fill(self) -> None:
        """Let more puts join the batch until it is full, old enough, or a flush is asked."""
        while not self._urgent and self._pending.rows < self._max_rows:
            since = self._pending.since or time.monotonic()
            remaining = since + self._max_delay - time.monotonic()
            if remaining <= 0:
                return
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=remaining)
            except TimeoutError:
                return

    # -- on the source's thread ---------------------------------------------------------------

    def _write_batch(self, batch: _Pending) -> None:
        started = time.perf_counter()
        self._write_isolating(batch.events, batch.dead, batch.checkpoint)
        source = self.status.name
        self._metrics.batch_seconds.labels(source).observe(time.perf_counter() - started)
        self._metrics.events.labels(source).inc(len(batch.events))
        self.status.events_committed += len(batch.events)
        if batch.checkpoint is not None and batch.checkpoint.last_event_time is not None:
            last = batch.checkpoint.last_event_time
            self.status.last_event_time = last
            self._metrics.last_event_time.labels(source).set(last.timestamp())
            self._metrics.lag_seconds.labels(source).set(
                max((datetime.now(UTC) - last).total_seconds(), 0.0)
            )

    def _write_isolating(
        self, events: list[Event], dead: list[DeadLetter], checkpoint: Checkpoint | None
    ) -> None:
        try:
            self._retrying(lambda: self._writer.write(events, dead, checkpoint))
        except Exception as exc:
            if not _is_content_error(exc):
                raise
            if len(events) <= 1:
                self._refused(events, dead, checkpoint, exc)
                return
            log.warning(
                "database refused a batch of %s for its content; isolating the bad rows",
                self.status.name,
            )
            half = len(events) // 2
            self._write_isolating(events[:half], dead, None)
            self._write_isolating(events[half:], [], checkpoint)
            return
        self._count_dead(len(dead))

    def _refused(
        self,
        events: list[Event],
        dead: list[DeadLetter],
        checkpoint: Checkpoint | None,
        exc: BaseException,
    ) -> None:
        reason = f"database refused the row: {str(exc).splitlines()[0]}"
        letters = [*dead, *(DeadLetter(self.status.name, reason, e.raw) for e in events)]
        self._retrying(lambda: self._writer.write([], letters, checkpoint))
        self._count_dead(len(letters))

    def _count_dead(self, n: int) -> None:
        if n:
            self._metrics.dead_letters.labels(self.status.name).inc(n)
            self.status.dead_committed += n

    def _retrying(self, fn: Callable[[], T]) -> T:
        delay = 0.1
        while True:
            try:
                result = fn()
            except Exception as exc:
                if not _is_connection_error(exc) or self._give_up.is_set():
                    raise
                self.status.db_retrying = True
                self.status.db_retries += 1
                log.warning(
                    "database unavailable for %s, retrying in %.1f s: %s",
                    self.status.name,
                    delay,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                )
                if self._give_up.wait(delay):
                    raise
                delay = min(delay * 2, self._retry_cap)
                continue
            self.status.db_retrying = False
            return result
