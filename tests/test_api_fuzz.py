"""Property-based fuzzing of the ML backend's HTTP API from its own OpenAPI schema (schemathesis).

A real uvicorn serves the app on loopback, with a real Redis (DB 13, flushed) and real trained models for
projects 0 and 1 (the ids generated data hits most often), so generated ``/predict`` bodies reach the
featurize-and-predict path, not only the cold start. Every operation gets schema-valid (positive) and
schema-violating (negative) requests; the run is deterministic (hypothesis ``derandomize``) and must make
at least 1,000 requests with **zero 5xx answers**. Negative requests must be refused with a 4xx.
"""

from __future__ import annotations

import base64
import shutil
import socket
import threading
import time
from collections import Counter
from contextlib import closing

import hypothesis
import pytest
import redis
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from schemathesis import GenerationMode

from ml_server.app import create_app
from ml_server.demo import emoji_tasks
from ml_server.predictor import UNTRAINED_VERSION
from tests.test_ml_server_protocol import labelled_emoji_project, make_settings, train_version

_CONFIG, _, _ = labelled_emoji_project()
REDIS_URL = "redis://127.0.0.1:6379/13"
MIN_REQUESTS = 1000
# examples per operation and mode; operations without parameters stop after their few distinct requests
AUTH = ("fuzz-user", "fuzz-pass")
AUTH_HEADER = "Basic " + base64.b64encode(f"{AUTH[0]}:{AUTH[1]}".encode()).decode()
EXAMPLES = {GenerationMode.POSITIVE: 120, GenerationMode.NEGATIVE: 80}  # and 120 targeted (TARGETED)


_PNG = emoji_tasks(1, seed=0).tasks[0]["data"]["image"]
_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                     max_leaves=6)
_IMAGE_VALUES = st.sampled_from([
    _PNG, _PNG[:60], "data:image/png;base64,AAAA", "data:text/plain,not an image", "data:", "data:image/png;base64,@@",
    "file:///etc/passwd", "http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:6379/", "http://[::1]:22/",
    "/data/upload/1/x.png", "gopher://127.0.0.1:6379/_INFO", "", " ", "http://", "//evil.example/x.png"])


def _mostly(valid, invalid=_JSON):
    """``valid`` 19 times in 20, ``invalid`` (any JSON) otherwise: most tasks pass validation."""
    return st.integers(0, 19).flatmap(lambda k: valid if k else invalid)


_TASK = st.fixed_dictionaries(
    {"data": _mostly(st.fixed_dictionaries({}, optional={"image": st.one_of(st.just(_PNG), _IMAGE_VALUES, _JSON),
                                                         "text": st.one_of(st.text(max_size=30), _JSON),
                                                         "other": _JSON}))},
    optional={"id": _mostly(st.one_of(st.integers(min_value=-2, max_value=2**63 - 1), st.sampled_from([1000, 1010])),
                            st.one_of(st.integers(min_value=2**63), _JSON)),
              "project": st.one_of(st.sampled_from([0, 1]), _JSON),
              "annotations": _mostly(st.lists(st.dictionaries(st.sampled_from(["result", "was_cancelled", "id"]),
                                                              _JSON, max_size=3), max_size=2)),
              "total_annotations": _mostly(st.integers(-3, 3)), "cancelled_annotations": _mostly(st.integers(-3, 3)),
              "is_labeled": _mostly(st.booleans())})


_ODD_PROJECTS = st.sampled_from(["0.1700000000", "1", "0", "\u00b2.1", "\u0663.1", "9" * 300 + ".1", "-1.5", "1e5",
                                 " 1 .2", "", "0" * 19, "18446744073709551616"])


def _with_model(case_strategy):
    """/predict cases for projects that have a trained model, with task dicts that look like Label Studio's
    but carry wrong types, odd URLs and broken images: the featurize-and-predict path, not the cold start."""
    def put(args):
        case, project, tasks, label_config = args
        case.body = {"project": project, "tasks": tasks, "label_config": label_config}
        return case

    return st.tuples(case_strategy, st.sampled_from(["0.1700000000", "1", "0"]), st.lists(_TASK, min_size=1, max_size=4),
                     st.one_of(st.none(), st.just(_CONFIG), st.text(max_size=20))).map(put)


