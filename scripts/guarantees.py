"""Regenerate the README's "Guarantees" table from the tests that prove it.

Runs `pytest -m guarantee` (every test that takes the `guarantee` fixture; tests/guarantees.py)
with RECON_GUARANTEES_FILE set, so each passing test writes its rows; then renders them as one
Markdown table (area | tried | times | result), grouped by area, and rewrites README.md between
`<!-- guarantees:start -->` and `<!-- guarantees:end -->` (adding the section if it is missing).

    .venv/bin/python scripts/guarantees.py            # run the suite, rewrite the README
    .venv/bin/python scripts/guarantees.py --check    # run the suite, fail if the README is stale
    .venv/bin/python scripts/guarantees.py -- -x      # extra arguments go to pytest

If any test fails, it exits with pytest's status and leaves the README alone. `--check` compares
the rows (area, tried, result) and not the counts: how many reconnects or duplicates a fault run
provokes depends on timing, while a row that appears, disappears or changes its claim is what
makes the README stale. The tests need Postgres, as the rest of the suite does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
START = "<!-- guarantees:start -->"
END = "<!-- guarantees:end -->"
# Areas in the order a reader meets them; any other area follows, alphabetically.
AREAS = ("Chaos", "Bad input", "Security", "Load")
SECTION = f"""## Guarantees

What this back office survives, as tried by its own test suite: each row is a fault or bad
input, how many times one run tried it, and what held. A row is written only by a test that
passed, so the table is a list of checks that just succeeded, not of intentions. Regenerate it
(it runs `pytest -m guarantee`, a few minutes, Postgres as for the tests) with:

```bash
.venv/bin/python scripts/guarantees.py          # --check: fail if this table is stale
```

{START}
{END}
"""

Row = tuple[str, str, str]  # area, tried, result


def run_suite(rows_file: Path, extra: list[str]) -> int:
    env = {**os.environ, "RECON_GUARANTEES_FILE": str(rows_file)}
    command = [sys.executable, "-m", "pytest", "-m", "guarantee", "-p", "no:cacheprovider", *extra]
    print("$", " ".join(command), flush=True)
    return subprocess.run(command, env=env, cwd=ROOT, check=False).returncode


def collect(rows_file: Path) -> dict[Row, int]:
    """Rows keyed by (area, tried, result); a row recorded by several tests adds up its counts."""
    counts: dict[Row, int] = defaultdict(int)
    for line in rows_file.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        counts[(row["area"], row["tried"], row["result"])] += int(row["times"])
    return dict(counts)


def _order(row: Row) -> tuple[int, str, str, str]:
    area, tried, result = row
    rank = AREAS.index(area) if area in AREAS else len(AREAS)
    return rank, area, tried, result


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(counts: dict[Row, int]) -> str:
    lines = ["| area | tried | times | result |", "|---|---|---:|---|"]
    previous = None
    for row in sorted(counts, key=_order):
        area, tried, result = row
        shown = f"**{_cell(area)}**" if area != previous else ""
        previous = area
        lines.append(f"| {shown} | {_cell(tried)} | {counts[row]:,} | {_cell(result)} |")
    produced = (
        f"_Produced {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `scripts/guarantees.py` on"
        f" {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python"
        f" {platform.python_version()}: {len(counts)} rows._"
    )
    return "\n".join([produced, "", *lines])


def table_rows(block: str) -> list[Row]:
    """The (area, tried, result) of each table row in a rendered block, areas filled down."""
    rows: list[Row] = []
    area = ""
    for line in block.splitlines():
        if not line.startswith("| ") or line.startswith(("| area ", "|---")):
            continue
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        area = cells[0].strip("*") or area
        rows.append((area, cells[1], cells[3]))
    return rows


def current_block(readme: str) -> str | None:
    if START not in readme or END not in readme:
        return None
    return readme.split(START, 1)[1].split(END, 1)[0]


def rewrite(readme: str, block: str) -> str:
    if current_block(readme) is None:
        # A new section goes before the benchmarks: what holds, then how fast.
        anchor = "## Benchmarks"
        readme = (
            readme.replace(anchor, SECTION + "\n" + anchor, 1)
            if anchor in readme
            else readme.rstrip("\n") + "\n\n" + SECTION
        )
    head, rest = readme.split(START, 1)
    tail = rest.split(END, 1)[1]
    return f"{head}{START}\n{block}\n{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if README.md is stale")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("pytest_args", nargs="*", help="after --: passed on to pytest")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="guarantees-") as tmp:
        rows_file = Path(tmp) / "rows.jsonl"
        rows_file.touch()
        status = run_suite(rows_file, args.pytest_args)
        if status != 0:
            print(f"pytest failed (exit {status}): README not rewritten", file=sys.stderr)
            return status
        counts = collect(rows_file)
    if not counts:
        print("no test recorded a guarantee row: README not rewritten", file=sys.stderr)
        return 1
    block = render(counts)
    readme = args.readme.read_text(encoding="utf-8")
    if args.check:
        documented = table_rows(current_block(readme) or "")
        produced = table_rows(block)
        if documented != produced:
            for row in sorted(set(documented) - set(produced), key=_order):
                print(f"- in README, not produced: {row}", file=sys.stderr)
            for row in sorted(set(produced) - set(documented), key=_order):
                print(f"+ produced, not in README: {row}", file=sys.stderr)
            print("README's Guarantees table is stale: run scripts/guarantees.py", file=sys.stderr)
            return 1
        print(f"README's Guarantees table matches this run ({len(produced)} rows)")
        return 0
    args.readme.write_text(rewrite(readme, block), encoding="utf-8")
    print(f"README.md: Guarantees table rewritten, {len(counts)} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
