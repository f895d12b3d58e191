"""Break alerts end to end: lifecycle → outbox → real HTTP and SMTP receivers on 127.0.0.1.

Breaks are opened by the real lifecycle (`app.recon.lifecycle.merge`), so the outbox rows are the
ones production writes. Each receiver can refuse its first N deliveries, as a notifier that is
down for a while does. Time is passed in (`now`), so backoff is crossed without sleeping.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import Engine, text

from app.alerts.notifiers import (
    LogNotifier,
    Notifier,
    SmtpNotifier,
    WebhookNotifier,
    notifiers_from_settings,
)
from app.alerts.outbox import ALL_NOTIFIERS, RetryPolicy, deliver_pending
from app.config import Settings
from app.domain.breaks import BreakKind
from app.recon import lifecycle
from app.recon.rules import STAGING

DAY = date(2026, 5, 4)
T0 = datetime(2026, 5, 5, 1, 0, tzinfo=UTC)
KIND = BreakKind.EXECUTION_QUANTITY_MISMATCH
POLICY = RetryPolicy(base=timedelta(seconds=30), cap=timedelta(minutes=10))
OCCURRENCE = re.compile(r"break (\d+) occurrence (\d+)")


# --- receivers ------------------------------------------------------------------------------


class WebhookReceiver:
    """An HTTP endpoint answering 500 to its first `fail_first` POSTs, then 200."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.attempts = 0
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.attempts += 1
                    ok = receiver.attempts > receiver.fail_first
                    if ok:
                        receiver.bodies.append(orjson.loads(body))
                self.send_response(200 if ok else 500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/hooks/T000/SECRET-TOKEN"

    def occurrences(self) -> list[tuple[int, int]]:
        return [
            (int(b), int(o)) for body in self.bodies for b, o in OCCURRENCE.findall(body["text"])
        ]


class Inbox:
    """An aiosmtpd handler refusing (451) its first `refuse_first` messages."""

    def __init__(self, refuse_first: int = 0) -> None:
        self.refuse_first = refuse_first
        self.attempts = 0
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.attempts += 1
        if self.attempts <= self.refuse_first:
            return "451 4.3.0 Try again later"
        self.messages.append(envelope.content)
        return "250 Message accepted"

    def occurrences(self) -> list[tuple[int, int]]:
        found = []
        for raw in self.messages:
            message = message_from_bytes(raw)
            body = message.get_payload(decode=True)
            assert isinstance(body, bytes)
            found += [(int(b), int(o)) for b, o in OCCURRENCE.findall(body.decode())]
        return found


class EphemeralController(Controller):
    """aiosmtpd's Controller on port 0: wake the server up on the port the OS chose."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    controller = EphemeralController(handler, hostname="127.0.0.1", port=0)
    controller.start()
    yield handler, controller.port
    controller.stop()


def smtp_notifier(port: int) -> SmtpNotifier:
    return SmtpNotifier(
        host="127.0.0.1",
        port=port,
        sender="recon@example.test",
        recipients=("ops@example.test",),
        starttls=False,
        implicit_tls=False,
        username=None,
        password=None,
        timeout=5.0,
    )


# --- breaks through the real lifecycle ------------------------------------------------------


def find(engine: Engine, keys: list[str], now: datetime) -> None:
    """One recon run that finds exactly `keys` (everything else of KIND auto-resolves)."""
    with engine.begin() as conn:
        conn.execute(text(STAGING))
        for key in keys:
            conn.execute(
                text(
                    "INSERT INTO recon_found (kind, key, business_date, severity, expected,"
                    " actual, details) VALUES (:kind, :key, :d, 'high',"
                    " CAST(:expected AS jsonb), CAST(:actual AS jsonb), '{}'::jsonb)"
                ),
                {
                    "kind": str(KIND),
                    "key": key,
                    "d": DAY,
                    "expected": '{"last_shares": 100}',
                    "actual": '{"last_shares": 90}',
                },
            )
        lifecycle.merge(conn, business_date=DAY, kinds=[KIND], run_id=None, now=now)


def pending_rows(engine: Engine, notifier: str) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT break_id, occurrence, attempts, delivered_at, last_error"
                    " FROM alert_outbox WHERE notifier = :n ORDER BY id"
                ),
                {"n": notifier},
            )
        )


def expected_occurrences(engine: Engine) -> list[tuple[int, int]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT break_id, occurrence FROM alert_outbox WHERE notifier = :all"),
            {"all": ALL_NOTIFIERS},
        )
        return sorted((r.break_id, r.occurrence) for r in rows)


# --- tests ----------------------------------------------------------------------------------


def test_lifecycle_queues_alerts_for_every_configured_notifier() -> None:
    assert lifecycle.DEFAULT_NOTIFIERS == (ALL_NOTIFIERS,)


def test_burst_of_twenty_breaks_is_one_digest_per_notifier(
    engine: Engine,
    webhook: WebhookReceiver,
    inbox: tuple[Inbox, int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler, port = inbox
    find(engine, [f"E-{n:03d}" for n in range(20)], T0)
    notifiers: list[Notifier] = [
        WebhookNotifier(webhook.url, timeout=5.0),
        smtp_notifier(port),
        LogNotifier(),
    ]
    with caplog.at_level(logging.WARNING, logger="app.alerts.notifiers"):
        report = deliver_pending(engine, notifiers, T0, policy=POLICY)

    expected = expected_occurrences(engine)
    assert len(expected) == 20
    assert report.messages_sent == 3
    assert report.alerts_delivered == 60
    assert len(webhook.bodies) == 1
    assert sorted(webhook.occurrences()) == expected
    body = webhook.bodies[0]
    assert body["blocks"][0]["type"] == "header"
    assert "20 breaks (20 high)" in body["blocks"][0]["text"]["text"]
    assert len(body["blocks"]) == 21
    assert len(handler.messages) == 1
    assert sorted(handler.occurrences()) == expected
    assert message_from_bytes(handler.messages[0])["Subject"] == "polyrecon: 20 breaks (20 high)"
    log_digests = [r for r in caplog.records if r.name == "app.alerts.notifiers"]
    assert len(log_digests) == 1
    assert len(OCCURRENCE.findall(log_digests[0].getMessage())) == 20


def test_notifier_down_for_a_while_still_gets_each_occurrence_exactly_once(
    engine: Engine, webhook: WebhookReceiver, inbox: tuple[Inbox, int]
) -> None:
    handler, port = inbox
    webhook.fail_first = 3
    handler.refuse_first = 3
    hook, mail = WebhookNotifier(webhook.url, timeout=5.0), smtp_notifier(port)
    find(engine, ["E-1", "E-2"], T0)

    first = deliver_pending(engine, [hook, mail], T0, policy=POLICY, draw=lambda: 0.0)
    assert first.messages_sent == 0
    assert first.failures == 2
    failed = pending_rows(engine, hook.name)
    assert [r.attempts for r in failed] == [1, 1]
    assert all(r.delivered_at is None and "HTTP 500" in r.last_error for r in failed)
    # The webhook URL carries a token: neither the notifier's name nor its error shows it.
    assert "SECRET" not in hook.name
    assert all("SECRET" not in r.last_error for r in failed)
    assert "451" in pending_rows(engine, mail.name)[0].last_error

    # More breaks while the notifiers are down; a run inside the backoff does not knock.
    find(engine, ["E-1", "E-2", "E-3"], T0 + timedelta(seconds=5))
    during = deliver_pending(
        engine, [hook, mail], T0 + timedelta(seconds=10), policy=POLICY, draw=lambda: 0.0
    )
    assert set(during.backing_off) == {hook.name, mail.name}
    assert (webhook.attempts, handler.attempts) == (1, 1)

    now = T0
    for _ in range(8):
        now += POLICY.cap
        deliver_pending(engine, [hook, mail], now, policy=POLICY, draw=lambda: 0.5)
        if webhook.bodies and handler.messages:
            break
    expected = expected_occurrences(engine)
    assert len(expected) == 3
    assert (webhook.attempts, handler.attempts) == (4, 4)
    assert len(webhook.bodies) == 1
    assert sorted(webhook.occurrences()) == expected
    assert len(handler.messages) == 1
    assert sorted(handler.occurrences()) == expected
    for name in (hook.name, mail.name):
        rows = pending_rows(engine, name)
        assert all(r.delivered_at is not None and r.last_error is None for r in rows)

    for _ in range(3):
        again = deliver_pending(engine, [hook, mail], now + timedelta(days=1), policy=POLICY)
        assert again.messages_sent == 0
        assert again.failures == 0
    assert (len(webhook.bodies), len(handler.messages)) == (1, 1)


def test_reopened_break_alerts_again_as_a_new_occurrence(
    engine: Engine, webhook: WebhookReceiver
) -> None:
    hook = WebhookNotifier(webhook.url, timeout=5.0)
    find(engine, ["E-7"], T0)
    deliver_pending(engine, [hook], T0, policy=POLICY)
    find(engine, [], T0 + timedelta(hours=1))  # late data clears it: auto-resolved, no alert
    deliver_pending(engine, [hook], T0 + timedelta(hours=1), policy=POLICY)
    find(engine, ["E-7"], T0 + timedelta(hours=2))  # and it recurs: reopened
    deliver_pending(engine, [hook], T0 + timedelta(hours=2), policy=POLICY)
    deliver_pending(engine, [hook], T0 + timedelta(hours=3), policy=POLICY)

    assert len(webhook.bodies) == 2
    (break_id, first), (same_id, second) = webhook.occurrences()
    assert (break_id, first, second) == (same_id, 1, 2)
    assert "reopened" in webhook.bodies[1]["text"]
    assert "new break" in webhook.bodies[0]["text"]


def test_concurrent_delivery_runs_never_send_an_occurrence_twice(
    engine: Engine, webhook: WebhookReceiver
) -> None:
    hook = WebhookNotifier(webhook.url, timeout=5.0)
    find(engine, [f"E-{n}" for n in range(30)], T0)
    runs = [
        threading.Thread(
            target=deliver_pending, args=(engine, [hook], T0), kwargs={"max_digest": 7}
        )
        for _ in range(4)
    ]
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=30)
    assert not any(run.is_alive() for run in runs)
    delivered = webhook.occurrences()
    assert len(delivered) == len(set(delivered)) == 30
    assert all(len(OCCURRENCE.findall(b["text"])) <= 7 for b in webhook.bodies)


def test_notifiers_are_configured_by_url() -> None:
    settings = Settings(
        alert_urls="https://hooks.example.test/services/T1/B2/XYZ,"
        "smtp://127.0.0.1:2525?from=recon@example.test&to=a@example.test&to=b@example.test"
        "&starttls=1,log:",
        alert_smtp_username="recon",
        alert_smtp_password="pw-secret",
    )
    hook, mail, logger = notifiers_from_settings(settings)
    assert isinstance(hook, WebhookNotifier)
    assert hook.name.startswith("webhook:hooks.example.test:#")
    assert "XYZ" not in hook.name
    assert isinstance(mail, SmtpNotifier)
    assert (mail.port, mail.recipients, mail.starttls) == (
        2525,
        ("a@example.test", "b@example.test"),
        True,
    )
    assert "pw-secret" not in mail.name
    assert isinstance(logger, LogNotifier)
    assert notifiers_from_settings(Settings(alert_urls="")) == (LogNotifier(),)
    with pytest.raises(ValueError, match="smtp alert URL needs"):
        notifiers_from_settings(Settings(alert_urls="smtp://127.0.0.1:25?to=a@example.test"))
    with pytest.raises(ValueError, match="unknown alert URL scheme"):
        notifiers_from_settings(Settings(alert_urls="ftp://example.test/x"))


def test_deliver_command_uses_the_configured_notifiers(
    engine: Engine, webhook: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from app.alerts.cli import alerts

    settings = Settings(alert_urls=webhook.url)
    monkeypatch.setattr("app.config.get_settings", lambda: settings)
    monkeypatch.setattr("app.db.session.get_engine", lambda: engine)
    find(engine, ["E-1", "E-2"], T0)
    result = CliRunner().invoke(alerts, ["deliver", "--json"])
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.output)
    assert (report["messages_sent"], report["alerts_delivered"], report["failures"]) == (1, 2, 0)
    assert sorted(webhook.occurrences()) == expected_occurrences(engine)
    again = CliRunner().invoke(alerts, ["deliver"])
    assert again.exit_code == 0, again.output
    assert again.output.startswith("0 alerts delivered in 0 messages")


class Broken:
    """A notifier with a bug: the error is retried like any failure, its text is not kept."""

    name = "broken"

    def __init__(self) -> None:
        self.calls = 0

    def send(self, digest: Any) -> None:
        self.calls += 1
        if self.calls == 1:
            raise ValueError("https://hooks.example.test/SECRET")


def test_an_unexpected_notifier_error_is_retried_and_not_recorded_verbatim(engine: Engine) -> None:
    broken = Broken()
    find(engine, ["E-1"], T0)
    first = deliver_pending(engine, [broken], T0, policy=POLICY)
    assert (first.failures, first.outcomes[0].error) == (1, "ValueError")
    assert pending_rows(engine, "broken")[0].last_error == "ValueError"
    second = deliver_pending(engine, [broken], T0 + POLICY.cap, policy=POLICY)
    assert (second.messages_sent, broken.calls) == (1, 2)
