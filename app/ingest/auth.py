"""Where the exchange bearer token comes from: a static token, or Auth0 client credentials.

The Auth0 flow signs a short-lived RS256 JWT client assertion with the firm's private key and
trades it for an access token (~180 s). A background task refreshes it well before expiry; the
gRPC consumers read `current()` each time they open a stream, and the venue authorises a stream
when it opens, so a refresh never tears down a live stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from app.config import Settings, is_loopback_host
from app.observability import redact, register_secret

log = logging.getLogger(__name__)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class AuthError(RuntimeError):
    """The token source cannot produce a token; the message is safe to log."""


class TokenSource(Protocol):
    def current(self) -> str:
        """The token to send now (never blocks)."""
        ...

    async def start(self) -> None:
        """Obtain the first token; raises AuthError if that is impossible."""
        ...

    async def refresh(self, rejected: str | None = None) -> None:
        """Get a new token now, unless `rejected` (the one the venue refused) was replaced."""
        ...

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the token fresh in the background until `stop` is set."""
        ...


class StaticToken:
    """A bearer token from configuration; there is nothing to refresh."""

    def __init__(self, token: str) -> None:
        if not token.strip():
            raise AuthError("the static exchange token is empty")
        self._token = token.strip()
        register_secret(self._token)

    def current(self) -> str:
        return self._token

    async def start(self) -> None:
        return None

    async def refresh(self, rejected: str | None = None) -> None:
        return None

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()


