"""No token, key or database password reaches any output, whatever fails.

Real `recon` commands run as subprocesses with every credential set: a database URL whose role
has a password, a static exchange token the venue refuses, feed API keys, an Auth0 private key
and the access token and client assertions made with it, a webhook token, an SMTP password.
Peers misbehave on purpose: a venue that echoes the bearer token in its errors, an Auth0 that
echoes the client assertion, a Postgres that asks for the password and refuses it, a closed
port. Everything the commands print (stdout and stderr at DEBUG), the report files they write,
and the worker's /metrics and /healthz are searched for each secret, raw, URL-encoded,
JSON-escaped and in base64 at every byte alignment.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import make_url, text

from app.db.session import make_engine
from app.venue.feeds import FeedOptions
from app.venue.grpc_server import GrpcOptions
from app.venue.run import VenueHandle, VenueOptions, serve_store
from tests.integration._venue_day import DAY, small_store

RUN = uuid.uuid4().hex[:8]
DB_PASSWORD = f"Pw/s3cr@t:{RUN}-db"  # needs percent-encoding in a URL
EXCHANGE_TOKEN = f"exch-static-{RUN}-tok3n"
FEED_KEY = f"feedkey{RUN}s3cret"
ACCESS_TOKEN = f"auth0-access-{RUN}-t0ken"
WEBHOOK_TOKEN = f"hooktok{RUN}X9"
SMTP_PASSWORD = f"smtp-pw-{RUN}-s3cret"
CLIENT_ID = "recon-security-test"
VENUE_TOKEN = "the-only-token-the-venue-takes"
PER_COMMAND_TIMEOUT = 60


# --- misbehaving peers ------------------------------------------------------------------------


@dataclass
class Auth0:
    """A token endpoint that issues ACCESS_TOKEN, or refuses and echoes the assertion back."""

    url: str = ""
    refuse: bool = False
    assertions: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def auth0() -> Iterator[Auth0]:
    state = Auth0()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
            assertion = form.get("client_assertion", "")
            state.assertions.append(assertion)
            if self.path.endswith("/refuse"):
                status = 401
                signature = assertion.rpartition(".")[2]
                doc = {
                    "error": "invalid_client",
                    "error_description": f"signature {signature} does not verify ({assertion})",
                }
            else:
                status, doc = 200, {"access_token": ACCESS_TOKEN, "expires_in": 180}
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    with _serving(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as server:
        state.url = f"http://127.0.0.1:{server.server_address[1]}/oauth/token"
        yield state


@dataclass
class EchoVenue:
    """A gRPC server that refuses every call and quotes the caller's credentials back."""

    target: str = ""
    echoed: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def echo_venue() -> Iterator[EchoVenue]:
    state = EchoVenue()

    class Echo(grpc.GenericRpcHandler):
        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
            metadata = dict(details.invocation_metadata)  # type: ignore[attr-defined]
            message = f"credentials {metadata.get('authorization')} are not valid here"

            def refuse(request: bytes, context: grpc.ServicerContext) -> Any:
                state.echoed.append(message)
                context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

            method: str = details.method  # type: ignore[attr-defined]
            if "DropCopyAPI" in method:
                return grpc.unary_stream_rpc_method_handler(refuse)
            return grpc.unary_unary_rpc_method_handler(refuse)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[Echo()])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    state.target = f"127.0.0.1:{port}"
    yield state
    server.stop(grace=None)


@dataclass
class PasswordPostgres:
    """Speaks just enough of the Postgres protocol to ask for a cleartext password and refuse it,
    so the client really sends the password and gets an authentication failure back."""

    port: int = 0
    passwords: list[str] = field(default_factory=list)


_SSL_OR_GSS = {80877103, 80877104}


