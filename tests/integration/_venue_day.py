"""One small simulated day, built once per test session (the store reuses a file built from the
same config) and shared by the venue server tests."""

from __future__ import annotations

import pytest

from app.venue.model import DayConfig
from app.venue.run import open_store
from app.venue.store import VenueStore

__all__ = ["DAY", "VenueStore", "small_store"]

# ~1,000 executions and ~5,000 orders-channel events, with every break kind: enough to page,
# resume and filter through, small enough to build in well under a second.
DAY = DayConfig(seed=7, scale=0.005)


def small_store(tmp_path_factory: pytest.TempPathFactory) -> VenueStore:
    return open_store(DAY, tmp_path_factory.getbasetemp() / "venue-day")
