"""The ML backend's HTTP protocol, replayed from requests a real Label Studio 1.23.2 sent.

Real components: the FastAPI app through httpx's TestClient, a real Redis (DB 14, flushed), real trained
fusion models in a real model store. The captured bodies live in tests/data/label-studio-1.23.2-requests.json
(copied from the reference capture).
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient
from rq import Queue

from ml_server import jobs
from ml_server.app import create_app
from ml_server.demo import choice_annotation, emoji_tasks, label_config
from ml_server.fetch import Fetcher, FetchPolicy
from ml_server.model_store import ModelStore
from ml_server.predictor import UNTRAINED_VERSION
from ml_server.settings import Settings
from ml_server.training import build_version

REDIS_URL = "redis://127.0.0.1:6379/14"
CAPTURE = Path(__file__).parent / "data" / "label-studio-1.23.2-requests.json"
AUTH = ("ls-user", "s3cret-pass")


def captured() -> list[dict]:
    return json.loads(CAPTURE.read_text())


def captured_request(method: str, path: str, action: str | None = None, index: int = 0) -> dict:
    hits = [r for r in captured() if r["method"] == method and r["path"] == path
            and (action is None or (r["body"] or {}).get("action") == action)]
    return copy.deepcopy(hits[index])


def expand_tasks(body: dict, n: int = 5) -> dict:
    """The capture abbreviates 4 of its 5 tasks as a string: rebuild them from the first one."""
    first = body["tasks"][0]
    tasks = [first]
    for k in range(1, n):
        t = copy.deepcopy(first)
        t["id"] = first["id"] + k
        t["inner_id"] = first["inner_id"] + k
        t["data"] = dict(first["data"], text=f"sample text {k}", ext_id=f"t{k}")
        tasks.append(t)
    body["tasks"] = tasks
    return body


@pytest.fixture()
def rconn():
    conn = redis.Redis.from_url(REDIS_URL)
    conn.flushdb()
    yield conn
    conn.flushdb()


def make_settings(tmp_path: Path, **kw) -> Settings:
    base = dict(redis_url=REDIS_URL, model_dir=tmp_path / "models", label_studio_url=None, label_studio_api_key=None,
                basic_auth_user=None, basic_auth_pass=None, strategy="margin", epochs=15, patience=5,
                featurizer_params={"image_pixels": {"size": 16}}, min_annotations=3, job_retries=0)
    base.update(kw)
    return Settings(**base)


@pytest.fixture()
def settings(tmp_path, rconn):
    return make_settings(tmp_path)


@pytest.fixture()
def client(settings):
    with TestClient(create_app(settings)) as c:
        yield c


def train_version(settings: Settings, project_id: int, config: str, tasks: list[dict]) -> str:
    """Train and publish a version locally (what the worker does, minus Label Studio)."""
    store = ModelStore(settings.model_dir)
    built = build_version(project_id, tasks, config, settings, store, Fetcher(FetchPolicy()))
    store.set_current(project_id, built.version)
    return built.version


def labelled_emoji_project(n_per_class=6, n_labeled=9, **names):
    et = emoji_tasks(n_per_class, seed=1, image_key=names.get("image_key", "image"),
                     text_key=names.get("text_key", "text"))
    control, to_name = names.get("control", "label"), names.get("to_name", names.get("text_name", "text"))
    config = label_config(et.class_names, **names)
    tasks = []
    for i, (t, truth) in enumerate(zip(et.tasks, et.truth)):
        task = dict(t, id=1000 + i, project=7)
        task["annotations"] = ([{"id": i + 1, "result": choice_annotation(control, to_name, truth),
                                 "was_cancelled": False}] if i < n_labeled else [])
        tasks.append(task)
    return config, tasks, et


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real training shared by the module: (config, tasks, emoji tasks, model dir, version) of project 1."""
    root = tmp_path_factory.mktemp("trained")
    config, tasks, et = labelled_emoji_project()
    version = train_version(make_settings(root), 1, config, tasks)
    return config, tasks, et, root / "models", version


def use_trained(trained, settings: Settings, project_id: int = 1):
    """Copy the module's trained version into this test's model dir (as project ``project_id``)."""
    config, tasks, et, src, version = trained
    shutil.copytree(src / "project-1", settings.model_dir / f"project-{project_id}")
    return config, [dict(t, project=project_id) for t in tasks], et, version


