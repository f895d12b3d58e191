"""The README's first command, end to end: `recon demo` as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_recon_demo_finds_exactly_the_injected_breaks(pg_server_url: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "RECON_DATABASE_URL": pg_server_url,
        "RECON_DATA_DIR": str(tmp_path),
        "COLUMNS": "200",
    }
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "demo", "--scale", "0.005", "--out", str(tmp_path / "r")],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "PASS: all" in output
    assert "extra" in output  # the comparison table was printed
    html = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert "<svg" in html
    assert "trade_leg_missing" in html
