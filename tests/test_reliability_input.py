"""Bad input: every malformed request is a 4xx whose message names what was wrong; nothing is a 5xx.

Real components: the FastAPI app (TestClient) and, for the body-size limit over a real socket, uvicorn on
loopback; Redis DB 13 (flushed); a real trained model for the /predict cases. The generated-request side of
this item is tests/test_api_fuzz.py (schemathesis).
"""

from __future__ import annotations

import base64
import logging
import socket
import threading
import time

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from ml_server.app import create_app
from ml_server.demo import emoji_tasks
from tests.test_ml_server_protocol import labelled_emoji_project, make_settings, train_version

REDIS_URL = "redis://127.0.0.1:6379/13"


@pytest.fixture()
def settings(tmp_path, rconn):
    return make_settings(tmp_path, redis_url=REDIS_URL, max_request_bytes=64_000)


@pytest.fixture()
def client(settings):
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def trained_project(tmp_path_factory):
    """(model dir, label config, tasks) of project 1 with a real trained model (shared by the module)."""
    root = tmp_path_factory.mktemp("input")
    config, tasks, _ = labelled_emoji_project()
    s = make_settings(root, redis_url=REDIS_URL)
    train_version(s, 1, config, [dict(t, project=1) for t in tasks])
    return s.model_dir, config, tasks


def _with_model(settings, trained_project):
    import shutil

    src, config, tasks = trained_project
    shutil.copytree(src / "project-1", settings.model_dir / "project-1")
    return config, tasks


# --- malformed label configs ------------------------------------------------------------------------------------
@pytest.mark.parametrize("schema, message", [
    ("", None),  # no config at all: Label Studio sends one; nothing to validate
    ("not xml at all", "not well-formed XML"),
    ("<View><Image name='i' value='$i'/>", "not well-formed XML"),
    ('<!DOCTYPE lol [<!ENTITY a "aaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><View>&b;</View>', "DOCTYPE or ENTITY"),
    ("<View><Image value='$i'/><Text name='t' value='$t'/></View>", "<Image> object tag has no name"),
    ("<View><Image name='i' value='$i'/><Text name='t' value='$t'/></View>", "no <Choices> control"),
    ("<View><Image name='i' value='$i'/><Text name='t' value='$t'/><Choices name='c' toName='i'>"
     "<Choice value='only'/></Choices></View>", "needs at least 2 choices"),
    ("<View><Image name='i' value='$i'/><Text name='t' value='$t'/><Choices name='c' toName='i'>"
     "<Choice value='a'/><Choice value='a'/></Choices></View>", "choice 'a' appears twice"),
    ("<View><Image name='i' value='$i'/><Text name='i' value='$t'/><Choices name='c' toName='i'>"
     "<Choice value='a'/><Choice value='b'/></Choices></View>", "two tags are named 'i'"),
    ("<View><Image name='i' value='$i'/><Text name='t' value='$t'/><Choices name='c' toName='i' value='$opts'/>"
     "</View>", "dynamic choices"),
    ("<View><Text name='t' value='static text'/><Choices name='c' toName='t'><Choice value='a'/>"
     "<Choice value='b'/></Choices></View>", "no object tag (Image, Text, ...) with a $data value"),
    ("<View><Image name='photo' value='$img'/><Choices name='c' toName='photo'><Choice value='a'/>"
     "<Choice value='b'/></Choices></View>", "needs at least 2 object tags it can featurize; usable: ['photo']"),
    ("<View><Image name='i' value='$i'/><Audio name='a' value='$a'/><Choices name='c' toName='i'>"
     "<Choice value='a'/><Choice value='b'/></Choices></View>", "without a featurizer (set MMAL_FEATURIZERS): ['a (Audio)']"),
])
def test_malformed_label_configs_are_refused_by_setup_with_the_reason(client, schema, message):
    r = client.post("/setup", json={"project": "5.1700000000", "schema": schema})
    if message is None:
        assert r.status_code == 200
        return
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith("label config not supported: ") and message in r.json()["detail"]


