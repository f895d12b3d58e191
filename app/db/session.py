"""Engine and the one unit-of-work boundary: `session_scope()` commits or rolls back."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings, get_settings
from app.db.embedded import embedded_database_url


def database_url(settings: Settings | None = None) -> str:
    """The configured Postgres URL in SQLAlchemy form, starting the embedded one when unset."""
    settings = settings or get_settings()
    if settings.database_url is None:
        return embedded_database_url(settings.data_dir)
    return sqlalchemy_url(settings.database_url.get_secret_value())


def sqlalchemy_url(url: str) -> str:
    """Accept `postgres://`, `postgresql://` or `postgresql+psycopg://` and use psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def make_engine(url: str) -> Engine:
    return create_engine(url, pool_pre_ping=True, future=True)


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    return make_engine(database_url())


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    factory = sessionmaker(bind=engine or get_engine(), expire_on_commit=False)
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def write_through_outage(
    engine: Engine, write: Callable[[Connection], object], *, seconds: float = 30.0
) -> None:
    """Run `write` in a transaction of its own, retried while the database is unreachable (a
    restart, a failover) for up to `seconds`. For the records that say a run failed: the
    database is often what just failed, and a run must not stay "running" because of it."""
    deadline = time.monotonic() + seconds
    delay = 0.2
    while True:
        try:
            with engine.begin() as conn:
                write(conn)
            return
        except DBAPIError as exc:
            unreachable = exc.connection_invalidated or isinstance(
                exc, OperationalError | InterfaceError
            )
            if not unreachable or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 2.0)
