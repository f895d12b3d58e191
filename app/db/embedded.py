"""The zero-config default: a real Postgres from the `pgserver` wheel, data in the user's folder."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def start_embedded(pgdata: Path, *, keep_running: bool = True) -> Any:
    """Start (or reuse) the embedded Postgres in `pgdata`; returns pgserver's server handle.

    `keep_running` leaves the server up after this process exits, so the next command reuses it
    at once; tests pass False and the server stops with them.
    """
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    log.info("starting embedded Postgres in %s", pgdata)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
        warnings.simplefilter("ignore")
        import pgserver

        return pgserver.get_server(pgdata, cleanup_mode=None if keep_running else "stop")


def url_of(server: Any) -> str:
    uri: str = server.get_uri()
    return uri.replace("postgresql://", "postgresql+psycopg://", 1)


def embedded_database_url(data_dir: Path) -> str:
    """The SQLAlchemy URL of the embedded Postgres under `data_dir/pg`, started if needed."""
    return url_of(start_embedded(data_dir / "pg"))
