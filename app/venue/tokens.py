"""Opaque, HMAC-signed position tokens of the simulated venue: DropCopy resume tokens and Report API
page tokens.

A token is base64url(payload || mac). The mac makes a forged or edited token detectable
(INVALID_ARGUMENT) and the digest of the request's filters inside it ties a position to the query
it was issued for: a position in a filtered stream means nothing under other filters. Pure: callers
pass the clock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from collections.abc import Iterable
from dataclasses import dataclass

_MAC_BYTES = 16
_DIGEST_BYTES = 8
_RESUME_VERSION = 1
# version, stream name length, after_seq, issued_at (ms since epoch), filters digest; then the name
_RESUME_HEAD = struct.Struct(">BBQQ8s")
_PAGE_MARK = b"P1"


class TokenError(ValueError):
    """A token that cannot be honoured; the message is safe to return to the client."""


class MalformedTokenError(TokenError):
    """Not a token this venue issued for this request (garbled, forged, other stream or filters)."""


class ExpiredTokenError(TokenError):
    """A genuine resume token that is older than the venue's token lifetime."""


def filters_digest(parts: Iterable[bytes]) -> bytes:
    """A short fingerprint of a request's filters; callers pass parts in a canonical order."""
    sha = hashlib.sha256()
    for part in parts:
        sha.update(len(part).to_bytes(4, "big"))
        sha.update(part)
    return sha.digest()[:_DIGEST_BYTES]


def stream_filters_digest(symbols: Iterable[str], firms: Iterable[str]) -> bytes:
    """Order- and duplicate-insensitive: `[a, b]` and `[b, a, a]` select the same rows."""
    return filters_digest(
        [
            "\x1f".join(sorted(set(symbols))).encode(),
            "\x1f".join(sorted(set(firms))).encode(),
        ]
    )


@dataclass(frozen=True, slots=True)
class TokenSigner:
    key: bytes

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self.key, payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def seal(self, payload: bytes) -> bytes:
        return base64.urlsafe_b64encode(payload + self._mac(payload)).rstrip(b"=")

    def unseal(self, token: bytes) -> bytes:
        try:
            raw = base64.urlsafe_b64decode(token + b"=" * (-len(token) % 4))
        except (binascii.Error, ValueError) as exc:
            raise MalformedTokenError("malformed token: not base64url") from exc
        payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if len(raw) <= _MAC_BYTES or not hmac.compare_digest(mac, self._mac(payload)):
            raise MalformedTokenError("malformed token: signature does not verify")
        return payload

    def resume_token(self, stream: str, after_seq: int, digest: bytes, issued_at_ms: int) -> bytes:
        name = stream.encode()
        head = _RESUME_HEAD.pack(_RESUME_VERSION, len(name), after_seq, issued_at_ms, digest)
        return self.seal(head + name)

    def read_resume_token(
        self,
        token: bytes,
        *,
        stream: str,
        digest: bytes,
        now_ms: int,
        ttl_ms: int | None,
    ) -> int:
        """The `after_seq` the token stands for; raises TokenError when it cannot be honoured."""
        payload = self.unseal(token)
        if len(payload) < _RESUME_HEAD.size:
            raise MalformedTokenError("malformed resume token: too short")
        version, name_len, after_seq, issued_at_ms, token_digest = _RESUME_HEAD.unpack_from(payload)
        name = payload[_RESUME_HEAD.size :]
        if version != _RESUME_VERSION or len(name) != name_len:
            raise MalformedTokenError("malformed resume token: unknown layout")
        if name != stream.encode():
            raise MalformedTokenError(
                f"resume token belongs to the {name.decode(errors='replace')} stream, not {stream}"
            )
        if token_digest != digest:
            raise MalformedTokenError("resume token was issued for other symbols/firms filters")
        if ttl_ms is not None and now_ms - issued_at_ms > ttl_ms:
            raise ExpiredTokenError(
                f"resume token expired ({(now_ms - issued_at_ms) // 1000} s old, "
                f"lifetime {ttl_ms // 1000} s); resume by resume_time"
            )
        return int(after_seq)

    def page_token(self, search: str, after_key: str, digest: bytes) -> str:
        payload = _PAGE_MARK + digest + search.encode() + b"\x00" + after_key.encode()
        return self.seal(payload).decode("ascii")

    def read_page_token(self, token: str, *, search: str, digest: bytes) -> str:
        """The store's `after_key` the page token stands for."""
        try:
            payload = self.unseal(token.encode("ascii"))
        except UnicodeEncodeError as exc:
            raise MalformedTokenError("malformed page token: not ASCII") from exc
        mark, rest = payload[: len(_PAGE_MARK)], payload[len(_PAGE_MARK) :]
        token_digest, body = rest[:_DIGEST_BYTES], rest[_DIGEST_BYTES:]
        name, sep, after_key = body.partition(b"\x00")
        if mark != _PAGE_MARK or not sep:
            raise MalformedTokenError("malformed page token: unknown layout")
        if name != search.encode():
            raise MalformedTokenError("page token belongs to another search")
        if token_digest != digest:
            raise MalformedTokenError("page token was issued for other search filters")
        return after_key.decode()
