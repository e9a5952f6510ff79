"""perf/suite_bench.py's fan-out path, end to end on the smallest job set, so the script cannot rot.

Real Redis (DB 11, flushed before and after; DB 12 belongs to perf/server_bench.py), a real
``mmal worker`` process and the real ``mmal benchmark run --queue`` driver; checks the structure of
the figures, never a speed.
"""

from __future__ import annotations

import json

from perf.suite_bench import main

REDIS_URL = "redis://127.0.0.1:6379/11"


def test_fanout_one_worker_end_to_end(tmp_path, rconn):
    out = tmp_path / "suite"
    res = main(["fanout", "--workers", "1", "--suite", "smoke", "--scenarios", "balanced", "--strategies", "random",
                "--seeds", "0", "--rounds", "1", "--queue", REDIS_URL, "--out", str(out),
                "--json", str(tmp_path / "figures.json"), "--max-load", "1e9", "--min-idle", "0", "--load-tries", "0",
                "--nice", "0"])
    runs = res["fanout"]["runs"]
    assert len(runs) == 1 and "ratio" not in res["fanout"] and res["fanout"]["attempts"] == [runs]
    r = runs[0]
    assert r["workers"] == 1
    assert r["cells"] == 2  # the full-pool reference and `random` on (balanced, seed 0)
    assert len(r["jobs_per_worker"]) == 1 and sum(r["jobs_per_worker"].values()) == 2
    assert 0 < r["span_seconds"] <= r["driver_wall_seconds"]
    assert r["cells_per_minute"] == 60 * 2 / r["span_seconds"]
    assert 0 < r["worker_utilisation"] <= 1.0
    assert r["workers_cpu_seconds_per_cell"] > 0 and r["workers_cpu_share"] > 0
    assert r["cell_seconds"] > 0 and r["train_seconds"] > 0
    assert r["round0_trainings"] == {"balanced/s0": 1}
    assert len(r["load_start"]) == 3 and len(r["load_end"]) == 3
    assert "--queue " + REDIS_URL in r["command"] and r["worker_command"].endswith("worker --queue " + REDIS_URL)
    # the driver wrote every cell, and the script left the queue's database empty
    assert len(list((out / "fanout-w1" / "cells").glob("*.json"))) == 2
    assert rconn.dbsize() == 0
    assert json.loads((tmp_path / "figures.json").read_text())["fanout"]["runs"][0]["cells"] == 2
