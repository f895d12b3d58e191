"""Pure parts of the nightly report: charts, metrics comparison, escaping."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from app.reports.build import (
    Change,
    EventCount,
    FeeRow,
    HourRow,
    KindCount,
    MatchRate,
    PreviousReport,
    ReportData,
    compare,
    csv_files,
    fee_totals,
    metrics,
    render_html,
    summarise,
)
from app.reports.charts import Series, bar_chart, column_chart, display_round, fmt_number, nice_step


def test_nice_steps_are_round_and_counts_stay_whole() -> None:
    assert nice_step(Decimal("0.75"), integral=True) == 1
    assert nice_step(Decimal("1.25"), integral=True) == 2
    assert nice_step(Decimal("2.2"), integral=True) == 5
    assert nice_step(Decimal("2.2"), integral=False) == Decimal("2.5")
    assert nice_step(Decimal(230), integral=True) == 250
    assert nice_step(Decimal("0.013"), integral=False) == Decimal("0.02")
    assert nice_step(Decimal(0), integral=False) == 1


def test_numbers_print_exactly() -> None:
    assert fmt_number(1234567) == "1,234,567"
    assert fmt_number(Decimal("1234.5000")) == "1,234.5"
    assert fmt_number(Decimal("1E+2")) == "100"
    assert display_round(Decimal("0.000349")) == Decimal("0.0003")
    assert display_round(Decimal("12.345")) == Decimal("12.34")


def test_column_chart_draws_one_bar_per_value_and_escapes() -> None:
    svg = column_chart("<Fills>", ["00", "01"], [Series("a&b", (3, 0)), Series("c", (1, 2))])
    assert svg.count('class="bar"') == 4
    assert 'data-series="a&amp;b" data-category="00" data-value="3"' in svg
    assert "<Fills>" not in svg
    with pytest.raises(ValueError, match="one value per category"):
        column_chart("x", ["00"], [Series("a", (1, 2))])
    with pytest.raises(ValueError, match="negative"):
        column_chart("x", ["00"], [Series("a", (-1,))])


def test_bar_chart_puts_rebates_left_of_zero() -> None:
    svg = bar_chart("fees", [("paid", Decimal("2")), ("rebate", Decimal("-1"))])
    assert svg.count('class="bar"') == 2
    assert 'fill="#dc2626" data-series="fees" data-category="rebate" data-value="-1"' in svg
    assert "No data" in bar_chart("fees", [])


def _data(previous: dict[str, object] | None = None) -> ReportData:
    fee = FeeRow("market", "SYM", "SYM", "exchange", Decimal("1.5"), Decimal(0), Decimal("1.5"), 3)
    return ReportData(
        business_date=date(2026, 5, 4),
        built_at=datetime(2026, 5, 5, 2, tzinfo=UTC),
        events=(EventCount("dropcopy executions", 10),),
        match_rates=(MatchRate("legs", 9, 10, 10), MatchRate("report", 0, 0, 0)),
        kinds=(KindCount("trade_busted", "low", (("open", 2), ("resolved", 1))),),
        open_breaks=(),
        hours=tuple(HourRow(h, h, 0, Decimal(0), Decimal(0), 0) for h in range(24)),
        untimed_breaks=0,
        fees=(fee, FeeRow("account", "A<1>", "A<1>", "exchange", Decimal(1), 0, Decimal(1), 1)),
        previous=None
        if previous is None
        else PreviousReport(date(2026, 5, 3), datetime(2026, 5, 4, 2, tzinfo=UTC), previous, 1, 0),
    )


def test_metrics_and_changes_since_the_previous_summary() -> None:
    data = _data()
    current = metrics(data)
    assert current["events: dropcopy executions"] == 10
    assert current["match rate: legs"] == Decimal("0.9")
    assert "match rate: report" not in current  # nothing to compare with is not a 0% rate
    assert current["net fees: exchange"] == Decimal("1.5")
    previous = {
        "metrics": {"events: dropcopy executions": 12, "net fees: exchange": "1.5", "gone": 1}
    }
    assert compare(current, previous) == tuple(
        sorted(
            [
                Change("breaks of the day: low", None, 3),
                Change("breaks of the day: critical", None, 0),
                Change("breaks of the day: high", None, 0),
                Change("breaks of the day: medium", None, 0),
                Change("breaks open (all dates)", None, 0),
                Change("breaks: trade_busted", None, 3),
                Change("events: dropcopy executions", 12, 10),
                Change("gone", 1, None),
                Change("match rate: legs", None, Decimal("0.9")),
            ],
            key=lambda c: c.metric,
        )
    )
    assert compare(current, None) == ()
    assert Change("x", 12, 10).delta == -2


def test_fee_totals_count_each_fill_once() -> None:
    assert fee_totals(_data().fees) == {
        "exchange": {
            "gross_fee": Decimal("1.5"),
            "refund": 0,
            "net_fee": Decimal("1.5"),
            "fills": 3,
        }
    }


def test_page_and_csvs_escape_and_keep_exact_numbers() -> None:
    data = _data(previous={"metrics": {"events: dropcopy executions": 12}})
    summary = summarise(data)
    html = render_html(data, summary, ["report.html"])
    assert "A&lt;1&gt;" in html
    assert "A<1>" not in html
    assert "No open breaks." in html
    assert "Against the report of 2026-05-03" in html
    assert summary["match_rates"]["report"]["rate"] is None
    files = csv_files(data)
    assert files["net_fees.csv"].splitlines()[1] == "market,SYM,SYM,exchange,1.5,0,1.5,3"
    assert files["events.csv"] == "source,events\ndropcopy executions,10\n"