# --- malformed bodies and tasks ----------------------------------------------------------------------------------
def test_tasks_without_a_data_object_or_with_wrong_field_types_are_422_naming_the_task(client):
    r = client.post("/predict", json={"tasks": [{"id": 1, "data": {"image": "x"}}, {"id": 2}, {"id": 3, "data": [1]},
                                               {"id": 2**64, "data": {}}, {"id": "7", "data": {}},
                                               {"id": 8, "data": {}, "annotations": {"id": 1}},
                                               {"id": 9, "data": {}, "total_annotations": "many"}]})
    assert r.status_code == 422
    errors = {tuple(e["loc"]): e["msg"] for e in r.json()["detail"]}
    assert errors[("body", "tasks", 1, "data")] == "Field required"
    assert errors[("body", "tasks", 2, "data")] == "Input should be a valid dictionary"
    assert "less than or equal to 9223372036854775807" in errors[("body", "tasks", 3, "id")]
    assert errors[("body", "tasks", 4, "id")] == "Input should be a valid integer"
    assert errors[("body", "tasks", 5, "annotations")] == "Input should be a valid list"
    assert "valid integer" in errors[("body", "tasks", 6, "total_annotations")]
    assert ("body", "tasks", 0, "data") not in errors  # the good task is not blamed

    for body, loc in [({}, ("body", "tasks")), ({"tasks": "all"}, ("body", "tasks")), ([], ("body",))]:
        r = client.post("/predict", json=body)
        assert r.status_code == 422 and tuple(r.json()["detail"][0]["loc"]) == loc
    r = client.post("/setup", json={"schema": "<View/>"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "project"]
    r = client.post("/webhook", json={"project": {"id": 1}})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "action"]


