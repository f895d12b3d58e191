"""Logs never carry a token, key or password."""

from __future__ import annotations

import io
import json
import logging

import pytest

from app.observability import (
    REDACTED,
    JsonFormatter,
    KeyValueFormatter,
    RedactingFilter,
    redact,
    register_secret,
)

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjbGllbnQifQ.c2lnbmF0dXJlLWJ5dGVz"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("metadata authorization: Bearer abc.def-123", "abc.def-123"),
        (f"token refused: {JWT}", JWT),
        ("connect wss://feeds.example.com/ws/k3y-5ecret-9 failed", "k3y-5ecret-9"),
        ("ws://127.0.0.1:8765/ws/devkey?x=1", "devkey"),
        ("postgresql+psycopg://recon:hunter22@db:5432/recon", "hunter22"),
        ("client_assertion=zzzyyyxxx&grant_type=client_credentials", "zzzyyyxxx"),
        ('{"access_token": "opaque-value-77"}', "opaque-value-77"),
        ("password=s3cr3t!", "s3cr3t!"),
        (
            "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkq\n-----END PRIVATE KEY-----",
            "MIIEvQIBADANBgkq",
        ),
    ],
)
def test_patterns_redact_secrets(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out
    assert REDACTED in out


def test_registered_secret_is_redacted_anywhere() -> None:
    register_secret("plain-opaque-9f8e7d")
    assert redact("x plain-opaque-9f8e7d y") == f"x {REDACTED} y"
    register_secret("abc")  # too short to be a real secret: ignored, words stay intact
    assert redact("abc abcdef") == "abc abcdef"


def test_rotating_secrets_keep_only_the_newest_but_never_evict_fixed_ones() -> None:
    register_secret("fixed-secret-4a4a")
    tokens = [f"rotating-token-{n:04d}" for n in range(40)]
    for token in tokens:
        register_secret(token, rotating=True)
    assert redact(tokens[-1]) == REDACTED
    assert redact(tokens[0]) == tokens[0]  # long expired, no longer tracked
    assert redact("fixed-secret-4a4a") == REDACTED


def _logger(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"test-redaction-{id(out)}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    return logger, out


@pytest.fixture(params=[JsonFormatter, KeyValueFormatter])
def formatter(request: pytest.FixtureRequest) -> logging.Formatter:
    made: logging.Formatter = request.param()
    return made


def test_filter_covers_args_extras_and_tracebacks(formatter: logging.Formatter) -> None:
    logger, out = _logger(formatter)
    logger.info("opening %s", "ws://127.0.0.1:1/ws/feedkey42", extra={"auth": "Bearer tok-123"})
    try:
        raise RuntimeError("refused token=tok-456")
    except RuntimeError:
        logger.exception("stream failed")
    text = out.getvalue()
    for secret in ("feedkey42", "tok-123", "tok-456"):
        assert secret not in text
    assert "stream failed" in text
    assert "RuntimeError" in text


def test_json_lines_are_json() -> None:
    logger, out = _logger(JsonFormatter())
    logger.warning("lag high", extra={"source": "dropcopy.executions", "lag_s": 3.5})
    doc = json.loads(out.getvalue())
    assert doc["msg"] == "lag high"
    assert doc["source"] == "dropcopy.executions"
    assert doc["level"] == "WARNING"
