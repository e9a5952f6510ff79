"""Load: the short version of the /predict soak (scripts/soak_predict.py) runs in CI.

10 concurrent clients for 5 s against a real ``mmal serve`` on loopback with a real trained model: zero
errors, and the latency percentiles are reported (not asserted: speed goals are never asserted in tests).
The documented soak is ``scripts/soak_predict.py --clients 50 --duration 60`` (docs/reliability.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_short_soak_of_predict_has_no_errors(tmp_path):
    out = tmp_path / "soak.json"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "soak_predict.py"), "--clients", "10",
                           "--duration", "5", "--json", str(out), "--redis-url", "redis://127.0.0.1:6379/13"],
                          cwd=str(REPO), capture_output=True, text=True, timeout=300)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["errors"] == 0 and summary["requests"] == summary["ok"] > 0
    assert summary["ranked"]["requests"] > 0 and summary["unseen"]["requests"] > 0
    assert summary["p99_ms"] is not None and summary["p50_ms"] <= summary["p99_ms"] <= summary["max_ms"]
