"""Crash safety of `recon ingest`: SIGKILLed at random moments and restarted, or with its
Postgres restarted under it, the worker still ends with exactly the clean run's database —
which is the venue's ground truth (feeds replay per subscription here, so nothing is lost)."""

from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from app.db.session import make_engine
from app.venue.feeds import FeedOptions
from app.venue.grpc_server import GrpcOptions
from app.venue.model import DayConfig
from app.venue.run import VenueHandle, VenueOptions, open_store, serve_store
from app.venue.store import VenueStore
from tests.chaos._support import private_postgres, restart_postgres
from tests.guarantees import Record

from ._ingest_support import (
    DB_QUERIES,
    FEED_KEY,
    PARTICIPANT,
    TOKEN,
    Truth,
    db_rows,
    run_worker,
    venue_truth,
    worker_config,
)

DAY = DayConfig(seed=23, business_date=date(2026, 5, 5), scale=0.01, breaks={})
KILLS = 10
# The venue paces its streams so that a run takes a few seconds and kills land mid-stream.
PACE = 4000.0
# `recon ingest`, as the installed entry point runs it.
WORKER = [sys.executable, "-c", "from app.cli import main; main()", "ingest"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> VenueStore:
    return open_store(DAY, tmp_path_factory.mktemp("venue"))


@pytest.fixture(scope="module")
def truth(store: VenueStore) -> Truth:
    return venue_truth(store)


@pytest.fixture
def venue(store: VenueStore) -> Iterator[VenueHandle]:
    options = VenueOptions(
        grpc=GrpcOptions(tokens=frozenset({TOKEN}), batch_size=100, pace_events_per_s=PACE),
        feeds=FeedOptions(keys=frozenset({FEED_KEY}), replay=True, pace_events_per_s=PACE),
    )
    with serve_store(store, options) as handle:
        yield handle


def _assert_equals_truth(engine: Engine, truth: Truth) -> None:
    rows = db_rows(engine)
    for table in DB_QUERIES:
        assert len(rows[table]) == len(set(rows[table])), f"{table} has duplicates"
        assert set(rows[table]) == truth.rows[table], table


def _env(venue: VenueHandle, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECON_")}
    env.update(
        RECON_DATABASE_URL=database_url,
        RECON_EXCHANGE_TARGET=venue.grpc_target,
        RECON_EXCHANGE_TLS="false",
        RECON_EXCHANGE_TOKEN=TOKEN,
        RECON_PARTICIPANT_ID=PARTICIPANT,
        RECON_FEED_ORDERS_URL=venue.orders_url,
        RECON_FEED_TRADES_URL=venue.trades_url,
        RECON_INGEST_BATCH_MAX_ROWS="300",
        RECON_LOG_LEVEL="INFO",
    )
    return env


class _Worker:
    """`recon ingest` in a subprocess, its stderr lines collected by a thread."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen(
            [*WORKER, *args], env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in iter(self.proc.stderr.readline, ""):
            self.lines.put(line)

    def wait_for(self, marker: str, timeout: float) -> None:
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            seen.append(line)
            if marker in line:
                return
        raise AssertionError(f"no {marker!r} within {timeout} s; got:\n{''.join(seen[-20:])}")

    def finish(self, sig: signal.Signals | None = None, timeout: float = 30) -> int:
        """Send `sig` (if any), wait for the exit, release the pipe; the exit code."""
        if sig is not None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self._reader.join(timeout=10)
            assert self.proc.stderr is not None
            self.proc.stderr.close()
        return code

    @property
    def output(self) -> str:
        return "".join(self.lines.queue)


def _committed(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT coalesce(sum(events_total), 0) FROM stream_checkpoint")
            ).scalar_one()
        )


@pytest.mark.slow
def test_sigkill_at_random_moments_then_restart_equals_clean_run(
    venue: VenueHandle, truth: Truth, engine: Engine, database_url: str, guarantee: Record
) -> None:
    rng = random.Random(20261122)
    env = _env(venue, database_url)
    progress = []
    for attempt in range(KILLS):
        before = _committed(engine)
        worker = _Worker(env)
        try:
            # Most kills land while batches are being written (after this run's first commit),
            # a few during start-up.
            if attempt % 4 != 3:
                deadline = time.monotonic() + 30
                while _committed(engine) == before and time.monotonic() < deadline:
                    time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.4))
        finally:
            code = worker.finish(signal.SIGKILL, timeout=10)
        assert code == -signal.SIGKILL
        progress.append(_committed(engine))
    # The kills really interrupted work in progress: most runs had committed batches when
    # killed, and the day was not finished before the last kill.
    mid_ingest = sum(b > a for a, b in zip([0, *progress[:-1]], progress, strict=True))
    assert mid_ingest >= KILLS // 2, progress
    before = db_rows(engine)
    assert any(set(before[t]) != truth.rows[t] for t in DB_QUERIES), "all done before a kill"
    worker = _Worker(env, "--exit-when-idle", "1.5")
    assert worker.finish(timeout=90) == 0, worker.output
    _assert_equals_truth(engine, truth)
    guarantee(
        "Chaos",
        "ingest worker SIGKILLed at random moments and restarted",
        len(progress),
        "events = ground truth, none twice (same as a clean run)",
    )


@pytest.mark.slow
def test_sigterm_flushes_and_exits_zero(
    venue: VenueHandle, engine: Engine, database_url: str
) -> None:
    worker = _Worker(_env(venue, database_url))
    worker.wait_for("ingest started", timeout=30)
    time.sleep(0.5)
    assert worker.finish(signal.SIGTERM) == 0
    seen = worker.output
    assert "ingest stopped" in seen
    # What was read was committed: the checkpoints' counts equal the rows in the tables.
    with engine.connect() as conn:
        executions = conn.execute(text("SELECT count(*) FROM execution")).scalar_one()
        counted = conn.execute(
            text("SELECT events_total FROM stream_checkpoint WHERE stream LIKE 'dropcopy.exec%'")
        ).scalar_one()
    assert executions > 0
    assert counted >= executions
    assert TOKEN not in seen


# -- Postgres restarted under a running worker -----------------------------------------------


@pytest.mark.slow
def test_postgres_restart_mid_ingest_recovers_by_itself(
    venue: VenueHandle, truth: Truth, tmp_path: Path, guarantee: Record
) -> None:
    restarted = threading.Event()
    with private_postgres(tmp_path) as (url, server):
        engine = make_engine(url)

        def restart_when_busy() -> None:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _committed(engine) < 2000:
                time.sleep(0.05)
            restart_postgres(server)
            restarted.set()

        restarter = threading.Thread(target=restart_when_busy, daemon=True)
        restarter.start()
        try:
            worker = run_worker(
                worker_config(venue, exit_when_idle=3.0, batch_max_rows=300), engine
            )
            restarter.join(timeout=60)
            assert restarted.is_set()
            assert sum(s.status.db_retries for s in worker.sources.values()) > 0, "restart missed"
            _assert_equals_truth(engine, truth)
        finally:
            engine.dispose()
    guarantee(
        "Chaos",
        "Postgres restarted mid-ingest",
        int(restarted.is_set()),
        "worker retries by itself; events = ground truth, none twice",
    )
