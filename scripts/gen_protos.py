"""Generate the polymarket.v1 Python code and type stubs from protos/.

Usage: python scripts/gen_protos.py [--check]

Writes polymarket/v1/*_pb2.py, *_pb2.pyi and *_pb2_grpc.py (grpcio-tools + mypy-protobuf).
With --check, generates into a temporary folder and exits 1 if the committed code differs.
"""

from __future__ import annotations

import filecmp
import os
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"


def generate(out: Path) -> None:
    import grpc_tools

    # protoc finds the mypy-protobuf plugins on PATH, next to this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--mypy_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_grpc_out={out}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    generated = out / "polymarket"
    for package in {p.parent for p in generated.rglob("*_pb2.py")} | {generated}:
        (package / "__init__.py").touch()
        (package / "py.typed").touch()


def main() -> int:
    if "--check" in sys.argv:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            fresh, committed = Path(tmp) / "polymarket", ROOT / "polymarket"
            stale = _differences(fresh, committed)
            if stale:
                print("generated code is stale; run: python scripts/gen_protos.py")
                print("\n".join(stale))
                return 1
            return 0
    generate(ROOT)
    return 0


def _differences(fresh: Path, committed: Path) -> list[str]:
    out: list[str] = []
    names = {p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file()}
    names |= {
        p.relative_to(committed)
        for p in committed.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    for name in sorted(names):
        a, b = fresh / name, committed / name
        if not (a.exists() and b.exists() and filecmp.cmp(a, b, shallow=False)):
            out.append(str(name))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
