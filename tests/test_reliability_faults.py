"""Faults: killed workers, a restarted Redis, an unreachable Label Studio, duplicate and out-of-order webhooks.

Everything is real: a real Label Studio 1.23.2, real RQ worker processes (work horses forked per job) on the
shared Redis (DB 13, flushed), a redis-server of our own on another port for the restart, a real HTTP proxy
of ours in front of Label Studio that drops connections, and ``mmal serve`` (uvicorn) as a subprocess.

- a work horse SIGKILLed in the middle of a training leaves the previous model serving, no partial model is
  visible, RQ marks the attempt failed and retries it, and the retry publishes the next version; with no retry
  left the job fails, ``/status`` says "interrupted", and the next job takes over the dead job's lock at once;
- a process SIGKILLed at random moments while saving model versions never leaves a partial version visible;
- Redis stopped and started again: ``/predict`` answers throughout, ``/webhook`` is a clean 503 while it is
  down, and the server reconnects by itself;
- Label Studio unreachable in the middle of a job: the job fails, is retried with exponential backoff, and
  once Label Studio is back the project is trained on every label, none lost;
- duplicate and out-of-order webhooks: one training per new fact, and nothing at all for a copy of one.

``MMAL_SOAK=1`` adds the slow case (about 3 min): the whole worker (parent, scheduler, work horse) SIGKILLed;
RQ notices the abandoned job only when its heartbeat expires (90 s) at a worker's next maintenance pass.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry

from connectors.labelstudio import LabelStudioConnector
from ml_server import jobs
from tests.conftest import annotate, wait_for
from ml_server.app import create_app
from ml_server.demo import choice_annotation, create_emoji_project, emoji_tasks
from ml_server.ls_process import free_port
from ml_server.model_store import ModelStore
from ml_server.settings import Settings
from tests.test_ml_server_protocol import labelled_emoji_project, make_settings, train_version

# DB 13 of the shared Redis; MMAL_RELIABILITY_REDIS_URL points a long soak run at a redis-server of its own
REDIS_URL = os.environ.get("MMAL_RELIABILITY_REDIS_URL", "redis://127.0.0.1:6379/13")
REPO = Path(__file__).resolve().parents[1]


# --- fixtures and helpers ---------------------------------------------------------------------------------------


def worker_env(tmp_path: Path, ls_url: str, token: str, **extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("MMAL_", "BASIC_AUTH_", "LABEL_STUDIO_"))}
    e.update({"REDIS_URL": REDIS_URL, "MODEL_DIR": str(tmp_path / "models"), "LABEL_STUDIO_URL": ls_url,
              "LABEL_STUDIO_API_KEY": token, "MMAL_MIN_ANNOTATIONS": "6", "MMAL_EPOCHS": "5",
              "MMAL_PATIENCE": "100000", "MMAL_FEATURIZER_PARAMS": '{"image_pixels": {"size": 16}}',
              "MMAL_STRATEGY": "margin", "MMAL_JOB_RETRIES": "0", "MMAL_DIAGNOSTICS_SAMPLE": "0",
              "PYTHONPATH": str(REPO)})
    e.update(extra)
    return e


def settings_of(env: dict[str, str], **changes) -> Settings:
    old = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        return Settings().model_copy(update=changes)
    finally:
        os.environ.clear()
        os.environ.update(old)


class Worker:
    """``run_worker()`` in a subprocess (fork worker with RQ's scheduler), output in a file."""

    def __init__(self, env: dict[str, str], log: Path, burst: bool = False) -> None:
        self.log = log
        code = f"from ml_server.worker import run_worker; run_worker(burst={burst!r})"
        self.proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=str(REPO),
                                     stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)

    def horse(self) -> int | None:
        """The work horse: the child that RQ put in a process group of its own (the scheduler is not)."""
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid, ppid, pgrp = int(entry.name), int(fields[1]), int(fields[2])
            if ppid == self.proc.pid and pgrp == pid:
                return pid
        return None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.output()


def visible_versions(store: ModelStore, pid: int) -> set[str]:
    vdir = store.project_dir(pid) / "versions"
    return {d.name for d in vdir.iterdir() if not d.name.startswith(".")} if vdir.is_dir() else set()


