"""End to end against a real Label Studio 1.23.2 (its own venv, .venv-ls, created if missing).

Label Studio, Redis, ``mmal serve`` (uvicorn, basic auth on) and an RQ worker all run as real processes,
with the backend's **defaults** (no featurizer, strategy or recipe override: pretrained encoders, margin,
the default training). The test plays the annotators: it creates an image + text project (non-default tag
names and data keys) with emoji tasks and registers the backend (Label Studio's webhook gets the auth
header). It then checks what a person sees: the tasks are encoded ahead and a coverage order is published,
"Label All Tasks" (``/api/projects/<id>/next``) serves that order; the annotator labels what ``/next``
serves; a training runs on its own (webhooks -> queue -> worker); its pre-annotations are well above chance
on the unlabelled tasks; ``/next`` then serves the strategy's top task, and two annotators each get one of
the top few; Label Studio's order by prediction score is the strategy's ranking.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis

from backend.data import Pool
from backend.strategies import get_strategy
from connectors.label_config import parse_label_config
from connectors.labelstudio import LabelStudioConnector
from ml_server import jobs
from ml_server.dataset import apply_scaling, build_task_dataset, modality_specs
from ml_server.demo import FACE, choice_annotation, create_emoji_project, emoji_label_sets, emoji_tasks, label_config
from ml_server.ls_process import free_port, start_label_studio
from ml_server.model_store import ModelStore
from ml_server.settings import Settings
from ml_server.training import make_fetcher

from tests.conftest import wait_for

REDIS_URL = "redis://127.0.0.1:6379/14"
REPO = Path(__file__).resolve().parents[1]
AUTH = ("labelstudio", "e2e-backend-secret")
STRATEGY = "margin"  # the default; the backend is not told
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
                "MMAL_JOB_RETRIES": "0", "PYTHONPATH": str(REPO)})
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
    assert settings.strategy == STRATEGY and settings.featurizers["Image"] == "efficientnet_lite0"
    lsc = LabelStudioConnector(labelstudio.url, labelstudio.token)

    def log_tails() -> str:
        return ("\nworker log:\n" + (logs / "worker.log").read_text()[-4000:]
                + "\nserver log:\n" + (logs / "server.log").read_text()[-2000:])

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
    truth = {**project.truth}
    assert lsc.get_project(pid)["sampling"] == "Sequential sampling"  # what a new project has

    # register the backend: Label Studio calls /health and /setup (with basic auth) and creates the webhook
    backend = lsc.register_backend(pid, backend_url, title="mmal-e2e", basic_auth=AUTH)
    assert backend["state"] == "CO", backend  # connected: /health and /setup answered with basic auth
    hooks = [h for h in lsc.webhooks(pid) if h["url"] == backend_url + "/webhook"]
    assert hooks and hooks[0]["headers"]["Authorization"].startswith("Basic ")

    # connecting encodes every task ahead and publishes the cold-start (coverage) order; the project's
    # sampling now serves the lowest score first, with nothing set by hand
    def cold_started():
        p = lsc.get_project(pid)
        published = str(p.get("model_version", "")).startswith("mmal-0-coverage-")
        return p if published and p.get("sampling") == "Uncertainty sampling" else None

    proj = wait_for(cold_started, timeout=240, interval=0.5, what="the cold-start order" + log_tails())
    cold_version = proj["model_version"]
    store = ModelStore(settings.model_dir)
    cold = store.cold_start(pid)
    assert cold is not None and cold.version == cold_version and set(cold.scores) == set(all_ids)
    cold_order = sorted(cold.scores, key=lambda t: cold.scores[t])
    status = wait_for(lambda: (st := jobs.get_status(rconn, pid)).get("state") == "waiting_for_annotations" and st,
                      timeout=30, what="the cold-start job to finish")
    assert status["cold_start"]["status"] == "published"

    # the annotator labels what "Label All Tasks" serves: the cold-start order, one cluster after another
    served = []
    for _ in range(12):
        task = lsc.next_task(pid)
        assert task is not None
        served.append(task["id"])
        lsc.create_annotation(task["id"], choice_annotation(project.control, "caption", truth.get(
            task["id"], project.class_names[0])))
    assert served[:10] == cold_order[:10]  # before the first training (10 labels) the cold-start order serves
    covered = {truth[t] for t in served[:10] if t in truth}
    assert len(covered) == len(project.class_names), covered  # the first labels span every class

    def settled():
        state = jobs.training_state(rconn, pid)
        st = jobs.get_status(rconn, pid)
        idle = not state["pending"] and not state["running"] and st.get("state") in ("idle", "failed")
        done = st.get("last_training") and st["last_training"]["n_labeled"] == len(served)
        return idle and done and st

    status = wait_for(settled, timeout=240, interval=0.3, what="a training on all 12 labels" + log_tails())
    assert status["state"] == "idle", status.get("last_error")
    trainings = jobs.training_count(rconn, pid)
    assert 1 <= trainings <= 3  # 12 annotations (12 webhooks) -> one or two trainings, not 12

    # the model version changed everywhere and names the strategy
    version = store.current_version(pid)
    assert version and re.match(r"^mmal-[1-9][0-9]*-margin-", version), version
    assert lsc.get_project(pid)["model_version"] == version
    last = status["last_training"]
    assert status["model_version"] == version and last["strategy"] == STRATEGY
    assert set(last["reliance"]) == {"picture", "caption"} and abs(sum(last["reliance"].values()) - 1) < 1e-6
    assert {"pull_s", "featurize_s", "train_s", "rank_s", "push_head_s", "switch_s", "push_rest_s"} <= set(
        last["timings"])
    tasks = lsc.pull_tasks(pid)
    assert {t["id"] for t in tasks} == set(all_ids)
    predicted = {}
    for t in tasks:
        mine = [p for p in t["predictions"] if p["model_version"] == version]
        assert len(mine) == 1, t["id"]
        (region,) = mine[0]["result"]
        assert region["from_name"] == "category" and region["value"]["choices"][0] in project.class_names
        predicted[t["id"]] = (region["value"]["choices"][0], mine[0]["score"])

    # the pre-annotations are worth something: well above chance on the tasks nobody labelled
    unlabelled = [t for t in project.task_ids if t not in served]
    accuracy = float(np.mean([predicted[t][0] == truth[t] for t in unlabelled]))
    chance = 1 / len(project.class_names)
    assert accuracy >= chance + 0.25, (accuracy, chance)

    # "Label All Tasks" now serves the strategy's top unlabelled task (lowest score of the new version)
    top = sorted((s, t) for t, (_, s) in predicted.items() if t not in served)
    nxt = lsc.next_task(pid)
    assert nxt is not None and nxt["id"] == top[0][1], (nxt and nxt["id"], top[:3])
    # a second annotator gets one of the top few too, not the same task (Label Studio locks the first)
    labelstudio.add_user("annotator2@mmal.local", "annotator2-pass", "mmal-annotator2-token-0123456789")
    other = LabelStudioConnector(labelstudio.url, "mmal-annotator2-token-0123456789")
    nxt2 = other.next_task(pid)
    assert nxt2 is not None and nxt2["id"] != nxt["id"] and nxt2["id"] in [t for _, t in top[:3]], (nxt2, top[:3])
    other.close()

    # ordering by prediction score (ascending, Label Studio's own sort) follows the strategy's ranking
    loaded = store.load(pid, version)
    config = parse_label_config(project.config)
    specs = modality_specs(config, settings.featurizers, {})
    with make_fetcher(settings.model_copy(update={"label_studio_url": labelstudio.url}), labelstudio.url,
                      lsc) as fetcher:
        td = build_task_dataset(tasks, config, specs, fetcher, None)
    assert td.fetch_errors == {}  # the upload path was fetched from Label Studio with the token
    assert not td.dataset.masks["caption"][list(td.task_ids).index(extra_ids[0])]  # missing text stays missing
    pool = Pool.from_labeled(len(td.dataset), td.labeled)
    scaled = apply_scaling(td.dataset, loaded.meta["feature_scaling"])  # the pool's statistics, kept with the model
    priority = get_strategy(STRATEGY).score(loaded.model, scaled, pool, seed=0)
    expected = td.task_ids[pool.unlabeled[np.lexsort((pool.unlabeled, -priority))]].tolist()
    ls_order = lsc.task_ids_by_score(pid)
    assert ls_order[:len(expected)] == expected
    assert set(ls_order[len(expected):]) == set(served)  # labelled tasks (score 1.0) come last

    # tasks imported after the training are encoded and scored by the serving model in the background
    # (TASKS_CREATED webhook, no retraining); one whose image is not an image gets no prediction, and
    # /predict answers it with a named error item, which Label Studio skips without dropping the batch
    late = emoji_tasks(1, seed=13, image_key="img", text_key="desc").tasks[:2]
    late[1]["data"]["img"] = "data:image/png;base64," + base64.b64encode(b"GIF89a? no, plain text").decode()
    before = jobs.training_count(rconn, pid)
    late_id, bad_id = lsc.import_tasks(pid, late)

    def late_scored():
        t = {t["id"]: t for t in lsc.pull_tasks(pid)}.get(late_id)
        return t if t and any(p["model_version"] == version for p in t["predictions"]) else None

    wait_for(late_scored, timeout=120, interval=0.5, what="the imported task scored" + log_tails())
    lsc.retrieve_predictions(pid)
    by_id = {t["id"]: t for t in lsc.pull_tasks(pid)}
    (pred,) = [p for p in by_id[late_id]["predictions"] if p["model_version"] == version]
    assert 0.0 <= pred["score"] < 1.0
    assert not [p for p in by_id[bad_id]["predictions"] if p["model_version"] == version]
    assert jobs.training_count(rconn, pid) == before and store.current_version(pid) == version

    # /status shows the version, the queue and the modality diagnostics; /health needs no auth
    assert httpx.get(f"{backend_url}/status", timeout=5).status_code == 401
    st = httpx.get(f"{backend_url}/status", auth=AUTH, timeout=5).json()
    (entry,) = [p for p in st["projects"] if p["project"] == pid]
    assert entry["model_version"] == version and set(entry["diagnostics"]["contribution"]) == {"picture", "caption"}
    assert entry["last_training"]["strategy"] == STRATEGY
    assert st["queue"]["depth"] == 0
    # one structured log line per training, with strategy, labels, validation accuracy, reliance, phases
    lines = [json.loads(line.split("training ", 1)[1]) for line in (logs / "worker.log").read_text().splitlines()
             if " training {" in line]
    assert lines and lines[-1]["model_version"] == version and lines[-1]["n_labeled"] == len(served)
    assert set(lines[-1]["reliance"]) == {"picture", "caption"} and "train" in lines[-1]["timings_s"]
    print(f"\nend to end (after Label Studio start): {time.monotonic() - t_start:.1f} s, {trainings} training(s), "
          f"accuracy on unlabelled tasks {accuracy:.2f} (chance {chance:.2f}), classes in the first 10 served: "
          f"{len(covered)}/{len(project.class_names)}, last training {last['timings']}")


def test_multi_label_project_end_to_end(labelstudio, rconn, stack):
    """A multi-label project (``choice="multiple"``: the category, plus "Has a face" when the emoji's name
    says so) with the same defaults: the annotator labels what ``/next`` serves, picking every class that
    applies; the training learns the sets; each pre-annotation is one ``choices`` region listing the
    classes predicted, better than the majority answer per class; ``/next`` serves the strategy's top task."""
    backend_url, env, logs = stack
    lsc = LabelStudioConnector(labelstudio.url, labelstudio.token)
    et = emoji_tasks(12, seed=8, image_key="img", text_key="desc")
    sets = emoji_label_sets(et, text_key="desc")
    classes = et.class_names + [FACE]
    pid = lsc.create_project("mmal e2e multi-label", label_config(classes, multiple=True, **NAMES))
    ids = lsc.import_tasks(pid, et.tasks)
    truth = dict(zip(ids, sets))
    backend = lsc.register_backend(pid, backend_url, title="mmal-e2e-multi", basic_auth=AUTH)
    assert backend["state"] == "CO", backend  # /setup accepted the multi-label config with the defaults
    wait_for(lambda: str(lsc.get_project(pid).get("model_version", "")).startswith("mmal-0-coverage-"),
             timeout=240, interval=0.5, what="the multi-label cold-start order")
    served = []
    for _ in range(12):
        task = lsc.next_task(pid)
        served.append(task["id"])
        lsc.create_annotation(task["id"], choice_annotation("category", "caption", truth[task["id"]]))

    def trained():
        st = jobs.get_status(rconn, pid)
        state = jobs.training_state(rconn, pid)
        done = st.get("last_training") and st["last_training"]["n_labeled"] == len(served)
        return done and not state["pending"] and not state["running"] and st

    status = wait_for(trained, timeout=240, interval=0.3, what="a multi-label training")
    version = status["model_version"]
    assert re.match(r"^mmal-[1-9][0-9]*-margin-", version) and lsc.get_project(pid)["model_version"] == version
    predicted = {}
    for t in lsc.pull_tasks(pid):
        (mine,) = [p for p in t["predictions"] if p["model_version"] == version]
        chosen = []
        for region in mine["result"]:  # at most one region; none when the predicted set is empty
            assert region["type"] == "choices" and region["from_name"] == "category"
            chosen = region["value"]["choices"]
        assert len(mine["result"]) <= 1 and set(chosen) <= set(classes)
        predicted[t["id"]] = (chosen, mine["score"])
    unlabelled = [t for t in ids if t not in served]
    per_class = np.mean([[(c in predicted[t][0]) == (c in truth[t]) for c in classes] for t in unlabelled])
    rate = np.mean([[c in truth[t] for c in classes] for t in unlabelled], axis=0)
    majority = float(np.maximum(rate, 1 - rate).mean())
    assert per_class >= majority + 0.05, (per_class, majority)
    top = sorted((s, t) for t, (_, s) in predicted.items() if t not in served)
    assert lsc.next_task(pid)["id"] == top[0][1]
    print(f"\nmulti-label end to end: per-class accuracy on unlabelled tasks {per_class:.3f} "
          f"(majority answer {majority:.3f})")
