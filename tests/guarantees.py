"""The README's "Guarantees" table is produced by the tests that prove it.

A test that demonstrates a guarantee takes the `guarantee` fixture and calls it once per row with
what it tried, how many times, and what held. Rows are written (as JSON lines, to the file named by
`RECON_GUARANTEES_FILE`) only when the test passes, so a row in the table is always a claim that a
test just checked. Tests that take the fixture get the `guarantee` marker, so
`pytest -m guarantee` runs exactly the suite behind the table (scripts/guarantees.py does that and
renders the table).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Generator, Iterator
from dataclasses import asdict, dataclass

import pytest

FILE_VARIABLE = "RECON_GUARANTEES_FILE"


@dataclass(frozen=True, slots=True)
class GuaranteeRow:
    area: str  # "Chaos", "Bad input", "Security", "Load", ...
    tried: str  # the fault or bad input, in a back-office reader's words
    times: int  # how many times it was tried in this run
    result: str  # what held, e.g. "events = ground truth; breaks = injected"
    test: str = ""


Record = Callable[[str, str, int, str], None]
_PASSED = pytest.StashKey[bool]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "guarantee" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.guarantee)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if call.when == "call":
        item.stash[_PASSED] = report.passed
    return report


@pytest.fixture
def guarantee(request: pytest.FixtureRequest) -> Iterator[Record]:
    """`guarantee(area, tried, times, result)`: one README table row, kept if the test passes."""
    rows: list[GuaranteeRow] = []

    def record(area: str, tried: str, times: int, result: str) -> None:
        if times < 1:
            raise ValueError("a guarantee row must say it was tried at least once")
        rows.append(GuaranteeRow(area, tried, times, result, request.node.nodeid))

    yield record
    path = os.environ.get(FILE_VARIABLE)
    if path and rows and request.node.stash.get(_PASSED, False):
        with open(path, "a", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(asdict(row)) + "\n")
