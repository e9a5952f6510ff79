"""The server benchmark (perf/server_bench.py) keeps working: ``predict`` at tiny sizes, end to end.

A real trained model, a real ``mmal serve`` on loopback, real requests; only the structure and the
consistency of the figures are checked, never a speed (benchmarks print figures).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REDIS_URL = "redis://127.0.0.1:6379/13"  # /predict only reads it


def test_predict_bench_runs_end_to_end_and_reports_its_figures(tmp_path):
    out = tmp_path / "predict.json"
    proc = subprocess.run([sys.executable, str(REPO / "perf" / "server_bench.py"), "predict", "--tasks", "5",
                           "--repeat", "3", "--epochs", "2", "--redis-url", REDIS_URL, "--json", str(out)],
                          cwd=str(REPO), capture_output=True, text=True, timeout=300)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    s = json.loads(out.read_text())
    assert s["measurement"] == "predict" and s["tasks_per_request"] == 5 and s["repeat"] == 3
    assert s["model_version"].startswith("mmal-") and s["model_version"] != "mmal-untrained"
    warm = s["warm"]
    assert 0 < warm["p50_ms"] <= warm["p95_ms"] <= warm["p99_ms"] <= warm["max_ms"]
    assert 0 < warm["mean_ms"] <= warm["max_ms"]
    assert s["cold_ms"] > 0 and s["model_load_call_ms"] > 0
    assert s["requests_per_s"] > 0 and abs(s["tasks_per_s"] - s["requests_per_s"] * 5) < 0.2
    assert s["machine"]["logical_cpus"] >= 1 and "load_avg_start" in s and "load_avg_end" in s
    assert s["command"].endswith(f"predict --tasks 5 --repeat 3 --epochs 2 --redis-url {REDIS_URL} --json {out}")
    assert "p50" in proc.stdout and "load average" in proc.stdout and s["model_version"] in proc.stdout


def test_loop_bench_times_the_annotators_loop_with_the_defaults(tmp_path):
    """``loop`` at a tiny size: a real Label Studio, server and worker with no MMAL_* settings."""
    out = tmp_path / "loop.json"
    proc = subprocess.run([sys.executable, str(REPO / "perf" / "server_bench.py"), "loop", "--tasks", "60",
                           "--rounds", "1", "--poll", "0.5", "--redis-url", "redis://127.0.0.1:6379/11",
                           "--json", str(out)], cwd=str(REPO), capture_output=True, text=True, timeout=600)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    s = json.loads(out.read_text())
    assert s["measurement"] == "loop" and s["tasks"] == 60 and s["server_env"] == {}
    assert s["setup"]["connect_to_cold_start_s"] > 0
    (r,) = s["rounds"]
    assert r["n_labeled"] == 10 and r["next_is_top"] is True and "-margin-" in r["version"]
    assert 0 < r["label_to_next_task_s"] <= r["label_to_all_rescored_s"]
    assert {"pull_s", "featurize_s", "train_s", "rank_s", "push_head_s", "switch_s", "push_rest_s"} <= set(r["timings"])
    assert 0.0 <= r["accuracy_unlabelled"] <= 1.0
    assert "label -> next task" in proc.stdout
