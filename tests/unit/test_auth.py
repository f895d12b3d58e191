"""Token sources: static bearer, and Auth0 client credentials against a local token endpoint."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from app.config import Settings
from app.ingest.auth import (
    ASSERTION_TYPE,
    Auth0ClientCredentials,
    AuthError,
    IssuedToken,
    StaticToken,
    load_private_key,
    refresh_delay,
    token_source_from_settings,
)
from app.ingest.dropcopy import InsecureChannelRefused, open_channel
from app.observability import redact

CLIENT_ID = "client-abc"


@dataclass
class TokenEndpoint:
    """What the fake Auth0 saw and what it answers."""

    url: str = ""
    expires_in: float = 180.0
    refuse: bool = False
    assertions: list[dict[str, Any]] = field(default_factory=list)
    forms: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture(scope="module")
def private_key() -> RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def endpoint(private_key: RSAPrivateKey) -> Iterator[TokenEndpoint]:
    state = TokenEndpoint()
    public = private_key.public_key()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
            state.forms.append(form)
            claims = jwt.decode(
                form["client_assertion"], public, algorithms=["RS256"], audience=state.url
            )
            state.assertions.append(claims)
            if state.refuse:
                self._answer(401, {"error": "access_denied", "error_description": "Unauthorized"})
                return
            n = len(state.assertions)
            self._answer(200, {"access_token": f"access-{n:04d}", "expires_in": state.expires_in})

        def _answer(self, status: int, doc: dict[str, Any]) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_port}/oauth/token"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _source(endpoint: TokenEndpoint, key: RSAPrivateKey, **kw: Any) -> Auth0ClientCredentials:
    return Auth0ClientCredentials(
        token_url=endpoint.url, client_id=CLIENT_ID, private_key=key, audience="aud-x", **kw
    )


def test_client_credentials_grant_with_signed_assertion(
    endpoint: TokenEndpoint, private_key: RSAPrivateKey
) -> None:
    source = _source(endpoint, private_key)
    asyncio.run(source.start())
    assert source.current() == "access-0001"
    form = endpoint.forms[0]
    assert form["grant_type"] == "client_credentials"
    assert form["client_id"] == CLIENT_ID
    assert form["client_assertion_type"] == ASSERTION_TYPE
    assert form["audience"] == "aud-x"
    claims = endpoint.assertions[0]
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["aud"] == endpoint.url
    assert 0 < claims["exp"] - claims["iat"] <= 300
    asyncio.run(source.refresh())
    assert source.current() == "access-0002"
    assert endpoint.assertions[0]["jti"] != endpoint.assertions[1]["jti"]


def test_background_refresh_replaces_token_before_expiry(
    endpoint: TokenEndpoint, private_key: RSAPrivateKey
) -> None:
    endpoint.expires_in = 0.4  # refreshed at half-life: every 0.2 s
    source = _source(endpoint, private_key)

    async def scenario() -> list[str]:
        await source.start()
        stop = asyncio.Event()
        runner = asyncio.create_task(source.run(stop))
        seen = [source.current()]
        for _ in range(60):
            await asyncio.sleep(0.05)
            if source.current() != seen[-1]:
                seen.append(source.current())
            if len(seen) >= 3:
                break
        stop.set()
        await asyncio.wait_for(runner, timeout=5)
        return seen

    seen = asyncio.run(scenario())
    assert seen[:3] == ["access-0001", "access-0002", "access-0003"]


def test_refresh_after_rejection_fetches_once(
    endpoint: TokenEndpoint, private_key: RSAPrivateKey
) -> None:
    source = _source(endpoint, private_key)

    async def scenario() -> None:
        await source.start()
        rejected = source.current()
        await asyncio.gather(*(source.refresh(rejected) for _ in range(4)))

    asyncio.run(scenario())
    assert len(endpoint.assertions) == 2
    assert source.current() == "access-0002"


def test_refused_credentials_raise_without_leaking_the_assertion(
    endpoint: TokenEndpoint, private_key: RSAPrivateKey
) -> None:
    endpoint.refuse = True
    source = _source(endpoint, private_key)
    with pytest.raises(AuthError, match="HTTP 401 access_denied") as info:
        asyncio.run(source.start())
    assert endpoint.forms[0]["client_assertion"] not in str(info.value)
    with pytest.raises(AuthError, match="no access token yet"):
        source.current()


def test_token_url_must_be_https_unless_loopback(private_key: RSAPrivateKey) -> None:
    with pytest.raises(AuthError, match="must be https"):
        Auth0ClientCredentials(
            token_url="http://auth.example.com/oauth/token",
            client_id=CLIENT_ID,
            private_key=private_key,
        )
    Auth0ClientCredentials(
        token_url="https://auth.example.com/oauth/token",
        client_id=CLIENT_ID,
        private_key=private_key,
    )


def _write_key(path: Path, key: RSAPrivateKey, mode: int) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_private_key_readable_by_others_is_refused(
    tmp_path: Path, private_key: RSAPrivateKey, mode: int
) -> None:
    path = _write_key(tmp_path / "key.pem", private_key, mode)
    with pytest.raises(AuthError, match="chmod 600"):
        load_private_key(path)


def test_private_key_owner_only_is_loaded(tmp_path: Path, private_key: RSAPrivateKey) -> None:
    path = _write_key(tmp_path / "key.pem", private_key, 0o600)
    loaded = load_private_key(path)
    assert loaded.private_numbers() == private_key.private_numbers()


def test_private_key_garbage_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_text("not a key")
    path.chmod(0o600)
    with pytest.raises(AuthError, match="not an unencrypted PEM"):
        load_private_key(path)


def test_refresh_schedule() -> None:
    assert refresh_delay(IssuedToken("t", 180.0, 0.0), margin=60.0) == 120.0
    assert refresh_delay(IssuedToken("t", 100.0, 0.0), margin=60.0) == 50.0
    assert refresh_delay(IssuedToken("t", 0.0, 0.0), margin=60.0) == 0.05


def test_settings_choose_the_source(tmp_path: Path, private_key: RSAPrivateKey) -> None:
    static = token_source_from_settings(Settings(exchange_token="static-token-123"))
    assert isinstance(static, StaticToken)
    assert static.current() == "static-token-123"
    assert "static-token-123" not in redact("sent static-token-123 to the venue")
    with pytest.raises(AuthError, match="RECON_AUTH0_PRIVATE_KEY_FILE"):
        token_source_from_settings(Settings(auth0_token_url="https://a/t", auth0_client_id="c"))
    key = _write_key(tmp_path / "key.pem", private_key, 0o600)
    auth0 = token_source_from_settings(
        Settings(
            auth0_token_url="https://auth.example.com/oauth/token",
            auth0_client_id=CLIENT_ID,
            auth0_private_key_file=key,
        )
    )
    assert isinstance(auth0, Auth0ClientCredentials)


@pytest.mark.parametrize(
    ("target", "allowed"),
    [
        ("127.0.0.1:50051", True),
        ("localhost:50051", True),
        ("[::1]:50051", True),
        ("dns:///127.0.0.1:50051", True),
        ("grpc-api.prod.polymarketexchange.com:443", False),
        ("10.0.0.5:50051", False),
    ],
)
def test_plaintext_grpc_only_to_loopback(target: str, allowed: bool) -> None:
    async def scenario() -> None:
        if allowed:
            await open_channel(target, tls=False, allow_insecure=False).close(None)
        else:
            with pytest.raises(InsecureChannelRefused, match="RECON_EXCHANGE_TLS"):
                open_channel(target, tls=False, allow_insecure=False)
        # Explicitly allowed, or TLS: always fine (nothing connects until a call is made).
        await open_channel(target, tls=False, allow_insecure=True).close(None)
        await open_channel(target, tls=True, allow_insecure=False).close(None)

    asyncio.run(scenario())
