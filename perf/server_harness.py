"""Real pieces for measuring the ML backend on loopback, shared by ``perf/server_bench.py`` and
``scripts/soak_predict.py``: a really trained model version of emoji tasks, a real ``mmal serve`` (uvicorn)
in its own process, concurrent ``/predict`` clients, and latency percentiles.

Why one module: the soak (reliability) and the benchmark (performance) drive the same server the same
way; only what they report differs.
"""

from __future__ import annotations

import asyncio
import base64
import math
import os
import random
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

REPO = Path(__file__).resolve().parents[1]
AUTH = ("bench", "bench-password")
"""Basic auth of the server under test (on, as in production)."""

__all__ = ["AUTH", "DemoVersion", "train_demo_version", "unseen_tasks", "predict_body", "request_menu",
           "start_server", "wait_healthy", "stop_process", "Server", "serving", "auth_header", "predict_load",
           "percentiles", "load_average"]


def wait_until(predicate: Callable[[], Any], timeout: float = 120, interval: float = 0.05, what: str = "condition",
               error: type[Exception] = TimeoutError) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned), else raise ``error`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise error(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class DemoVersion:
    """A trained, current model version of ``project``: its label config, the unlabelled tasks its
    ranking holds (answered from the stored ranking), and the version name."""

    project: int
    config: str
    ranked: list[dict[str, Any]]
    version: str


def train_demo_version(model_dir: Path, project: int = 1, seed: int = 0, *, per_class: int = 10,
                       n_labeled: int = 12, featurizer_params: dict[str, dict[str, Any]] | None = None,
                       cache_dir: Path | None = None, epochs: int = 20) -> DemoVersion:
    """Train and publish a real version of ``project`` on ``3 * per_class`` emoji tasks (image + text),
    the first ``n_labeled`` of them annotated: what the worker does, minus Label Studio.

    ``cache_dir`` puts the training's feature cache elsewhere than the server's (MODEL_DIR/feature-cache),
    so the server starts with a cold cache.
    """
    from ml_server.demo import choice_annotation, emoji_tasks, label_config
    from ml_server.fetch import Fetcher, FetchPolicy
    from ml_server.model_store import ModelStore
    from ml_server.settings import Settings
    from ml_server.training import build_version

    et = emoji_tasks(per_class, seed=seed)
    config = label_config(et.class_names)
    tasks = []
    for i, (t, truth) in enumerate(zip(et.tasks, et.truth)):
        task = dict(t, id=1000 + i, project=project)
        task["annotations"] = ([{"id": i + 1, "result": choice_annotation("label", "text", truth)}]
                               if i < n_labeled else [])
        tasks.append(task)
    settings = Settings(model_dir=model_dir, epochs=epochs, patience=5, strategy="margin", diagnostics_sample=0,
                        featurizer_params=featurizer_params or {}, feature_cache_dir=cache_dir)
    store = ModelStore(model_dir)
    built = build_version(project, tasks, config, settings, store, Fetcher(FetchPolicy()))
    store.set_current(project, built.version)
    return DemoVersion(project, config, [t for t in tasks if not t["annotations"]], built.version)


def unseen_tasks(n: int, project: int, seed: int, first_id: int = 50_000) -> list[dict[str, Any]]:
    """``n`` emoji tasks (image + text) with ids no training ranked: ``/predict`` featurizes and scores them."""
    from ml_server.demo import emoji_tasks

    per_class = max(1, math.ceil(n / 3))
    tasks = emoji_tasks(per_class, seed=seed).tasks[:n]
    return [dict(t, id=first_id + i, project=project) for i, t in enumerate(tasks)]


def predict_body(tasks: Sequence[dict[str, Any]], project: int, config: str) -> dict[str, Any]:
    """A ``/predict`` body as Label Studio sends it (project uid ``<id>.<created ts>``, the label config)."""
    return {"tasks": list(tasks), "project": f"{project}.1700000000", "label_config": config}


def request_menu(version: DemoVersion, unseen: Sequence[dict[str, Any]], tasks_per_request: int,
                 new_fraction: float, seed: int, n_bodies: int = 40) -> list[tuple[str, dict[str, Any]]]:
    """A fixed menu of (kind, body), like Label Studio's batches: ``new_fraction`` of them carry tasks the
    training never saw ("unseen"), the rest tasks it ranked ("ranked")."""
    rng = random.Random(seed)
    bodies: list[tuple[str, dict[str, Any]]] = []
    for i in range(n_bodies):
        kind = "unseen" if i < round(n_bodies * new_fraction) else "ranked"
        pool = list(unseen) if kind == "unseen" else version.ranked
        tasks = [pool[rng.randrange(len(pool))] for _ in range(tasks_per_request)]
        bodies.append((kind, predict_body(tasks, version.project, version.config)))
    return bodies


# --- the server process ------------------------------------------------------------------------------------
def start_server(model_dir: Path, port: int, log_path: Path, redis_url: str,
                 auth: tuple[str, str] | None = AUTH, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """``mmal serve --host 127.0.0.1 --port PORT`` (real uvicorn) with a clean environment plus ``extra_env``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMAL_", "BASIC_AUTH_", "LABEL_STUDIO_"))}
    env.update({"MODEL_DIR": str(model_dir), "REDIS_URL": redis_url, "PYTHONPATH": str(REPO)})
    if auth is not None:
        env.update({"BASIC_AUTH_USER": auth[0], "BASIC_AUTH_PASS": auth[1]})
    env.update(extra_env or {})
    mmal = Path(sys.executable).parent / "mmal"
    cmd = [str(mmal), "serve", "--host", "127.0.0.1", "--port", str(port)] if mmal.exists() else \
        [sys.executable, "-m", "mmal.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    return subprocess.Popen(cmd, env=env, cwd=str(REPO), stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)


def wait_healthy(url: str, proc: subprocess.Popen, log_path: Path, timeout: float = 90.0) -> None:
    """Wait for ``GET /health`` to answer 200 (raises with the server log if it exits or times out)."""
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


def stop_process(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@dataclass
class Server:
    """A running ``mmal serve``: its URL, its process and its log file."""

    url: str
    process: subprocess.Popen
    log_path: Path

    def cpu_seconds(self) -> float | None:
        """CPU time the server process has used so far (user + system, Linux ``/proc``; None elsewhere).

        Far less sensitive than wall time to other processes competing for a shared box."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def serving(model_dir: Path, log_path: Path, redis_url: str, auth: tuple[str, str] | None = AUTH,
            extra_env: dict[str, str] | None = None) -> Iterator[Server]:
    """A healthy ``mmal serve`` on a free loopback port for the ``with`` block."""
    from ml_server.ls_process import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(model_dir, port, log_path, redis_url, auth, extra_env)
    try:
        wait_healthy(url, proc, log_path)
        yield Server(url, proc, log_path)
    finally:
        stop_process(proc)


def auth_header(auth: tuple[str, str] | None = AUTH) -> dict[str, str]:
    """The ``Authorization`` header for Basic ``auth`` (empty without auth)."""
    if auth is None:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()}


# --- load --------------------------------------------------------------------------------------------------
async def _predict_load(url: str, clients: int, duration: float, bodies: Sequence[tuple[str, dict]], seed: int,
                        timeout: float, auth: tuple[str, str] | None) -> dict[str, Any]:
    import httpx

    latencies: dict[str, list[float]] = {kind: [] for kind, _ in bodies}
    errors: list[str] = []
    deadline = time.monotonic() + duration

    async def client(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        async with httpx.AsyncClient(base_url=url, headers=auth_header(auth), timeout=timeout,
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


def predict_load(url: str, clients: int, duration: float, bodies: Sequence[tuple[str, dict]], seed: int = 0,
                 timeout: float = 30.0, auth: tuple[str, str] | None = AUTH) -> dict[str, Any]:
    """``clients`` concurrent clients (one keep-alive connection each) posting ``/predict`` back to back,
    each picking a body of the menu at random, until ``duration`` seconds have passed.

    Returns ``{"latencies": {kind: [s, ...]}, "errors": [str, ...], "wall_s": s}``; an error is a non-200
    answer, a wrong number of results, a timeout or a connection error.
    """
    return asyncio.run(_predict_load(url, clients, duration, bodies, seed, timeout, auth))


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99/max and mean of latencies in seconds, as milliseconds rounded to 0.1 (None when empty)."""
    import numpy as np

    if not len(values):
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}
    a = np.asarray(values, dtype=np.float64) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 1), "p95_ms": round(float(np.percentile(a, 95)), 1),
            "p99_ms": round(float(np.percentile(a, 99)), 1), "max_ms": round(float(a.max()), 1),
            "mean_ms": round(float(a.mean()), 1)}


def load_average() -> float | None:
    """The 1-minute load average (the box may be shared: recorded at start and end of each measurement)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None