# --- /health, /metrics, /versions, /status -----------------------------------------------------------------------
def test_health_is_instant_and_exact(client):
    req = captured_request("GET", "/health")
    r = client.get("/health", headers=req["headers"])
    assert r.status_code == 200 and r.json() == {"status": "UP", "model_class": "MMALFusionBackend"}


def test_metrics_probe_answers_empty_object_and_prometheus_elsewhere(client):
    assert client.get("/metrics").json() == {}
    client.get("/health")
    text = client.get("/prometheus").text
    assert "mmal_requests_total" in text and 'endpoint="/health"' in text and "mmal_training_queue_depth" in text


def test_versions_endpoint_tolerated_by_label_studio(client, settings):
    req = captured_request("GET", "/versions")
    r = client.get(req["path"], headers=req["headers"])
    assert r.status_code == 200 and r.json() == {"versions": []}


# --- /setup -------------------------------------------------------------------------------------------------------
def test_setup_from_capture(client, rconn, settings):
    req = captured_request("POST", "/setup")
    r = client.post("/setup", json=req["body"], headers=req["headers"])
    assert r.status_code == 200 and r.json() == {"model_version": UNTRAINED_VERSION}
    stored = jobs.load_project_setup(rconn, 1)
    assert stored["label_config"] == req["body"]["schema"] and stored["hostname"] == "http://localhost:8080"
    assert stored["access_token"] == req["body"]["access_token"]
    # the first /setup of a project queues the job that encodes its tasks ahead; later ones (Label Studio
    # calls /setup before every prediction batch) queue nothing
    queue = Queue(settings.queue, connection=rconn)
    assert queue.count == 1 and queue.fetch_job(queue.job_ids[0]).kwargs == {"reason": "connected"}
    assert client.post("/setup", json=req["body"], headers=req["headers"]).status_code == 200
    assert queue.count == 1


def test_setup_reports_the_serving_version(client, settings, trained):
    config, tasks, _, version = use_trained(trained, settings, 7)
    r = client.post("/setup", json={"project": "7.1795777763", "schema": config, "hostname": "http://x",
                                    "access_token": "t", "extra_params": None})
    assert r.json() == {"model_version": version}


@pytest.mark.parametrize("schema, extra, message", [
    ("<View><Image name='i' value='$i'/></View>", None, "no <Choices>"),
    ("<View><Image name='i' value='$i'/>", None, "not well-formed"),
    ("<View><Image name='i' value='$i'/><Text name='t' value='$t'/><Choices name='c' toName='i' choice='multiple'>"
     "<Choice value='a'/><Choice value='b'/></Choices></View>", {"strategy": "missing_aware"},
     "strategy 'missing_aware' has no multi-label form"),
    (None, {"strategy": "margin", "bogus_key": 1}, "invalid extra params"),
    (None, {"min_annotations": 0}, "invalid extra params"),
    (None, {"strategy": "no_such_strategy"}, "unknown strategy 'no_such_strategy'"),
    (None, {"strategy": "underrelied_uncertainty", "strategy_params": {"uncertainty": "bogus"}}, "uncertainty"),
    (None, "not json", "invalid extra params"),
    (None, {"featurizers": "bogus"}, "neither a preset"),
    (None, {"featurizers": {"preset": "fancy"}}, "unknown preset 'fancy'"),
    (None, {"featurizers": {"Image": "no_such_featurizer"}}, "featurizer 'no_such_featurizer' for <Image"),
    (None, {"featurizers": {"Image": "hf_image"}, "featurizer_params": {"hf_image": {"model": "/no/such/vit"}}},
     "/no/such/vit"),
])
def test_setup_rejects_what_the_backend_cannot_serve(client, schema, extra, message):
    body = captured_request("POST", "/setup")["body"]
    if schema is not None:
        body["schema"] = schema
    body["extra_params"] = extra
    r = client.post("/setup", json=body)
    assert r.status_code == 400 and message in r.json()["detail"]


def test_setup_accepts_project_extra_params(client, rconn):
    body = captured_request("POST", "/setup")["body"]
    body["extra_params"] = {"strategy": "entropy", "min_annotations": 20}
    assert client.post("/setup", json=body).status_code == 200
    assert jobs.load_project_setup(rconn, 1)["extra_params"] == {"strategy": "entropy", "min_annotations": 20}