def _odd_project(case_strategy, where: str):
    """Cases whose project id is odd (unicode digits, 300 digits, negative, ...) in the body or the query."""
    def put(args):
        case, project = args
        if where == "body" and isinstance(case.body, dict):
            case.body = dict(case.body, project=project)
        elif where == "query":
            case.query = {"project": project}
        return case

    return st.tuples(case_strategy, _ODD_PROJECTS).map(put)


TARGETED = {"POST /predict": _with_model, "POST /setup": lambda s: _odd_project(s, "body"),
            "GET /versions": lambda s: _odd_project(s, "query")}


def _free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    """(base URL, settings) of a real uvicorn serving the app with trained models of projects 0 and 1."""
    conn = redis.Redis.from_url(REDIS_URL)
    conn.flushdb()
    root = tmp_path_factory.mktemp("fuzz")
    settings = make_settings(root, redis_url=REDIS_URL, fetch_timeout=1.0, basic_auth_user=AUTH[0],
                             basic_auth_pass=AUTH[1])
    _, tasks, _ = labelled_emoji_project()
    train_version(settings, 0, _CONFIG, [dict(t, project=0) for t in tasks])
    shutil.copytree(settings.model_dir / "project-0", settings.model_dir / "project-1")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", settings
    server.should_exit = True
    thread.join(timeout=10)
    conn.flushdb()


def test_generated_requests_never_get_a_server_error(live_server):
    url, _ = live_server
    schema = schemathesis.openapi.from_url(url + "/openapi.json", auth=AUTH)
    session = requests.Session()
    sent: Counter = Counter()
    statuses: Counter = Counter()
    server_errors: list[str] = []
    with_model = [0]  # /predict answers that came from a trained model (not the cold start)
    task_errors = [0]  # /predict 422s naming unusable task data (the task-reading path, reached)

    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /predict", "POST /setup", "POST /webhook", "GET /status"}
    t0 = time.monotonic()
    for op in operations:
        for mode, n in EXAMPLES.items():
            try:
                strategy = op.as_strategy(generation_mode=mode)
            except Exception as exc:  # noqa: BLE001 - e.g. no negative cases for an operation without inputs
                print(f"{op.label} {mode.value}: no strategy ({type(exc).__name__})")
                continue
            runs = [(mode.value, strategy)]
            if op.label in TARGETED and mode is GenerationMode.POSITIVE:
                runs.append(("targeted", TARGETED[op.label](strategy)))
            for kind, strategy in runs:
                @hypothesis.settings(max_examples=n, derandomize=True, database=None, deadline=None,
                                     phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
                @hypothesis.given(case=strategy)
                def run(case) -> None:
                    # the generated Authorization header is replaced by valid credentials: the requests must reach
                    # the handlers (tests/test_reliability_access.py covers authentication itself)
                    case.headers = {**(case.headers or {}), "Authorization": AUTH_HEADER}
                    response = case.call(base_url=url, session=session, timeout=60)
                    sent[op.label] += 1
                    statuses[response.status_code] += 1
                    what = f"{op.label} [{kind}] -> {response.status_code}: {response.text[:300]!r}"
                    if response.status_code >= 500:
                        server_errors.append(what + f"\n    request body: {str(case.body)[:300]}")
                    elif op.label == "POST /predict" and response.status_code == 200:
                        versions = {item["model_version"] for item in response.json()["results"]}
                        if versions - {UNTRAINED_VERSION}:
                            with_model[0] += 1
                    elif op.label == "POST /predict" and response.status_code == 422:
                        detail = response.json().get("detail")
                        if isinstance(detail, list) and any(isinstance(d, dict) and d.get("type") == "task_data"
                                                            for d in detail):
                            task_errors[0] += 1  # every task was read and found unusable (named per task)

                try:
                    run()
                except hypothesis.errors.Unsatisfiable:
                    pass
    elapsed = time.monotonic() - t0
    total = sum(sent.values())
    print(f"\nschemathesis: {total} requests in {elapsed:.1f} s; per operation {dict(sent)}; "
          f"status codes {dict(sorted(statuses.items()))}; /predict answered by a trained model: {with_model[0]}, "
          f"422 naming unusable task data: {task_errors[0]}")
    assert not server_errors, f"{len(server_errors)} server errors:\n" + "\n".join(server_errors[:20])
    assert total >= MIN_REQUESTS, f"only {total} requests generated"
    # the featurize-and-predict path was exercised, not only the cold start (generated tasks are often all
    # unusable, which is a 422 naming each task: also the task-reading path; the share varies with the run)
    assert with_model[0] >= 10 and with_model[0] + task_errors[0] >= 20
