"""The venue's resume and page tokens: opaque, bound to their stream or search and its filters,
refused when edited, forged or too old."""

from __future__ import annotations

import base64
import re

import pytest

from app.venue.tokens import (
    ExpiredTokenError,
    MalformedTokenError,
    TokenError,
    TokenSigner,
    filters_digest,
    stream_filters_digest,
)

SIGNER = TokenSigner(b"venue-key")
DIGEST = stream_filters_digest(["SYM-A"], ["FIRM01"])
ISSUED_MS = 1_777_000_000_000
TTL_MS = 30_000


def resume(token: bytes, **overrides: object) -> int:
    args: dict[str, object] = {
        "stream": "executions",
        "digest": DIGEST,
        "now_ms": ISSUED_MS,
        "ttl_ms": TTL_MS,
        **overrides,
    }
    return SIGNER.read_resume_token(token, **args)  # type: ignore[arg-type]


def a_token(after_seq: int = 1234, stream: str = "executions") -> bytes:
    return SIGNER.resume_token(stream, after_seq, DIGEST, ISSUED_MS)


def raw(token: bytes) -> bytes:
    return base64.urlsafe_b64decode(token + b"=" * (-len(token) % 4))


def encoded(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


@pytest.mark.parametrize("after_seq", [0, 1, 499, 2**40, 2**64 - 1])
@pytest.mark.parametrize("stream", ["executions", "trade_captures", "position_changes"])
def test_resume_token_gives_back_its_position(after_seq: int, stream: str) -> None:
    token = a_token(after_seq, stream)
    assert re.fullmatch(rb"[A-Za-z0-9_-]+", token), "base64url without padding"
    assert resume(token, stream=stream) == after_seq


def test_resume_tokens_are_deterministic_and_differ_by_position_and_time() -> None:
    assert a_token(5) == a_token(5)
    assert len({a_token(5), a_token(6), SIGNER.resume_token("executions", 5, DIGEST, 1)}) == 3


def test_every_edited_byte_is_refused() -> None:
    token = a_token()
    data = raw(token)
    for index in range(len(data)):
        edited = bytearray(data)
        edited[index] ^= 0x01
        with pytest.raises(MalformedTokenError, match="signature does not verify"):
            resume(encoded(bytes(edited)))


@pytest.mark.parametrize(
    "token",
    [b"", b"AAAA", b"\xff\xfe not base64 at all", a_token()[:-4], a_token() + b"AAAA"],
    ids=["empty", "short", "garbage", "truncated", "extended"],
)
def test_garbled_tokens_are_malformed(token: bytes) -> None:
    with pytest.raises(MalformedTokenError, match="malformed token"):
        resume(token)


def test_a_token_signed_with_another_key_is_refused() -> None:
    forged = TokenSigner(b"other-key").resume_token("executions", 1234, DIGEST, ISSUED_MS)
    with pytest.raises(MalformedTokenError, match="signature does not verify"):
        resume(forged)


def test_a_token_binds_its_stream_and_its_filters() -> None:
    with pytest.raises(MalformedTokenError, match="belongs to the executions stream, not trade_"):
        resume(a_token(), stream="trade_captures")
    with pytest.raises(MalformedTokenError, match="other symbols/firms filters"):
        resume(a_token(), digest=stream_filters_digest(["SYM-B"], ["FIRM01"]))


def test_signed_payloads_of_another_layout_are_malformed() -> None:
    with pytest.raises(MalformedTokenError, match="too short"):
        resume(SIGNER.seal(b"short"))
    good = raw(a_token())[:-16]
    with pytest.raises(MalformedTokenError, match="unknown layout"):
        resume(SIGNER.seal(b"\x02" + good[1:]))  # a version we do not know
    with pytest.raises(MalformedTokenError, match="unknown layout"):
        resume(SIGNER.seal(good + b"x"))  # name longer than its recorded length


def test_expiry_is_strictly_after_the_lifetime() -> None:
    token = a_token()
    assert resume(token, now_ms=ISSUED_MS + TTL_MS) == 1234
    with pytest.raises(
        ExpiredTokenError, match=r"resume token expired \(30 s old, lifetime 30 s\)"
    ):
        resume(token, now_ms=ISSUED_MS + TTL_MS + 1)
    assert resume(token, now_ms=ISSUED_MS + 10**12, ttl_ms=None) == 1234


def test_expiry_is_only_judged_on_a_genuine_token() -> None:
    """An old forged token is malformed, not expired: expired sends a client to resume_time."""
    forged = TokenSigner(b"other-key").resume_token("executions", 1, DIGEST, 0)
    with pytest.raises(MalformedTokenError):
        resume(forged, now_ms=ISSUED_MS)


def test_token_errors_are_value_errors_with_client_safe_messages() -> None:
    assert issubclass(MalformedTokenError, TokenError)
    assert issubclass(ExpiredTokenError, TokenError)
    assert issubclass(TokenError, ValueError)


def test_stream_filters_digest_ignores_order_and_repeats_but_not_which_filter() -> None:
    assert stream_filters_digest(["b", "a"], ["f"]) == stream_filters_digest(["a", "b", "a"], ["f"])
    assert stream_filters_digest(["a"], []) != stream_filters_digest([], ["a"])
    assert len(stream_filters_digest(["a"], ["f"])) == 8


def test_filters_digest_does_not_run_parts_together() -> None:
    assert filters_digest([b"ab", b"c"]) != filters_digest([b"a", b"bc"])
    assert filters_digest([b"ab"]) != filters_digest([b"a", b"b"])


def test_page_token_round_trip_and_binding() -> None:
    digest = filters_digest([b"executions", b"filters"])
    token = SIGNER.page_token("executions", "EX-000123", digest)
    assert isinstance(token, str)
    assert SIGNER.read_page_token(token, search="executions", digest=digest) == "EX-000123"
    with pytest.raises(MalformedTokenError, match="another search"):
        SIGNER.read_page_token(token, search="trades", digest=digest)
    with pytest.raises(MalformedTokenError, match="other search filters"):
        SIGNER.read_page_token(token, search="executions", digest=filters_digest([b"x"]))
    with pytest.raises(MalformedTokenError, match="not ASCII"):
        SIGNER.read_page_token("pagé", search="executions", digest=digest)
    edited = token[:5] + ("A" if token[5] != "A" else "B") + token[6:]
    with pytest.raises(MalformedTokenError):
        SIGNER.read_page_token(edited, search="executions", digest=digest)


def test_resume_and_page_tokens_are_not_interchangeable() -> None:
    with pytest.raises(MalformedTokenError, match="page token: unknown layout"):
        SIGNER.read_page_token(a_token().decode(), search="executions", digest=DIGEST)
    page = SIGNER.page_token("executions", "EX-1", DIGEST).encode()
    with pytest.raises(MalformedTokenError):
        resume(page)
