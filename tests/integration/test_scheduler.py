"""Two schedulers started together on one database run each job tick once."""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine, text

from app.config import Settings
from app.jobs.scheduler import configure, execute, intraday_tick

EVERY = timedelta(seconds=1)
# The job store calls `probe_job` by reference, so the test hands it the engine through here.
shared: dict[str, Engine] = {}
_lock = threading.Lock()
attempts: list[str] = []
runs: list[str] = []


def probe_job(job: str) -> None:
    """Stands in for `run_job`: same tick claim, fake work that records what ran."""
    engine = shared["engine"]
    tick = intraday_tick(datetime.now(UTC), EVERY)
    with _lock:
        attempts.append(tick.key)

    def work(_engine: Engine, _d: date) -> None:
        with _lock:
            runs.append(tick.key)

    execute(engine, tick, work)


def test_two_schedulers_run_each_tick_once(engine: Engine) -> None:
    shared["engine"] = engine
    attempts.clear()
    runs.clear()
    settings = Settings(eod_time="03:00", timezone="UTC")
    schedulers = [
        configure(
            BackgroundScheduler(),
            engine,
            settings,
            intraday_every=EVERY,
            job_func=f"{__name__}:probe_job",
        )
        for _ in range(2)
    ]
    for s in schedulers:
        s.start()
    time.sleep(4.5)
    for s in schedulers:
        s.shutdown(wait=True)

    assert len(runs) >= 3, runs
    assert len(runs) == len(set(runs)), f"a tick ran twice: {runs}"
    assert len(attempts) > len(runs), "both replicas must have fired; else the test proves nothing"
    with engine.connect() as conn:
        claimed = conn.execute(
            text("SELECT tick FROM job_tick WHERE job = 'intraday' ORDER BY tick")
        ).scalars()
        assert sorted(runs) == list(claimed)
        stored = conn.execute(text("SELECT id FROM apscheduler_jobs ORDER BY id")).scalars()
        assert list(stored) == ["end_of_day", "intraday"]


def test_a_claimed_tick_is_not_run_again(engine: Engine) -> None:
    tick = intraday_tick(datetime(2026, 11, 20, 9, 0, tzinfo=UTC), timedelta(minutes=15))
    ran: list[date] = []
    assert execute(engine, tick, lambda _e, d: ran.append(d), owner="a")
    assert not execute(engine, tick, lambda _e, d: ran.append(d), owner="b")
    assert ran == [date(2026, 11, 20)]
