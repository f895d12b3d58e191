"""APScheduler wiring: the scheduler only schedules; each job claims its tick, then runs.

Two replicas may fire the same tick: APScheduler 3 has no cross-process locking, so a unique row per
(job, tick) in `job_tick` decides who runs it — a constraint, not hope. A session advisory lock per
business date keeps the intraday and end-of-day runs of one date from overlapping.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Connection, Engine, text

from app.config import Settings, get_settings

log = logging.getLogger(__name__)

JOBSTORE_TABLE = "apscheduler_jobs"
# Interval ticks are aligned to this instant so every replica fires on the same boundaries.
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

Work = Callable[[Engine, date], object]


@dataclass(frozen=True, slots=True)
class Tick:
    job: str
    key: str
    business_date: date


def intraday_tick(now: datetime, every: timedelta) -> Tick:
    """The interval boundary `now` falls in; the business date is the UTC date of that boundary."""
    n = (now - EPOCH) // every
    start = EPOCH + n * every
    return Tick("intraday", start.isoformat(), start.date())


def end_of_day_tick(now: datetime, tz: ZoneInfo) -> Tick:
    """End of day closes the local date of `now` in the venue's time zone."""
    local = now.astimezone(tz).date()
    return Tick("end_of_day", local.isoformat(), local)


# Claims a tick, or takes over one that was claimed and never finished (the caller holds its
# lock, so its previous owner is gone). `xmax <> 0` tells the update from the insert.
_CLAIM = text(
    "INSERT INTO job_tick (job, tick, business_date, owner) VALUES (:job, :tick, :d, :owner)"
    " ON CONFLICT (job, tick) DO UPDATE SET owner = EXCLUDED.owner, claimed_at = now()"
    " WHERE job_tick.finished_at IS NULL"
    " RETURNING xmax <> 0 AS taken_over"
)
_UNFINISHED = text(
    "SELECT job, tick, business_date FROM job_tick"
    " WHERE finished_at IS NULL AND business_date >= :since ORDER BY claimed_at"
)


def _lock(conn: Connection, key: str, *, wait: bool) -> bool:
    if wait:
        conn.execute(text("SELECT pg_advisory_lock(hashtext(:k))"), {"k": key})
        got = True
    else:
        got = bool(
            conn.execute(text("SELECT pg_try_advisory_lock(hashtext(:k))"), {"k": key}).scalar()
        )
    conn.commit()  # session locks outlive the transaction; no transaction stays open meanwhile
    return got


def _unlock(conn: Connection, key: str) -> None:
    conn.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": key})
    conn.commit()


def execute(engine: Engine, tick: Tick, work: Work, owner: str | None = None) -> bool:
    """Run `work` for the tick unless it already ran or is running elsewhere. Returns whether it
    ran.

    The tick's session advisory lock is held for the whole run, so it goes with the owner's
    connection when the owner dies (SIGKILL, a lost host): a tick that is claimed, unfinished
    and unlocked was interrupted, and the next `execute` of it takes it over. Work that raised
    leaves its tick unfinished as well, to be retried the same way.
    """
    owner = owner or f"{socket.gethostname()}:{os.getpid()}"
    tick_lock = f"recon.tick:{tick.job}:{tick.key}"
    with engine.connect() as conn:
        if not _lock(conn, tick_lock, wait=False):
            log.info("job %s tick %s is running in another replica; skipped", tick.job, tick.key)
            return False
        try:
            claimed = conn.execute(
                _CLAIM,
                {"job": tick.job, "tick": tick.key, "d": tick.business_date, "owner": owner},
            ).first()
            conn.commit()
            if claimed is None:
                log.info("job %s tick %s already ran; skipped", tick.job, tick.key)
                return False
            if claimed.taken_over:
                log.warning("job %s tick %s was interrupted; running it again", tick.job, tick.key)
            date_lock = f"recon:{tick.business_date.isoformat()}"
            _lock(conn, date_lock, wait=True)
            try:
                log.info("job %s tick %s: running for %s", tick.job, tick.key, tick.business_date)
                work(engine, tick.business_date)
            finally:
                _unlock(conn, date_lock)
            conn.execute(
                text("UPDATE job_tick SET finished_at = now() WHERE job = :job AND tick = :tick"),
                {"job": tick.job, "tick": tick.key},
            )
            conn.commit()
        finally:
            _unlock(conn, tick_lock)
    return True