def test_a_project_can_choose_any_local_transformers_folder(client, rconn, settings):
    from backend.encoders.pretrained import minilm_model_dir

    body = captured_request("POST", "/setup")["body"]
    extra = {"featurizers": {"Text": "hf_text"}, "featurizer_params": {"hf_text": {"model": str(minilm_model_dir())}}}
    body["extra_params"] = extra
    assert client.post("/setup", json=body).status_code == 200
    project = jobs.project_settings(settings, {"extra_params": extra})
    assert project.featurizers["Text"] == "hf_text" and project.featurizers["Image"] == "efficientnet_lite0"
    assert project.featurizer_params == {"hf_text": {"model": str(minilm_model_dir())}}


@pytest.mark.parametrize("value, image, text", [
    ("", "efficientnet_lite0", "minilm"),
    ("pretrained", "efficientnet_lite0", "minilm"),
    ("simple", "image_pixels", "text_tokens"),
    ('{"Image": "hf_image"}', "hf_image", "minilm"),
    ('{"preset": "simple", "Text": "minilm"}', "image_pixels", "minilm"),
])
def test_featurizer_setting_takes_presets_and_overrides(monkeypatch, value, image, text):
    monkeypatch.setenv("MMAL_FEATURIZERS", value)
    s = Settings()
    assert (s.featurizers["Image"], s.featurizers["Text"]) == (image, text)


def test_a_bad_featurizer_setting_is_named(monkeypatch):
    monkeypatch.setenv("MMAL_FEATURIZERS", "clip")
    with pytest.raises(ValueError, match="featurizers: 'clip' is neither a preset"):
        Settings()


# --- /predict -----------------------------------------------------------------------------------------------------
def test_predict_cold_start_from_capture(client):
    req = captured_request("POST", "/predict")
    body = expand_tasks(req["body"])
    r = client.post("/predict", json=body, headers=req["headers"])
    assert r.status_code == 200
    results = r.json()["results"]
    assert len(results) == len(body["tasks"])
    scores = [item["score"] for item in results]
    assert all(item["result"] == [] and item["model_version"] == UNTRAINED_VERSION for item in results)
    assert all(0.0 <= s < 1.0 for s in scores) and len(set(scores)) == len(scores)
    again = client.post("/predict", json=body).json()["results"]
    assert [i["score"] for i in again] == scores  # deterministic


def test_predict_with_a_model_one_item_per_task_in_order(client, settings, trained):
    config, tasks, et, version = use_trained(trained, settings)
    store = ModelStore(settings.model_dir)
    loaded = store.load(1, version)
    # the captured request shape, with our project's tasks (reversed order: answers must follow it)
    req = captured_request("POST", "/predict")
    body = dict(req["body"], label_config=config, project="1.1795777763")
    body["tasks"] = [dict(t, project=1) for t in reversed(tasks)]
    results = client.post("/predict", json=body).json()["results"]
    assert len(results) == len(tasks)
    for task, item in zip(body["tasks"], results):
        assert item["model_version"] == version
        (region,) = item["result"]
        assert region["from_name"] == "label" and region["to_name"] == "text" and region["type"] == "choices"
        label, score = loaded.ranking[task["id"]]
        assert region["value"]["choices"] == [label]
        if task["annotations"]:
            assert item["score"] == 1.0
        else:
            assert item["score"] == pytest.approx(score) and 0.0 <= item["score"] < 1.0
    unlabeled_scores = sorted(i["score"] for t, i in zip(body["tasks"], results) if not t["annotations"])
    n = len(unlabeled_scores)
    assert unlabeled_scores == pytest.approx([r / n for r in range(n)])  # score = rank / n, LOW = first


