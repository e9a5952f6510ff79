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
import asyncio
import base64
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

AUTH = ("soak", "soak-password")
PROJECT = 1


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def train(model_dir: Path, seed: int) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]], str]:
    """A real model version of project 1: (label config, ranked tasks, unseen tasks, version)."""
    from ml_server.demo import choice_annotation, emoji_tasks, label_config
    from ml_server.fetch import Fetcher, FetchPolicy
    from ml_server.model_store import ModelStore
    from ml_server.settings import Settings
    from ml_server.training import build_version

    et = emoji_tasks(10, seed=seed)
    config = label_config(et.class_names)
    tasks = []
    for i, (t, truth) in enumerate(zip(et.tasks, et.truth)):
        task = dict(t, id=1000 + i, project=PROJECT)
        task["annotations"] = [{"id": i + 1, "result": choice_annotation("label", "text", truth)}] if i < 12 else []
        tasks.append(task)
    settings = Settings(model_dir=model_dir, epochs=20, patience=5, featurizer_params={"image_pixels": {"size": 16}},
                        strategy="margin", diagnostics_sample=0)
    store = ModelStore(model_dir)
    built = build_version(PROJECT, tasks, config, settings, store, Fetcher(FetchPolicy()))
    store.set_current(PROJECT, built.version)
    unseen = [dict(t, id=50_000 + i, project=PROJECT) for i, t in enumerate(emoji_tasks(4, seed=seed + 1).tasks)]
    return config, [t for t in tasks if not t["annotations"]], unseen, built.version


def start_server(model_dir: Path, port: int, log_path: Path, redis_url: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMAL_", "BASIC_AUTH_", "LABEL_STUDIO_"))}
    env.update({"MODEL_DIR": str(model_dir), "REDIS_URL": redis_url, "BASIC_AUTH_USER": AUTH[0],
                "BASIC_AUTH_PASS": AUTH[1], "PYTHONPATH": str(REPO)})
    mmal = Path(sys.executable).parent / "mmal"
    cmd = [str(mmal), "serve", "--host", "127.0.0.1", "--port", str(port)] if mmal.exists() else \
        [sys.executable, "-m", "mmal.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    return subprocess.Popen(cmd, env=env, cwd=str(REPO), stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)


def wait_healthy(url: str, proc: subprocess.Popen, log_path: Path, timeout: float = 90.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("mmal serve exited:\n" + log_path.read_text(errors="replace")[-3000:])
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"mmal serve not healthy after {timeout:.0f} s:\n" + log_path.read_text(errors="replace")[-3000:])


async def load(url: str, clients: int, duration: float, bodies: list[tuple[str, dict]], seed: int,
               timeout: float) -> dict[str, Any]:
    """``clients`` concurrent clients posting /predict until ``duration`` has passed; latencies and errors."""
    import httpx

    header = {"Authorization": "Basic " + base64.b64encode(f"{AUTH[0]}:{AUTH[1]}".encode()).decode()}
    latencies: dict[str, list[float]] = {"ranked": [], "unseen": []}
    errors: list[str] = []
    deadline = time.monotonic() + duration

    async def client(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        async with httpx.AsyncClient(base_url=url, headers=header, timeout=timeout,
                                     limits=httpx.Limits(max_connections=1)) as http:
            while time.monotonic() < deadline:
                kind, body = bodies[rng.randrange(len(bodies))]
                t0 = time.perf_counter()
                try:
                    r = await http.post("/predict", json=body)
                    elapsed = time.perf_counter() - t0
                    if r.status_code != 200:
                        errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
                    elif len(r.json()["results"]) != len(body["tasks"]):
                        errors.append("wrong number of results")
                    else:
                        latencies[kind].append(elapsed)
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")

    t0 = time.monotonic()
    await asyncio.gather(*(client(k) for k in range(clients)))
    return {"latencies": latencies, "errors": errors, "wall_s": time.monotonic() - t0}


def percentiles(values: list[float]) -> dict[str, float | None]:
    import numpy as np

    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    a = np.asarray(values) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 1), "p95_ms": round(float(np.percentile(a, 95)), 1),
            "p99_ms": round(float(np.percentile(a, 99)), 1), "max_ms": round(float(a.max()), 1)}


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
    config, ranked, unseen, version = train(work / "models", args.seed)
    train_s = time.monotonic() - t0
    rng = random.Random(args.seed)
    bodies: list[tuple[str, dict]] = []
    for i in range(40):  # a fixed menu of request bodies, like Label Studio's batches
        kind = "unseen" if i < round(40 * args.new_fraction) else "ranked"
        pool = unseen if kind == "unseen" else ranked
        tasks = [pool[rng.randrange(len(pool))] for _ in range(args.tasks)]
        bodies.append((kind, {"tasks": tasks, "project": f"{PROJECT}.1700000000", "label_config": config}))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = work / "server.log"
    server = start_server(work / "models", port, log_path, args.redis_url)
    try:
        wait_healthy(url, server, log_path)
        result = asyncio.run(load(url, args.clients, args.duration, bodies, args.seed, args.timeout))
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
    lat = result["latencies"]
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