def load_private_key(path: Path) -> RSAPrivateKey:
    """Read a PEM RSA private key from a regular file that only its owner can access (like ssh).

    The checks are made on the opened file, so the file cannot be swapped between check and
    read; O_NONBLOCK keeps a FIFO planted at the path from blocking the open.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise AuthError(f"cannot read the Auth0 private key file {path}: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise AuthError(f"the Auth0 private key file {path} is not a regular file")
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise AuthError(
                f"the Auth0 private key file {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {path}`"
            )
    except AuthError:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as key_file:
        pem = key_file.read()
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise AuthError(f"{path} is not an unencrypted PEM private key") from exc
    if not isinstance(key, RSAPrivateKey):
        raise AuthError(f"{path} holds a {type(key).__name__}; RS256 needs an RSA key")
    return key


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_in: float
    obtained_at: float  # monotonic


def refresh_delay(issued: IssuedToken, margin: float) -> float:
    """Seconds after issue to refresh: `margin` before expiry, but not before half-life.

    180 s tokens with a 60 s margin refresh after 120 s; a very short-lived token (tests) is
    refreshed at half its life rather than in a tight loop.
    """
    return max(issued.expires_in - margin, issued.expires_in * 0.5, 0.05)


class Auth0ClientCredentials:
    """OAuth2 client-credentials grant authenticated by a private-key JWT (RFC 7523)."""

    def __init__(
        self,
        *,
        token_url: str,
        client_id: str,
        private_key: RSAPrivateKey,
        audience: str | None = None,
        assertion_lifetime: float = 60.0,
        refresh_margin: float = 60.0,
        http_timeout: float = 10.0,
        retry_delay: float = 1.0,
    ) -> None:
        parsed = urllib.parse.urlsplit(token_url)
        if parsed.scheme != "https" and not (
            parsed.scheme == "http" and is_loopback_host(parsed.hostname or "")
        ):
            raise AuthError(f"the Auth0 token URL must be https (got {parsed.scheme}://)")
        self._token_url = token_url
        self._loopback = is_loopback_host(parsed.hostname or "")
        self._client_id = client_id
        self._key = private_key
        self._audience = audience
        self._assertion_lifetime = assertion_lifetime
        self._refresh_margin = refresh_margin
        self._http_timeout = http_timeout
        self._retry_delay = retry_delay
        self._issued: IssuedToken | None = None
        self._lock = asyncio.Lock()
        self.refreshes = 0

    def current(self) -> str:
        if self._issued is None:
            raise AuthError("no access token yet: start() was not awaited")
        return self._issued.access_token

    async def start(self) -> None:
        await self.refresh()

    async def refresh(self, rejected: str | None = None) -> None:
        async with self._lock:
            # Several streams see UNAUTHENTICATED at once; only the first one fetches.
            if rejected is not None and self._issued and self._issued.access_token != rejected:
                return
            issued = await asyncio.to_thread(self._fetch)
            register_secret(issued.access_token, rotating=True)
            self._issued = issued
            self.refreshes += 1
        log.info("exchange access token obtained", extra={"expires_in": issued.expires_in})

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            issued = self._issued
            if issued is None:
                delay = 0.0
            else:
                due = issued.obtained_at + refresh_delay(issued, self._refresh_margin)
                delay = max(due - time.monotonic(), 0.0)
            if await _wait(stop, delay):
                return
            try:
                await self.refresh()
            except AuthError as exc:
                # The current token may still be valid for a while; retry soon, and let the
                # streams' UNAUTHENTICATED handling fail loudly if it really runs out.
                log.warning("token refresh failed, retrying: %s", exc)
                if await _wait(stop, self._retry_delay):
                    return

    def _assertion(self) -> str:
        now = int(time.time())
        claims = {
            "iss": self._client_id,
            "sub": self._client_id,
            "aud": self._token_url,
            "jti": uuid.uuid4().hex,
            "iat": now,
            "exp": now + int(self._assertion_lifetime),
        }
        assertion = jwt.encode(claims, self._key, algorithm="RS256")
        # A refusing endpoint may quote it back; the signature alone is what makes it usable.
        register_secret(assertion, rotating=True)
        register_secret(assertion.rpartition(".")[2], rotating=True)
        return assertion

    def _fetch(self) -> IssuedToken:
        form = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self._assertion(),
        }
        if self._audience:
            form["audience"] = self._audience
        request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__ (https or loopback http)
            self._token_url,
            data=urllib.parse.urlencode(form).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            method="POST",
        )
        # A proxy from the environment must not see a loopback request (tests, sidecars).
        handlers = [urllib.request.ProxyHandler({})] if self._loopback else []
        opener = urllib.request.build_opener(*handlers)
        started = time.monotonic()
        try:
            with opener.open(request, timeout=self._http_timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            detail = _error_detail(exc.read())
            raise AuthError(f"Auth0 token request refused: HTTP {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise AuthError(f"Auth0 token request failed: {exc}") from None
        try:
            doc = json.loads(body)
            token = doc["access_token"]
            expires_in = float(doc.get("expires_in", 180))
        except (ValueError, KeyError, TypeError):
            raise AuthError("Auth0 token response is not JSON with an access_token") from None
        if not isinstance(token, str) or not token:
            raise AuthError("Auth0 token response has an empty access_token")
        return IssuedToken(access_token=token, expires_in=expires_in, obtained_at=started)


def _error_detail(body: bytes) -> str:
    """The OAuth error code and description, with anything that looks like a credential (the
    endpoint may quote what it refused) redacted."""
    try:
        doc = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(doc, dict):
        return ""
    return redact(" ".join(str(doc[k]) for k in ("error", "error_description") if k in doc))[:300]


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True if `stop` was set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


def token_source_from_settings(settings: Settings) -> TokenSource:
    if settings.exchange_token is not None:
        return StaticToken(settings.exchange_token.get_secret_value())
    url, client_id = settings.auth0_token_url, settings.auth0_client_id
    key_file = settings.auth0_private_key_file
    if not (url and client_id and key_file):
        raise AuthError(
            "no exchange credentials: set RECON_EXCHANGE_TOKEN, or RECON_AUTH0_TOKEN_URL, "
            "RECON_AUTH0_CLIENT_ID and RECON_AUTH0_PRIVATE_KEY_FILE"
        )
    return Auth0ClientCredentials(
        token_url=url,
        client_id=client_id,
        private_key=load_private_key(key_file.expanduser()),
        audience=settings.auth0_audience,
    )
