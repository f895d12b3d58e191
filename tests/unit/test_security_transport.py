"""TLS beyond loopback, and the Auth0 private key file: refused unless safe, with a clear reason.

Only configuration is checked here; nothing connects anywhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import ValidationError

from app.config import Settings, is_loopback_host
from app.ingest.auth import AuthError, load_private_key

KEY = "feedkey-0123456789"
PASSWORD = "db-pass-0123456789"

LOOPBACK_HOSTS = ["127.0.0.1", "127.8.9.10", "localhost", "[::1]", "::1"]
# Names are never trusted to be local, however they look.
REMOTE_HOSTS = [
    "10.0.0.5",
    "192.168.1.20",
    "0.0.0.0",  # noqa: S104 - a host name under test, nothing binds to it
    "[::]",
    "[2001:db8::1]",
    "example.com",
    "localhost.example.com",
    "127.0.0.1.nip.io",
]


def _settings(**values: Any) -> Settings:
    return Settings(**values)


def _refusal(**values: Any) -> str:
    with pytest.raises(ValidationError) as refused:
        _settings(**values)
    return str(refused.value)


@pytest.mark.parametrize("host", LOOPBACK_HOSTS)
def test_loopback_forms(host: str) -> None:
    assert is_loopback_host(host)


@pytest.mark.parametrize("host", REMOTE_HOSTS)
def test_other_hosts_are_not_loopback(host: str) -> None:
    assert not is_loopback_host(host)


def _grpc_targets(host: str) -> list[str]:
    bracketed = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return [f"{bracketed}:50051", f"dns:///{bracketed}:50051"]


def _tried(guarantee: Any, tried: int, what: str) -> None:
    guarantee(
        "Security",
        f"plaintext {what} to a non-loopback host",
        tried,
        "refused at startup, naming the variable (not the URL); loopback and TLS accepted",
    )


def test_plaintext_grpc_only_to_loopback(guarantee: Any) -> None:
    for host in LOOPBACK_HOSTS:
        for target in _grpc_targets(host):
            _settings(exchange_target=target, exchange_tls=False)
    tried = 0
    for host in REMOTE_HOSTS:
        for target in _grpc_targets(host):
            message = _refusal(exchange_target=target, exchange_tls=False)
            assert "RECON_EXCHANGE_TARGET" in message
            assert "RECON_EXCHANGE_ALLOW_INSECURE" in message
            _settings(exchange_target=target, exchange_tls=True)
            _settings(exchange_target=target, exchange_tls=False, exchange_allow_insecure=True)
            tried += 1
    _tried(guarantee, tried, "gRPC (RECON_EXCHANGE_TLS=false)")


def test_plaintext_feeds_only_to_loopback(guarantee: Any) -> None:
    tried = 0
    for field in ("feed_orders_url", "feed_trades_url"):
        for host in LOOPBACK_HOSTS[:4]:
            _settings(**{field: f"ws://{host}:8765/ws/{KEY}"})
        for host in REMOTE_HOSTS:
            url = f"ws://{host}:8765/ws/{KEY}"
            message = _refusal(**{field: url})
            assert f"RECON_{field.upper()}" in message
            assert "wss://" in message
            assert KEY not in message  # the key is in the URL: the error must not repeat it
            _settings(**{field: url.replace("ws://", "wss://")})
            _settings(**{field: url, "allow_insecure_nonloopback": True})
            tried += 1
    _tried(guarantee, tried, "websocket feed (ws://)")


def test_plaintext_webhook_only_to_loopback() -> None:
    _settings(alert_urls=f"http://127.0.0.1:9000/hook/{KEY},log:")
    message = _refusal(alert_urls=f"log:,http://hooks.example.com/services/{KEY}")
    assert "RECON_ALERT_URLS" in message
    assert KEY not in message
    _settings(alert_urls=f"https://hooks.example.com/services/{KEY}")


def _smtp(host: str, query: str = "", scheme: str = "smtp") -> str:
    bracketed = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"{scheme}://recon:{PASSWORD}@{bracketed}:587?from=a@x.test&to=b@x.test{query}"


def test_plaintext_smtp_only_to_loopback(guarantee: Any) -> None:
    for host in LOOPBACK_HOSTS:
        _settings(alert_urls=_smtp(host))
    tried = 0
    for host in REMOTE_HOSTS:
        for query in ("", "&starttls=0", "&starttls=false", "&starttls=1&starttls=no"):
            message = _refusal(alert_urls=f"log:,{_smtp(host, query)}")
            assert "RECON_ALERT_URLS" in message
            assert "starttls=true" in message
            assert "smtps://" in message
            assert "RECON_ALLOW_INSECURE_NONLOOPBACK" in message
            assert PASSWORD not in message
            _settings(alert_urls=_smtp(host, query), allow_insecure_nonloopback=True)
            tried += 1
        for query in ("&starttls=true", "&starttls=1", "&STARTTLS=x&starttls=Yes"):
            _settings(alert_urls=_smtp(host, query))
        _settings(alert_urls=_smtp(host, scheme="smtps"))
        _settings(alert_urls=_smtp(host, scheme="SMTPS"))
    _tried(guarantee, tried, "SMTP alerts (smtp:// without starttls=true)")


DATABASE_URLS = [
    (f"postgresql://recon:{PASSWORD}@127.0.0.1:5432/recon", True),
    (f"postgresql://recon:{PASSWORD}@localhost/recon", True),
    (f"postgresql://recon:{PASSWORD}@[::1]/recon", True),
    ("postgresql://recon@/recon?host=/var/run/postgresql", True),  # Unix socket
    (f"postgresql://recon:{PASSWORD}@db.example.com/recon?sslmode=require", True),
    (f"postgresql://recon:{PASSWORD}@db.example.com/recon?sslmode=verify-full", True),
    (f"postgresql://recon:{PASSWORD}@db.example.com/recon", False),
    (f"postgresql://recon:{PASSWORD}@db.example.com/recon?sslmode=prefer", False),
    (f"postgresql://recon:{PASSWORD}@10.1.2.3:5432/recon?sslmode=disable", False),
    (f"postgresql://recon:{PASSWORD}@/recon?host=127.0.0.1&host=db.example.com", False),
]


def test_database_beyond_loopback_needs_tls(guarantee: Any) -> None:
    tried = 0
    for url, allowed in DATABASE_URLS:
        if allowed:
            _settings(database_url=url)
            continue
        message = _refusal(database_url=url)
        assert "sslmode=require" in message
        assert PASSWORD not in message
        _settings(database_url=url, allow_insecure_nonloopback=True)
        tried += 1
    _tried(guarantee, tried, "database connection (no sslmode=require)")


# --- the Auth0 private key file --------------------------------------------------------------


@pytest.fixture(scope="module")
def pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _key_file(path: Path, content: bytes, mode: int) -> Path:
    path.write_bytes(content)
    path.chmod(mode)
    return path


def test_key_file_modes(tmp_path: Path, pem: bytes, guarantee: Any) -> None:
    """Every readable mode with a group or other bit is refused; owner-only modes are read."""
    refused, loaded = 0, []
    for mode in range(0o400, 0o1000):
        path = _key_file(tmp_path / f"key-{mode:o}.pem", pem, mode)
        if mode & 0o077:
            with pytest.raises(AuthError, match=f"mode {mode:04o}.*chmod 600"):
                load_private_key(path)
            refused += 1
        else:
            assert isinstance(load_private_key(path), rsa.RSAPrivateKey)
            loaded.append(mode)
    assert loaded == [0o400, 0o500, 0o600, 0o700]
    guarantee(
        "Security",
        "Auth0 private key file readable or writable by group or others",
        refused,
        "refused with the mode and `chmod 600`; owner-only files load",
    )


def test_key_path_that_is_not_a_regular_file(tmp_path: Path, pem: bytes) -> None:
    directory = tmp_path / "dir.pem"
    directory.mkdir(mode=0o700)
    fifo = tmp_path / "fifo.pem"
    os.mkfifo(fifo, 0o600)  # reading it would block forever: it must not be read
    for path in (directory, fifo, Path("/dev/null")):
        with pytest.raises(AuthError, match="not a regular file"):
            load_private_key(path)


def test_key_symlink_is_judged_by_its_target(tmp_path: Path, pem: bytes) -> None:
    safe = _key_file(tmp_path / "safe.pem", pem, 0o600)
    unsafe = _key_file(tmp_path / "unsafe.pem", pem, 0o644)
    (tmp_path / "to-safe.pem").symlink_to(safe)
    (tmp_path / "to-unsafe.pem").symlink_to(unsafe)
    assert isinstance(load_private_key(tmp_path / "to-safe.pem"), rsa.RSAPrivateKey)
    with pytest.raises(AuthError, match="chmod 600"):
        load_private_key(tmp_path / "to-unsafe.pem")


def test_key_file_missing_or_not_rsa(tmp_path: Path) -> None:
    with pytest.raises(AuthError, match="cannot read"):
        load_private_key(tmp_path / "missing.pem")
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(AuthError, match="RS256 needs an RSA key"):
        load_private_key(_key_file(tmp_path / "ec.pem", ec_pem, 0o600))
