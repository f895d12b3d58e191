"""APScheduler wiring: the scheduler only schedules; each job claims its tick, then runs.

Two replicas may fire the same tick: APScheduler 3 has no cross-process locking, so a unique row per
(job, tick) in `job_tick` decides who runs it — a constraint, not hope. A session advisory lock per
business date keeps the intraday and end-of-day runs of one date from overlapping.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine, text

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


def claim(engine: Engine, tick: Tick, owner: str) -> bool:
    with engine.begin() as conn:
        row = conn.execute(
            text(
                "INSERT INTO job_tick (job, tick, business_date, owner) "
                "VALUES (:job, :tick, :d, :owner) ON CONFLICT DO NOTHING RETURNING job"
            ),
            {"job": tick.job, "tick": tick.key, "d": tick.business_date, "owner": owner},
        ).first()
    return row is not None


def execute(engine: Engine, tick: Tick, work: Work, owner: str | None = None) -> bool:
    """Run `work` for the tick unless another replica has claimed it. Returns whether it ran."""
    owner = owner or f"{socket.gethostname()}:{os.getpid()}"
    if not claim(engine, tick, owner):
        log.info("job %s tick %s already claimed by another replica; skipped", tick.job, tick.key)
        return False
    lock_key = f"recon:{tick.business_date.isoformat()}"
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(hashtext(:k))"), {"k": lock_key})
        try:
            log.info("job %s tick %s: running for %s", tick.job, tick.key, tick.business_date)
            work(engine, tick.business_date)
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(hashtext(:k))"), {"k": lock_key})
            conn.commit()
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE job_tick SET finished_at = now() WHERE job = :job AND tick = :tick"),
            {"job": tick.job, "tick": tick.key},
        )
    return True


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
    """What the job store calls (by textual reference, so stored jobs survive restarts)."""
    from app.db.session import get_engine

    settings = get_settings()
    now = datetime.now(UTC)
    if job == "intraday":
        tick, work = (
            intraday_tick(now, timedelta(minutes=settings.intraday_minutes)),
            reconcile_date,
        )
    elif job == "end_of_day":
        tick, work = end_of_day_tick(now, ZoneInfo(settings.timezone)), close_date
    else:
        raise ValueError(f"unknown job {job!r}")
    execute(get_engine(), tick, work)


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
        "scheduler: intraday every %d min, end of day at %s %s",
        settings.intraday_minutes,
        settings.eod_time,
        settings.timezone,
    )
    scheduler.start()
