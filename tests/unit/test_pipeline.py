"""A source's sink: batching, checkpoints that ride with their rows, database retries, and
rows the database refuses isolated into dead letters. The writer is a fake (no database)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

from app.domain.events import DeadLetter
from app.ingest.pipeline import SourceSink, SourceStatus
from app.ingest.writer import Checkpoint
from app.observability import IngestMetrics


@dataclass(frozen=True)
class FakeEvent:
    raw: bytes


@dataclass
class FakeWriter:
    """Records committed batches; refuses events whose raw starts with b'bad', and fails with
    a lost connection for the first `down` calls."""

    down: int = 0
    batches: list[tuple[list[Any], list[DeadLetter], Checkpoint | None]] = field(
        default_factory=list
    )
    # The first raw of each batch written -> the raws of the batch it was written behind.
    behind: dict[bytes, list[bytes]] = field(default_factory=dict)

    def write(
        self,
        events: Any,
        dead: Any,
        checkpoint: Checkpoint | None,
        *,
        before_merge: Callable[[], None] | None = None,
        behind: Any = (),
    ) -> None:
        self.behind[events[0].raw if events else b""] = [e.raw for e in behind]
        if self.down:
            self.down -= 1
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        if any(e.raw.startswith(b"bad") for e in events):
            raise psycopg.errors.CheckViolation('new row violates check constraint "ck_x"')
        self.stage(events)
        if before_merge is not None:
            before_merge()
        self.batches.append((list(events), list(dead), checkpoint))

    def stage(self, events: Any) -> None:
        """Staging, before the batch waits its turn to merge."""

    @property
    def committed(self) -> list[bytes]:
        return [e.raw for events, _, _ in self.batches for e in events]

    @property
    def dead(self) -> list[DeadLetter]:
        return [d for _, dead, _ in self.batches for d in dead]

    @property
    def checkpoints(self) -> list[Checkpoint]:
        return [c for _, _, c in self.batches if c is not None]


def _sink(writer: FakeWriter, **kw: Any) -> SourceSink:
    options = {"max_rows": 1000, "max_delay": 0.05, **kw}
    return SourceSink(SourceStatus("dropcopy.executions"), writer, IngestMetrics(), **options)  # type: ignore[arg-type]


def _checkpoint(n: int) -> Checkpoint:
    return Checkpoint("dropcopy.executions[all]", f"token-{n}".encode(), None)


def test_puts_arriving_together_become_one_write_with_the_last_checkpoint() -> None:
    writer = FakeWriter()

    async def scenario() -> None:
        sink = _sink(writer)
        sink.start()
        for n in range(5):
            await sink.put([FakeEvent(f"e{n}".encode())], [], _checkpoint(n))
        await sink.close(5)

    asyncio.run(scenario())
    assert len(writer.batches) == 1
    assert writer.committed == [b"e0", b"e1", b"e2", b"e3", b"e4"]
    assert writer.checkpoints == [_checkpoint(4)]


def test_batches_are_cut_at_max_rows_and_each_carries_its_own_checkpoint() -> None:
    writer = FakeWriter()

    async def scenario() -> None:
        sink = _sink(writer, max_rows=3, max_delay=10.0)
        sink.start()
        for n in range(9):
            await sink.put([FakeEvent(f"e{n}".encode())], [], _checkpoint(n))
        await sink.flush()
        await sink.close(5)

    asyncio.run(scenario())
    assert writer.committed == [f"e{n}".encode() for n in range(9)]
    # Every checkpoint written covers exactly the rows committed up to it, never more.
    seen = 0
    for events, _, checkpoint in writer.batches:
        seen += len(events)
        assert checkpoint == _checkpoint(seen - 1)


def test_lost_database_is_retried_until_the_batch_commits() -> None:
    writer = FakeWriter(down=3)

    async def scenario() -> SourceStatus:
        sink = _sink(writer)
        sink.start()
        await sink.put([FakeEvent(b"e0")], [], _checkpoint(0))
        await asyncio.wait_for(sink.flush(), timeout=10)
        await sink.close(5)
        return sink.status

    status = asyncio.run(scenario())
    assert writer.committed == [b"e0"]
    assert status.db_retries == 3
    assert not status.db_retrying


def test_refused_rows_are_isolated_into_dead_letters() -> None:
    writer = FakeWriter()
    raws = [b"ok0", b"ok1", b"bad2", b"ok3", b"ok4", b"bad5", b"ok6"]

    async def scenario() -> SourceStatus:
        sink = _sink(writer)
        sink.start()
        letter = DeadLetter("dropcopy.executions", "parser said no", b"junk")
        await sink.put([FakeEvent(r) for r in raws], [letter], _checkpoint(6))
        await sink.close(5)
        return sink.status

    status = asyncio.run(scenario())
    assert writer.committed == [r for r in raws if not r.startswith(b"bad")]
    assert sorted(d.raw for d in writer.dead) == [b"bad2", b"bad5", b"junk"]
    assert all("check constraint" in d.reason for d in writer.dead if d.raw.startswith(b"bad"))
    assert writer.checkpoints == [_checkpoint(6)]  # once, with the last rows
    assert status.dead_committed == 3
    assert status.events_committed == len(raws)


def test_a_writer_bug_stops_the_source_loudly() -> None:
    class Broken(FakeWriter):
        def write(self, events: Any, dead: Any, checkpoint: Checkpoint | None, **_: Any) -> None:
            raise psycopg.errors.UndefinedTable('relation "execution" does not exist')

    async def scenario() -> None:
        sink = _sink(Broken())
        sink.start()
        await sink.put([FakeEvent(b"e0")], [], _checkpoint(0))
        with pytest.raises(psycopg.errors.UndefinedTable):
            await asyncio.wait_for(sink.flush(), timeout=5)
        with pytest.raises(psycopg.errors.UndefinedTable):
            await sink.put([FakeEvent(b"e1")], [], _checkpoint(1))

    asyncio.run(scenario())


class SlowStaging(FakeWriter):
    """Staging takes `seconds[first raw]` (default 0); records how many batches stage at once."""

    def __init__(self, seconds: dict[bytes, float], fail: bytes | None = None) -> None:
        super().__init__()
        self.seconds = seconds
        self.fail = fail
        self.staging = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def stage(self, events: Any) -> None:
        first = events[0].raw if events else b""
        with self._lock:
            self.staging += 1
            self.most_at_once = max(self.most_at_once, self.staging)
        try:
            time.sleep(self.seconds.get(first, 0.0))
            if first == self.fail:
                raise psycopg.errors.UndefinedTable('relation "execution" does not exist')
        finally:
            with self._lock:
                self.staging -= 1


def _three_batches(writer: FakeWriter) -> SourceStatus:
    async def scenario() -> SourceStatus:
        sink = _sink(writer, max_rows=2, max_delay=10.0)
        sink.start()
        for n in range(6):
            await sink.put([FakeEvent(f"e{n}".encode())], [], _checkpoint(n))
        with contextlib.suppress(psycopg.errors.UndefinedTable):
            await asyncio.wait_for(sink.flush(), timeout=10)
        with contextlib.suppress(psycopg.errors.UndefinedTable):
            await sink.close(5)
        return sink.status

    return asyncio.run(scenario())


def test_the_next_batch_stages_while_one_commits_and_commits_after_it() -> None:
    # The first batch stages slowly: the second is staged meanwhile, yet commits after it.
    writer = SlowStaging({b"e0": 0.3})
    _three_batches(writer)
    assert writer.most_at_once == 2
    # ... and is told which batch it is written behind (its confirmed fills are left to it).
    (first, _, _), (second, _, _) = writer.batches[:2]
    assert writer.behind[first[0].raw] == []
    assert writer.behind[second[0].raw] == [e.raw for e in first]
    assert writer.committed == [f"e{n}".encode() for n in range(6)]
    assert len(writer.batches) >= 2
    seen = 0
    for events, _, checkpoint in writer.batches:
        seen += len(events)
        assert checkpoint == _checkpoint(seen - 1)


def test_no_batch_commits_past_one_that_failed() -> None:
    writer = SlowStaging({b"e0": 0.3}, fail=b"e0")
    status = _three_batches(writer)
    assert writer.committed == []
    assert status.failure is not None
