"""One small simulated day, built once per test session and shared by the venue server tests."""

from __future__ import annotations

import pytest

from ._fake_store import FakeStore

VenueStore = FakeStore


def small_store(tmp_path_factory: pytest.TempPathFactory) -> VenueStore:
    return FakeStore.make()