def predict_versions(settings: Settings, lsc: LabelStudioConnector, project) -> set[str]:
    with TestClient(create_app(settings)) as client:
        tasks = lsc.pull_tasks(project.project_id)[:4]
        body = {"tasks": tasks, "project": f"{project.project_id}.0", "label_config": project.config}
        r = client.post("/predict", json=body)
        assert r.status_code == 200, r.text
        return {item["model_version"] for item in r.json()["results"]}


def status_of(settings: Settings, pid: int) -> dict:
    with TestClient(create_app(settings)) as client:
        (entry,) = [p for p in client.get("/status").json()["projects"] if p["project"] == pid]
        return entry


# --- a killed work horse -------------------------------------------------------------------------------------------
def test_work_horse_killed_mid_training_previous_model_serves_job_retried(labelstudio, lsc, rconn, tmp_path):
    env = worker_env(tmp_path, labelstudio.url, labelstudio.token)
    s = settings_of(env)
    store = ModelStore(s.model_dir)
    project = create_emoji_project(lsc, "fault: horse killed", per_class=4, seed=31)
    pid = project.project_id
    annotate(lsc, project, project.task_ids[:8])
    worker = Worker(env, tmp_path / "worker.log")
    try:
        jobs.request_training(rconn, s, pid, reason="first")
        wait_for(lambda: jobs.training_count(rconn, pid) == 1, what="the first training", timeout=180)
        v1 = store.current_version(pid)
        assert v1 and lsc.get_project(pid)["model_version"] == v1

        # a training that would run for many minutes (project extra params: the SGD recipe, which has epochs;
        # the default probe recipe on pretrained features finishes in seconds), retried once after 3 s
        jobs.save_project_setup(rconn, pid, {"extra_params": {"recipe": "sgd", "epochs": 100000}})
        retrying = s.model_copy(update={"job_retries": 1, "job_retry_interval": 3})
        job_id = jobs.request_training(rconn, retrying, pid, reason="doomed")["job_id"]
        wait_for(lambda: jobs.get_status(rconn, pid).get("state") == "training"
                 and jobs.get_status(rconn, pid).get("job_id") == job_id, what="the slow job to start")
        time.sleep(3)  # well into train_model
        horse = wait_for(worker.horse, what="the work horse")
        jobs.save_project_setup(rconn, pid, {"extra_params": {"epochs": 5}})  # the retry will be quick
        os.kill(horse, signal.SIGKILL)

        # RQ's worker sees its horse die: the attempt failed, the retry is scheduled (backoff 3 s)
        job = Job.fetch(job_id, connection=rconn)
        wait_for(lambda: job.get_status(refresh=True) == JobStatus.SCHEDULED, what="the retry to be scheduled")
        job.refresh()
        assert job.retries_left == 0
        # meanwhile the previous model serves, everywhere; no partial version is visible
        assert store.current_version(pid) == v1 and store.list_versions(pid) == [v1]
        assert visible_versions(store, pid) == {v1}
        assert lsc.get_project(pid)["model_version"] == v1
        assert predict_versions(s, lsc, project) == {v1}
        entry = status_of(s, pid)
        assert entry["model_version"] == v1 and entry["training"]["state"] == "interrupted"
        assert job_id in entry["training"]["last_error"] and "scheduled" in entry["training"]["last_error"]

        # the retry (same job id, so it holds the dead attempt's lock) trains and publishes v2
        wait_for(lambda: jobs.training_count(rconn, pid) == 2, what="the retried training", timeout=180)
        v2 = store.current_version(pid)
        assert v2 not in (None, v1) and lsc.get_project(pid)["model_version"] == v2
        assert job.get_status(refresh=True) == JobStatus.FINISHED
        assert jobs.get_status(rconn, pid)["state"] == "idle"
        assert jobs.training_state(rconn, pid) == {"pending": None, "running": None, "dirty": False}
        assert predict_versions(s, lsc, project) == {v2}

        # killed again with no retry left: the job fails for good, and the next one does not wait for
        # the dead job's lock to expire (MMAL_JOB_TIMEOUT + 60 s) but takes it over
        jobs.save_project_setup(rconn, pid, {"extra_params": {"epochs": 100000}})
        dead_id = jobs.request_training(rconn, s, pid, reason="doomed again")["job_id"]
        wait_for(lambda: jobs.get_status(rconn, pid).get("job_id") == dead_id
                 and jobs.get_status(rconn, pid).get("state") == "training", what="the second slow job")
        time.sleep(2)
        jobs.save_project_setup(rconn, pid, {"extra_params": {"epochs": 5}})
        os.kill(wait_for(worker.horse, what="the work horse"), signal.SIGKILL)
        dead = Job.fetch(dead_id, connection=rconn)
        wait_for(lambda: dead.get_status(refresh=True) == JobStatus.FAILED, what="the job to fail")
        assert dead_id in FailedJobRegistry(s.queue, connection=rconn).get_job_ids()
        assert "Work-horse terminated unexpectedly" in (dead.latest_result().exc_string or "")
        assert jobs.training_state(rconn, pid)["running"] == dead_id  # its lock outlived it
        assert status_of(s, pid)["training"]["state"] == "interrupted"
        assert store.current_version(pid) == v2 and visible_versions(store, pid) == {v1, v2}
        jobs.request_training(rconn, s, pid, reason="after the crash")
        wait_for(lambda: jobs.training_count(rconn, pid) == 3, what="the training after the crash", timeout=180)
        v3 = store.current_version(pid)
        assert v3 not in (v1, v2) and lsc.get_project(pid)["model_version"] == v3
        assert jobs.training_state(rconn, pid) == {"pending": None, "running": None, "dirty": False}
        assert status_of(s, pid)["training"]["state"] == "idle"
    finally:
        out = worker.stop()
    assert out.count("Work-horse terminated unexpectedly") == 2 and "(signal 9)" in out
    assert "took over the training lock of job " + dead_id in out


