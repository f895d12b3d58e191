"""One source's path to the database: batch what the consumer parsed, write it in order.

Each source (a DropCopy stream or a websocket feed) owns one `SourceSink`: the consumer `put`s
the events, dead letters and checkpoint of what it just read, and the sink's flusher combines
puts that arrive close together into one `BatchWriter.write` (bounded by rows and by delay) on
threads of the source's own, so a slow source never blocks another and each stays ordered.
The checkpoint that goes with a batch is the last one put before it was cut, so a resume token
is never stored before the rows it covers, and always in the same transaction.

Two batches of a source are written at once, on two connections: the next one is COPYed into
staging while the previous one merges and waits for its commit to reach disk, then waits its
turn (`before_merge`) to merge and commit. Commits, and so checkpoints, stay in batch order; a
batch whose predecessor failed is rolled back, never committed past it. With one connection
the database sat idle while each commit was flushed, and the source's rate was capped by one
backend's staging + merge + flush in series.

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
from collections import deque
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


# Batches of one source written at once (each on its own thread and connection).
IN_FLIGHT = 2


class WriteAbandoned(RuntimeError):
    """The database stayed unreachable past the shutdown deadline; pending rows were not written."""


class _Turn:
    """When a batch has finished (committed, or failed): the next one merges only after it.
    Until then `events` are the batch's, which the next one leaves to it (BatchWriter.write's
    `behind`)."""

    def __init__(self, events: Sequence[Event] = ()) -> None:
        self._done = threading.Event()
        self.ok = False
        self.events = events

    def finish(self, ok: bool) -> None:
        self.ok = ok
        self.events = ()
        self._done.set()

    def wait(self) -> None:
        """Block until the batch has finished; raise if it did not commit."""
        self._done.wait()
        if not self.ok:
            raise WriteAbandoned("the batch before this one was not written; not committed past it")


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


def _consume_outcome(write: asyncio.Future[None]) -> None:
    if not write.cancelled():
        write.exception()


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
        self._executor = ThreadPoolExecutor(max_workers=IN_FLIGHT, thread_name_prefix=status.name)
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
        in_flight: deque[asyncio.Future[None]] = deque()
        previous = _Turn()
        previous.finish(ok=True)
        try:
            while True:
                await self._changed.wait()
                self._changed.clear()
                while in_flight and in_flight[0].done():
                    in_flight.popleft().result()  # a failed write stops the source here
                if self._pending.empty:
                    if not in_flight:
                        self._idle.set()
                    continue
                if len(in_flight) >= IN_FLIGHT:
                    continue  # a finishing write wakes this loop
                await self._fill()
                batch, self._pending = self._pending, _Pending()
                self._room.set()
                turn = _Turn(batch.events)
                write = loop.run_in_executor(
                    self._executor, self._write_batch, batch, previous, turn
                )
                write.add_done_callback(lambda _: self._changed.set())
                in_flight.append(write)
                previous = turn
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
        finally:
            # A batch still in flight ends by itself (one after a failure rolls back); its
            # outcome is the failure already kept, not another error to report.
            for write in in_flight:
                write.add_done_callback(_consume_outcome)

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

    def _write_batch(self, batch: _Pending, previous: _Turn, turn: _Turn) -> None:
        ok = False
        try:
            self._write_in_turn(batch, previous)
            ok = True
        finally:
            turn.finish(ok)

    def _write_in_turn(self, batch: _Pending, previous: _Turn) -> None:
        started = time.perf_counter()
        self._write_isolating(batch.events, batch.dead, batch.checkpoint, previous)
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
        self,
        events: list[Event],
        dead: list[DeadLetter],
        checkpoint: Checkpoint | None,
        previous: _Turn,
    ) -> None:
        try:
            self._retrying(
                lambda: self._writer.write(
                    events, dead, checkpoint, before_merge=previous.wait, behind=previous.events
                )
            )
        except Exception as exc:
            if not _is_content_error(exc):
                raise
            if len(events) <= 1:
                self._refused(events, dead, checkpoint, exc, previous)
                return
            log.warning(
                "database refused a batch of %s for its content; isolating the bad rows",
                self.status.name,
            )
            half = len(events) // 2
            self._write_isolating(events[:half], dead, None, previous)
            self._write_isolating(events[half:], [], checkpoint, previous)
            return
        self._count_dead(len(dead))

    def _refused(
        self,
        events: list[Event],
        dead: list[DeadLetter],
        checkpoint: Checkpoint | None,
        exc: BaseException,
        previous: _Turn,
    ) -> None:
        reason = f"database refused the row: {str(exc).splitlines()[0]}"
        letters = [*dead, *(DeadLetter(self.status.name, reason, e.raw) for e in events)]
        self._retrying(
            lambda: self._writer.write([], letters, checkpoint, before_merge=previous.wait)
        )
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
