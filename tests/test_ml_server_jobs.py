"""Training jobs with a real redis-server, real RQ worker processes and a real Label Studio 1.23.2.

- a burst of webhooks is one training; labels arriving during a training cause exactly one follow-up;
- with two workers, a job that finds the project busy defers (dirty flag) instead of training in parallel;
- a job that fails leaves the previous model serving (here, in Label Studio and in /predict);
- too few annotations: the job waits instead of training;
- a job waits for a burst of webhooks to settle, so annotations made meanwhile join that training.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from rq import Queue
from rq.job import Job

from connectors.labelstudio import LabelStudioConnector, LabelStudioError
from ml_server import jobs
from tests.conftest import annotate, settings_from_env as settings_from, wait_for
from ml_server.app import create_app
from ml_server.demo import create_emoji_project
from ml_server.model_store import ModelStore
from ml_server.training import build_version, make_fetcher, publish, publish_cold_start, pull_project_tasks

REDIS_URL = "redis://127.0.0.1:6379/14"
REPO = Path(__file__).resolve().parents[1]




@pytest.fixture()
def env(labelstudio, tmp_path, rconn):
    """The environment of server and workers (what docker-compose sets)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith(("MMAL_", "BASIC_AUTH_", "LABEL_STUDIO_"))}
    e.update({"REDIS_URL": REDIS_URL, "MODEL_DIR": str(tmp_path / "models"), "LABEL_STUDIO_URL": labelstudio.url,
              "LABEL_STUDIO_API_KEY": labelstudio.token, "MMAL_MIN_ANNOTATIONS": "6", "MMAL_EPOCHS": "8",
              "MMAL_PATIENCE": "5", "MMAL_FEATURIZER_PARAMS": '{"image_pixels": {"size": 16}}',
              "MMAL_STRATEGY": "margin", "MMAL_JOB_RETRIES": "0", "MMAL_TRAIN_DEBOUNCE": "0.5",
              "PYTHONPATH": str(REPO)})
    return e


def start_worker(env: dict, burst: bool = True, name: str | None = None) -> subprocess.Popen:
    code = f"from ml_server.worker import run_worker; run_worker(burst={burst!r}, name={name!r})"
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=str(REPO), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout: float = 180) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"worker did not finish in {timeout} s:\n{out[-4000:]}")
    return out


def webhook_body(project_id: int, action: str = "ANNOTATION_CREATED") -> dict:
    return {"action": action, "project": {"id": project_id}, "annotation": {"id": 1}, "task": {"id": 1}}


def predictions_of(lsc, project_id: int) -> dict[int, set[str]]:
    return {t["id"]: {p["model_version"] for p in t["predictions"]} for t in lsc.pull_tasks(project_id)}


def test_burst_is_one_training_and_labels_during_training_one_follow_up(lsc, env, rconn):
    s = settings_from(env)
    project = create_emoji_project(lsc, "jobs coalescing", per_class=6, seed=2)
    annotate(lsc, project, project.task_ids[:8])
    pid = project.project_id
    with TestClient(create_app(s)) as client:
        statuses = [client.post("/webhook", json=webhook_body(pid)).json()["status"] for _ in range(50)]
        assert statuses.count("queued") == 1
        assert Queue(s.queue, connection=rconn).count == 1
        out = finish(start_worker(env))
        assert jobs.training_count(rconn, pid) == 1, out[-3000:]
        v1 = ModelStore(s.model_dir).current_version(pid)
        assert v1 and lsc.get_project(pid)["model_version"] == v1
        assert all(v1 in versions for versions in predictions_of(lsc, pid).values())

        # labels arriving while a job trains: exactly one follow-up job, whatever their number
        annotate(lsc, project, project.task_ids[8:10])
        assert client.post("/webhook", json=webhook_body(pid)).json()["status"] == "queued"
        worker = start_worker(env)
        wait_for(lambda: jobs.training_state(rconn, pid)["running"], what="the job to start training")
        annotate(lsc, project, project.task_ids[10:12])
        during = [client.post("/webhook", json=webhook_body(pid, "ANNOTATION_UPDATED")).json()["status"]
                  for _ in range(20)]
        assert during.count("queued") == 1 and during.count("coalesced") == 19
        out = finish(worker)
        assert jobs.training_count(rconn, pid) == 3, out[-3000:]
        state = jobs.training_state(rconn, pid)
        assert state == {"pending": None, "running": None, "dirty": False}
        last = jobs.get_status(rconn, pid)["last_training"]
        assert last["n_labeled"] == 12  # the follow-up saw the labels made during the previous training
        store = ModelStore(s.model_dir)
        v3 = store.current_version(pid)
        assert lsc.get_project(pid)["model_version"] == v3 != v1
        assert all(v3 in versions for versions in predictions_of(lsc, pid).values())
        # housekeeping: the predictions of only the last MMAL_KEEP_PREDICTION_VERSIONS (2) versions remain
        assert set(lsc.model_versions(pid)) == set(store.list_versions(pid)[-2:])
        assert v1 not in lsc.model_versions(pid)


