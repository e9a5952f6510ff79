#!/usr/bin/env python
"""Measure the ML backend server (ml_server/) on loopback (issue 6, item 3). Figures, not tests.

Three measurements, each against a real ``mmal serve`` (uvicorn serving ``ml_server.app.create_app``) with
a really trained model version (emoji image + text):

- ``predict``: ``/predict`` latency for a batch of tasks the training never ranked (featurize from the
  feature cache + predict + score): a model-load call, one cold call (empty feature cache), then
  ``--repeat`` warm calls with fresh request bodies (new task ids, same content); p50/p95/mean, requests/s.
- ``burst``: a real Label Studio (``.venv-ls``) with a project of ``--tasks`` tasks, the server registered
  as its ML backend, a real RQ worker (``mmal worker``); ``--annotations`` annotations created through the
  Label Studio API in quick succession; the clock stops when Label Studio holds predictions of a model
  version trained on all of them for every task. Prints the breakdown per training job.
- ``load``: ``--clients`` concurrent clients posting ``/predict`` for ``--seconds``: requests, errors,
  p50/p95/p99, throughput.

Each run prints the 1-minute load average at start and end (the box may be shared), the machine and the
command; ``--json PATH`` also writes everything as JSON. Usage::

    nice -n 10 .venv/bin/python perf/server_bench.py predict --tasks 100 --repeat 200
    nice -n 10 .venv/bin/python perf/server_bench.py burst --annotations 50 --tasks 10000
    nice -n 10 .venv/bin/python perf/server_bench.py load --clients 16 --seconds 60
    nice -n 10 .venv/bin/python perf/server_bench.py loop --tasks 10000   # the annotators' loop, defaults

- ``loop``: the annotators' loop as it ships (see :func:`run_loop`).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from perf.server_harness import (AUTH, auth_header, load_average, percentiles, predict_body,  # noqa: E402
                                  predict_load, request_menu, serving, stop_process, train_demo_version,
                                  unseen_tasks, wait_until)

PROJECT = 1
DEFAULT_REDIS = "redis://127.0.0.1:6379/12"


class BenchError(RuntimeError):
    """The server answered something other than a valid prediction for every task."""


def machine() -> dict[str, Any]:
    """What the figures were measured on (the kernel harness's description, plus torch and niceness)."""
    import torch

    from perf.kernels_vs_peers import _machine

    return {**_machine(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "niceness": os.nice(0)}


# --- predict ---------------------------------------------------------------------------------------------------
def _post_predict(http: Any, tasks: list[dict[str, Any]], config: str, version: str | None) -> float:
    """Seconds for one ``/predict`` of ``tasks``; raises BenchError unless every task got a prediction of
    ``version`` (any version when None)."""
    t0 = time.perf_counter()
    r = http.post("/predict", json=predict_body(tasks, PROJECT, config))
    elapsed = time.perf_counter() - t0
    if r.status_code != 200:
        raise BenchError(f"/predict: HTTP {r.status_code}: {r.text[:300]}")
    results = r.json()["results"]
    if len(results) != len(tasks):
        raise BenchError(f"/predict: {len(results)} results for {len(tasks)} tasks")
    for item in results:
        if (version is not None and item["model_version"] != version) or not item["result"] \
                or not 0.0 <= item["score"] <= 1.0:
            raise BenchError(f"/predict: not a prediction of {version}: {str(item)[:300]}")
    return elapsed


def _with_ids(tasks: list[dict[str, Any]], first_id: int) -> list[dict[str, Any]]:
    return [dict(t, id=first_id + i) for i, t in enumerate(tasks)]


def run_predict(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Model-load call, cold call, then ``--repeat`` warm calls of the same ``--tasks`` tasks (fresh ids)."""
    import httpx

    t0 = time.monotonic()
    trained = train_demo_version(work / "models", PROJECT, args.seed, cache_dir=work / "train-cache",
                                 epochs=args.epochs)
    train_s = time.monotonic() - t0
    tasks = unseen_tasks(args.tasks, PROJECT, args.seed + 1)
    first_id = 1_000_000  # far above the ranked ids (1000 + i): never answered from the ranking
    with serving(work / "models", work / "server.log", args.redis_url, AUTH, args.extra_env) as server, \
            httpx.Client(base_url=server.url, headers=auth_header(AUTH), timeout=args.timeout) as http:
        # 1. a task the ranking holds: loads the model version, featurizes nothing
        load_s = _post_predict(http, trained.ranked[:1], trained.config, trained.version)
        # 2. the batch with an empty feature cache (the training used its own cache)
        cold_s = _post_predict(http, _with_ids(tasks, first_id), trained.config, trained.version)
        # 3. the same tasks again, each time with new ids: featurize from the cache + predict + score
        cpu0 = server.cpu_seconds()
        times = []
        w0 = time.perf_counter()
        for r in range(1, args.repeat + 1):
            times.append(_post_predict(http, _with_ids(tasks, first_id + r * len(tasks)), trained.config,
                                       trained.version))
        wall = time.perf_counter() - w0
        cpu1 = server.cpu_seconds()
    cpu_ms = None if cpu0 is None or cpu1 is None else round((cpu1 - cpu0) * 1000 / args.repeat, 1)
    return {
        "tasks_per_request": len(tasks), "repeat": args.repeat, "model_version": trained.version,
        "train_s": round(train_s, 1), "model_load_call_ms": round(load_s * 1000, 1),
        "cold_ms": round(cold_s * 1000, 1), "warm": percentiles(times), "requests_per_s": round(args.repeat / wall, 2),
        "tasks_per_s": round(args.repeat * len(tasks) / wall, 1), "server_cpu_ms_per_request": cpu_ms,
    }


def print_predict(s: dict[str, Any]) -> None:
    w = s["warm"]
    print(f"/predict, {s['tasks_per_request']} tasks not in the ranking ({s['model_version']}):")
    print(f"  model-load call (1 ranked task): {s['model_load_call_ms']} ms; cold call (empty feature cache): "
          f"{s['cold_ms']} ms")
    print(f"  warm x {s['repeat']}: p50 {w['p50_ms']} ms, p95 {w['p95_ms']} ms, mean {w['mean_ms']} ms, "
          f"max {w['max_ms']} ms; {s['requests_per_s']} requests/s ({s['tasks_per_s']} tasks/s); "
          f"server CPU {s['server_cpu_ms_per_request']} ms/request")


# --- load ------------------------------------------------------------------------------------------------------
def run_load(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """``--clients`` concurrent clients for ``--seconds`` after one warm-up pass over the request menu."""
    import httpx

    trained = train_demo_version(work / "models", PROJECT, args.seed, cache_dir=work / "train-cache",
                                 epochs=args.epochs)
    unseen = unseen_tasks(args.unseen, PROJECT, args.seed + 1)
    bodies = request_menu(trained, unseen, args.tasks, args.new_fraction, args.seed)
    with serving(work / "models", work / "server.log", args.redis_url, AUTH, args.extra_env) as server:
        w0 = time.perf_counter()
        with httpx.Client(base_url=server.url, headers=auth_header(AUTH), timeout=args.timeout) as http:
            for _, body in bodies:  # model loaded, every unseen task's features cached
                _post_predict(http, body["tasks"], trained.config, trained.version)
        warmup_s = time.perf_counter() - w0
        cpu0 = server.cpu_seconds()
        result = predict_load(server.url, args.clients, args.seconds, bodies, args.seed, args.timeout, AUTH)
        cpu1 = server.cpu_seconds()
    lat = result["latencies"]
    every = [x for values in lat.values() for x in values]
    wall = result["wall_s"]
    return {
        "clients": args.clients, "seconds": args.seconds, "tasks_per_request": args.tasks,
        "new_fraction": args.new_fraction, "model_version": trained.version, "warmup_s": round(warmup_s, 2),
        "requests": len(every) + len(result["errors"]), "ok": len(every), "errors": len(result["errors"]),
        "error_samples": sorted(set(result["errors"]))[:5], "wall_s": round(wall, 2),
        "throughput_rps": round(len(every) / wall, 2) if wall else 0.0,
        "tasks_per_s": round(len(every) * args.tasks / wall, 1) if wall else 0.0,
        "latency": percentiles(every),
        "by_kind": {kind: {"requests": len(v), **percentiles(v)} for kind, v in sorted(lat.items())},
        "server_cpu_s": None if cpu0 is None or cpu1 is None else round(cpu1 - cpu0, 1),
    }


def print_load(s: dict[str, Any]) -> None:
    lat = s["latency"]
    print(f"load: {s['clients']} clients x {s['seconds']:g} s, {s['tasks_per_request']} tasks/request "
          f"({s['new_fraction']:.0%} of requests with tasks not in the ranking, features cached)")
    print(f"  requests {s['requests']}, errors {s['errors']}, {s['throughput_rps']} requests/s "
          f"({s['tasks_per_s']} tasks/s); server CPU {s['server_cpu_s']} s in {s['wall_s']} s")
    print(f"  latency ms: p50 {lat['p50_ms']}, p95 {lat['p95_ms']}, p99 {lat['p99_ms']}, max {lat['max_ms']}")
    for kind, k in s["by_kind"].items():
        print(f"  {kind:6s}: {k['requests']} requests, p50 {k['p50_ms']}, p95 {k['p95_ms']}, p99 {k['p99_ms']} ms")
    for sample in s["error_samples"]:
        print(f"  error: {sample}")


# --- burst -----------------------------------------------------------------------------------------------------
def _distinct_copy(task: dict[str, Any], copy: int) -> dict[str, Any]:
    """The task with its content made unique for ``copy`` > 0 (one pixel of the PNG, a suffix of the text), so
    the feature cache cannot serve it from the original: encoding cost is paid per task, as on real data."""
    import base64
    import io

    from PIL import Image

    from ml_server.demo import png_data_url

    data = dict(task["data"], copy=copy)
    if copy:
        img = Image.open(io.BytesIO(base64.b64decode(data["image"].split(",", 1)[1]))).convert("RGBA")
        img.putpixel((0, 0), (copy % 256, (copy // 256) % 256, 7, 255))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        data["image"] = png_data_url(buf.getvalue())
        data["text"] = f"{data['text']} #{copy}"
    return {"data": data}


def burst_tasks(n: int, seed: int, distinct: bool = False) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """``n`` emoji tasks (image as a data: URL + text) over every emoji category, balanced: each emoji of
    the smallest category's size per class, repeated with a ``copy`` field until ``n`` (Label Studio gives
    each its own id); ``distinct``: each copy's content differs (:func:`_distinct_copy`). Returns (tasks,
    true class per task, class names)."""
    import numpy as np

    from connectors.datasets.emoji import load_emoji
    from ml_server.demo import emoji_tasks

    ds = load_emoji(label="category")
    per_class = int(np.bincount(ds.true_labels).min())
    pool = emoji_tasks(per_class, categories=list(ds.class_names), seed=seed)
    tasks, truth = [], []
    for k in range(n):
        j = k % len(pool.tasks)
        copy = k // len(pool.tasks)
        tasks.append(_distinct_copy(pool.tasks[j], copy) if distinct else
                     {"data": dict(pool.tasks[j]["data"], copy=copy)})
        truth.append(pool.truth[j])
    return tasks, truth, pool.class_names


def _utc_ts(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def job_timeline(redis_url: str, queue: str, since: float) -> list[dict[str, Any]]:
    """Every training job of the queue enqueued after ``since`` (epoch s): when it was enqueued, started and
    ended (seconds after ``since``), its outcome and the timings it reported."""
    import redis
    from rq import Queue
    from rq.job import Job

    conn = redis.Redis.from_url(redis_url)
    q = Queue(queue, connection=conn)
    ids = set(q.job_ids) | set(q.started_job_registry.get_job_ids()) | set(q.finished_job_registry.get_job_ids()) \
        | set(q.failed_job_registry.get_job_ids())
    rows = []
    for job in Job.fetch_many(sorted(ids), connection=conn):
        if job is None or (_utc_ts(job.enqueued_at) or 0) < since:
            continue
        result = job.return_value() if job.get_status() == "finished" else None
        result = result if isinstance(result, dict) else {}
        rel = {k: None if (v := _utc_ts(getattr(job, k))) is None else round(v - since, 2)
               for k in ("enqueued_at", "started_at", "ended_at")}
        rows.append({"job_id": job.id, **rel, "status": str(getattr(job.get_status(), "value", job.get_status())),
                     "outcome": result.get("status"), "n_labeled": result.get("n_labeled"),
                     "model_version": result.get("model_version"),
                     "timings": {k: round(float(v), 2) for k, v in (result.get("timings") or {}).items()}})
    return sorted(rows, key=lambda r: r["enqueued_at"] or 0)


def webhook_counts(http: Any) -> dict[str, int]:
    """``mmal_webhooks_total`` of the server's /prometheus, by outcome (what the burst's webhooks became)."""
    counts: dict[str, int] = {}
    for line in http.get("/prometheus").text.splitlines():
        if line.startswith("mmal_webhooks_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            counts[outcome] = counts.get(outcome, 0) + int(float(line.rsplit(" ", 1)[1]))
    return counts


class Poller:
    """Reads Label Studio while the worker writes to it: a failed read (Label Studio on SQLite answers 500
    while a bulk write holds the database) is counted and retried at the next poll, never fatal while the
    Label Studio process lives."""

    def __init__(self, lsc: Any, ls: Any, store: Any, interval: float) -> None:
        self.lsc, self.ls, self.store, self.interval = lsc, ls, store, interval
        self.errors: list[str] = []

    def read(self, fn: Callable[[], Any]) -> Any:
        """``fn()``, or None after a failed read (recorded in ``errors``)."""
        import httpx

        from connectors.labelstudio import LabelStudioError

        try:
            return fn()
        except (LabelStudioError, httpx.HTTPError) as exc:
            if self.ls.process.poll() is not None:
                raise BenchError("Label Studio exited:\n" + self.ls.log_tail()) from exc
            self.errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
            return None

    def wait_for_version(self, n_tasks: int, need_labeled: int, exclude: set[str], timeout: float,
                         on_new: Callable[[str, int], None] | None = None) -> str:
        """Poll until ``project.model_version`` is a version trained on >= ``need_labeled`` labels and Label
        Studio holds >= ``n_tasks`` predictions of it; returns the version. ``on_new(version, n_labeled)`` is
        called once per new version seen on the way (e.g. one trained mid-burst)."""
        seen: set[str] = set(exclude)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            project = self.read(lambda: self.lsc.get_project(PROJECT)) or {}
            version = project.get("model_version") or ""
            # before the first training Label Studio shows the backend's title or mmal-untrained: not a version
            if version not in exclude and version in self.store.list_versions(PROJECT):
                n_labeled = int(self.store.read_meta(PROJECT, version).get("n_labeled") or 0)
                if version not in seen:
                    seen.add(version)
                    if on_new:
                        on_new(version, n_labeled)
                if n_labeled >= need_labeled:
                    counts = self.read(lambda: self.lsc.model_versions(PROJECT)) or {}
                    if counts.get(version, 0) >= n_tasks:
                        return version
            time.sleep(self.interval)
        raise BenchError(f"no model version trained on {need_labeled} labels with {n_tasks} predictions "
                         f"after {timeout:.0f} s")


def wait_idle(conn: Any, timeout: float, interval: float) -> None:
    """Until no training of the project is pending or running (the last job's pruning included)."""
    from ml_server import jobs

    end = time.monotonic() + timeout
    while any(jobs.training_state(conn, PROJECT).values()) and time.monotonic() < end:
        time.sleep(interval)


def start_worker(work: Path, env: dict[str, str]) -> Any:
    """``mmal worker`` (RQ fork worker on the training queue) with a clean environment plus ``env``."""
    import subprocess

    full = {k: v for k, v in os.environ.items() if not k.startswith(("MMAL_", "BASIC_AUTH_", "LABEL_STUDIO_"))}
    full.update(env, PYTHONPATH=str(REPO))
    mmal = Path(sys.executable).parent / "mmal"
    cmd = [str(mmal), "worker"] if mmal.exists() else [sys.executable, "-m", "mmal.cli", "worker"]
    return subprocess.Popen(cmd, env=full, cwd=str(REPO), stdout=open(work / "worker.log", "wb"),
                            stderr=subprocess.STDOUT)


def run_burst(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Label Studio + server + worker. Setup (timed apart): ``--initial`` labels made before the backend is
    connected, then one START_TRAINING for a first version. Then the burst of ``--annotations`` and the
    clock until Label Studio holds predictions of a version trained on all of them for every task."""
    import httpx
    import redis

    from connectors.labelstudio import LabelStudioConnector
    from ml_server.demo import choice_annotation, label_config
    from ml_server.ls_process import start_label_studio
    from ml_server.model_store import ModelStore
    from ml_server.settings import TRAINING_QUEUE

    if args.initial + args.annotations > args.tasks:
        raise SystemExit("--initial + --annotations must not exceed --tasks")
    min_labels = int(args.extra_env.get("MMAL_MIN_ANNOTATIONS", 10))  # the worker trains from this many labels
    if 0 < args.initial < min_labels or args.initial + args.annotations < min_labels:
        raise SystemExit(f"--initial (unless 0) and --initial + --annotations must be >= {min_labels} "
                         "(MMAL_MIN_ANNOTATIONS; set it with --env)")
    conn = redis.Redis.from_url(args.redis_url)
    conn.flushdb()
    setup: dict[str, float] = {}
    t = time.monotonic()
    tasks, truth, class_names = burst_tasks(args.tasks, args.seed)
    setup["make_tasks_s"] = time.monotonic() - t
    t = time.monotonic()
    ls = start_label_studio()
    setup["label_studio_start_s"] = time.monotonic() - t
    worker = None
    try:
        lsc = LabelStudioConnector(ls.url, ls.token, timeout=600)
        pid = lsc.create_project("server bench burst", label_config(class_names))
        if pid != PROJECT:
            raise BenchError(f"expected project id {PROJECT} in a fresh Label Studio, got {pid}")
        t = time.monotonic()
        ids: list[int] = []
        for s in range(0, len(tasks), args.import_chunk):
            ids += lsc.import_tasks(pid, tasks[s:s + args.import_chunk])
        setup["import_s"] = time.monotonic() - t

        def annotate(rows: range) -> list[float]:
            done = []
            for i in rows:
                lsc.create_annotation(ids[i], choice_annotation("label", "text", truth[i]))
                done.append(time.time())
            return done

        annotate(range(args.initial))  # no backend yet: no webhooks
        env = {"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.token, "MMAL_JOB_RETRIES": "0",
               **args.extra_env}
        worker = start_worker(work, {**env, "REDIS_URL": args.redis_url, "MODEL_DIR": str(work / "models")})
        with serving(work / "models", work / "server.log", args.redis_url, AUTH, env) as server, \
                httpx.Client(base_url=server.url, headers=auth_header(AUTH), timeout=30) as http:
            backend = lsc.register_backend(pid, server.url, title="mmal-perf", basic_auth=AUTH)
            if backend.get("state") != "CO":
                raise BenchError(f"Label Studio could not connect the backend: {backend}")
            poller = Poller(lsc, ls, ModelStore(work / "models"), args.poll)
            initial_version = None
            if args.initial:
                t = time.monotonic()
                lsc.train(int(backend["id"]))  # Label Studio sends START_TRAINING to /webhook
                initial_version = poller.wait_for_version(len(ids), args.initial, set(), args.timeout)
                wait_idle(conn, args.timeout, args.poll)
                setup["initial_version_s"] = time.monotonic() - t
            hooks_before = webhook_counts(http)
            # --- the burst -------------------------------------------------------------------------------
            print(f"burst: {args.annotations} annotations on a project of {len(ids)} tasks "
                  f"({args.initial} labelled before, version {initial_version})", flush=True)
            since = time.time()
            t0 = time.monotonic()
            stamps = annotate(range(args.initial, args.initial + args.annotations))
            burst_s = time.monotonic() - t0
            seen_versions: list[dict[str, Any]] = []

            def on_new(version: str, n_labeled: int) -> None:
                seen_versions.append({"version": version, "n_labeled": n_labeled,
                                      "seen_at_s": round(time.monotonic() - t0, 2)})
                print(f"  +{time.monotonic() - t0:6.1f} s  Label Studio serves {version} "
                      f"(trained on {n_labeled} labels)", flush=True)

            final = poller.wait_for_version(len(ids), args.initial + args.annotations,
                                            {initial_version} if initial_version else set(), args.timeout, on_new)
            total_s = time.monotonic() - t0
            webhooks = {k: v - hooks_before.get(k, 0) for k, v in webhook_counts(http).items()}
            wait_idle(conn, 600, args.poll)  # the last job's timings complete (pruning); not on the clock
            timeline = job_timeline(args.redis_url, TRAINING_QUEUE, since)
            verified = None
            if args.verify:
                t = time.monotonic()
                have = poller.read(lambda: sum(1 for task in lsc.iter_tasks(PROJECT) if any(
                    p.get("model_version") == final for p in task.get("predictions") or [])))
                verified = {"tasks_with_prediction": have, "tasks": len(ids), "pull_s": round(time.monotonic() - t, 1)}
    finally:
        if worker is not None:
            stop_process(worker)
        if args.keep:
            shutil.copy(ls.log_path, work / "label-studio.log")
        ls.stop()
    return {
        "tasks": len(ids), "annotations": args.annotations, "initial": args.initial, "classes": len(class_names),
        "setup": {k: round(v, 1) for k, v in setup.items()}, "initial_version": initial_version,
        "burst_s": round(burst_s, 2), "annotation_rate_per_s": round(args.annotations / burst_s, 1),
        "first_annotation_to_predictions_s": round(total_s, 1), "final_version": final,
        "versions_seen": seen_versions, "webhooks": webhooks, "jobs": timeline, "verified": verified,
        "last_annotation_at_s": round(stamps[-1] - since, 2), "label_studio_read_errors": poller.errors,
    }


def _after_total(job: dict[str, Any]) -> float | None:
    """Seconds a job ran after its reported ``total_s`` (pruning the predictions of old versions)."""
    if job["started_at"] is None or job["ended_at"] is None or "total_s" not in job["timings"]:
        return None
    return round(job["ended_at"] - job["started_at"] - job["timings"]["total_s"], 1)


def print_burst(s: dict[str, Any]) -> None:
    print(f"burst of {s['annotations']} annotations ({s['annotation_rate_per_s']}/s, {s['burst_s']} s) on "
          f"{s['tasks']} tasks -> {s['final_version']} with predictions for every task in Label Studio: "
          f"{s['first_annotation_to_predictions_s']} s after the first annotation")
    print(f"  setup (not on the clock): {s['setup']}")
    print(f"  webhooks received during the burst: {s['webhooks']}")
    print("  jobs (s after the first annotation): enqueued / started / ended, outcome, labels, timings")
    for j in s["jobs"]:
        tm = j["timings"]
        parts = ", ".join(f"{k[:-2]} {tm[k]}" for k in ("pull_s", "featurize_s", "train_s", "rank_s", "publish_s",
                                                          "total_s") if k in tm)
        print(f"    {j['enqueued_at']} / {j['started_at']} / {j['ended_at']}  {j['outcome'] or j['status']}"
              f"  n_labeled={j['n_labeled']}  {parts}, then pruning {_after_total(j)}")
    final = next((j for j in s["jobs"] if j["model_version"] == s["final_version"]), None)
    if final:
        tm = final["timings"]
        known = sum(tm.get(k, 0.0) for k in ("pull_s", "featurize_s", "train_s", "rank_s", "publish_s"))
        print(f"  breakdown: webhook -> start of the final job {final['started_at']} s "
              f"(first job started at {s['jobs'][0]['started_at']} s); final job: pull {tm.get('pull_s')} s, "
              f"training (featurize {tm.get('featurize_s')} + train {tm.get('train_s')}) s, prediction + scoring "
              f"{tm.get('rank_s')} s, push + switch {tm.get('publish_s')} s, other "
              f"{round(tm.get('total_s', known) - known, 2)} s (diagnostics, save); after that, off the clock: "
              f"pruning old predictions {_after_total(final)} s")
    if s["label_studio_read_errors"]:
        print(f"  {len(s['label_studio_read_errors'])} polls of Label Studio failed and were retried, e.g. "
              f"{s['label_studio_read_errors'][0]}")
    if s["verified"]:
        v = s["verified"]
        print(f"  verified: {v['tasks_with_prediction']} of {v['tasks']} tasks hold a prediction of "
              f"{s['final_version']} (pulled in {v['pull_s']} s)")


def run_loop(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The annotators' loop as it ships (issue 12): a real Label Studio with ``--tasks`` distinct emoji tasks,
    ``mmal serve`` + ``mmal worker`` with NO MMAL_* settings (pretrained featurizers, margin, the default
    recipe). Clocked: connect -> cold-start order published (encoding ahead); then ``--rounds`` rounds of
    ``--labels`` annotations of what ``/api/projects/<id>/next`` serves, each timed from the annotation
    that completes the round to (a) ``/next`` serving a task of the new version (the strategy's top task)
    and (b) every task holding a prediction of it. Each training's phases come from its job's timings."""
    import httpx
    import redis

    from connectors.labelstudio import LabelStudioConnector
    from ml_server.demo import choice_annotation, label_config
    from ml_server.ls_process import start_label_studio
    from ml_server.model_store import ModelStore
    from ml_server.settings import TRAINING_QUEUE

    conn = redis.Redis.from_url(args.redis_url)
    conn.flushdb()
    setup: dict[str, float] = {}
    t = time.monotonic()
    tasks, truth, class_names = burst_tasks(args.tasks, args.seed, distinct=True)
    setup["make_tasks_s"] = time.monotonic() - t
    ls = start_label_studio()
    worker = None
    rounds: list[dict[str, Any]] = []
    try:
        lsc = LabelStudioConnector(ls.url, ls.token, timeout=600)
        pid = lsc.create_project("server bench loop", label_config(class_names))
        t = time.monotonic()
        ids: list[int] = []
        for s in range(0, len(tasks), args.import_chunk):
            ids += lsc.import_tasks(pid, tasks[s:s + args.import_chunk])
        setup["import_s"] = time.monotonic() - t
        truth_of = dict(zip(ids, truth))
        env = {"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.token, **args.extra_env}
        worker = start_worker(work, {**env, "REDIS_URL": args.redis_url, "MODEL_DIR": str(work / "models")})
        store = ModelStore(work / "models")
        poller = Poller(lsc, ls, store, args.poll)
        with serving(work / "models", work / "server.log", args.redis_url, AUTH, env) as server:
            t = time.monotonic()
            backend = lsc.register_backend(pid, server.url, title="mmal-perf", basic_auth=AUTH)
            if backend.get("state") != "CO":
                raise BenchError(f"Label Studio could not connect the backend: {backend}")
            cold = _wait(lambda: store.cold_start(pid), args.timeout, args.poll, "the cold-start order")
            setup["connect_to_cold_start_s"] = time.monotonic() - t
            print(f"cold start {cold.version} published {setup['connect_to_cold_start_s']:.1f} s after connecting "
                  f"({len(ids)} tasks encoded ahead)", flush=True)
            since = time.time()
            labelled: list[int] = []
            for r in range(args.rounds):
                before = store.current_version(pid)
                for _ in range(args.labels):
                    task = poller.read(lambda: lsc.next_task(pid))
                    lsc.create_annotation(task["id"], choice_annotation("label", "text", truth_of[task["id"]]))
                    labelled.append(task["id"])
                t0 = time.monotonic()

                def served_new() -> dict[str, Any] | None:
                    version = store.current_version(pid)
                    if version in (None, before):
                        return None
                    nxt = poller.read(lambda: lsc.next_task(pid))
                    if not nxt or not any(p.get("model_version") == version for p in nxt.get("predictions") or []):
                        return None
                    return {"version": version, "task": nxt["id"]}

                got = _wait(served_new, args.timeout, args.poll / 4, "the next task from a new version")
                to_next = time.monotonic() - t0
                counts = _wait(lambda: (c := poller.read(lambda: lsc.model_versions(pid)) or {}).get(
                    got["version"], 0) >= len(ids) and c, args.timeout, args.poll, "every task re-scored")
                to_all = time.monotonic() - t0
                meta = store.read_meta(pid, got["version"])
                ranking = store.load(pid, got["version"]).ranking
                top = min((s, t) for t, (_, s) in ranking.items() if t not in labelled)
                rounds.append({"round": r + 1, "n_labeled": meta.get("n_labeled"), "version": got["version"],
                               "label_to_next_task_s": round(to_next, 1), "label_to_all_rescored_s": round(to_all, 1),
                               "next_is_top": got["task"] == top[1], "timings": {
                                   k: round(float(v), 2) for k, v in (meta.get("timings") or {}).items()},
                               "val_acc": meta.get("val_acc"),
                               "accuracy_unlabelled": _accuracy(store, pid, got["version"], truth_of, labelled)})
                print(f"round {r + 1}: {meta.get('n_labeled')} labels -> next task from {got['version']} after "
                      f"{to_next:.1f} s (the strategy's top task: {rounds[-1]['next_is_top']}), all "
                      f"{len(ids)} re-scored after {to_all:.1f} s", flush=True)
                wait_idle(conn, args.timeout, args.poll)
            timeline = job_timeline(args.redis_url, TRAINING_QUEUE, since)
    finally:
        if worker is not None:
            stop_process(worker)
        ls.stop()
    for rnd in rounds:
        job = next((j for j in timeline if j["model_version"] == rnd["version"]), None)
        if job:
            rnd["timings"] = {**rnd["timings"], **job["timings"]}
    return {"tasks": len(ids), "classes": len(class_names), "labels_per_round": args.labels,
            "setup": {k: round(v, 1) for k, v in setup.items()}, "rounds": rounds, "jobs": timeline,
            "label_studio_read_errors": poller.errors}


def _wait(fn: Callable[[], Any], timeout: float, interval: float, what: str) -> Any:
    return wait_until(fn, timeout, interval, what, error=BenchError)


def _accuracy(store: Any, pid: int, version: str, truth: dict[int, str], labelled: list[int]) -> float:
    """Share of the unlabelled tasks whose pre-annotation (the version's predicted class) is right."""
    ranking = store.load(pid, version).ranking
    rest = [t for t in ranking if t not in set(labelled)]
    return round(sum(ranking[t][0] == truth[t] for t in rest) / max(len(rest), 1), 3)


PHASES = ("pull_s", "featurize_s", "train_s", "rank_s", "push_head_s", "switch_s", "push_rest_s", "total_s")


def print_loop(s: dict[str, Any]) -> None:
    print(f"annotators' loop, {s['tasks']} tasks, {s['classes']} classes, defaults; setup {s['setup']}")
    print("  round | labels | label -> next task of the new version | -> all re-scored | next = top | "
          "accuracy on unlabelled | phases (s)")
    for r in s["rounds"]:
        phases = ", ".join(f"{k[:-2]} {r['timings'][k]}" for k in PHASES if k in r["timings"])
        print(f"  {r['round']} | {r['n_labeled']} | {r['label_to_next_task_s']} s | {r['label_to_all_rescored_s']} s | "
              f"{r['next_is_top']} | {r['accuracy_unlabelled']} | {phases}")


# --- CLI -------------------------------------------------------------------------------------------------------
MEASUREMENTS: dict[str, tuple[Callable[[argparse.Namespace, Path], dict], Callable[[dict], None]]] = {
    "predict": (run_predict, print_predict), "burst": (run_burst, print_burst), "load": (run_load, print_load),
    "loop": (run_loop, print_loop)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", type=Path, help="also write the figures here")
    common.add_argument("--redis-url", default=DEFAULT_REDIS,
                        help=f"Redis of server and worker (default {DEFAULT_REDIS}; burst FLUSHES this DB)")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--timeout", type=float, default=None, help="seconds (per request; burst: per wait)")
    common.add_argument("--keep", action="store_true", help="keep the work dir (models, server and worker logs)")
    common.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment of the server (and the burst's worker), e.g. OMP_NUM_THREADS=1; "
                             "repeatable")
    common.add_argument("--epochs", type=int, default=10,
                        help="predict/load: epochs of the model under test (its size does not depend on them; "
                             "default 10)")
    sub = p.add_subparsers(dest="measurement", required=True)
    pr = sub.add_parser("predict", parents=[common], help="/predict latency, cached features")
    pr.add_argument("--tasks", type=int, default=100, help="tasks per request (default 100, at most 393)")
    pr.add_argument("--repeat", type=int, default=200, help="warm requests (default 200)")
    bu = sub.add_parser("burst", parents=[common], help="annotation burst -> new version with predictions pushed")
    bu.add_argument("--tasks", type=int, default=10_000, help="tasks in the project (default 10000)")
    bu.add_argument("--annotations", type=int, default=50, help="annotations in the burst (default 50)")
    bu.add_argument("--initial", type=int, default=20,
                    help="tasks labelled (and a first version trained) before the burst (default 20; 0 = none)")
    bu.add_argument("--import-chunk", type=int, default=1000, help="tasks per import request (default 1000)")
    bu.add_argument("--poll", type=float, default=1.0, help="seconds between polls of Label Studio (default 1)")
    bu.add_argument("--no-verify", dest="verify", action="store_false",
                    help="skip pulling every task at the end to check each holds a prediction of the final version")
    lp = sub.add_parser("loop", parents=[common], help="the annotators' loop with the defaults: label -> next task")
    lp.add_argument("--tasks", type=int, default=2000, help="tasks in the project (default 2000)")
    lp.add_argument("--labels", type=int, default=10, help="annotations per round (default 10 = the minimum)")
    lp.add_argument("--rounds", type=int, default=2, help="trainings to time (default 2: the first and a later)")
    lp.add_argument("--import-chunk", type=int, default=1000, help="tasks per import request (default 1000)")
    lp.add_argument("--poll", type=float, default=1.0, help="seconds between polls of Label Studio (default 1)")
    lo = sub.add_parser("load", parents=[common], help="N clients x M seconds of /predict")
    lo.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    lo.add_argument("--seconds", type=float, default=60.0, help="seconds of load (default 60)")
    lo.add_argument("--tasks", type=int, default=10, help="tasks per request (default 10)")
    lo.add_argument("--new-fraction", type=float, default=0.5,
                    help="fraction of requests with tasks not in the ranking (default 0.5)")
    lo.add_argument("--unseen", type=int, default=60, help="distinct tasks not in the ranking (default 60)")
    args = p.parse_args(argv)
    if any("=" not in e for e in args.env):
        p.error("--env takes KEY=VALUE")
    args.extra_env = dict(e.split("=", 1) for e in args.env)
    if args.timeout is None:
        args.timeout = 3600.0 if args.measurement in ("burst", "loop") else 60.0
    positive = [v for k, v in vars(args).items()
                if k in ("tasks", "repeat", "annotations", "clients", "seconds", "unseen", "epochs", "labels",
                         "rounds")]
    if any(v <= 0 for v in positive) or getattr(args, "initial", 0) < 0 \
            or not 0 <= getattr(args, "new_fraction", 0) <= 1:
        p.error("sizes must be positive, --initial >= 0, --new-fraction in [0, 1]")
    if args.measurement in ("predict", "load") and max(args.tasks, getattr(args, "unseen", 0)) > 393:
        p.error("at most 393 distinct emoji tasks (3 categories x 131)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run, show = MEASUREMENTS[args.measurement]
    command = " ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable, REPO), "perf/server_bench.py",
                                                *(sys.argv[1:] if argv is None else argv)])
    load_start = load_average()
    print(f"{args.measurement}: load average (1 min) at start {load_start}", flush=True)
    work = Path(tempfile.mkdtemp(prefix=f"mmal-perf-{args.measurement}-"))
    t0 = time.monotonic()
    try:
        figures = run(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    summary = {"measurement": args.measurement, **figures, "run_s": round(time.monotonic() - t0, 1),
               "load_avg_start": load_start, "load_avg_end": load_average(), "machine": machine(),
               "server_env": args.extra_env, "command": command,
               "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "work_dir": str(work) if args.keep else None}
    show(summary)
    m = summary["machine"]
    print(f"  load average (1 min) start / end: {summary['load_avg_start']} / {summary['load_avg_end']}; "
          f"{m['logical_cpus']} CPUs ({m['cpu']}), niceness {m['niceness']}")
    if args.extra_env:
        print(f"  server environment: {args.extra_env}")
    print(f"  command: {command}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