# --- killed while saving ---------------------------------------------------------------------------------------------
_SAVER = r"""
import sys, numpy as np
from backend.models.trainer import TrainedFusionModel
from ml_server.model_store import ModelStore
model = TrainedFusionModel.load(sys.argv[1])
store = ModelStore(sys.argv[2])
print("ready", flush=True)
i = 0
while True:
    version = f"mmal-{i + 1}-crash-{i:05d}"
    store.save(3, version, model, {"i": i}, {7: ("class0", 0.5)}, np.arange(50, dtype=float))
    store.set_current(3, version)
    i += 1
"""


def test_killed_while_saving_versions_never_leaves_a_partial_one_visible(problem, tmp_path):
    """SIGKILL at random moments of a loop that saves and switches versions: whatever survives is complete."""
    model, _, _ = problem
    model.save(tmp_path / "model.pt")
    rng = random.Random(8)
    for attempt in range(4):
        root = tmp_path / f"store-{attempt}"
        proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(tmp_path / "model.pt"), str(root)],
                                cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.2, 1.0))
        proc.kill()
        proc.wait(timeout=10)
        store = ModelStore(root)
        versions = store.list_versions(3)
        assert versions, "nothing was saved before the kill"
        for v in versions:  # every visible version loads completely
            loaded = store.load(3, v)
            assert loaded.meta["version"] == v and loaded.ranking == {7: ("class0", 0.5)}
            assert loaded.calibration is not None and len(loaded.calibration) == 50
        current = store.current_version(3)
        assert current in versions and store.get_current(3).version == current
        assert visible_versions(store, 3) == set(versions)  # leftovers of the killed save are hidden


