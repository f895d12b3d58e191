"""Real-Postgres fixtures.

Server, in order: `RECON_TEST_DATABASE_URL`; else a testcontainers Postgres when a Docker
engine answers; else the embedded Postgres (pgserver). The schema is built once by the migrations
into a template database; each test gets its own clone (`CREATE DATABASE ... TEMPLATE ...`), so
code that commits is still isolated.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, make_url, text

from app.db.session import make_engine, sqlalchemy_url

pytest_plugins = ["tests.guarantees"]


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return (
            subprocess.run(
                ["docker", "info"], check=False, capture_output=True, timeout=10
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    explicit = os.environ.get("RECON_TEST_DATABASE_URL")
    if explicit:
        yield sqlalchemy_url(explicit)
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:15", driver="psycopg") as container:
            yield container.get_connection_url()
        return
    from app.db.embedded import start_embedded, url_of

    # keep_running=False: pgserver stops this server when the test process exits.
    server = start_embedded(Path(tmp_path_factory.mktemp("embedded")) / "pg", keep_running=False)
    yield url_of(server)


def _admin(server_url: str) -> Engine:
    return make_engine(server_url).execution_options(isolation_level="AUTOCOMMIT")


def _database(server_url: str, name: str) -> str:
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def _create(server_url: str, template: str | None = None) -> str:
    name = f"recon_test_{uuid.uuid4().hex[:12]}"
    admin = _admin(server_url)
    with admin.connect() as conn:
        suffix = f" TEMPLATE {template}" if template else ""
        conn.execute(text(f'CREATE DATABASE "{name}"{suffix}'))
    admin.dispose()
    return name


def _drop(server_url: str, name: str) -> None:
    admin = _admin(server_url)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def template_database(pg_server_url: str) -> Iterator[str]:
    from app.db.migrate import upgrade

    name = _create(pg_server_url)
    upgrade(_database(pg_server_url, name))
    yield name
    _drop(pg_server_url, name)


@pytest.fixture
def empty_database_url(pg_server_url: str) -> Iterator[str]:
    name = _create(pg_server_url)
    yield _database(pg_server_url, name)
    _drop(pg_server_url, name)


@pytest.fixture
def database_url(pg_server_url: str, template_database: str) -> Iterator[str]:
    name = _create(pg_server_url, template=template_database)
    yield _database(pg_server_url, name)
    _drop(pg_server_url, name)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    yield eng
    eng.dispose()
