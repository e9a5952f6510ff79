"""backend/ stays a pure engine: importing all of it pulls in no web server and no queue."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

FORBIDDEN = ["fastapi", "starlette", "uvicorn", "rq", "redis", "label_studio_sdk"]


def test_backend_imports_no_server_or_queue():
    root = Path(__file__).resolve().parents[1]
    modules = sorted(
        ".".join(p.relative_to(root).with_suffix("").parts)
        for p in (root / "backend").rglob("*.py")
        if p.name != "__init__.py"
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"backend imports {out.stdout.strip()}"