def test_settle_waits_for_quiet_and_at_most_the_max(rconn):
    now = time.time()
    jobs.note_activity(rconn, 424242, now - 10)
    assert jobs.settle(rconn, 424242, 2.0, 30.0) < 0.5  # quiet for 10 s already: no sleep
    assert jobs.settle(rconn, 424243, 2.0, 30.0) < 0.5  # never any webhook
    jobs.note_activity(rconn, 424242, now + 3600)  # "active" all along: only the cap ends the wait
    waited = jobs.settle(rconn, 424242, 2.0, 0.3)
    assert 0.3 <= waited < 5
    assert jobs.settle(rconn, 424242, 0.0, 30.0) == 0.0  # debounce off


def test_annotations_during_the_debounce_join_the_training(lsc, env, rconn):
    """Label Studio delivers one webhook per annotation while an annotator works through a burst; the job
    started by the first waits until they stop (MMAL_TRAIN_DEBOUNCE) and then trains once on all of them."""
    env = dict(env, MMAL_TRAIN_DEBOUNCE="10")  # generous: each annotation below takes a Label Studio call (seconds on a loaded box)
    s = settings_from(env)
    project = create_emoji_project(lsc, "jobs debounce", per_class=6, seed=4)
    pid = project.project_id
    annotate(lsc, project, project.task_ids[:6])
    with TestClient(create_app(s)) as client:
        assert client.post("/webhook", json=webhook_body(pid)).json()["status"] == "queued"
        worker = start_worker(env)
        wait_for(lambda: Queue(s.queue, connection=rconn).count == 0, what="the worker to take the job")
        statuses = []
        for k, tid in enumerate(project.task_ids[6:12]):  # the burst goes on while the job is waiting
            annotate(lsc, project, [tid])
            body = dict(webhook_body(pid), annotation={"id": 10_000 + k})
            statuses.append(client.post("/webhook", json=body).json()["status"])
            time.sleep(0.3)
        out = finish(worker)
    assert statuses == ["coalesced"] * 6, statuses
    assert jobs.training_count(rconn, pid) == 1, out[-3000:]
    assert jobs.get_status(rconn, pid)["last_training"]["n_labeled"] == 12
    assert "waited" in out and "for the annotations to settle" in out


def test_two_workers_never_train_one_project_in_parallel(lsc, env, rconn):
    s = settings_from(env)
    project = create_emoji_project(lsc, "jobs two workers", per_class=5, seed=3)
    annotate(lsc, project, project.task_ids[:7])
    pid = project.project_id
    with TestClient(create_app(s)) as client:
        first = client.post("/webhook", json=webhook_body(pid)).json()
        w1 = start_worker(env, name="w1")
        wait_for(lambda: jobs.training_state(rconn, pid)["running"] == first["job_id"], what="job A running")
        second = client.post("/webhook", json=webhook_body(pid)).json()
        assert second["status"] == "queued"
        w2 = start_worker(env, name="w2")
        out2 = finish(w2)
        job_b = Job.fetch(second["job_id"], connection=rconn)
        assert job_b.return_value() == {"status": "deferred", "project": pid, "job_id": second["job_id"]}, out2[-2000:]
        out1 = finish(w1)
        assert jobs.training_count(rconn, pid) == 2, out1[-3000:]  # A and the one follow-up, not B
        assert jobs.training_state(rconn, pid) == {"pending": None, "running": None, "dirty": False}


def test_too_few_annotations_waits(lsc, env, rconn):
    s = settings_from(env)
    project = create_emoji_project(lsc, "jobs waiting", per_class=3, seed=4)
    annotate(lsc, project, project.task_ids[:2])
    pid = project.project_id
    jobs.request_training(rconn, s, pid, reason="test")
    finish(start_worker(env))
    status = jobs.get_status(rconn, pid)
    assert status["state"] == "waiting_for_annotations" and status["n_labeled"] == 2
    assert status["min_annotations"] == 6 and jobs.training_count(rconn, pid) == 0
    assert ModelStore(s.model_dir).current_version(pid) is None


