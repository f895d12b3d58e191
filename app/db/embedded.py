"""The zero-config default: a real Postgres from the `pgserver` wheel, data in the user's folder."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

log = logging.getLogger(__name__)


def embedded_database_url(data_dir: Path) -> str:
    """Start (or reuse) the embedded Postgres under `data_dir/pg` and return its SQLAlchemy URL.

    The server keeps running after this process exits so the next command reuses it at once.
    """
    import pgserver

    pgdata = data_dir / "pg"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    log.info("starting embedded Postgres in %s", pgdata)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
        warnings.simplefilter("ignore")
        server = pgserver.get_server(pgdata, cleanup_mode=None)
        uri: str = server.get_uri()
    return uri.replace("postgresql://", "postgresql+psycopg://", 1)
