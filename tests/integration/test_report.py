"""The nightly report on a reconciled hand-made day: numbers, files, storage, escaping, diff."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from sqlalchemy import Engine, insert, text
from typer.testing import CliRunner

from app.db import models
from app.reports.build import build_report
from tests.integration._recon_day import D, h
from tests.integration._users_day import seed_reconciled_day

BUILT = datetime(2026, 5, 5, 2, 0, tzinfo=UTC)
NASTY = "<script>alert('x')</script>&"


@pytest.fixture
def day(engine: Engine) -> Engine:
    seed_reconciled_day(engine)
    return engine


def test_report_summarises_the_day_and_is_stored_and_written(day: Engine, tmp_path: Path) -> None:
    built = build_report(day, D, tmp_path, now=BUILT)
    summary = built.summary

    assert summary["business_date"] == "2026-05-04"
    assert summary["events"]["dropcopy executions"] == 5
    assert summary["events"]["Report API executions"] == 6
    assert summary["events"]["chain fills, maker rows"] == 3
    assert summary["events"]["chain fills, taker aggregates"] == 2
    assert summary["events"]["chain fee refunds"] == 2
    rates = summary["match_rates"]
    assert rates["stream executions found in the Report API"] == {
        "matched": 5,
        "total": 5,
        "compared_with": 6,
        "rate": "1.0000",
    }
    assert rates["Report API executions found in the stream"]["rate"] == "0.8333"
    assert rates["chain transactions whose makers sum to the taker aggregate"]["rate"] == "1.0000"
    assert rates["V1 maker fills with their fee refund"]["matched"] == 2
    breaks = summary["breaks"]
    assert breaks["total"] == 3
    assert breaks["by_status"] == {"open": 3, "acknowledged": 0, "resolved": 0}
    assert breaks["by_kind"]["execution_missing_from_stream"]["severity"] == "critical"
    assert breaks["open_by_age"]["0-1"] == 3
    assert breaks["untimed"] == 0
    # Exchange: ACC1 0.0009 + ACC2 0.0002 (commissions net of rebates, in dollars).
    assert summary["fees"]["exchange"]["net_fee"] == "0.0011"
    assert summary["previous"] is None
    assert summary["changes"] == []

    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == sorted(built.files)
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert orjson.loads((tmp_path / "summary.json").read_bytes()) == summary
    hourly = list(csv.DictReader(io.StringIO((tmp_path / "hourly.csv").read_text())))
    noon = next(r for r in hourly if r["hour_utc"] == "12")
    assert (noon["exchange_fills"], noon["chain_maker_fills"], noon["breaks"]) == ("4", "3", "3")
    assert sum(int(r["exchange_fills"]) for r in hourly) == 4
    open_rows = list(csv.DictReader(io.StringIO((tmp_path / "open_breaks.csv").read_text())))
    assert {r["key"] for r in open_rows} == {"E9", "E3", h("a2")}

    with day.connect() as conn:
        stored = conn.execute(
            text("SELECT business_date, built_at, summary, html FROM recon_report")
        ).one()
    assert (stored.business_date, stored.built_at, stored.html) == (D, BUILT, html)
    assert stored.summary == summary
    assert "<svg" in html
    assert 'data-series="exchange fills" data-category="12" data-value="4"' in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "<script" not in html


def test_everything_shown_is_escaped(day: Engine, tmp_path: Path) -> None:
    with day.begin() as conn:
        conn.execute(
            insert(models.Break.__table__),
            [
                {
                    "kind": "position_mismatch",
                    "business_date": D,
                    "key": NASTY,
                    "severity": "critical",
                    "status": "open",
                    "details": {"note": NASTY},
                    "assignee": NASTY,
                }
            ],
        )
        conn.execute(
            insert(models.NetFeeDaily.__table__),
            [
                {
                    "business_date": D,
                    "scope": "account",
                    "scope_key": NASTY,
                    "source": "exchange",
                    "gross_fee": 1,
                    "refund": 0,
                    "net_fee": 1,
                    "fills": 1,
                }
            ],
        )
    built = build_report(day, D, tmp_path, now=BUILT)
    html = built.html_path.read_text(encoding="utf-8")
    assert "<script" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;" in html
    assert built.summary["breaks"]["untimed"] == 1


def test_next_report_says_what_changed_since_the_previous_one(day: Engine, tmp_path: Path) -> None:
    # Real time: "since the previous report" compares with when breaks were really seen.
    built = datetime.now(UTC)
    first = build_report(day, D, tmp_path / "d1", now=built)
    with day.begin() as conn:
        conn.execute(
            text("UPDATE recon_break SET status = 'resolved', resolved_at = :at WHERE key = 'E3'"),
            {"at": built + timedelta(seconds=1)},
        )
    second = build_report(
        day, D + timedelta(days=1), tmp_path / "d2", now=built + timedelta(seconds=2)
    )

    previous = second.summary["previous"]
    assert previous["business_date"] == first.summary["business_date"]
    assert (previous["breaks_opened_since"], previous["breaks_resolved_since"]) == (0, 1)
    changes = {c["metric"]: c for c in second.summary["changes"]}
    assert changes["events: dropcopy executions"] == {
        "metric": "events: dropcopy executions",
        "previous": 5,
        "current": 0,
        "delta": -5,
    }
    assert changes["breaks open (all dates)"]["delta"] == -1
    assert changes["breaks: execution_quantity_mismatch"]["current"] is None
    html = second.html_path.read_text(encoding="utf-8")
    assert "Against the report of 2026-05-04" in html


def test_report_command(day: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import typer

    from app.reports.cli import report

    monkeypatch.setattr("app.db.session.get_engine", lambda: day)
    app = typer.Typer()
    app.command()(report)
    result = CliRunner().invoke(app, ["--date", D.isoformat(), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "3 breaks of the day, 3 open" in result.output
    assert (tmp_path / "report.html").is_file()
    bad = CliRunner().invoke(app, ["--date", "2026-13-01"])
    assert bad.exit_code == 2