def test_malformed_json_and_odd_project_ids(client, rconn):
    r = client.post("/predict", content=b'{"tasks": [', headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["msg"] == "JSON decode error"
    r = client.post("/predict", content=b"\xff\xfe\x00garbage", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["msg"] == "JSON decode error"
    for project in ("\u00b2.1700000000", "\u0663.1", "9" * 300 + ".1", "-1.1", "abc", ""):
        r = client.post("/setup", json={"project": project})
        assert r.status_code == 422 and "is not '<id>.<timestamp>'" in r.json()["detail"], project
    assert client.get("/versions", params={"project": "9" * 300}).json() == {"versions": []}
    for project in ({"id": True}, {"id": -3}, {"id": 10**30}, {"id": "7"}):
        r = client.post("/webhook", json={"action": "START_TRAINING", "project": project})
        assert r.status_code == 200 and r.json()["status"] == "ignored", project
    assert rconn.keys("rq:queue:*") == []  # nothing was enqueued for project True == 1


def test_unreachable_label_studio_hostname_is_refused_and_never_a_500(client, settings, trained_project, rconn):
    """/setup refuses a hostname that is not an http(s) URL (422 naming the field); a bad one already stored
    (an older version, or written by hand) makes the task data unreachable, a 4xx naming it, not a 500."""
    for hostname in ("\U00035ac8\u00f3", "ftp://ls.example", "localhost:8080", "javascript:alert(1)"):
        r = client.post("/setup", json={"project": "1.1700000000", "hostname": hostname, "access_token": "t"})
        assert r.status_code == 422, hostname
        assert r.json()["detail"][0]["loc"] == ["body", "hostname"], hostname
    for token in ("t\u00f3ken", "a\nb", "two words"):
        r = client.post("/setup", json={"project": "1.1700000000", "hostname": "http://ls:8080", "access_token": token})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "access_token"], token
    assert client.post("/setup", json={"project": "1.1700000000", "hostname": ""}).status_code == 200

    from ml_server import jobs

    config, _ = _with_model(settings, trained_project)
    jobs.save_project_setup(rconn, 1, {"label_config": config, "hostname": "not a url", "access_token": "t"})
    with TestClient(create_app(settings), raise_server_exceptions=False) as fresh_client:  # reads Redis afresh
        r = fresh_client.post("/predict", json={"tasks": [{"id": 5, "data": {"image": "/data/upload/1/x.png"}}],
                                                "project": "1.1700000000", "label_config": config})
    assert r.status_code == 422  # the only task's image cannot be fetched: a named error, not a 500
    assert r.json()["detail"][0]["msg"].startswith("task 5: data.image: ")


def test_unusable_task_data_is_a_named_error_and_loses_the_rest_of_nothing(client, settings, trained_project, caplog):
    """A modality that is *absent* (no key, empty value) is first-class: the task is predicted from what it
    has. A value that is there but unusable (bytes that are not an image, not a URL) or a task with no usable
    value at all is an error naming the task, the field and the reason. In a batch the bad task's item has
    ``error`` and no ``result``/``score`` (Label Studio skips just that item and keeps the rest; a non-200
    would drop the whole batch); when every task is bad the answer is a 422 listing them."""
    config, tasks = _with_model(settings, trained_project)
    fresh = emoji_tasks(2, seed=42).tasks
    not_png = "data:image/png;base64," + base64.b64encode(b"%PDF-1.4 this is not an image at all").decode()
    batch = [dict(fresh[k], id=9000 + k) for k in range(6)]
    batch[1]["data"] = dict(batch[1]["data"], image=not_png)  # non-image bytes as the image
    batch[2]["data"] = {"text": batch[2]["data"]["text"]}  # no image key: a missing modality, predicted
    batch[3]["data"] = {"image": "data:text/plain,hello", "text": ""}  # not an image, and no text
    batch[4]["data"] = {"caption": "keys the label config does not read"}
    batch[5]["data"] = dict(batch[5]["data"], image=["a", "list"])  # not a URL
    with caplog.at_level(logging.WARNING, logger="ml_server.dataset"):
        r = client.post("/predict", json={"tasks": batch, "project": "1.1700000000", "label_config": config})
    assert r.status_code == 200
    results = r.json()["results"]
    assert len(results) == 6
    for k in (0, 2):
        assert results[k]["result"] and 0.0 <= results[k]["score"] < 1.0 and "error" not in results[k]
    errors = {k: results[k]["error"] for k in (1, 3, 4, 5)}
    for k in errors:
        assert "result" not in results[k] and "score" not in results[k], results[k]  # absent, not null
        assert results[k]["model_version"] == results[0]["model_version"]
    assert errors[1] == ("task 9001: data.image: cannot featurize: not a decodable image (36 bytes starting "
                         "b'%PDF-1.4 thi'; unknown image format)")
    assert errors[3].startswith("task 9003: data.image: cannot featurize")
    assert errors[4] == ("task 9004: data: no value for any key the label config reads (data.image, data.text); "
                         "keys present: 'caption'")
    assert errors[5] == "task 9005: data.image: expected a URL string for <Image>, got list"
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "task 9001, image: cannot featurize" in logged

    # every task unusable: nothing to keep, so a 422 that names each one
    r = client.post("/predict", json={"tasks": [batch[1], batch[4]], "project": "1.1700000000", "label_config": config})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert [d["loc"] for d in detail] == [["body", "tasks", 0], ["body", "tasks", 1]]
    assert detail[0]["msg"] == errors[1] and detail[1]["msg"] == errors[4]


def test_unusable_task_data_before_the_first_training(client):
    """Without a model nothing is featurized, but a task with nothing the label config reads is still named."""
    config, _, _ = labelled_emoji_project()
    good = {"id": 1, "data": {"image": "data:image/png;base64,AAAA", "text": "x"}}
    empty = {"id": 2, "data": {"img": "http://elsewhere/x.png"}}
    r = client.post("/predict", json={"tasks": [good, empty], "project": "3.1700000000", "label_config": config})
    assert r.status_code == 200
    first, second = r.json()["results"]
    assert first["result"] == [] and 0.0 <= first["score"] < 1.0
    assert second["error"].startswith("task 2: data: no value for any key the label config reads")
    r = client.post("/predict", json={"tasks": [empty], "project": "3.1700000000", "label_config": config})
    assert r.status_code == 422 and "keys present: 'img'" in r.json()["detail"][0]["msg"]


def test_duplicate_task_ids_in_one_batch_are_answered_by_position(client, settings, trained_project):
    config, tasks = _with_model(settings, trained_project)
    fresh = emoji_tasks(1, seed=43).tasks
    batch = [dict(fresh[0], id=77), dict(fresh[1], id=77), dict(fresh[2])]  # a repeated id, a missing id
    r = client.post("/predict", json={"tasks": batch, "project": "1.1", "label_config": config})
    assert r.status_code == 200 and len(r.json()["results"]) == 3


# --- content types and sizes -------------------------------------------------------------------------------------
@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/xml", "image/png"])
def test_wrong_content_type_is_415_naming_it(client, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    for path in ("/predict", "/setup", "/webhook", "/job_status"):
        r = client.post(path, content=b'{"tasks": []}', headers=headers)
        assert r.status_code == 415, (path, r.text)
        assert r.json()["detail"] == ("request body must be JSON (Content-Type: application/json), got "
                                      f"{content_type or 'none'!r}")


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON",
                                          "application/vnd.api+json"])