def test_predict_new_tasks_missing_modalities_and_undecodable_data(client, settings, trained):
    config, tasks, et, version = use_trained(trained, settings)
    fresh = emoji_tasks(2, seed=99)
    new = [dict(fresh.tasks[0], id=5001), dict(fresh.tasks[1], id=5002), dict(fresh.tasks[2], id=5003),
           dict(fresh.tasks[3], id=5004), dict(fresh.tasks[4], id=5005)]
    new[1]["data"] = dict(new[1]["data"], text="")  # empty text
    new[2]["data"] = {k: v for k, v in new[2]["data"].items() if k != "image"}  # no image key
    new[3]["data"] = dict(new[3]["data"], image="data:image/png;base64,iVBORw0KGgoAAAANSU...")  # truncated
    new[4]["data"] = {"unrelated": 1}  # nothing at all
    body = {"tasks": new, "project": "1.1795777763", "label_config": config,
            "params": {"login": None, "password": None, "context": None}}
    results = client.post("/predict", json=body).json()["results"]
    assert len(results) == 5
    for item in results[:3]:  # missing modalities: predicted from what the task has
        assert item["model_version"] == version and 0.0 <= item["score"] < 1.0
        assert item["result"][0]["value"]["choices"][0] in et.class_names
    # an unusable value or nothing usable at all: a named error instead of a prediction (Label Studio skips it)
    assert results[3] == {"model_version": version,
                          "error": "task 5004: data.image: data: URL has invalid base64 (Only base64 data is allowed)"}
    assert results[4]["error"].startswith("task 5005: data: no value for any key the label config reads")


def test_predict_second_capture_labelled_task_scores_last(client, settings):
    """The second captured /predict carries an annotated task and an interactive context."""
    config = captured_request("POST", "/setup")["body"]["schema"]
    et = emoji_tasks(4, seed=3)
    names = {c: n for c, n in zip(et.class_names, ["a", "b", "c"])}
    tasks = []
    for i, (t, truth) in enumerate(zip(et.tasks, et.truth)):
        task = dict(t, id=i + 1)
        task["annotations"] = [{"id": i + 1, "result": choice_annotation("label", "text", names[truth]),
                                "was_cancelled": False}] if i < 6 else []
        tasks.append(task)
    train_version(settings, 1, config, tasks)
    req = captured_request("POST", "/predict", index=1)
    body = req["body"]
    assert body["tasks"][0]["annotations"] and body["params"]["context"]
    (item,) = client.post("/predict", json=body, headers=req["headers"]).json()["results"]
    assert item["score"] == 1.0 and item["result"][0]["value"]["choices"][0] in ("a", "b", "c")


def test_other_tag_names_and_data_keys(client, settings):
    names = dict(image_name="photo", image_key="img_url", text_name="caption", text_key="desc", control="category",
                 to_name="photo")
    config, tasks, et = labelled_emoji_project(**names)
    version = train_version(settings, 3, config, tasks)
    r = client.post("/setup", json={"project": "3.1", "schema": config})
    assert r.json() == {"model_version": version}
    new = dict(emoji_tasks(1, seed=5, image_key="img_url", text_key="desc").tasks[0], id=77)
    new["data"]["desc"] = ""
    body = {"tasks": [new] + tasks[:2], "project": "3.1", "label_config": config}
    results = client.post("/predict", json=body).json()["results"]
    assert len(results) == 3
    for item in results:
        region = item["result"][0]
        assert (region["from_name"], region["to_name"]) == ("category", "photo")
        assert region["value"]["choices"][0] in et.class_names


def test_model_is_cached_and_reloaded_only_on_a_new_version(client, settings, trained):
    config, tasks, _, _ = use_trained(trained, settings)
    body = {"tasks": tasks[:3], "project": "1.1", "label_config": config}
    for _ in range(3):
        assert client.post("/predict", json=body).status_code == 200
    assert "mmal_model_loads_total 1.0" in client.get("/prometheus").text
    second = train_version(settings, 1, config, tasks)
    items = client.post("/predict", json=body).json()["results"]
    assert {i["model_version"] for i in items} == {second}
    assert "mmal_model_loads_total 2.0" in client.get("/prometheus").text


# --- /webhook -----------------------------------------------------------------------------------------------------
def test_webhooks_from_capture_enqueue_one_coalesced_job(client, rconn, settings):
    queue = Queue(settings.queue, connection=rconn)
    out = {}
    for action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "PROJECT_UPDATED", "START_TRAINING"):
        req = captured_request("POST", "/webhook", action=action)
        r = client.post("/webhook", json=req["body"], headers=req["headers"])
        assert r.status_code == 200
        out[action] = r.json()
    assert out["ANNOTATION_CREATED"]["status"] == "queued" and out["ANNOTATION_CREATED"]["project"] == 1
    assert out["ANNOTATION_UPDATED"]["status"] == "coalesced"
    assert out["ANNOTATION_UPDATED"]["job_id"] == out["ANNOTATION_CREATED"]["job_id"]
    assert out["PROJECT_UPDATED"]["status"] == "ignored"
    assert out["START_TRAINING"]["status"] == "coalesced"
    assert queue.count == 1 and queue.job_ids == [out["ANNOTATION_CREATED"]["job_id"]]
    job = queue.fetch_job(queue.job_ids[0])
    assert job.func_name == jobs.TRAIN_FUNC and job.args == (1,)


