"""The README's first command, end to end: `recon demo` as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from app.db.session import make_engine


@pytest.mark.slow
def test_recon_demo_finds_exactly_the_injected_breaks(pg_server_url: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "RECON_DATABASE_URL": pg_server_url,
        "RECON_DATA_DIR": str(tmp_path),
        "COLUMNS": "200",
    }
    # Its own database: a user's `polyrecon_demo` (or another run's) on the same server stays.
    database = f"polyrecon_demo_{uuid.uuid4().hex[:12]}"
    command = [sys.executable, "-m", "app.cli", "demo", "--scale", "0.005"]
    command += ["--database", database, "--out", str(tmp_path / "r")]
    try:
        result = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=240, check=False
        )
    finally:
        admin = make_engine(pg_server_url).execution_options(isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "PASS: all" in output
    assert "extra" in output  # the comparison table was printed
    html = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert "<svg" in html
    assert "trade_leg_missing" in html
