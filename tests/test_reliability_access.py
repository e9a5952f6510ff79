"""Access: with basic auth set, every endpoint but /health is 401 without credentials; secrets never leak.

Real processes: ``mmal serve`` (the CLI, uvicorn, info-level logs) and ``mmal worker`` against a real Label
Studio 1.23.2 and Redis (DB 13, flushed). The routes are enumerated from the app itself, so an endpoint added
later is covered without editing this test. Secrets are then searched for, in every encoding a header would
carry them, in the server's and the workers' complete output, in ``/status``, ``/prometheus``, ``/versions``
and in the project's status record: after a successful training, a training against an unreachable Label
Studio, and one with a rejected API key.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis
from fastapi.routing import APIRoute
from starlette.routing import Route

from connectors.labelstudio import LabelStudioConnector
from ml_server import jobs
from ml_server.app import create_app
from ml_server.demo import choice_annotation, create_emoji_project
from ml_server.ls_process import free_port
from ml_server.settings import Settings
from perf.server_harness import wait_healthy

REDIS_URL = "redis://127.0.0.1:6379/13"
REPO = Path(__file__).resolve().parents[1]
MMAL = str(Path(sys.executable).parent / "mmal")
USER, PASSWORD = "ls-backend", "pw-Secret-7f3a9c1e"
SETUP_TOKEN = "setup-token-Secret-51b2d0"  # what Label Studio sends in /setup
PREDICT_PASSWORD = "predict-param-Secret-88aa"  # Label Studio's /predict params carry login/password
WRONG_PASSWORD = "wrong-pw-Secret-0c0c0c"
WRONG_API_KEY = "wrong-api-key-Secret-9d9d9d"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def every_route(app) -> list[tuple[str, str]]:
    """(method, path) of every route the app serves, the OpenAPI docs and the routers' routes included (FastAPI
    keeps an included router as one entry of ``app.routes``, its routes under ``original_router``)."""
    out = []
    todo = list(app.routes)
    while todo:
        route = todo.pop(0)
        if isinstance(route, (APIRoute, Route)):
            for method in sorted(route.methods or {"GET"}):
                out.append((method, route.path))
        elif hasattr(route, "original_router"):
            todo[:0] = route.original_router.routes
    return out




def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("MMAL_", "BASIC_AUTH_", "LABEL_STUDIO_"))}
    e.update({"REDIS_URL": REDIS_URL, "MODEL_DIR": str(tmp_path / "models"), "BASIC_AUTH_USER": USER,
              "BASIC_AUTH_PASS": PASSWORD, "MMAL_MIN_ANNOTATIONS": "6", "MMAL_EPOCHS": "5", "MMAL_PATIENCE": "5",
              "MMAL_FEATURIZER_PARAMS": '{"image_pixels": {"size": 16}}', "MMAL_JOB_RETRIES": "0",
              "PYTHONPATH": str(REPO)})
    e.update(extra)
    return e


def test_every_route_but_health_needs_credentials(tmp_path, rconn):
    s = Settings(redis_url=REDIS_URL, model_dir=tmp_path / "models", basic_auth_user=USER, basic_auth_pass=PASSWORD)
    routes = every_route(create_app(s))
    paths = {p for _, p in routes}
    assert {"/health", "/setup", "/predict", "/webhook", "/status", "/metrics", "/prometheus", "/versions",
            "/job_status", "/openapi.json", "/docs", "/redoc"} <= paths
    port = free_port()
    log = tmp_path / "server.log"
    server = subprocess.Popen([MMAL, "serve", "--host", "127.0.0.1", "--port", str(port)], env=base_env(tmp_path),
                              cwd=str(REPO), stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    bad = {"none": {}, "wrong password": {"Authorization": basic(USER, WRONG_PASSWORD)},
           "wrong user": {"Authorization": basic("admin", PASSWORD)}, "bearer": {"Authorization": f"Bearer {PASSWORD}"},
           "not base64": {"Authorization": "Basic !!!"}, "no colon": {"Authorization": "Basic " + base64.b64encode(
               f"{USER}{PASSWORD}".encode()).decode()}, "empty": {"Authorization": ""}}
    try:
        wait_healthy(url, server, log)
        with httpx.Client(base_url=url, timeout=30) as http:
            for method, path in routes + [("GET", "/no-such-endpoint"), ("DELETE", "/predict"), ("HEAD", "/status"),
                                          ("OPTIONS", "/setup"), ("GET", "/health/../status")]:
                for what, headers in bad.items():
                    r = http.request(method, path, headers={**headers, "Content-Type": "application/json"},
                                     content=b"{}" if method in ("POST", "PUT", "PATCH") else None)
                    if path == "/health":
                        assert r.status_code == 200, (method, path, what)
                        continue
                    assert r.status_code == 401, (method, path, what, r.status_code)
                    assert r.headers["www-authenticate"] == 'Basic realm="mmal"'
                    if method != "HEAD":
                        assert r.json() == {"detail": "authentication required"}
                good = http.request(method, path, headers={"Authorization": basic(USER, PASSWORD),
                                                           "Content-Type": "application/json"},
                                    content=b"{}" if method in ("POST", "PUT", "PATCH") else None)
                assert good.status_code != 401, (method, path)
    finally:
        server.terminate()
        server.wait(timeout=20)
    out = log.read_text(errors="replace")
    for secret in (PASSWORD, WRONG_PASSWORD, basic(USER, PASSWORD).split()[1], basic(USER, WRONG_PASSWORD).split()[1]):
        assert secret not in out


def _run_worker(env: dict[str, str], log: Path) -> str:
    proc = subprocess.run([MMAL, "worker", "--burst"], env=env, cwd=str(REPO), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=240)
    log.write_bytes(proc.stdout)
    return proc.stdout.decode(errors="replace")


def test_tokens_and_passwords_never_appear_in_logs_or_status(labelstudio, rconn, tmp_path):
    lsc = LabelStudioConnector(labelstudio.url, labelstudio.token)
    project = create_emoji_project(lsc, "access: secrets", per_class=3, seed=71)
    pid = project.project_id
    for tid in project.task_ids[:7]:
        lsc.create_annotation(tid, choice_annotation(project.control, project.to_name, project.truth[tid]))
    lsc.close()
    env = base_env(tmp_path, LABEL_STUDIO_URL=labelstudio.url, LABEL_STUDIO_API_KEY=labelstudio.token)
    port = free_port()
    server_log = tmp_path / "server.log"
    server = subprocess.Popen([MMAL, "serve", "--host", "127.0.0.1", "--port", str(port)], env=env, cwd=str(REPO),
                              stdout=open(server_log, "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": basic(USER, PASSWORD)}
    answers: list[str] = []
    logs: list[str] = []
    try:
        wait_healthy(url, server, server_log)
        with httpx.Client(base_url=url, timeout=60) as http:
            http.get("/status", headers={"Authorization": basic(USER, WRONG_PASSWORD)})
            r = http.post("/setup", headers=auth, json={"project": f"{pid}.1700000000", "schema": project.config,
                                                        "hostname": labelstudio.url, "access_token": SETUP_TOKEN})
            assert r.status_code == 200
            r = http.post("/setup", headers=auth, json={"project": f"{pid}.1", "schema": "<View>",
                                                        "access_token": SETUP_TOKEN})
            assert r.status_code == 400
            tasks = [{"id": t, "data": {"image": "http://169.254.169.254/", "text": "x"}} for t in project.task_ids[:2]]
            predict = {"tasks": tasks, "project": f"{pid}.1", "label_config": project.config,
                       "params": {"login": USER, "password": PREDICT_PASSWORD, "context": None}}
            assert http.post("/predict", headers=auth, json=predict).status_code == 200
            hook = {"action": "START_TRAINING", "project": {"id": pid}}
            # the first /setup queued the job that encodes the project ahead; the request joins it
            assert http.post("/webhook", headers=auth, json=hook).json()["status"] == "coalesced"
            logs.append(_run_worker(env, tmp_path / "worker-ok.log"))  # trains (real Label Studio, real token)
            assert jobs.training_count(rconn, pid) == 1, logs[-1][-3000:]
            assert http.post("/predict", headers=auth, json=predict).status_code == 200  # now with the model
            answers += [http.get(p, headers=auth).text for p in ("/status", "/prometheus", "/versions")]

            # failures: Label Studio unreachable, then a rejected API key (tracebacks in the worker log)
            assert http.post("/webhook", headers=auth, json=hook).json()["status"] == "queued"
            logs.append(_run_worker(dict(env, LABEL_STUDIO_URL=f"http://127.0.0.1:{free_port()}"),
                                    tmp_path / "worker-unreachable.log"))
            answers.append(http.get("/status", headers=auth).text)
            assert "ConnectError" in answers[-1] or "LabelStudioError" in answers[-1]
            assert http.post("/webhook", headers=auth, json=hook).json()["status"] == "queued"
            logs.append(_run_worker(dict(env, LABEL_STUDIO_API_KEY=WRONG_API_KEY), tmp_path / "worker-401.log"))
            answers.append(http.get("/status", headers=auth).text)
            assert "401" in answers[-1]
            answers.append(http.post("/job_status", headers=auth, json={"job": "x"}).text)
    finally:
        server.terminate()
        server.wait(timeout=20)
    logs.append(server_log.read_text(errors="replace"))
    assert "GET /status HTTP/1.1\" 401" in logs[-1] and "POST /predict HTTP/1.1\" 200" in logs[-1]  # info logs on
    record = str(jobs.get_status(rconn, pid))
    secrets = {"basic auth password": PASSWORD, "wrong password": WRONG_PASSWORD, "setup token": SETUP_TOKEN,
               "predict password": PREDICT_PASSWORD, "API key": labelstudio.token, "wrong API key": WRONG_API_KEY,
               "basic header": basic(USER, PASSWORD).split()[1],
               "wrong basic header": basic(USER, WRONG_PASSWORD).split()[1],
               "Label Studio session cookie": "sessionid="}  # the SDK's errors carry response headers
    for where, text in [("server log", logs[-1]), ("worker logs", "\n".join(logs[:-1])),
                        ("endpoints", "\n".join(answers)), ("status record", record)]:
        for name, secret in secrets.items():
            assert secret not in text, f"{name} found in {where}"
    assert sum(len(x) for x in logs) > 5000  # the logs were not empty