# --- Redis restarted ------------------------------------------------------------------------------------------------
class RedisServer:
    """A redis-server of our own (never the shared one): no persistence, stopped and started at will."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port, self.workdir, self.proc = port, workdir, None

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.workdir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        conn = redis.Redis(port=self.port)
        wait_for(lambda: _pings(conn), timeout=20, what="redis-server")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def _pings(conn: redis.Redis) -> bool:
    try:
        return bool(conn.ping())
    except redis.RedisError:
        return False


def test_redis_restart_predict_keeps_answering_and_the_server_reconnects(tmp_path):
    if subprocess.run(["which", "redis-server"], capture_output=True).returncode != 0:
        pytest.skip("redis-server is not installed")
    rport, port = free_port(), free_port()
    own = RedisServer(rport, tmp_path)
    own.start()
    config, tasks, et = labelled_emoji_project()
    s = make_settings(tmp_path, redis_url=f"redis://127.0.0.1:{rport}/0")
    version = train_version(s, 1, config, [dict(t, project=1) for t in tasks])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMAL_", "BASIC_AUTH_", "LABEL_STUDIO_"))}
    env.update({"REDIS_URL": s.redis_url, "MODEL_DIR": str(s.model_dir), "PYTHONPATH": str(REPO),
                "MMAL_FEATURIZER_PARAMS": '{"image_pixels": {"size": 16}}'})
    server = subprocess.Popen([sys.executable, "-c", f"from ml_server.app import serve; serve('127.0.0.1', {port}, "
                               "log_level='warning')"], env=env, cwd=str(REPO),
                              stdout=open(tmp_path / "server.log", "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    new_task = dict(emoji_tasks(1, seed=77).tasks[0], id=9999)  # featurized on the fly: needs the fetch setup
    body = {"tasks": [dict(tasks[0], project=1), dict(tasks[-1], project=1), new_task], "project": "1.1",
            "label_config": config}
    hook = {"action": "START_TRAINING", "project": {"id": 1}}
    answers: list[int | str] = []
    stop = threading.Event()

    def predict_forever() -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                try:
                    r = http.post(url + "/predict", json=body)
                    ok = r.status_code == 200 and {i["model_version"] for i in r.json()["results"]} == {version}
                    answers.append(200 if ok else f"{r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as exc:
                    answers.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.02)

    try:
        wait_for(lambda: _healthy(url), timeout=60, what="mmal serve")
        assert httpx.post(url + "/webhook", json=hook).json()["status"] == "queued"
        loop = threading.Thread(target=predict_forever, daemon=True)
        loop.start()
        wait_for(lambda: len(answers) >= 5, what="predictions before the outage")

        own.stop()  # Redis goes away
        n_before = len(answers)
        wait_for(lambda: len(answers) >= n_before + 10, what="predictions during the outage")
        r = httpx.post(url + "/webhook", json=hook)
        assert r.status_code == 503 and r.json()["detail"].startswith("training queue unavailable")
        st = httpx.get(url + "/status")
        assert st.status_code == 200 and st.json()["queue"]["depth"] is None
        assert st.json()["queue"]["error"].startswith("redis unavailable")
        assert httpx.get(url + "/health").status_code == 200
        during = len(answers) - n_before

        own.start()  # back, empty (no persistence): the server reconnects on its own
        r = httpx.post(url + "/webhook", json=hook)
        assert r.status_code == 200 and r.json()["status"] == "queued"
        assert httpx.get(url + "/status").json()["queue"]["depth"] == 1
        n_after = len(answers)
        wait_for(lambda: len(answers) >= n_after + 5, what="predictions after the outage")
    finally:
        stop.set()
        server.terminate()
        server.wait(timeout=20)
        own.stop()
    errors = [a for a in answers if a != 200]
    assert not errors, errors[:5]
    print(f"\n/predict during the Redis outage: {during} answers, {len(answers)} in all, 0 errors")


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


# --- Label Studio unreachable during a job ---------------------------------------------------------------------------
class FlakyProxy:
    """A real HTTP reverse proxy in front of Label Studio that can go down.

    Down, it reads each request and closes the connection without an answer (what a crashed or
    restarting server looks like to a client). ``down_from`` takes it down at the first request whose
    path starts with that prefix, so a job can lose Label Studio halfway through. ``events`` records
    (time, method, path, "ok" | "dropped").
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.down = False
        self.down_from: str | None = None
        self.events: list[tuple[float, str, str, str]] = []
        self.http = httpx.Client(base_url=upstream, timeout=60, trust_env=False)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.down_from and self.path.startswith(proxy.down_from):
                    proxy.down, proxy.down_from = True, None
                if proxy.down:
                    proxy.events.append((time.monotonic(), self.command, self.path, "dropped"))
                    self.close_connection = True
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection", "content-length", "transfer-encoding")}
                r = proxy.http.request(self.command, self.path, headers=headers, content=body)
                proxy.events.append((time.monotonic(), self.command, self.path, "ok"))
                data = r.content
                self.send_response(r.status_code)
                for k, v in r.headers.items():
                    if k.lower() not in ("connection", "content-length", "transfer-encoding", "content-encoding"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.http.close()


def webhook(action: str, ann: dict, pid: int) -> dict:
    return {"action": action, "annotation": ann, "project": {"id": pid}, "task": {"id": ann.get("task")}}


def annotations_of(lsc: LabelStudioConnector, pid: int) -> dict[int, dict]:
    """annotation id -> the annotation as Label Studio holds it (id, updated_at, result, task, ...)."""
    return {a["id"]: dict(a, task=t["id"]) for t in lsc.pull_tasks(pid) for a in t["annotations"]}


class AttemptLog:
    """Polls the project's status record and keeps each attempt's (job id, started_at, failed_at)."""

    def __init__(self, conn: redis.Redis, pid: int) -> None:
        self.attempts: dict[tuple[str, float], float | None] = {}
        self._stop = threading.Event()

        def poll() -> None:
            while not self._stop.is_set():
                st = jobs.get_status(conn, pid)
                if st.get("job_id") and st.get("started_at"):
                    k = (st["job_id"], st["started_at"])
                    failed = st.get("failed_at")
                    self.attempts[k] = failed if failed and failed >= st["started_at"] else self.attempts.get(k)
                time.sleep(0.02)

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()

    def of(self, job_id: str) -> list[tuple[float, float | None]]:
        self._stop.set()
        self._thread.join(timeout=5)
        return sorted((start, failed) for (jid, start), failed in self.attempts.items() if jid == job_id)


def retry_delays(worker_log: str, job_id: str) -> list[float]:
    """Seconds between each failure of ``job_id`` and the retry time RQ scheduled (from the worker log)."""
    from datetime import datetime

    delays = []
    for line in worker_log.splitlines():
        m = re.match(r"^(\S+ \S+) INFO rq.job: Job " + re.escape(job_id) + r": scheduled for retry at (\S+ \S+),", line)
        if m:
            logged = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").astimezone()
            delays.append((datetime.fromisoformat(m.group(2)) - logged).total_seconds())
    return delays


def test_label_studio_unreachable_mid_job_retried_with_backoff_nothing_lost(labelstudio, lsc, rconn, tmp_path):
    proxy = FlakyProxy(labelstudio.url)
    env = worker_env(tmp_path, proxy.url, labelstudio.token)
    s = settings_of(env, job_retries=4, job_retry_interval=1)  # retries after 1, 2, 4, 8 s
    store = ModelStore(s.model_dir)
    project = create_emoji_project(lsc, "fault: label studio down", per_class=4, seed=41)
    pid = project.project_id
    annotate(lsc, project, project.task_ids[:8])
    worker = Worker(env, tmp_path / "worker.log")
    log = AttemptLog(rconn, pid)
    try:
        with TestClient(create_app(s)) as client:
            # Label Studio vanishes after the job pulled the tasks and trained: at its first bulk import
            proxy.down_from = f"/api/projects/{pid}/import/predictions"
            job_id = jobs.request_training(rconn, s, pid, reason="first")["job_id"]
            job = Job.fetch(job_id, connection=rconn)
            wait_for(lambda: proxy.down and job.get_status(refresh=True) == JobStatus.SCHEDULED, timeout=180,
                     what="the first attempt to fail")
            status = jobs.get_status(rconn, pid)
            assert status["state"] == "failed" and "importing" in status["last_error"]
            assert "Server disconnected" in status["last_error"]
            assert store.current_version(pid) is None and visible_versions(store, pid) == set()  # undone

            # annotators keep working in Label Studio (directly, not through the proxy); their webhooks queue
            # one follow-up job while the first one waits for its retry
            annotate(lsc, project, project.task_ids[8:10])
            anns = annotations_of(lsc, pid)
            outcomes = [client.post("/webhook", json=webhook("ANNOTATION_CREATED", a, pid)).json()["status"]
                        for a in sorted(anns.values(), key=lambda a: a["id"])[-2:]]
            assert outcomes == ["queued", "coalesced"]

            # a second attempt fails too (Label Studio still down); then Label Studio comes back
            wait_for(lambda: job.refresh() or job.retries_left <= 2, timeout=60, what="the second attempt")
            proxy.down = False
            wait_for(lambda: job.get_status(refresh=True) == JobStatus.FINISHED, timeout=180,
                     what="the retried job to finish")
            wait_for(lambda: not jobs.training_state(rconn, pid)["pending"]
                     and not jobs.training_state(rconn, pid)["running"]
                     and jobs.get_status(rconn, pid).get("state") == "idle", timeout=180, what="the follow-up")
    finally:
        out = worker.stop()
        proxy.close()
    # backoff: each attempt of the job started no earlier than its interval after the previous one failed
    attempts = log.of(job_id)
    assert job.retry_intervals == [1, 2, 4, 8]
    assert len(attempts) == 3 and attempts[0][1] and attempts[1][1] and attempts[2][1] is None, attempts
    # RQ files a retry under its due time truncated to whole seconds (ScheduledJobRegistry.schedule uses
    # calendar.timegm), so a retry due 1 s after a failure at x.8 s may start at x+1.0 s: the bound is
    # floor(failed + interval), not failed + interval (CI once saw a 0.30 s gap for the 1 s interval)
    gaps = [attempts[k + 1][0] - attempts[k][1] for k in range(2)]
    for k, interval in enumerate([1, 2]):
        assert attempts[k + 1][0] >= math.floor(attempts[k][1] + interval) - 0.05, (k, gaps, attempts)
    delays = retry_delays(out, job_id)  # as RQ scheduled them (the worker may be busy with another job longer)
    assert [round(d) for d in delays] == [1, 2], delays
    # nothing lost: the last training saw all 10 labels, and every task has one prediction of the serving
    # version, which Label Studio also serves; no half-published version is left anywhere
    last = jobs.get_status(rconn, pid)["last_training"]
    assert last["n_labeled"] == 10, out[-3000:]
    version = store.current_version(pid)
    assert version and lsc.get_project(pid)["model_version"] == version
    tasks = lsc.pull_tasks(pid)
    assert all(sum(p["model_version"] == version for p in t["predictions"]) == 1 for t in tasks)
    assert set(lsc.model_versions(pid)) <= set(store.list_versions(pid)) == visible_versions(store, pid)
    dropped = sum(1 for e in proxy.events if e[3] == "dropped")
    print(f"\nLabel Studio down: {dropped} requests dropped; {len(attempts)} attempts; retries scheduled "
          f"{[round(d, 2) for d in delays]} s after each failure, started {[round(g, 2) for g in gaps]} s after it")


# --- duplicate and out-of-order webhooks -----------------------------------------------------------------------------
def test_duplicate_and_out_of_order_webhooks_change_nothing_twice(labelstudio, lsc, rconn, tmp_path):
    env = worker_env(tmp_path, labelstudio.url, labelstudio.token)
    s = settings_of(env)
    store = ModelStore(s.model_dir)
    project = create_emoji_project(lsc, "fault: webhook replays", per_class=4, seed=51)
    pid = project.project_id
    annotate(lsc, project, project.task_ids[:7])
    rng = random.Random(5)

    def deliver(client, bodies) -> list[str]:
        return [client.post("/webhook", json=b).json()["status"] for b in bodies]

    def train() -> None:
        before = jobs.training_count(rconn, pid)
        Worker(env, tmp_path / f"burst-{before}.log", burst=True).proc.wait(timeout=180)
        assert jobs.training_count(rconn, pid) == before + 1

    with TestClient(create_app(s)) as client:
        created = {i: webhook("ANNOTATION_CREATED", a, pid) for i, a in annotations_of(lsc, pid).items()}
        burst = list(created.values()) * 3
        rng.shuffle(burst)  # every event three times, in random order
        statuses = deliver(client, burst)
        assert statuses.count("queued") == 1 and statuses.count("coalesced") == len(burst) - 1
        train()
        v1 = store.current_version(pid)
        predictions = {t["id"]: len(t["predictions"]) for t in lsc.pull_tasks(pid)}

        replay = list(created.values()) * 2
        rng.shuffle(replay)  # the same events again, after the training: nothing to do
        assert set(deliver(client, replay)) == {"ignored"}
        r = client.post("/webhook", json=replay[0]).json()
        assert r["reason"] == "duplicate or out-of-order event: already seen"
        assert jobs.queue_depth(rconn, s) == 0 and jobs.training_state(rconn, pid)["pending"] is None

        # an update (a new fact) trains once; the older copy of the same annotation, arriving late, does not
        ann_id = min(created)
        task_id = created[ann_id]["annotation"]["task"]
        other = next(c for c in project.class_names if c != project.truth[task_id])
        lsc.sdk.annotations.update(id=ann_id, result=choice_annotation(project.control, project.to_name, other))
        updated = webhook("ANNOTATION_UPDATED", annotations_of(lsc, pid)[ann_id], pid)
        assert deliver(client, [updated, created[ann_id], updated]) == ["queued", "coalesced", "coalesced"]
        train()
        assert deliver(client, [created[ann_id], updated]) == ["ignored", "ignored"]

        # a deletion trains once; a repeated deletion and a late update of the deleted annotation do not
        gone = max(created)
        lsc.sdk.annotations.delete(id=gone)
        deleted = {"action": "ANNOTATION_DELETED", "annotation": {"id": gone}, "project": {"id": pid}}
        assert deliver(client, [deleted, deleted]) == ["queued", "coalesced"]
        train()
        assert deliver(client, [deleted, created[gone], updated]) == ["ignored"] * 3
        assert jobs.queue_depth(rconn, s) == 0

        # START_TRAINING is an explicit request: never deduplicated
        assert client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": pid}}).json()["status"] \
            == "queued"
        rconn.delete(f"rq:queue:{s.queue}")
    assert jobs.training_count(rconn, pid) == 3  # one per fact: the labels, the update, the deletion
    assert jobs.get_status(rconn, pid)["last_training"]["n_labeled"] == 6
    assert store.current_version(pid) != v1 and lsc.get_project(pid)["model_version"] == store.current_version(pid)
    assert all(n >= 1 for n in predictions.values())


# --- the whole worker killed (slow: RQ notices an abandoned job when its heartbeat expires) --------------------------
@pytest.mark.skipif(os.environ.get("MMAL_SOAK") != "1", reason="soak: set MMAL_SOAK=1 (about 3 minutes)")
def test_whole_worker_killed_job_is_abandoned_then_retried(labelstudio, lsc, rconn, tmp_path):
    env = worker_env(tmp_path, labelstudio.url, labelstudio.token)
    s = settings_of(env, job_retries=1, job_retry_interval=1)
    store = ModelStore(s.model_dir)
    project = create_emoji_project(lsc, "fault: worker killed", per_class=4, seed=61)
    pid = project.project_id
    annotate(lsc, project, project.task_ids[:8])
    jobs.save_project_setup(rconn, pid, {"extra_params": {"epochs": 100000}})
    job_id = jobs.request_training(rconn, s, pid, reason="doomed")["job_id"]
    worker = Worker(env, tmp_path / "worker.log")
    wait_for(lambda: jobs.get_status(rconn, pid).get("state") == "training", what="the slow job")
    time.sleep(2)
    horse = wait_for(worker.horse, what="the work horse")
    jobs.save_project_setup(rconn, pid, {"extra_params": {"epochs": 5}})
    t_kill = time.monotonic()
    os.killpg(worker.proc.pid, signal.SIGKILL)  # the worker and its scheduler process, like a lost machine
    os.kill(horse, signal.SIGKILL)  # and the work horse (RQ puts it in a process group of its own)
    worker.proc.wait(timeout=10)
    assert store.current_version(pid) is None and visible_versions(store, pid) == set()
    # a new worker finds the abandoned job once its heartbeat has expired, and retries it
    second = Worker(env, tmp_path / "worker2.log")
    try:
        try:
            wait_for(lambda: jobs.training_count(rconn, pid) == 1, timeout=400, interval=1,
                     what="the abandoned job to be retried and trained")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{second.output()[-6000:]}") from None
        recovered_after = time.monotonic() - t_kill
        assert Job.fetch(job_id, connection=rconn).get_status() == JobStatus.FINISHED
        assert store.current_version(pid) and lsc.get_project(pid)["model_version"] == store.current_version(pid)
    finally:
        out = second.stop()
    print(f"\nwhole worker SIGKILLed: retried and trained {recovered_after:.0f} s later\n{out[-1500:]}")
