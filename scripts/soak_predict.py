#!/usr/bin/env python
"""Load run of ``/predict``: N concurrent clients for M seconds against a real ``mmal serve`` on loopback.

What it does, all bounded (it stops by itself):

1. trains a real model version for project 1 on emoji tasks (image + text) in a fresh MODEL_DIR;
2. starts ``mmal serve --host 127.0.0.1`` on a free port with that MODEL_DIR (and basic auth on, as in
   production), and waits for ``/health``;
3. runs ``--clients`` concurrent clients (one keep-alive connection each), each sending ``/predict`` requests
   back to back until ``--duration`` seconds have passed. A request carries ``--tasks`` tasks; a fraction
   ``--new-fraction`` of the requests carry tasks the training never saw (featurized and predicted on the
   fly), the others tasks it ranked (answered from the stored ranking);
4. prints requests, errors, throughput and latency percentiles (p50/p95/p99/max), optionally as JSON, stops the
   server, and exits 1 if any request failed (a non-200 answer, a wrong number of results, a timeout or a
   connection error).

Usage (the documented soak is the first line; CI runs a short one)::

    .venv/bin/python scripts/soak_predict.py --clients 50 --duration 60
    .venv/bin/python scripts/soak_predict.py --clients 10 --duration 5 --json /tmp/soak.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from perf.server_harness import (percentiles, predict_load, request_menu, serving,  # noqa: E402
                                  train_demo_version, unseen_tasks)

AUTH = ("soak", "soak-password")
PROJECT = 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    p.add_argument("--tasks", type=int, default=4, help="tasks per /predict request (default 4)")
    p.add_argument("--new-fraction", type=float, default=0.5,
                   help="fraction of requests with tasks the training never saw (default 0.5)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds before a request counts as failed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
                   help="Redis of the server (/predict only reads it)")
    p.add_argument("--json", type=Path, help="also write the summary here")
    p.add_argument("--keep", action="store_true", help="keep the work dir (model, server log)")
    args = p.parse_args(argv)
    if args.clients < 1 or args.duration <= 0 or args.tasks < 1 or not 0 <= args.new_fraction <= 1:
        p.error("--clients and --tasks must be >= 1, --duration > 0, --new-fraction in [0, 1]")

    work = Path(tempfile.mkdtemp(prefix="mmal-soak-"))
    t0 = time.monotonic()
    trained = train_demo_version(work / "models", PROJECT, args.seed, featurizer_params={"image_pixels": {"size": 16}})
    version = trained.version
    train_s = time.monotonic() - t0
    unseen = unseen_tasks(12, PROJECT, args.seed + 1)
    bodies = request_menu(trained, unseen, args.tasks, args.new_fraction, args.seed)
    log_path = work / "server.log"
    with serving(work / "models", log_path, args.redis_url, AUTH) as server:
        result = predict_load(server.url, args.clients, args.duration, bodies, args.seed, args.timeout, AUTH)
    lat = {kind: result["latencies"].get(kind, []) for kind in ("ranked", "unseen")}
    every = lat["ranked"] + lat["unseen"]
    n_requests = len(every) + len(result["errors"])
    summary = {
        "clients": args.clients, "duration_s": args.duration, "tasks_per_request": args.tasks,
        "new_fraction": args.new_fraction, "requests": n_requests, "ok": len(every), "errors": len(result["errors"]),
        "error_samples": sorted(set(result["errors"]))[:5], "wall_s": round(result["wall_s"], 2),
        "throughput_rps": round(len(every) / result["wall_s"], 1) if result["wall_s"] else 0.0,
        **percentiles(every),
        "ranked": {"requests": len(lat["ranked"]), **percentiles(lat["ranked"])},
        "unseen": {"requests": len(lat["unseen"]), **percentiles(lat["unseen"])},
        "model_version": version, "train_s": round(train_s, 1), "cpus": os.cpu_count(),
        "machine": platform.platform(), "server_log": str(log_path) if args.keep else None,
    }
    print(f"/predict soak: {args.clients} clients x {args.duration:g} s against mmal serve on loopback "
          f"({os.cpu_count()} CPUs, {args.tasks} tasks/request, {args.new_fraction:.0%} unseen)")
    print(f"  requests {summary['requests']}, errors {summary['errors']}, {summary['throughput_rps']} req/s")
    print(f"  latency ms: p50 {summary['p50_ms']}, p95 {summary['p95_ms']}, p99 {summary['p99_ms']}, "
          f"max {summary['max_ms']}")
    for kind in ("ranked", "unseen"):
        k = summary[kind]
        print(f"  {kind:6s}: {k['requests']} requests, p50 {k['p50_ms']}, p95 {k['p95_ms']}, p99 {k['p99_ms']} ms")
    for sample in summary["error_samples"]:
        print(f"  error: {sample}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 1 if summary["errors"] or not every else 0


if __name__ == "__main__":
    sys.exit(main())