def test_burst_of_fifty_annotations_is_one_pending_job(client, rconn, settings):
    body = captured_request("POST", "/webhook", action="ANNOTATION_CREATED")["body"]
    statuses = [client.post("/webhook", json=body).json()["status"] for _ in range(50)]
    assert statuses.count("queued") == 1 and statuses.count("coalesced") == 49
    assert Queue(settings.queue, connection=rconn).count == 1
    deleted = dict(body, action="ANNOTATION_DELETED")
    assert client.post("/webhook", json=deleted).json()["status"] == "coalesced"
    other = dict(body, project=dict(body["project"], id=2))
    assert client.post("/webhook", json=other).json()["status"] == "queued"  # per project
    assert Queue(settings.queue, connection=rconn).count == 2


def test_imported_tasks_queue_a_job_that_encodes_them_ahead(client, rconn, settings):
    r = client.post("/webhook", json={"action": "TASKS_CREATED", "project": {"id": 1}, "tasks": [{"id": 5}]})
    assert r.status_code == 200 and r.json()["status"] == "queued"
    assert Queue(settings.queue, connection=rconn).count == 1


@pytest.mark.parametrize("payload", [
    {"action": "PROJECT_CREATED", "project": {"id": 1}},
    {"action": "ANNOTATION_CREATED"},  # no project: nothing to train
])
def test_other_actions_are_acknowledged_and_ignored(client, rconn, settings, payload):
    r = client.post("/webhook", json=payload)
    assert r.status_code == 200 and r.json()["status"] == "ignored"
    assert Queue(settings.queue, connection=rconn).count == 0


def test_webhook_without_redis_fails_fast_but_health_and_setup_answer(tmp_path):
    s = make_settings(tmp_path, redis_url="redis://127.0.0.1:1/0")
    with TestClient(create_app(s)) as c:
        body = captured_request("POST", "/webhook", action="ANNOTATION_CREATED")["body"]
        r = c.post("/webhook", json=body)
        assert r.status_code == 503 and "training queue unavailable" in r.json()["detail"]
        assert c.get("/health").status_code == 200
        assert c.post("/setup", json=captured_request("POST", "/setup")["body"]).status_code == 200
        assert c.get("/status").json()["queue"]["depth"] is None


# --- /status ------------------------------------------------------------------------------------------------------
def test_status_reports_versions_queue_and_diagnostics(client, settings, trained):
    config, tasks, _, version = use_trained(trained, settings)
    body = captured_request("POST", "/webhook", action="ANNOTATION_CREATED")["body"]
    client.post("/webhook", json=body)
    status = client.get("/status").json()
    assert status["queue"] == {"name": settings.queue, "depth": 1}
    (project,) = status["projects"]
    assert project["project"] == 1 and project["model_version"] == version
    assert project["training"]["pending"] and project["training"]["running"] is None
    diag = project["diagnostics"]
    assert set(diag["contribution"]) == {"image", "text"}
    assert sum(diag["contribution"].values()) == pytest.approx(1.0)


# --- basic auth -----------------------------------------------------------------------------------------------------
def test_basic_auth_on_every_endpoint_but_health(tmp_path, rconn):
    s = make_settings(tmp_path, basic_auth_user=AUTH[0], basic_auth_pass=AUTH[1])
    setup = captured_request("POST", "/setup")["body"]
    predict = expand_tasks(captured_request("POST", "/predict")["body"])
    hook = captured_request("POST", "/webhook", action="ANNOTATION_CREATED")["body"]
    calls = [("GET", "/metrics", None), ("GET", "/prometheus", None), ("GET", "/status", None),
             ("GET", "/versions", None), ("POST", "/setup", setup), ("POST", "/predict", predict),
             ("POST", "/webhook", hook), ("POST", "/job_status", {"job": "x"})]
    with TestClient(create_app(s)) as c:
        assert c.get("/health").status_code == 200
        for method, path, body in calls:
            r = c.request(method, path, json=body)
            assert r.status_code == 401, path
            assert r.headers["www-authenticate"].startswith("Basic")
            assert c.request(method, path, json=body, auth=(AUTH[0], "wrong")).status_code == 401, path
            assert c.request(method, path, json=body, auth=AUTH).status_code == 200, path


