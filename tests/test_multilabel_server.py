"""Multi-label projects (``<Choices choice="multiple">``) through the server, in process: the label sets
read from annotations, /setup's checks, a real training on emoji tasks with the default featurizers,
recipe and strategy, and the pre-annotations /predict and the training publish. (The real-Label-Studio
loop of a multi-label project is in test_labelstudio_e2e.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from connectors.label_config import parse_label_config
from ml_server.app import create_app
from ml_server.dataset import task_label
from ml_server.demo import FACE, choice_annotation, emoji_label_sets, emoji_tasks, label_config
from ml_server.model_store import ModelStore
from ml_server.scoring import LABELED_SCORE
from tests.test_ml_server_protocol import captured_request, make_settings, rconn, train_version  # noqa: F401

CLASSES = ["cat", "dog", "bird"]
CONFIG = label_config(CLASSES, multiple=True)


def _task(*annotations: dict) -> dict:
    return {"id": 1, "data": {}, "annotations": list(annotations)}


def _ann(choices, **kw) -> dict:
    return {"id": kw.pop("id", 1), "result": choice_annotation("label", "text", choices), "was_cancelled": False, **kw}


def test_a_multi_label_annotation_gives_its_whole_set_in_config_order():
    config = parse_label_config(CONFIG)
    assert config.multi_label
    assert task_label(_task(_ann(["bird", "cat"])), config) == ("cat", "bird")
    # nothing chosen and submitted: the empty set, a label; a cancelled (skipped) annotation is none
    assert task_label(_task(_ann([])), config) == ()
    assert task_label(_task(dict(_ann(["dog"]), was_cancelled=True)), config) is None
    # only classes the config no longer has: no usable label; unknown ones beside known ones are dropped
    assert task_label(_task(_ann(["wolf"])), config) is None
    assert task_label(_task(_ann(["wolf", "dog"])), config) == ("dog",)
    # a ground-truth annotation wins, else the most recently updated one, whole sets (never merged)
    older = _ann(["cat", "dog"], id=1, updated_at="2026-01-01")
    newer = _ann(["bird"], id=2, updated_at="2026-02-01")
    assert task_label(_task(older, newer), config) == ("bird",)
    assert task_label(_task(dict(older, ground_truth=True), newer), config) == ("cat", "dog")
    single = parse_label_config(label_config(CLASSES))
    assert not single.multi_label and task_label(_task(_ann(["bird"])), single) == "bird"


@pytest.fixture()
def client(tmp_path, rconn):  # noqa: F811
    with TestClient(create_app(make_settings(tmp_path))) as c:
        yield c


def test_setup_accepts_a_multi_label_project_and_refuses_a_strategy_without_a_multi_label_form(client):
    body = captured_request("POST", "/setup")["body"]
    body["schema"] = CONFIG
    body["extra_params"] = None
    assert client.post("/setup", json=body).status_code == 200
    body["extra_params"] = {"strategy": "bmmal"}
    r = client.post("/setup", json=body)
    assert r.status_code == 400
    assert "strategy 'bmmal' has no multi-label form" in r.json()["detail"] and "margin" in r.json()["detail"]


@pytest.fixture(scope="module")
def multilabel_project():
    """An emoji project with label sets (category + 'Has a face'), 30 of 72 tasks annotated."""
    et = emoji_tasks(24, seed=3)
    sets = emoji_label_sets(et)
    classes = et.class_names + [FACE]
    config = label_config(classes, multiple=True)
    tasks = []
    for i, (t, chosen) in enumerate(zip(et.tasks, sets)):
        ann = [{"id": i + 1, "result": choice_annotation("label", "text", chosen), "was_cancelled": False}]
        tasks.append(dict(t, id=2000 + i, project=9, annotations=ann if i < 30 else []))
    return config, tasks, sets, classes


def test_a_multi_label_project_trains_with_the_defaults_and_predicts_sets(tmp_path, rconn, multilabel_project):  # noqa: F811
    config, tasks, sets, classes = multilabel_project
    settings = make_settings(tmp_path, featurizer_params={}, strategy="margin")  # margin is the default strategy
    version = train_version(settings, 9, config, tasks)
    loaded = ModelStore(settings.model_dir).load(9, version)
    assert loaded.model.multi_label and loaded.meta["recipe"] == "probe"
    # every unlabelled task's pre-annotation is one `choices` region listing the classes predicted
    unl = {t["id"]: s for t, s in zip(tasks, sets) if not t["annotations"]}
    hits = exact = 0
    for tid, truth in unl.items():
        label, score = loaded.ranking[tid]
        assert isinstance(label, list) and set(label) <= set(classes) and 0 <= score < LABELED_SCORE
        hits += sum((c in label) == (c in truth) for c in classes)
        exact += set(label) == set(truth)
    per_class = hits / (len(unl) * len(classes))
    truth_matrix = np.array([[c in s for c in classes] for s in unl.values()])
    majority = float(np.maximum(truth_matrix.mean(0), 1 - truth_matrix.mean(0)).mean())
    # measured: 0.857 per class against 0.732 for the majority answer, 0.55 of the sets exactly right
    # (predicting each class's majority gets a set right about 0.3 of the time)
    assert per_class > majority + 0.08, (per_class, majority)
    assert exact / len(unl) > 0.42, exact / len(unl)
    for t in tasks[:30]:
        assert loaded.ranking[t["id"]][1] == LABELED_SCORE

    # /predict on an unseen task answers with the same kind of region, scored among the training's pool
    with TestClient(create_app(settings)) as client:
        new = dict(tasks[40], id=9999, annotations=[])
        r = client.post("/predict", json={"tasks": [new], "project": "9.1", "label_config": config})
        assert r.status_code == 200, r.text
        [pred] = r.json()["results"]
        assert pred["model_version"] == version and 0 <= pred["score"] < LABELED_SCORE
        same = loaded.ranking[tasks[40]["id"]][0]  # the same content, predicted at training time
        if same:
            [region] = pred["result"]
            assert region["type"] == "choices" and region["from_name"] == "label" and region["to_name"] == "text"
            assert region["value"]["choices"] == same
        else:
            assert pred["result"] == []  # the empty set: nothing to pre-select
