"""Where break alerts go: a webhook (Slack-compatible JSON), e-mail over SMTP, or the log.

Each notifier is configured by one URL (`RECON_ALERT_URLS`). A notifier's `name` is what the
outbox records deliveries against, so it must be stable across restarts and must not leak the
URL: webhook URLs carry their token in the path, hence a short hash instead of the URL.
Digest text is built by pure functions; only `send` does I/O.
"""

from __future__ import annotations

import hashlib
import logging
import smtplib
import ssl
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import orjson

from app.config import Settings, url_flag
from app.db.base import Severity

log = logging.getLogger(__name__)

# Slack refuses a message with more than 50 blocks: header + items + a "more" line must fit.
SLACK_MAX_ITEM_BLOCKS = 45
# Long enough for a key and the differing values, short enough to keep a digest scannable.
MAX_FACTS_CHARS = 300
MAX_ERROR_CHARS = 500
SEVERITY_ORDER = tuple(s.value for s in reversed(Severity))


class DeliveryError(Exception):
    """A notifier could not deliver; the message is safe to store (no URL, no credential)."""


@dataclass(frozen=True, slots=True)
class AlertItem:
    """One break occurrence to announce (occurrence 1 = new, > 1 = reopened)."""

    outbox_id: int
    break_id: int
    occurrence: int
    kind: str
    key: str
    business_date: date
    severity: str
    facts: str


@dataclass(frozen=True, slots=True)
class Digest:
    """One message announcing a burst of break occurrences."""

    subject: str
    lines: tuple[str, ...]
    items: tuple[AlertItem, ...]

    @property
    def text(self) -> str:
        return "\n".join((self.subject, "", *self.lines))


def describe_payload(payload: dict[str, Any]) -> str:
    """The expected/actual values (or details) of an outbox payload, compact and bounded."""
    parts = [
        f"{field}={orjson.dumps(payload[field], option=orjson.OPT_SORT_KEYS).decode()}"
        for field in ("expected", "actual", "details")
        if payload.get(field)
    ]
    text = " ".join(parts)
    return text if len(text) <= MAX_FACTS_CHARS else text[: MAX_FACTS_CHARS - 1] + "…"


def item_line(item: AlertItem) -> str:
    event = "new" if item.occurrence == 1 else f"reopened (occurrence {item.occurrence})"
    line = (
        f"[{item.severity.upper()}] {item.kind} {item.key} on {item.business_date.isoformat()}"
        f" — {event} · break {item.break_id} occurrence {item.occurrence}"
    )
    return f"{line}\n    {item.facts}" if item.facts else line


def _severity_rank(item: AlertItem) -> tuple[int, str, str]:
    # recon_break's CHECK constraint admits only the known severities.
    return SEVERITY_ORDER.index(item.severity), item.kind, item.key


