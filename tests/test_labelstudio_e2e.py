"""End to end against a real Label Studio 1.23.2 (its own venv, .venv-ls, created if missing).

Label Studio, Redis, ``mmal serve`` (uvicorn, basic auth on) and an RQ worker all run as real processes.
The test plays the annotators: it creates an image + text project (non-default tag names and data keys)
with emoji tasks, registers the backend (Label Studio's webhook gets the auth header), retrieves
predictions, annotates through the API, and then checks that a training ran on its own (webhooks ->
queue -> worker), that every task has a prediction of the new version, that ``project.model_version`` is
that version, and that Label Studio's order by prediction score is the strategy's ranking.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis

from backend.data import Pool
from backend.strategies.base import get_strategy
from connectors.labelstudio import LabelStudioConnector
from ml_server import jobs
from ml_server.dataset import build_task_dataset, modality_specs
from ml_server.demo import choice_annotation, create_emoji_project, emoji_tasks
from ml_server.label_config import parse_label_config
from ml_server.ls_process import free_port, start_label_studio
from ml_server.model_store import ModelStore
from ml_server.predictor import UNTRAINED_VERSION
from ml_server.settings import Settings
from ml_server.training import make_fetcher

REDIS_URL = "redis://127.0.0.1:6379/14"
REPO = Path(__file__).resolve().parents[1]
AUTH = ("labelstudio", "e2e-backend-secret")
STRATEGY = "entropy"
NAMES = dict(image_name="picture", image_key="img", text_name="caption", text_key="desc", control="category")


@pytest.fixture(scope="module")
def labelstudio():
    ls = start_label_studio()  # creates .venv-ls (scripts/labelstudio_env.sh) when it is missing
    print(f"\nLabel Studio ready in {ls.startup_s:.1f} s at {ls.url}")
    yield ls
    ls.stop()


@pytest.fixture(scope="module")
def rconn():
    conn = redis.Redis.from_url(REDIS_URL)
    conn.flushdb()
    yield conn
    conn.flushdb()


@pytest.fixture(scope="module")
def stack(labelstudio, rconn, tmp_path_factory):
    """``mmal serve`` and one worker, configured like docker-compose does; yields (backend url, env)."""
    root = tmp_path_factory.mktemp("e2e")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MMAL_", "BASIC_AUTH_", "LABEL_STUDIO_"))}
    env.update({"REDIS_URL": REDIS_URL, "MODEL_DIR": str(root / "models"), "LABEL_STUDIO_URL": labelstudio.url,
                "LABEL_STUDIO_API_KEY": labelstudio.token, "BASIC_AUTH_USER": AUTH[0], "BASIC_AUTH_PASS": AUTH[1],
                "MMAL_STRATEGY": STRATEGY, "MMAL_MIN_ANNOTATIONS": "10", "MMAL_EPOCHS": "25", "MMAL_PATIENCE": "8",
                "MMAL_FEATURIZER_PARAMS": '{"image_pixels": {"size": 16}}', "MMAL_JOB_RETRIES": "0",
                "PYTHONPATH": str(REPO)})
    logs = root / "logs"
    logs.mkdir()
    server = subprocess.Popen([sys.executable, "-c", f"from ml_server.app import serve; serve('127.0.0.1', {port}, "
                               "log_level='warning')"], env=env, cwd=str(REPO),
                              stdout=open(logs / "server.log", "wb"), stderr=subprocess.STDOUT)
    worker = subprocess.Popen([sys.executable, "-c", "from ml_server.worker import run_worker; run_worker()"],
                              env=env, cwd=str(REPO), stdout=open(logs / "worker.log", "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        raise AssertionError("backend did not start:\n" + (logs / "server.log").read_text()[-3000:])
    yield url, env, logs
    for proc in (worker, server):
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_label_studio_end_to_end(labelstudio, rconn, stack):
    backend_url, env, logs = stack
    t_start = time.monotonic()
    settings = Settings(redis_url=REDIS_URL, model_dir=Path(env["MODEL_DIR"]))
    lsc = LabelStudioConnector(labelstudio.url, labelstudio.token)

    # a project with an image + text config, other tag names and data keys; 36 emoji tasks (+ 2 odd ones)
    project = create_emoji_project(lsc, "mmal e2e emoji", per_class=12, seed=7, **NAMES)
    pid = project.project_id
    extra = emoji_tasks(1, seed=11, image_key="img", text_key="desc").tasks[:2]
    extra[0]["data"]["desc"] = ""  # an image without text
    upload_pid = lsc.create_project("uploads", '<View><Image name="i" value="$image"/><Choices name="c" toName="i">'
                                    '<Choice value="x"/><Choice value="y"/></Choices></View>')
    # an image stored in Label Studio itself (/data/upload/...), fetched with the token
    png = base64.b64decode(emoji_tasks(1, seed=12).tasks[0]["data"]["image"].split(",", 1)[1])
    lsc.request("POST", f"/api/projects/{upload_pid}/import", files={"file": ("e2e.png", png, "image/png")})
    upload_path = lsc.pull_tasks(upload_pid)[0]["data"]["image"]
    assert upload_path.startswith("/data/upload/")
    extra[1]["data"]["img"] = upload_path
    extra_ids = lsc.import_tasks(pid, extra)
    all_ids = project.task_ids + extra_ids
    assert len(all_ids) >= 30

    # register the backend: Label Studio calls /health and /setup (with basic auth) and creates the webhook
    backend = lsc.register_backend(pid, backend_url, title="mmal-e2e", basic_auth=AUTH)
    assert backend["state"] == "CO", backend  # connected: /health and /setup answered with basic auth
    hooks = [h for h in lsc.webhooks(pid) if h["url"] == backend_url + "/webhook"]
    assert hooks and hooks[0]["headers"]["Authorization"].startswith("Basic ")
    initial_version = lsc.get_project(pid)["model_version"]

    # retrieve predictions: Label Studio calls /predict; before any training they are cold-start ones
    lsc.retrieve_predictions(pid)
    tasks = lsc.pull_tasks(pid)
    assert all([p["model_version"] for p in t["predictions"]] == [UNTRAINED_VERSION] for t in tasks)

    # annotators label 12 tasks through the API; the webhooks do the rest
    labelled = project.task_ids[:12]
    for tid in labelled:
        lsc.create_annotation(tid, choice_annotation(project.control, "caption", project.truth[tid]))

    def settled():
        state = jobs.training_state(rconn, pid)
        status = jobs.get_status(rconn, pid)
        idle = not state["pending"] and not state["running"] and status.get("state") in ("idle", "failed")
        return idle and jobs.training_count(rconn, pid) >= 1 and status

    deadline = time.monotonic() + 150
    status = None
    while time.monotonic() < deadline and not status:
        status = settled()
        time.sleep(0.3)
    assert status, ("no training finished;\nworker log:\n" + (logs / "worker.log").read_text()[-4000:]
                    + "\nserver log:\n" + (logs / "server.log").read_text()[-2000:])
    assert status["state"] == "idle", status.get("last_error")
    trainings = jobs.training_count(rconn, pid)
    assert 1 <= trainings <= 2  # 12 annotations (12 webhooks) -> one or two trainings, not 12

    # the model version changed, everywhere
    store = ModelStore(settings.model_dir)
    version = store.current_version(pid)
    assert version and version not in (UNTRAINED_VERSION, initial_version)
    assert lsc.get_project(pid)["model_version"] == version
    assert status["model_version"] == version and status["last_training"]["n_labeled"] == 12
    tasks = lsc.pull_tasks(pid)
    assert {t["id"] for t in tasks} == set(all_ids)
    for t in tasks:
        mine = [p for p in t["predictions"] if p["model_version"] == version]
        assert len(mine) == 1, t["id"]
        (region,) = mine[0]["result"]
        assert region["from_name"] == "category" and region["value"]["choices"][0] in project.class_names

    # ordering by prediction score (ascending, Label Studio's own sort) follows the strategy's ranking
    loaded = store.load(pid, version)
    config = parse_label_config(project.config)
    specs = modality_specs(config, settings.featurizers, {"image_pixels": {"size": 16}})
    with make_fetcher(settings.model_copy(update={"label_studio_url": labelstudio.url}), labelstudio.url,
                      lsc) as fetcher:
        td = build_task_dataset(tasks, config, specs, fetcher, None)
    assert td.fetch_errors == {}  # the upload path was fetched from Label Studio with the token
    assert not td.dataset.masks["caption"][list(td.task_ids).index(extra_ids[0])]  # missing text stays missing
    pool = Pool.from_labeled(len(td.dataset), td.labeled)
    priority = get_strategy(STRATEGY).score(loaded.model, td.dataset, pool, seed=0)
    expected = td.task_ids[pool.unlabeled[np.lexsort((pool.unlabeled, -priority))]].tolist()
    ls_order = lsc.task_ids_by_score(pid)
    assert ls_order[:len(expected)] == expected
    assert set(ls_order[len(expected):]) == set(labelled)  # labelled tasks (score 1.0) come last

    # a task imported after the training gets a prediction of the new version from /predict; one whose image
    # is not an image gets a named error item, which Label Studio skips without dropping the rest of the batch
    late = emoji_tasks(1, seed=13, image_key="img", text_key="desc").tasks[:2]
    late[1]["data"]["img"] = "data:image/png;base64," + base64.b64encode(b"GIF89a? no, plain text").decode()
    late_id, bad_id = lsc.import_tasks(pid, late)
    lsc.retrieve_predictions(pid)
    by_id = {t["id"]: t for t in lsc.pull_tasks(pid)}
    (pred,) = [p for p in by_id[late_id]["predictions"] if p["model_version"] == version]
    assert 0.0 <= pred["score"] < 1.0
    assert not [p for p in by_id[bad_id]["predictions"] if p["model_version"] == version]

    # /status shows the version, the queue and the modality diagnostics; /health needs no auth
    assert httpx.get(f"{backend_url}/status", timeout=5).status_code == 401
    st = httpx.get(f"{backend_url}/status", auth=AUTH, timeout=5).json()
    (entry,) = [p for p in st["projects"] if p["project"] == pid]
    assert entry["model_version"] == version and set(entry["diagnostics"]["contribution"]) == {"picture", "caption"}
    assert st["queue"]["depth"] == 0
    print(f"\nend to end (after Label Studio start): {time.monotonic() - t_start:.1f} s, {trainings} training(s), "
          f"last training {status['last_training']['timings']}")
