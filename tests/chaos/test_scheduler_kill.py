"""`recon scheduler` SIGKILLed at random moments and restarted, with intraday reconciliation every
two seconds against the venue's Report API and alerts going to a real loopback webhook: every
tick still runs once — an interrupted tick is taken over, never lost and never run beside
itself — the breaks are exactly the injected ones, and each alert arrives exactly once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from app.jobs.scheduler import Tick, execute, intraday_tick, resume_unfinished
from app.venue.model import DayConfig
from app.venue.run import VenueHandle, open_store
from app.venue.store import VenueStore
from tests.guarantees import Record
from tests.integration.test_alerts import WebhookReceiver
from tests.integration.test_recon_venue import ingest

from ._support import (
    PARTICIPANT,
    TOKEN,
    assert_whole_runs_only,
    injected_breaks,
    open_breaks,
)

EVERY = timedelta(seconds=2)
KILLS = 6
SCHEDULER = [sys.executable, "-c", "from app.cli import main; main()", "scheduler"]


@pytest.fixture
def store(tmp_path: Path) -> VenueStore:
    # Intraday ticks reconcile the UTC date they fall in: the venue plays that date.
    today = intraday_tick(datetime.now(UTC), EVERY).business_date
    return open_store(DayConfig(seed=31, business_date=today, scale=0.005), tmp_path / "venue")


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def _env(database_url: str, venue: VenueHandle, webhook: WebhookReceiver) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECON_")}
    env.update(
        RECON_DATABASE_URL=database_url,
        RECON_EXCHANGE_TARGET=venue.grpc_target,
        RECON_EXCHANGE_TLS="false",
        RECON_EXCHANGE_TOKEN=TOKEN,
        RECON_PARTICIPANT_ID=PARTICIPANT,
        RECON_INTRADAY_MINUTES=str(EVERY.total_seconds() / 60),
        # End of day twelve hours away: this run is about the intraday ticks.
        RECON_EOD_TIME=f"{(datetime.now(UTC).hour + 12) % 24:02d}:00",
        RECON_TIMEZONE="UTC",
        RECON_REPORT_REQUESTS_PER_MINUTE="100000",
        # Small pages: a snapshot takes many calls, so kills land inside reconciliations.
        RECON_REPORT_PAGE_SIZE="200",
        RECON_ALERT_URLS=webhook.url,
        RECON_LOG_LEVEL="INFO",
    )
    return env


def _ticks(engine: Engine) -> list[tuple[str, datetime | None]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT tick, finished_at FROM job_tick WHERE job = 'intraday' ORDER BY tick")
        )
        return [(row.tick, row.finished_at) for row in rows]


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


@pytest.mark.slow
def test_sigkill_scheduler_at_random_moments_runs_each_tick_once(
    engine: Engine,
    database_url: str,
    *,
    store: VenueStore,
    venue: VenueHandle,
    webhook: WebhookReceiver,
    tmp_path: Path,
    guarantee: Record,
) -> None:
    ingest(engine, store)
    env = _env(database_url, venue, webhook)
    rng = random.Random(20261122)
    interrupted = 0
    log = (tmp_path / "scheduler.log").open("wb")
    for attempt in range(KILLS):
        proc = subprocess.Popen(SCHEDULER, env=env, stdout=log, stderr=log)
        try:
            if attempt % 2 == 0:
                # Half the kills land while a tick is running, at a random point in it...
                assert _wait(lambda: any(f is None for _, f in _ticks(engine)), 20)
                time.sleep(rng.uniform(0.0, 0.3))
            else:
                # ...the others at any moment, running or idle.
                time.sleep(rng.uniform(0.2, 2.5 * EVERY.total_seconds()))
        finally:
            running = [tick for tick, finished in _ticks(engine) if finished is None]
            _kill(proc)
        interrupted += bool(running)
    assert interrupted >= 1, "no kill interrupted a running tick"

    # Last lives: each takes over what was interrupted and runs two more ticks, and is stopped
    # right after a tick finished; should the next tick have started all the same, once more.
    def settled(at_least: int) -> bool:
        ticks = _ticks(engine)
        last = ticks[-1][1] if ticks else None
        return (
            len(ticks) >= at_least
            and all(f is not None for _, f in ticks)
            and last is not None
            and datetime.now(UTC) - last < timedelta(seconds=0.5)
        )

    for _ in range(3):
        at_least = len(_ticks(engine)) + 2
        proc = subprocess.Popen(SCHEDULER, env=env, stdout=log, stderr=log)
        try:
            assert _wait(partial(settled, at_least), 40), _ticks(engine)
        finally:
            _kill(proc)
        if all(f is not None for _, f in _ticks(engine)):
            break
        interrupted += 1
    log.close()

    ticks = _ticks(engine)
    unfinished = [tick for tick, finished in ticks if finished is None]
    assert not unfinished, f"ticks interrupted by a kill and never run: {unfinished}"
    with engine.connect() as conn:
        runs = conn.execute(
            text("SELECT status, count(*) FROM recon_run WHERE job = 'reconcile' GROUP BY status")
        ).all()
    succeeded = dict(runs).get("succeeded", 0)
    # Each tick landed one run; only a tick whose owner died after its run committed (while
    # sending alerts or marking itself finished) is run once more by the replica taking over.
    assert len(ticks) <= succeeded <= len(ticks) + interrupted

    expected = injected_breaks(store)
    assert len(expected) >= 16
    assert open_breaks(engine) == expected
    assert_whole_runs_only(engine)
    with engine.connect() as conn:
        queued = sorted(
            tuple(row)
            for row in conn.execute(
                text("SELECT break_id, occurrence FROM alert_outbox WHERE notifier = 'default'")
            )
        )
    delivered = webhook.occurrences()
    assert len(delivered) == len(set(delivered)), "an alert was delivered twice"
    assert sorted(delivered) == queued

    guarantee(
        "Chaos",
        "scheduler SIGKILLed at random moments and restarted",
        KILLS,
        "every tick ran once, interrupted ones taken over; breaks = injected;"
        " each alert delivered once",
    )


def test_an_unfinished_tick_is_taken_over_once_and_never_beside_its_owner(engine: Engine) -> None:
    tick = Tick("end_of_day", "2026-11-20", date(2026, 11, 20))
    ran: list[str] = []

    def dies(_engine: Engine, _d: date) -> None:
        ran.append("first")
        raise RuntimeError("the replica went away mid-run")

    jobs = {"end_of_day": lambda _e, _d: ran.append("taken over")}
    with pytest.raises(RuntimeError):
        execute(engine, tick, dies, owner="a")
    # While a live owner holds the tick's lock, nobody else runs it.
    held = {"k": "recon.tick:end_of_day:2026-11-20"}
    with engine.connect() as owner:
        owner.execute(text("SELECT pg_advisory_lock(hashtext(:k))"), held)
        assert resume_unfinished(engine, jobs, since=tick.business_date) == 0
        owner.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), held)
    assert resume_unfinished(engine, jobs, since=tick.business_date) == 1
    assert resume_unfinished(engine, jobs, since=tick.business_date) == 0
    assert not execute(engine, tick, lambda _e, _d: ran.append("again"), owner="c")
    assert ran == ["first", "taken over"]
