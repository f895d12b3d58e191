"""`recon demo --faults`: a venue that disconnects, drops links, duplicates, reorders, expires
resume tokens and sends malformed messages. Every injected break is found unless its evidence was
lost inside a recorded feed gap (then it is listed as unobservable), nothing else is reported,
and a second reconcile changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest
from sqlalchemy import make_url, text

from app.db.session import make_engine

FAULTS = (
    "disconnect_every=3000,duplicate_rate=0.01,reorder_window=8,token_ttl_s=5,"
    "ws_drop_every=6000,malformed_rate=0.001,seed=3"
)


@pytest.mark.slow
def test_demo_with_faults_finds_every_observable_break_and_nothing_else(
    pg_server_url: str, tmp_path: Path
) -> None:
    database = f"polyrecon_demo_{uuid.uuid4().hex[:12]}"
    env = {**os.environ, "RECON_DATABASE_URL": pg_server_url, "RECON_DATA_DIR": str(tmp_path)}
    command = [sys.executable, "-m", "app.cli", "demo", "--json", "--scale", "0.01"]
    command += ["--breaks", "3", "--faults", FAULTS, "--database", database]
    command += ["--out", str(tmp_path / "report")]
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    admin = make_engine(pg_server_url).execution_options(isolation_level="AUTOCOMMIT")
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        summary = orjson.loads(result.stdout)
        assert summary["passed"]
        assert (summary["missed"], summary["extra"], summary["repeat_changes"]) == (0, 0, [])
        assert summary["injected"] >= 50
        gaps = {gap["id"]: gap for gap in summary["gaps"]}
        assert gaps, "the faults cut no connection: nothing about gaps was tested"
        hidden = summary["unobservable_breaks"]
        assert {b["gap"] for b in hidden} <= gaps.keys()
        assert summary["found"] + len(hidden) >= summary["injected"]
        day = make_engine(make_url(pg_server_url).set(database=database))
        with day.connect() as conn:
            open_breaks = conn.execute(
                text("SELECT count(*) FROM recon_break WHERE status <> 'resolved'")
            ).scalar_one()
            dead_letters = conn.execute(text("SELECT count(*) FROM dead_letter")).scalar_one()
        day.dispose()
        assert open_breaks == summary["found"]
        assert dead_letters > 0  # the malformed messages were kept, not dropped or stored
        html = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
        assert "Stream and feed gaps" in html
        assert all(gap["source"] in html for gap in gaps.values())
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()
