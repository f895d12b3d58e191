from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from app.jobs.scheduler import end_of_day_tick, intraday_tick


def test_intraday_ticks_align_on_interval_boundaries_for_every_replica() -> None:
    every = timedelta(minutes=15)
    a = intraday_tick(datetime(2026, 11, 20, 14, 7, 1, tzinfo=UTC), every)
    b = intraday_tick(datetime(2026, 11, 20, 14, 14, 59, tzinfo=UTC), every)
    c = intraday_tick(datetime(2026, 11, 20, 14, 15, 0, tzinfo=UTC), every)
    assert a == b
    assert a.key == "2026-11-20T14:00:00+00:00"
    assert c.key == "2026-11-20T14:15:00+00:00"
    assert a.business_date == date(2026, 11, 20)


def test_end_of_day_closes_the_local_date_of_the_venue() -> None:
    late_evening_new_york = datetime(2026, 11, 21, 2, 30, tzinfo=UTC)
    tick = end_of_day_tick(late_evening_new_york, ZoneInfo("America/New_York"))
    assert tick.business_date == date(2026, 11, 20)
    assert tick.key == "2026-11-20"