@pytest.fixture(scope="module")
def password_postgres() -> Iterator[PasswordPostgres]:
    state = PasswordPostgres()

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            sock: socket.socket = self.request
            sock.settimeout(10)
            while True:
                (length,) = struct.unpack("!i", _read(sock, 4))
                body = _read(sock, length - 4)
                if struct.unpack("!i", body[:4])[0] not in _SSL_OR_GSS:
                    break
                sock.sendall(b"N")  # no TLS here: the client goes on in plaintext
            sock.sendall(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
            kind, (length,) = _read(sock, 1), struct.unpack("!i", _read(sock, 4))
            assert kind == b"p"
            state.passwords.append(_read(sock, length - 4).rstrip(b"\0").decode())
            fields = b"".join(
                code + value.encode() + b"\0"
                for code, value in (
                    (b"S", "FATAL"),
                    (b"V", "FATAL"),
                    (b"C", "28P01"),
                    (b"M", 'password authentication failed for user "recon"'),
                )
            )
            sock.sendall(b"E" + struct.pack("!i", len(fields) + 5) + fields + b"\0")

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True

    with _serving(Server(("127.0.0.1", 0), Handler)) as server:
        state.port = server.server_address[1]
        yield state


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("client went away")
        data += chunk
    return data


class _serving:
    """Run a socketserver in a thread for the duration of a `with` block."""

    def __init__(self, server: socketserver.BaseServer) -> None:
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> Any:
        self.thread.start()
        return self.server

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- the database: a role with a password, owning its own database ----------------------------


@pytest.fixture(scope="module")
def role_database(pg_server_url: str, template_database: str) -> Iterator[str]:
    """A fresh database owned by a new login role with a password; its URL carries both.

    (The test server trusts loopback, so the password is carried but not checked; the fake
    Postgres above is where a password is really asked for and refused.) `template_database`
    makes sure the cluster-wide `recon_readonly` role the migrations grant to exists.
    """
    name = f"recon_sec_{RUN}"
    admin = make_engine(pg_server_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        # A utility statement takes no bound parameters; the password is ours and has no quote.
        conn.execute(text(f"CREATE ROLE {name} LOGIN PASSWORD '{DB_PASSWORD}'"))
        conn.execute(text(f"CREATE DATABASE {name} OWNER {name}"))
    url = make_url(pg_server_url).set(database=name, username=name, password=DB_PASSWORD)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            conn.execute(text(f"DROP ROLE IF EXISTS {name}"))
        admin.dispose()


@pytest.fixture(scope="module")
def venue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VenueHandle]:
    options = VenueOptions(
        grpc=GrpcOptions(tokens=frozenset({VENUE_TOKEN})),
        feeds=FeedOptions(keys=frozenset({FEED_KEY})),
    )
    with serve_store(small_store(tmp_path_factory), options) as handle:
        yield handle


@pytest.fixture(scope="module")
def private_key_pem(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = tmp_path_factory.mktemp("key") / "auth0.pem"
    path.write_bytes(pem)
    path.chmod(0o600)
    return path, pem


# --- running commands and collecting every byte they put out ----------------------------------

Command = tuple[str, list[str], dict[str, str]]  # label, `recon` arguments, environment


@dataclass
class Transcript:
    """Every output, by where it came from, and each command's exit code."""

    outputs: dict[str, str] = field(default_factory=dict)
    stdouts: dict[str, str] = field(default_factory=dict)
    codes: dict[str, int] = field(default_factory=dict)

    def run(self, *commands: Command) -> None:
        """Run the commands side by side (they are independent of each other), at DEBUG."""

        def one(command: Command) -> None:
            label, args, env = command
            done = subprocess.run(
                [sys.executable, "-m", "app.cli", "-v", *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=PER_COMMAND_TIMEOUT,
                check=False,
            )
            self.codes[label] = done.returncode
            self.outputs[label] = done.stdout + done.stderr
            self.stdouts[label] = done.stdout

        with futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            list(pool.map(one, commands))


def _encodings(secret: str) -> set[str]:
    """The secret as it could appear in text: raw, URL-encoded, JSON-escaped, and base64 or
    base64url at each of the three byte alignments it can have inside a longer encoded value
    (only the characters that do not depend on the neighbouring bytes)."""
    raw = secret.encode()
    forms = {
        secret,
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
        json.dumps(secret)[1:-1],
    }
    for offset in range(3):
        # Character i encodes bits [6i, 6i + 6): keep those that lie within the secret's bytes.
        start, end = -(-8 * offset // 6), 8 * (offset + len(raw)) // 6
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            forms.add(encode(b"\0" * offset + raw).decode()[start:end])
    # A long secret cut short (a message trimmed to a length) still leaks what is left of it.
    forms.update(secret[i : i + 32] for i in range(0, len(secret) - 32, 16))
    return {f for f in forms if len(f) >= 8}


def _pem_secrets(pem: bytes) -> set[str]:
    """The key's body lines, and its DER bytes (what any encoding of the key would carry)."""
    lines = pem.decode().splitlines()[1:-1]
    der = base64.b64decode("".join(lines))
    return {*(line[:32] for line in lines), der[40:80].hex(), base64.b64encode(der[30:90]).decode()}


# Rich wraps long lines of a traceback inside a box: a secret can be cut by a line break, spaces
# and box edges. Searching the text without them finds it anyway.
_LAYOUT = re.compile(r"[\s\u2500-\u257f]+")


def _leaks(outputs: dict[str, str], needles: dict[str, set[str]]) -> list[tuple[str, str]]:
    found = []
    for source, content in outputs.items():
        squashed = _LAYOUT.sub("", content)
        for name, forms in needles.items():
            if any(form in content or form in squashed for form in forms):
                found.append((source, name))
    return found


def _scrape(port: int, path: str) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as exc:
        return str(exc.read().decode())


def _run_feed_ingest(transcript: Transcript, env: dict[str, str], log_dir: Path) -> None:
    """The feeds alone (the venue takes the key): events are stored, and /metrics and /healthz
    are read while the worker runs."""
    port = _closed_port()
    args = [sys.executable, "-m", "app.cli", "-v", "ingest", "--exit-when-idle", "1"]
    args += ["--source", "feed.orders", "--source", "feed.trades", "--metrics-port", str(port)]
    log = log_dir / "ingest-feeds.log"
    scraped = {"/metrics": "", "/healthz": ""}
    # A file, not a pipe: nobody reads a pipe while the worker runs, and a full one would block it.
    with log.open("wb") as sink, subprocess.Popen(args, env=env, stdout=sink, stderr=sink) as proc:
        deadline = time.monotonic() + PER_COMMAND_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError):  # not listening yet, or already gone
                scraped = {path: _scrape(port, path) for path in scraped}
            if 'recon_ingest_events_total{source="feed.orders"}' in scraped["/metrics"]:
                break
            time.sleep(0.05)
        proc.wait(timeout=PER_COMMAND_TIMEOUT)
    transcript.codes["ingest feeds"] = proc.returncode
    transcript.outputs["ingest feeds"] = log.read_text(errors="replace")
    transcript.outputs.update(scraped)


def test_no_secret_in_any_output(
    *,
    role_database: str,
    venue: VenueHandle,
    echo_venue: EchoVenue,
    auth0: Auth0,
    password_postgres: PasswordPostgres,
    private_key_pem: tuple[Path, bytes],
    tmp_path: Path,
    guarantee: Any,
) -> None:
    key_path, pem = private_key_pem
    day = DAY.business_date.isoformat()
    smtp = f"smtp://127.0.0.1:{_closed_port()}?from=a@x.test&to=b@x.test"
    webhook = f"http://127.0.0.1:{_closed_port()}/hooks/{WEBHOOK_TOKEN}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECON_")} | {
        "RECON_DATABASE_URL": role_database,
        "RECON_DATA_DIR": str(tmp_path / "data"),
        "RECON_LOG_LEVEL": "DEBUG",
        "RECON_EXCHANGE_TARGET": venue.grpc_target,
        "RECON_EXCHANGE_TLS": "false",
        "RECON_EXCHANGE_TOKEN": EXCHANGE_TOKEN,
        "RECON_PARTICIPANT_ID": "firms/F1/users/security",
        "RECON_FEED_ORDERS_URL": venue.orders_url,
        "RECON_FEED_TRADES_URL": venue.trades_url,
        "RECON_ALERT_URLS": f"{webhook},{smtp}",
        "RECON_ALERT_SMTP_USERNAME": "recon",
        "RECON_ALERT_SMTP_PASSWORD": SMTP_PASSWORD,
        "RECON_ALERT_TIMEOUT_SECONDS": "2",
    }
    assert FEED_KEY in venue.orders_url
    echoing = env | {"RECON_EXCHANGE_TARGET": echo_venue.target}
    with_auth0 = {k: v for k, v in env.items() if k != "RECON_EXCHANGE_TOKEN"} | {
        "RECON_AUTH0_TOKEN_URL": auth0.url,
        "RECON_AUTH0_CLIENT_ID": CLIENT_ID,
        "RECON_AUTH0_PRIVATE_KEY_FILE": str(key_path),
    }
    refusing_auth0 = with_auth0 | {"RECON_AUTH0_TOKEN_URL": auth0.url + "/refuse"}

    def database_at(**parts: Any) -> dict[str, str]:
        # Over TCP on loopback even when the tests' server is the embedded one on a socket.
        base = make_url(role_database)
        query = {k: v for k, v in base.query.items() if k != "host"}
        url = base.set(host="127.0.0.1", query=query, **parts).render_as_string(hide_password=False)
        return env | {"RECON_DATABASE_URL": url}

    password_refused = database_at(port=password_postgres.port)
    insecure_feed = env | {"RECON_FEED_ORDERS_URL": f"ws://feeds.example.test/ws/{FEED_KEY}"}
    t = Transcript()

    t.run(("db upgrade", ["db", "upgrade"], env))
    assert t.codes["db upgrade"] == 0, t.outputs["db upgrade"]
    _run_feed_ingest(t, env, tmp_path)
    t.run(
        ("db url", ["db", "url"], env),
        ("ingest, token echoed", ["ingest", "--exit-when-idle", "1"], echoing),
        ("ingest, Auth0 refuses", ["ingest", "--exit-when-idle", "1"], refusing_auth0),
        ("reconcile, token echoed", ["reconcile", "--date", day], echoing),
        ("reconcile, Auth0 token refused", ["reconcile", "--date", day], with_auth0),
        ("reconcile, Auth0 refuses", ["reconcile", "--date", day], refusing_auth0),
        ("reconcile", ["reconcile", "--date", day, "--no-report"], env),
        ("database refuses password", ["breaks", "list"], password_refused),
        ("database port closed", ["breaks", "list"], database_at(port=_closed_port())),
        ("demo, database refuses password", ["demo"], password_refused),
        ("insecure feed refused", ["breaks", "list"], insecure_feed),
    )
    out = tmp_path / "report"
    t.run(
        ("report", ["report", "--date", day, "--out", str(out)], env),
        ("breaks list", ["breaks", "list", "--json"], env),
        ("query trades", ["query", "trades", "--limit", "20"], env),
        ("alerts deliver", ["alerts", "deliver"], env),
    )
    first = json.loads(t.stdouts["breaks list"])[0]["id"]
    t.run(("breaks show", ["breaks", "show", str(first)], env))
    files = sorted(p for p in out.rglob("*") if p.is_file())
    t.outputs.update({f"report file {p.name}": p.read_text(errors="replace") for p in files})

    # Each scenario really happened, or the search below proves nothing.
    assert t.codes["ingest feeds"] == 0, t.outputs["ingest feeds"]
    assert 'recon_ingest_events_total{source="feed.orders"}' in t.outputs["/metrics"]
    assert '"sources"' in t.outputs["/healthz"]
    assert any(EXCHANGE_TOKEN in message for message in echo_venue.echoed)
    assert "refuses our credentials" in t.outputs["ingest, token echoed"]
    assert len(auth0.assertions) >= 2
    for label in ("token echoed", "Auth0 token refused", "Auth0 refuses"):
        assert t.codes[f"reconcile, {label}"] == 1, t.outputs[f"reconcile, {label}"]
    assert t.codes["reconcile"] == 0, t.outputs["reconcile"]
    assert {p.suffix for p in files} >= {".html", ".csv", ".json"}
    assert re.search(r"\b[1-9]\d* failed sends", t.outputs["alerts deliver"])
    assert set(password_postgres.passwords) == {DB_PASSWORD}  # it was sent, and refused
    for label in (
        "database refuses password",
        "database port closed",
        "demo, database refuses password",
    ):
        assert t.codes[label] != 0, t.outputs[label]
    assert t.codes["insecure feed refused"] == 2
    assert (
        "RECON_FEED_ORDERS_URL: ws:// to feeds.example.test" in t.outputs["insecure feed refused"]
    )
    assert "Traceback" not in t.outputs["insecure feed refused"]

    secrets = {
        "database password": DB_PASSWORD,
        "exchange token": EXCHANGE_TOKEN,
        "feed key": FEED_KEY,
        "Auth0 access token": ACCESS_TOKEN,
        "webhook token": WEBHOOK_TOKEN,
        "SMTP password": SMTP_PASSWORD,
    }
    for n, assertion in enumerate(auth0.assertions):
        secrets[f"client assertion {n}"] = assertion
        secrets[f"client assertion {n} signature"] = assertion.rpartition(".")[2]
    needles = {name: _encodings(value) for name, value in secrets.items()}
    needles["private key"] = _pem_secrets(pem)
    assert _leaks(t.outputs, needles) == []
    guarantee(
        "Security",
        "credentials in every command; peers echo them back; connections fail",
        len(t.outputs),
        f"no token, key or password in any output ({len(t.outputs)} outputs searched,"
        " DEBUG logs, tracebacks, report files, /metrics, /healthz)",
    )