def test_job_status_for_label_studio(client, rconn):
    body = captured_request("POST", "/webhook", action="START_TRAINING")["body"]
    job_id = client.post("/webhook", json=body).json()["job_id"]
    assert client.post("/job_status", json={"job": job_id}).json() == {"job_status": "queued"}
    assert client.post("/job_status", json={"job": "nope"}).json() == {"job_status": "removed"}


def test_scores_follow_the_strategy_ranking(settings, trained):
    """score = rank / n over the unlabelled pool, rank from the strategy's own priorities."""
    from backend.data import Pool
    from backend.strategies import get_strategy, rank
    from connectors.label_config import parse_label_config
    from ml_server.dataset import apply_scaling, build_task_dataset, modality_specs
    from ml_server.scoring import calibrated_score

    config, tasks, _, version = use_trained(trained, settings)
    loaded = ModelStore(settings.model_dir).load(1, version)
    cfg = parse_label_config(config)
    specs = modality_specs(cfg, settings.featurizers, settings.featurizer_params)
    td = build_task_dataset(tasks, cfg, specs, Fetcher(FetchPolicy()), None)
    ds = apply_scaling(td.dataset, loaded.meta["feature_scaling"])  # the pool's statistics, kept with the model
    pool = Pool.from_labeled(len(ds), td.labeled)
    pri = get_strategy("margin").score(loaded.model, ds, pool, seed=0)
    best_first = pool.unlabeled[np.lexsort((pool.unlabeled, -pri))]
    by_score = sorted((score, tid) for tid, (_, score) in loaded.ranking.items() if score < 1.0)
    assert [tid for _, tid in by_score] == td.task_ids[best_first].tolist()
    assert [s for s, _ in by_score] == pytest.approx(np.arange(len(pri)) / len(pri))
    # a new item with the same priority as the k-th item gets the k-th score
    cal = rank(get_strategy("margin"), loaded.model, ds, pool).calibration()
    assert np.allclose(cal, loaded.calibration)
    assert np.allclose(calibrated_score(np.sort(pri)[::-1], cal), np.arange(len(pri)) / len(pri))


def test_predict_runs_the_model_once_per_batch_of_new_tasks(client, settings, trained, monkeypatch):
    """The labels and the strategy's priority of new tasks come from one forward pass, not two."""
    from backend.models.trainer import TrainedFusionModel

    config, tasks, et, version = use_trained(trained, settings)
    calls = []
    original = TrainedFusionModel.predict

    def counting(self, dataset, indices, **kw):
        calls.append(len(indices))
        return original(self, dataset, indices, **kw)

    monkeypatch.setattr(TrainedFusionModel, "predict", counting)
    fresh = emoji_tasks(2, seed=98).tasks[:6]
    new = [dict(t, id=6000 + k) for k, t in enumerate(fresh)]
    r = client.post("/predict", json={"tasks": new, "project": "1.1795777763", "label_config": config})
    assert r.status_code == 200 and all(item["result"] for item in r.json()["results"])
    assert calls == [6]


def test_the_server_trains_the_probe_recipe_on_vector_features_and_sgd_on_pixels_or_tokens():
    from backend.data import MultimodalDataset
    from ml_server.training import training_recipe

    vectors = MultimodalDataset({"a": np.zeros((4, 3), np.float32), "b": np.ones((4, 2), np.float32)},
                                np.zeros(4), ["x"])
    tokens = MultimodalDataset({"a": np.zeros((4, 3), np.float32), "b": np.ones((4, 5), np.int64)},
                               np.zeros(4), ["x"])
    assert training_recipe("auto", vectors) == "probe" and training_recipe("auto", tokens) == "sgd"
    assert training_recipe("sgd", vectors) == "sgd" and training_recipe("probe", tokens) == "probe"
    assert Settings().recipe == "auto"