def resume_unfinished(engine: Engine, jobs: Mapping[str, Work], since: date) -> int:
    """Take over the ticks of business dates from `since` on that were claimed and never finished
    (their owner died, or their work failed); returns how many ran now. One that fails again is
    logged and stays unfinished."""
    with engine.connect() as conn:
        rows = conn.execute(_UNFINISHED, {"since": since}).all()
    resumed = 0
    for row in rows:
        if row.job not in jobs:
            continue
        try:
            resumed += execute(engine, Tick(row.job, row.tick, row.business_date), jobs[row.job])
        except Exception:
            log.exception("job %s tick %s failed again; it stays unfinished", row.job, row.tick)
    return resumed


def reconcile_date(engine: Engine, business_date: date) -> None:
    """Intraday: reconcile, then send the alerts of new and reopened breaks."""
    from app.alerts.notifiers import notifiers_from_settings
    from app.alerts.outbox import RetryPolicy, deliver_pending
    from app.recon.service import reconcile

    settings = get_settings()
    reconcile(engine, business_date)
    deliver_pending(
        engine, notifiers_from_settings(settings), policy=RetryPolicy.from_settings(settings)
    )


def close_date(engine: Engine, business_date: date) -> None:
    """End of day: the intraday work, then the nightly report."""
    from app.reports.build import build_report, default_directory

    reconcile_date(engine, business_date)
    build_report(engine, business_date, default_directory(get_settings().data_dir, business_date))


def run_job(job: str) -> None:
    """What the job store calls (by textual reference, so stored jobs survive restarts). Ticks
    left unfinished since yesterday, of any job, are taken over first: APScheduler does not fire
    a tick again once it has fired, so an end of day cut short would otherwise never run."""
    from app.db.session import get_engine

    settings = get_settings()
    now = datetime.now(UTC)
    if job == "intraday":
        tick = intraday_tick(now, timedelta(minutes=settings.intraday_minutes))
    elif job == "end_of_day":
        tick = end_of_day_tick(now, ZoneInfo(settings.timezone))
    else:
        raise ValueError(f"unknown job {job!r}")
    engine = get_engine()
    resume_unfinished(engine, JOBS, since=tick.business_date - timedelta(days=1))
    execute(engine, tick, JOBS[job])


JOBS: dict[str, Work] = {"intraday": reconcile_date, "end_of_day": close_date}


def configure(
    scheduler: BaseScheduler,
    engine: Engine,
    settings: Settings,
    intraday_every: timedelta | None = None,
    job_func: str = "app.jobs.scheduler:run_job",
) -> BaseScheduler:
    hour, minute = (int(part) for part in settings.eod_time.split(":"))
    tz = ZoneInfo(settings.timezone)
    scheduler.configure(
        jobstores={"default": SQLAlchemyJobStore(engine=engine, tablename=JOBSTORE_TABLE)},
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": settings.misfire_grace_seconds,
        },
        timezone=tz,
    )
    every = intraday_every or timedelta(minutes=settings.intraday_minutes)
    scheduler.add_job(
        job_func,
        IntervalTrigger(seconds=every.total_seconds(), start_date=EPOCH),
        args=["intraday"],
        id="intraday",
        replace_existing=True,
    )
    scheduler.add_job(
        job_func,
        CronTrigger.from_crontab(f"{minute} {hour} * * *", timezone=tz),
        args=["end_of_day"],
        id="end_of_day",
        replace_existing=True,
    )
    return scheduler


def run_forever(engine: Engine, settings: Settings) -> None:
    scheduler = configure(BlockingScheduler(), engine, settings)
    log.info(
        "scheduler: intraday every %g min, end of day at %s %s",
        settings.intraday_minutes,
        settings.eod_time,
        settings.timezone,
    )
    scheduler.start()