def test_a_failing_job_leaves_the_previous_model_serving(lsc, env, rconn):
    s = settings_from(env)
    project = create_emoji_project(lsc, "jobs failure", per_class=4, seed=5)
    annotate(lsc, project, project.task_ids[:7])
    pid = project.project_id
    jobs.request_training(rconn, s, pid, reason="first")
    finish(start_worker(env))
    store = ModelStore(s.model_dir)
    v1 = store.current_version(pid)
    assert v1 is not None and jobs.training_count(rconn, pid) == 1

    # the next job fails (a strategy parameter the installed strategy rejects)
    bad_env = dict(env, MMAL_STRATEGY="underrelied_uncertainty", MMAL_STRATEGY_PARAMS='{"uncertainty": "bogus"}')
    annotate(lsc, project, project.task_ids[7:9])
    failed = jobs.request_training(rconn, s, pid, reason="doomed")
    finish(start_worker(bad_env))
    job = Job.fetch(failed["job_id"], connection=rconn)
    assert job.get_status(refresh=True) == "failed"
    status = jobs.get_status(rconn, pid)
    assert status["state"] == "failed" and "uncertainty" in status["last_error"]
    assert jobs.training_state(rconn, pid) == {"pending": None, "running": None, "dirty": False}
    assert store.current_version(pid) == v1 and store.list_versions(pid) == [v1]
    assert lsc.get_project(pid)["model_version"] == v1
    with TestClient(create_app(s)) as client:
        tasks = lsc.pull_tasks(pid)[:3]
        body = {"tasks": tasks, "project": f"{pid}.0", "label_config": project.config}
        assert {i["model_version"] for i in client.post("/predict", json=body).json()["results"]} == {v1}

    # a failure while publishing (Label Studio refuses the token) also keeps v1 and removes the half-made version
    tasks = lsc.pull_tasks(pid)
    built = build_version(pid, tasks, project.config, s, store, make_fetcher(s, lsc.url, lsc))
    assert built.version in store.list_versions(pid)
    bad_ls = LabelStudioConnector(lsc.url, "not-a-valid-token")
    with pytest.raises(LabelStudioError):
        publish(bad_ls, store, pid, built, s)
    assert store.current_version(pid) == v1 and store.list_versions(pid) == [v1]
    assert lsc.get_project(pid)["model_version"] == v1

    # and the project recovers with the next good job
    jobs.request_training(rconn, s, pid, reason="recover")
    finish(start_worker(env))
    v2 = store.current_version(pid)
    assert v2 not in (None, v1) and lsc.get_project(pid)["model_version"] == v2
    assert jobs.get_status(rconn, pid)["state"] == "idle"


def test_only_a_waiting_job_for_changed_labels_supersedes_a_publication(env, rconn):
    """``labels_changed_since``: a queued training for an annotation supersedes; one for imported tasks
    (it relies on every task holding the serving version's prediction) and none at all do not."""
    s = settings_from(env)
    assert not jobs.labels_changed_since(rconn, 41)
    jobs.request_training(rconn, s, 41, reason="TASKS_CREATED")
    assert not jobs.labels_changed_since(rconn, 41)
    jobs.request_training(rconn, s, 42, reason="ANNOTATION_CREATED")
    assert jobs.labels_changed_since(rconn, 42)
    Queue(s.queue, connection=rconn).empty()  # the job is gone: nothing waits any more
    assert not jobs.labels_changed_since(rconn, 42)


def test_a_superseded_publication_keeps_the_head_and_leaves_the_tail(lsc, env, rconn):
    """Labels changing while the tail of a ranking is pushed stop the push after the current chunk: the
    head serves, the waiting training publishes everything anew. Real Label Studio, real cold start."""
    s = settings_from(env).model_copy(update={"publish_head": 4, "prediction_chunk": 5})
    project = create_emoji_project(lsc, "superseded publication", per_class=6, seed=5)
    pid = project.project_id
    store = ModelStore(s.model_dir)
    tasks, _ = pull_project_tasks(lsc, store, pid)
    calls = []

    def superseded() -> bool:  # labels change after the first chunk of the tail went out
        calls.append(1)
        return len(calls) > 1

    config = lsc.get_project(pid)["label_config"]
    with make_fetcher(s, None, lsc) as fetcher:
        out = publish_cold_start(lsc, store, pid, tasks, config, s, fetcher, superseded=superseded)
    assert out["status"] == "published" and out["timings"]["rest_skipped"] == len(tasks) - 4 - 5
    assert lsc.model_versions(pid).get(out["model_version"]) == 4 + 5
    assert lsc.get_project(pid)["model_version"] == out["model_version"]  # the head serves
    cold = store.cold_start(pid)
    assert cold.meta["partial"] and cold.meta["tasks"] is None
    # the next publication is not skipped as "unchanged": it pushes every task
    with make_fetcher(s, None, lsc) as fetcher:
        again = publish_cold_start(lsc, store, pid, tasks, config, s, fetcher)
    assert again["status"] == "published" and "rest_skipped" not in again["timings"]
    assert lsc.model_versions(pid).get(again["model_version"]) == len(tasks)