def build_digest(items: Sequence[AlertItem]) -> Digest:
    """One message for the burst, worst first, with a subject that says what is in it."""
    if not items:
        raise ValueError("a digest needs at least one alert")
    ordered = tuple(sorted(items, key=_severity_rank))
    if len(ordered) == 1:
        only = ordered[0]
        verb = "new break" if only.occurrence == 1 else "reopened break"
        subject = f"polyrecon: {verb} {only.kind} {only.key} ({only.severity})"
    else:
        counts = Counter(item.severity for item in ordered)
        by_severity = ", ".join(f"{counts[s]} {s}" for s in SEVERITY_ORDER if counts[s])
        subject = f"polyrecon: {len(ordered)} breaks ({by_severity})"
    # A key is venue data: no line break of it may reach an e-mail header.
    subject = " ".join(subject.split())
    return Digest(subject=subject, lines=tuple(item_line(i) for i in ordered), items=ordered)


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn treats these three as control characters; everything else is literal.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(digest: Digest) -> dict[str, Any]:
    """Slack-compatible webhook body: `text` is the full fallback, `blocks` the rich view."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": digest.subject[:150]}}
    ]
    shown = digest.lines[:SLACK_MAX_ITEM_BLOCKS]
    blocks.extend(
        {"type": "section", "text": {"type": "mrkdwn", "text": _slack_escape(line)[:3000]}}
        for line in shown
    )
    if hidden := len(digest.lines) - len(shown):
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"… and {hidden} more (see `text`)"}],
            }
        )
    return {"text": _slack_escape(digest.text), "blocks": blocks}


def _safe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]


class Notifier(Protocol):
    @property
    def name(self) -> str: ...

    def send(self, digest: Digest) -> None:
        """Deliver or raise `DeliveryError`."""


def _url_hash(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:10]


@dataclass(frozen=True, slots=True)
class WebhookNotifier:
    url: str
    timeout: float

    @property
    def name(self) -> str:
        parts = urlsplit(self.url)
        return f"webhook:{parts.hostname}:{parts.port or ''}#{_url_hash(self.url)}"

    def send(self, digest: Digest) -> None:
        request = urllib.request.Request(  # noqa: S310 -- scheme checked to be http(s) at parse
            self.url,
            data=orjson.dumps(slack_body(digest)),
            headers={"Content-Type": "application/json", "User-Agent": "polyrecon-alerts"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                response.read()
        except urllib.error.HTTPError as exc:
            # str(HTTPError) is "HTTP Error 500: reason" — the URL (and its token) stays out.
            raise DeliveryError(f"HTTP {exc.code} {exc.reason}"[:MAX_ERROR_CHARS]) from None
        except urllib.error.URLError as exc:
            raise DeliveryError(f"URLError: {exc.reason}"[:MAX_ERROR_CHARS]) from None
        except OSError as exc:
            raise DeliveryError(_safe_error(exc)) from None


@dataclass(frozen=True, slots=True)
class SmtpNotifier:
    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    starttls: bool
    implicit_tls: bool
    username: str | None
    password: str | None
    timeout: float

    @property
    def name(self) -> str:
        route = f"{self.sender}>{','.join(self.recipients)}"
        return f"smtp:{self.host}:{self.port}#{_url_hash(route)}"

    def message(self, digest: Digest) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = digest.subject
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(domain="polyrecon")
        msg.set_content(digest.text)
        return msg

    def send(self, digest: Digest) -> None:
        try:
            if self.implicit_tls:
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
                )
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username is not None:
                    smtp.login(self.username, self.password or "")
                smtp.send_message(self.message(digest))
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(_safe_error(exc)) from None


@dataclass(frozen=True, slots=True)
class LogNotifier:
    """Always there when nothing else is configured: an alert must at least reach the log."""

    @property
    def name(self) -> str:
        return "log"

    def send(self, digest: Digest) -> None:
        log.warning("%s", digest.text)


def parse_notifier(url: str, settings: Settings) -> Notifier:
    """One notifier from its URL; raises ValueError (without echoing the URL) when malformed."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme in {"http", "https"}:
        if not parts.hostname:
            raise ValueError(f"webhook alert URL without a host ({scheme}://…)")
        return WebhookNotifier(url=url.strip(), timeout=settings.alert_timeout_seconds)
    if scheme in {"smtp", "smtps"}:
        query = parse_qs(parts.query)
        senders = query.get("from", [])
        recipients = tuple(r for value in query.get("to", []) for r in value.split(";") if r)
        if not parts.hostname or len(senders) != 1 or not recipients:
            raise ValueError("smtp alert URL needs a host, one from= and at least one to=")
        password = settings.alert_smtp_password
        return SmtpNotifier(
            host=parts.hostname,
            port=parts.port or (465 if scheme == "smtps" else 25),
            sender=senders[0],
            recipients=recipients,
            starttls=url_flag(parts.query, "starttls"),
            implicit_tls=scheme == "smtps",
            username=settings.alert_smtp_username,
            password=None if password is None else password.get_secret_value(),
            timeout=settings.alert_timeout_seconds,
        )
    if scheme == "log":
        return LogNotifier()
    raise ValueError(f"unknown alert URL scheme {scheme!r} (expected https, http, smtp, log)")


def notifiers_from_settings(settings: Settings) -> tuple[Notifier, ...]:
    """The configured notifiers; with none configured, alerts go to the log."""
    urls = [u for u in settings.alert_urls.get_secret_value().split(",") if u.strip()]
    notifiers = tuple(parse_notifier(url, settings) for url in urls) or (LogNotifier(),)
    names = [n.name for n in notifiers]
    if len(set(names)) != len(names):
        raise ValueError("RECON_ALERT_URLS lists the same notifier twice")
    return notifiers
