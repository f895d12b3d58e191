"""Pure parts of break alerts: digest text, Slack body limits, retry backoff."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.alerts.notifiers import AlertItem, build_digest, describe_payload, slack_body
from app.alerts.outbox import RetryPolicy, retry_delay


def item(n: int, severity: str = "high", occurrence: int = 1) -> AlertItem:
    return AlertItem(
        outbox_id=n,
        break_id=n,
        occurrence=occurrence,
        kind="execution_quantity_mismatch",
        key=f"E-{n}",
        business_date=date(2026, 5, 4),
        severity=severity,
        facts="",
    )


def test_single_alert_subject_says_new_or_reopened() -> None:
    assert build_digest([item(1)]).subject == (
        "polyrecon: new break execution_quantity_mismatch E-1 (high)"
    )
    reopened = build_digest([item(1, occurrence=3)])
    assert reopened.subject.startswith("polyrecon: reopened break")
    assert "reopened (occurrence 3) · break 1 occurrence 3" in reopened.text


def test_digest_puts_the_worst_first_and_counts_severities() -> None:
    digest = build_digest([item(1, "low"), item(2, "critical"), item(3, "high"), item(4, "low")])
    assert digest.subject == "polyrecon: 4 breaks (1 critical, 1 high, 2 low)"
    assert [i.break_id for i in digest.items] == [2, 3, 1, 4]
    with pytest.raises(ValueError, match="at least one"):
        build_digest([])


def test_slack_body_stays_within_fifty_blocks_and_escapes() -> None:
    items = [item(n) for n in range(120)]
    body = slack_body(build_digest(items))
    assert len(body["blocks"]) == 1 + 45 + 1
    assert body["blocks"][-1]["elements"][0]["text"].startswith("… and 75 more")
    assert body["text"].count("occurrence 1") == 120
    tricky = slack_body(
        build_digest([AlertItem(1, 1, 1, "k", "<@here>&", date(2026, 5, 4), "low", "")])
    )
    assert "<@here>" not in tricky["text"]
    assert "&lt;@here&gt;&amp;" in tricky["blocks"][1]["text"]["text"]


def test_payload_facts_are_compact_and_bounded() -> None:
    facts = describe_payload({"expected": {"qty": 1}, "actual": {"qty": 2}, "kind": "ignored"})
    assert facts == 'expected={"qty":1} actual={"qty":2}'
    assert len(describe_payload({"details": {"x": "y" * 1000}})) == 300
    assert describe_payload({}) == ""


def test_retry_delay_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    policy = RetryPolicy(base=timedelta(seconds=30), cap=timedelta(minutes=10))
    assert retry_delay(policy, 1, 0.0) == timedelta(seconds=15)
    assert retry_delay(policy, 1, 0.999) < timedelta(seconds=30)
    assert retry_delay(policy, 3, 0.0) == timedelta(seconds=60)
    assert retry_delay(policy, 50, 0.999) <= timedelta(minutes=10)
    with pytest.raises(ValueError, match="attempts"):
        retry_delay(policy, 0, 0.5)


@given(attempts=st.integers(1, 200), draw=st.floats(0, 1, exclude_max=True))
def test_retry_delay_is_always_between_half_the_ceiling_and_the_ceiling(
    attempts: int, draw: float
) -> None:
    policy = RetryPolicy(base=timedelta(seconds=1), cap=timedelta(hours=1))
    ceiling = min(policy.cap, policy.base * 2 ** min(attempts - 1, 30))
    assert ceiling / 2 <= retry_delay(policy, attempts, draw) <= ceiling


def test_subject_never_carries_a_line_break_into_an_email_header() -> None:
    broken = AlertItem(1, 1, 1, "k", "E-1\r\nBcc: x@example.test", date(2026, 5, 4), "low", "")
    subject = build_digest([broken]).subject
    assert "\n" not in subject
    assert "\r" not in subject