def test_json_content_types_are_accepted(client, content_type):
    r = client.post("/predict", content=b'{"tasks": []}', headers={"Content-Type": content_type})
    assert r.status_code == 200 and r.json() == {"results": []}


def test_oversized_bodies_are_413_declared_or_streamed(client, settings):
    big = {"tasks": [{"id": 1, "data": {"text": "x" * 70_000}}]}
    r = client.post("/predict", json=big)
    assert r.status_code == 413
    assert r.json()["detail"].endswith(f"exceeds the limit of {settings.max_request_bytes} bytes (MMAL_MAX_REQUEST_BYTES)")

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(100):
            yield b" " * 1000

    r = client.post("/predict", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "exceeds the limit of 64000 bytes" in r.json()["detail"]
    ok = {"tasks": [{"id": 1, "data": {"text": "x" * 60_000}}]}
    assert client.post("/predict", json=ok).status_code == 200  # just under the limit


def test_a_huge_declared_body_is_refused_before_it_is_sent(settings):
    """Over a real socket: the server answers 413 from the Content-Length alone, without waiting for 1 GB."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1000000000\r\n\r\n{\"tasks\": [")
            reply = b""
            while not reply.endswith(b"}"):
                part = s.recv(4096)
                assert part, reply
                reply += part
            reply = reply.decode()
        assert reply.startswith("HTTP/1.1 413") and "exceeds the limit of 64000 bytes" in reply
        assert time.monotonic() - t0 < 5

        def endless():
            while True:
                yield b" " * 65536

        t0 = time.monotonic()
        with httpx.Client(timeout=20) as http:  # a chunked body that never ends: cut at the limit, connection closed
            r = http.post(f"http://127.0.0.1:{port}/predict", content=endless(),
                          headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and r.headers["connection"] == "close"
        assert time.monotonic() - t0 < 10
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200  # still serving
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_job_status_without_redis_is_503_not_500(tmp_path):
    s = make_settings(tmp_path, redis_url="redis://127.0.0.1:1/0")
    with TestClient(create_app(s), raise_server_exceptions=False) as c:
        r = c.post("/job_status", json={"job": "mmal-train-1-abc"})
        assert r.status_code == 503 and "training queue unavailable" in r.json()["detail"]
