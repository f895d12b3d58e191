"""The nightly report renders in a real browser: headless Chromium opens the file offline.

Skipped only when Chromium is not installed or cannot start here (the reason says which).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import Engine

from app.reports.build import build_report
from tests.integration._recon_day import D
from tests.integration._users_day import seed_reconciled_day

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
)
CHROMIUM_SECONDS = 90


def _chromium() -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    probe = subprocess.run(
        [binary, "--headless", "--no-sandbox", "--version"],
        capture_output=True,
        text=True,
        timeout=CHROMIUM_SECONDS,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"chromium cannot run here: {probe.stderr.strip()[:300]}")
    return binary


def _run(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [binary, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=CHROMIUM_SECONDS,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def test_report_renders_in_headless_chromium(engine: Engine, tmp_path: Path) -> None:
    binary = _chromium()
    seed_reconciled_day(engine)
    built = build_report(engine, D, tmp_path / "report")
    url = built.html_path.resolve().as_uri()

    dumped = _run(binary, tmp_path / "profile-dom", "--dump-dom", url)
    dom = dumped.stdout
    assert "polyrecon reconciliation report — 2026-05-04" in dom
    charts = re.findall(r"<svg\b[^>]*class=\"chart\"", dom)
    assert len(charts) == 4
    values = re.findall(r'class="bar"[^>]*data-series="([^"]+)"[^>]*data-value="([^"]+)"', dom)
    drawn = {series for series, value in values if value not in {"0", "0.0"}}
    assert {"exchange fills", "chain maker fills", "breaks"} <= drawn
    assert {"Net fees by account", "Net fees by market"} <= drawn
    assert "execution_missing_from_stream" in dom

    shot = tmp_path / "report.png"
    shown = _run(
        binary, tmp_path / "profile-shot", "--window-size=1280,2400", f"--screenshot={shot}", url
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000
    for log in (dumped.stderr, shown.stderr):
        assert "Uncaught" not in log
        assert "Refused to" not in log  # the page's CSP would refuse any outside asset
