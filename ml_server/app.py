"""The Label Studio ML backend: a FastAPI app (``mmal serve``, port 9090).

Endpoints, exactly as Label Studio 1.23.2 calls them:

- ``GET /health``    instant ``{"status": "UP", "model_class": ...}`` (no auth; Label Studio allows 1 s)
- ``POST /setup``    validates the label config, remembers the project, answers the serving model version
- ``POST /predict``  one item per task, in order: predicted class + score (LOW = label first)
- ``POST /webhook``  annotation events and START_TRAINING enqueue a (coalesced) training job; never trains
- ``GET /metrics``   ``{}`` (Label Studio's probe); Prometheus text is at ``GET /prometheus``
- ``GET /status``    model versions, training state, queue depth, latest modality diagnostics per project
- ``GET /versions``, ``POST /job_status``: what older Label Studio code paths still ask

Basic auth protects everything but ``/health`` when ``BASIC_AUTH_USER`` and ``BASIC_AUTH_PASS`` are set.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import secrets
import threading
import time
from typing import Any, Callable

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import ValidationError
from redis.exceptions import RedisError

from ml_server import jobs
from ml_server.label_config import LabelConfigError, parse_label_config
from ml_server.model_store import ModelStore
from ml_server.predictor import UNTRAINED_VERSION, parse_project_id, predict_tasks
from ml_server.schemas import (HealthResponse, JobStatusResponse, PredictRequest, PredictResponse, ProjectStatus,
                               SetupRequest, SetupResponse, StatusResponse, VersionsResponse, WebhookRequest,
                               WebhookResponse)
from ml_server.settings import Settings, get_settings

log = logging.getLogger(__name__)
MODEL_CLASS = "MMALFusionBackend"


class _Metrics:
    """Prometheus metrics in a registry of their own (several apps may live in one test process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("mmal_requests_total", "Requests by endpoint and status code",
                                ["endpoint", "code"], registry=self.registry)
        self.predict_seconds = Histogram("mmal_predict_seconds", "Time to answer /predict", registry=self.registry,
                                         buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 100))
        self.predictions = Counter("mmal_predictions_total", "Prediction items returned", ["kind"],
                                   registry=self.registry)
        self.webhooks = Counter("mmal_webhooks_total", "Webhooks by action and outcome", ["action", "outcome"],
                                registry=self.registry)
        self.queue_depth = Gauge("mmal_training_queue_depth", "Jobs waiting in the training queue",
                                 registry=self.registry)
        self.model_reloads = Counter("mmal_model_loads_total", "Model versions loaded into memory",
                                     registry=self.registry)


class BackendState:
    """Everything the endpoints share: settings, model store, Redis, per-project setup, caches."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = ModelStore(settings.model_dir)
        self.metrics = _Metrics()
        self._redis = None
        self._setups: dict[int, dict[str, Any]] = {}
        self._connectors: dict[tuple[str, str], Any] = {}
        self._strategies: dict[str, Any] = {}
        self._cache = None
        self._lock = threading.Lock()

    @property
    def redis(self):
        if self._redis is None:
            self._redis = jobs.connect(self.settings)
        return self._redis

    def feature_cache(self):
        if self._cache is None:
            from backend.encoders import FeatureCache

            self._cache = FeatureCache(self.settings.cache_dir)
        return self._cache

    def remember_setup(self, project_id: int, data: dict[str, Any]) -> None:
        self._setups[project_id] = data
        try:
            jobs.save_project_setup(self.redis, project_id, data)
        except Exception as exc:  # /setup must answer even when Redis is down
            log.warning("could not store setup of project %s in Redis: %s", project_id, exc)

    def setup_of(self, project_id: int | None) -> dict[str, Any]:
        if project_id is None:
            return {}
        if project_id not in self._setups:
            try:
                self._setups[project_id] = jobs.load_project_setup(self.redis, project_id)
            except Exception:
                return {}
        return self._setups[project_id]

    def connector(self, project_id: int | None):
        """A Label Studio connector for fetching task data of ``project_id`` (None when unreachable)."""
        from connectors.labelstudio import LabelStudioConnector
        from ml_server.training import label_studio_access

        try:
            url, token = label_studio_access(self.settings, self.setup_of(project_id))
        except Exception:
            return None, self.settings.label_studio_url
        with self._lock:
            conn = self._connectors.get((url, token))
            if conn is None:
                try:
                    conn = self._connectors[(url, token)] = LabelStudioConnector(url, token)
                except ValueError as exc:  # e.g. a setup stored by an older version, before /setup checked it
                    log.warning("project %s: cannot reach Label Studio: %s", project_id, exc)
                    return None, self.settings.label_studio_url
        return conn, url

    def fetcher_factory(self, project_id: int | None) -> Callable[[], Any]:
        from ml_server.training import make_fetcher

        def make():
            conn, url = self.connector(project_id)
            return make_fetcher(self.settings, url, conn)

        return make

    def encode_ahead(self, project_id: int) -> None:
        """Once per project (and Redis): queue a job that encodes every task and publishes the cold-start
        order. Label Studio calls /setup before every prediction batch; only the first one queues."""
        try:
            if jobs.first_connect(self.redis, project_id):
                outcome = jobs.request_training(self.redis, self.settings, project_id, reason="connected")
                log.info("project %s connected: encoding its tasks ahead (job %s)", project_id, outcome["job_id"])
        except Exception as exc:  # /setup must answer even when Redis is down; the first webhook queues one
            log.warning("project %s: could not queue encoding ahead: %s", project_id, exc)

    def strategy_for(self, meta: dict[str, Any]):
        """The strategy object a model version was ranked with (one per spec, kept)."""
        spec = self.settings.version_strategy(meta)
        key = str(spec)
        if key not in self._strategies:
            self._strategies[key] = spec.build()
        return self._strategies[key]


def _basic_auth_ok(header: bytes | None, settings: Settings) -> bool:
    """Whether an ``Authorization`` header carries the configured Basic credentials (constant-time compare)."""
    if not header or not header[:6].lower() == b"basic ":
        return False
    try:
        user, sep, password = base64.b64decode(header[6:].strip(), validate=True).partition(b":")
    except (binascii.Error, ValueError):
        return False
    return bool(sep) and secrets.compare_digest(user, str(settings.basic_auth_user).encode()) \
        and secrets.compare_digest(password, str(settings.basic_auth_pass).encode())


def _is_json(content_type: bytes | None) -> bool:
    media = (content_type or b"").split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


class RequestGate:
    """Pure ASGI middleware in front of every route, so nothing reaches a handler unchecked:

    - basic auth (when set) on every path but ``/health``, unknown paths and the OpenAPI docs included,
      answered 401 before the body is read;
    - a request body must be JSON (``Content-Type: application/json``), else 415 naming the type sent;
    - a request body larger than ``MMAL_MAX_REQUEST_BYTES`` is refused with 413, by its Content-Length
      before reading anything, or while reading a chunked body (at most the limit is ever buffered).
    """

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self.settings.auth_enabled and scope.get("path") != "/health" \
                and not _basic_auth_ok(headers.get(b"authorization"), self.settings):
            await _reply(send, 401, "authentication required", {"www-authenticate": 'Basic realm="mmal"'})
            return
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        limit = self.settings.max_request_bytes
        length = headers.get(b"content-length")
        declared = int(length) if length is not None and length.isdigit() else None
        has_body = (declared or 0) > 0 or b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        if has_body and not _is_json(headers.get(b"content-type")):
            sent = headers.get(b"content-type", b"").decode("latin-1")[:100] or "none"
            await _reply(send, 415, f"request body must be JSON (Content-Type: application/json), got {sent!r}")
            return
        if declared is not None and declared > limit:
            await _reply(send, 413, f"request body of {declared} bytes exceeds the limit of {limit} bytes "
                                    "(MMAL_MAX_REQUEST_BYTES)")
            return
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                await _reply(send, 413, f"request body exceeds the limit of {limit} bytes (MMAL_MAX_REQUEST_BYTES)")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _reply(send: Callable, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    payload = json.dumps({"detail": detail}).encode()
    # close the connection: a refused body may still be arriving (endless, or 1 GB), and uvicorn would
    # otherwise read and discard it for as long as the client sends
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
           (b"connection", b"close")]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


def _auth_dependency(settings: Settings):
    basic = HTTPBasic(auto_error=False)

    def check(credentials: HTTPBasicCredentials | None = Depends(basic)) -> None:
        if not settings.auth_enabled:
            return
        ok = credentials is not None and secrets.compare_digest(
            credentials.username.encode(), str(settings.basic_auth_user).encode()) and secrets.compare_digest(
            credentials.password.encode(), str(settings.basic_auth_pass).encode())
        if not ok:
            raise HTTPException(status_code=401, detail="authentication required",
                                headers={"WWW-Authenticate": 'Basic realm="mmal"'})

    return check


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ML backend app; ``settings`` default to the environment (see :mod:`ml_server.settings`)."""
    settings = settings or get_settings()
    state = BackendState(settings)
    app = FastAPI(title="mmal Label Studio ML backend", version="1")
    app.state.backend = state
    # RequestGate enforces auth on every path; the dependency documents it in the OpenAPI schema. Without
    # auth there is no dependency at all, so a stray Authorization header is ignored (not a 401).
    auth = [Depends(_auth_dependency(settings))] if settings.auth_enabled else []
    app.add_middleware(RequestGate, settings=settings)

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        response = await call_next(request)
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "unmatched")
        state.metrics.requests.labels(endpoint, str(response.status_code)).inc()
        return response

    @app.get("/health", response_model=HealthResponse)
    async def health() -> HealthResponse:
        return HealthResponse(model_class=MODEL_CLASS)

    @app.post("/setup", response_model=SetupResponse, dependencies=auth)
    def setup(body: SetupRequest) -> SetupResponse:
        pid = parse_project_id(body.project)
        if pid is None:
            raise HTTPException(status_code=422, detail=f"project {body.project!r} is not '<id>.<timestamp>'")
        strategy = None
        try:
            project = jobs.project_settings(settings, {"extra_params": body.extra_params})
            if project.strategy != settings.strategy or project.strategy_params != settings.strategy_params:
                strategy = project.strategy_spec  # unknown name or bad parameters
        except (ValidationError, ValueError, TypeError) as exc:
            raise HTTPException(status_code=400, detail=f"invalid extra params: {exc}") from None
        if body.label_schema:
            from backend.data import DataError
            from backend.strategies.base import QueryError, require_multi_label
            from ml_server.dataset import modality_specs

            try:
                # the same checks the training job makes: two modalities this backend can featurize, and
                # for a multi-label project a strategy that has a multi-label form
                config = parse_label_config(body.label_schema)
                specs = modality_specs(config, project.featurizers, project.featurizer_params)
                if config.multi_label:
                    require_multi_label((strategy or project.strategy_spec).strategy_class)
            except (LabelConfigError, QueryError) as exc:
                raise HTTPException(status_code=400, detail=f"label config not supported: {exc}") from None
            for spec in specs:
                try:
                    spec.build()  # an unknown featurizer, a bad parameter, a model folder that is not there
                except DataError as exc:
                    raise HTTPException(status_code=400, detail=f"featurizer {spec.featurizer!r} for "
                                        f"<{spec.tag_type} name={spec.name!r}>: {exc}") from None
        state.remember_setup(pid, {"label_config": body.label_schema, "extra_params": body.extra_params,
                                   "hostname": body.hostname, "access_token": body.access_token,
                                   "setup_at": time.time()})
        version = state.store.current_version(pid)
        if version is None:
            if project.encode_ahead:
                state.encode_ahead(pid)
            cold = state.store.cold_start(pid)
            version = cold.version if cold is not None else UNTRAINED_VERSION
        return SetupResponse(model_version=version)

    @app.post("/predict", response_model=PredictResponse, response_model_exclude_none=True, dependencies=auth)
    def predict(body: PredictRequest) -> PredictResponse:
        t0 = time.perf_counter()
        pid = parse_project_id(body.project, body.tasks)
        loaded = None
        if pid is not None:
            before = state.store._cache.get(pid)
            try:
                loaded = state.store.get_current(pid, device="cpu")
            except Exception as exc:  # an unreadable version: answer cold-start rather than fail
                log.exception("project %s: cannot load the current model: %s", pid, exc)
            if loaded is not None and (before is None or before.version != loaded.version):
                state.metrics.model_reloads.inc()
        tasks = [t.model_dump(exclude_unset=True) for t in body.tasks]
        published = state.store.cold_start(pid) if pid is not None and loaded is None else None
        items = predict_tasks(pid, tasks, body.label_config, loaded, state.fetcher_factory(pid),
                              state.feature_cache(), state.strategy_for, published)
        if len(items) != len(tasks):  # Label Studio drops everything on a count mismatch
            raise HTTPException(status_code=500, detail="internal error: prediction count mismatch")
        if items and all("error" in item for item in items):  # nothing to keep: say what is wrong, as a 4xx
            state.metrics.predict_seconds.observe(time.perf_counter() - t0)
            raise HTTPException(status_code=422, detail=[
                {"loc": ["body", "tasks", i], "msg": item["error"], "type": "task_data"} for i, item in enumerate(items)])
        state.metrics.predictions.labels("model" if loaded else "cold_start").inc(len(items))
        state.metrics.predict_seconds.observe(time.perf_counter() - t0)
        return PredictResponse.model_validate({"results": items})

    @app.post("/webhook", response_model=WebhookResponse, dependencies=auth)
    def webhook(body: WebhookRequest) -> WebhookResponse | JSONResponse:
        action = body.action
        project = body.project
        pid = None
        if isinstance(project, dict):
            pid = project.get("id")
        elif isinstance(project, int):
            pid = project
        if isinstance(pid, bool) or not isinstance(pid, int) or not 0 <= pid < 10**18:
            pid = None  # True is an int to Python, not a project id
        if action not in jobs.TRAINING_ACTIONS or pid is None:
            state.metrics.webhooks.labels(action, "ignored").inc()
            return WebhookResponse(status="ignored", action=action, project=pid if isinstance(pid, int) else None)
        try:
            # Label Studio is the source of truth and every job pulls all of it, so a webhook is only a "when";
            # a duplicate or an out-of-order copy of an event already seen asks for nothing new
            events = jobs.webhook_events(action, body.model_dump())
            if not jobs.events_fresh(state.redis, pid, events):
                pending = jobs.pending_job(state.redis, pid)
                outcome_status = "coalesced" if pending else "ignored"
                state.metrics.webhooks.labels(action, "duplicate").inc()
                return WebhookResponse(status=outcome_status, action=action, project=pid, job_id=pending,
                                       reason="duplicate or out-of-order event: already seen")
            jobs.note_activity(state.redis, pid)
            outcome = jobs.request_training(state.redis, settings, pid, reason=action)
            jobs.mark_events(state.redis, pid, events)
        except Exception as exc:
            state.metrics.webhooks.labels(action, "error").inc()
            log.error("webhook %s for project %s: cannot enqueue training: %s", action, pid, exc)
            return JSONResponse(status_code=503, content={"detail": f"training queue unavailable: {exc}"})
        state.metrics.webhooks.labels(action, outcome["status"]).inc()
        return WebhookResponse(status=outcome["status"], action=action, project=pid, job_id=outcome["job_id"])

    @app.get("/metrics", dependencies=auth)
    def metrics() -> dict:
        return {}

    @app.get("/prometheus", dependencies=auth)
    def prometheus() -> Response:
        try:
            state.metrics.queue_depth.set(jobs.queue_depth(state.redis, settings))
        except Exception:
            pass
        return PlainTextResponse(generate_latest(state.metrics.registry).decode(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/status", response_model=StatusResponse, dependencies=auth)
    def status() -> StatusResponse:
        queue: dict[str, Any] = {"name": settings.queue}
        projects = set(state.store.projects())
        redis_ok = True
        try:
            queue["depth"] = jobs.queue_depth(state.redis, settings)
            projects |= set(jobs.known_projects(state.redis))
        except Exception as exc:
            redis_ok = False
            queue["depth"] = None
            queue["error"] = f"redis unavailable: {exc}"
        out = []
        for pid in sorted(projects):
            version = state.store.current_version(pid)
            record: dict[str, Any] = {}
            training: dict[str, Any] = {"state": "unknown" if not redis_ok else "idle"}
            if redis_ok:
                record = jobs.get_status(state.redis, pid)
                train_state, last_error = jobs.effective_state(state.redis, record)
                training = {"state": train_state, **jobs.training_state(state.redis, pid),
                            "trainings": jobs.training_count(state.redis, pid), "job_id": record.get("job_id"),
                            "updated_at": record.get("updated_at"), "last_error": last_error,
                            "n_labeled": record.get("n_labeled"), "min_annotations": record.get("min_annotations")}
            diagnostics = record.get("diagnostics")
            if diagnostics is None and version is not None:
                try:
                    diagnostics = state.store.read_meta(pid, version).get("diagnostics")
                except Exception:
                    diagnostics = None
            out.append(ProjectStatus(project=pid, model_version=version, training=training,
                                     last_training=record.get("last_training"), diagnostics=diagnostics))
        return StatusResponse(model_class=MODEL_CLASS, queue=queue, projects=out)

    @app.get("/versions", response_model=VersionsResponse, dependencies=auth)
    def versions(project: str | None = None) -> VersionsResponse:
        pids = [parse_project_id(project)] if project else state.store.projects()
        found: list[str] = []
        for pid in pids:
            if pid is not None:
                found.extend(state.store.list_versions(pid))
        return VersionsResponse(versions=found)

    @app.post("/job_status", response_model=JobStatusResponse, dependencies=auth)
    async def job_status(request: Request) -> JobStatusResponse | JSONResponse:
        from rq.exceptions import NoSuchJobError
        from rq.job import Job

        try:
            body = await request.json()
        except Exception:
            body = {}
        job_id = body.get("job") if isinstance(body, dict) else None
        if not job_id:
            return JobStatusResponse(job_status="removed")
        try:
            job = Job.fetch(str(job_id), connection=state.redis)
            status_value = job.get_status(refresh=True)
        except NoSuchJobError:
            return JobStatusResponse(job_status="removed")
        except RedisError as exc:
            return JSONResponse(status_code=503, content={"detail": f"training queue unavailable: {exc}"})
        return JobStatusResponse(job_status=str(getattr(status_value, "value", status_value)))

    return app


def serve(host: str = "0.0.0.0", port: int = 9090, workers: int = 1, log_level: str | None = None) -> None:
    """Run the backend with uvicorn (``mmal serve``). ``workers`` > 1 runs several processes.

    ``log_level`` (any case) overrides ``LOG_LEVEL``; it applies to the app's loggers and uvicorn's.
    """
    import uvicorn

    from ml_server.log_config import configure_logging, effective_level, log_settings, uvicorn_log_config

    settings = get_settings()
    level = effective_level(log_level, settings)
    configure_logging(level)
    log_settings(log, settings)
    threads = settings.server_threads
    if threads:
        # before uvicorn starts (and forks workers): every process then uses this many torch threads
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        import torch

        torch.set_num_threads(threads)
    logging_options = {"log_level": level.lower(), "log_config": uvicorn_log_config(level)}
    if workers > 1:
        uvicorn.run("ml_server.app:create_app", factory=True, host=host, port=port, workers=workers,
                    **logging_options)
    else:
        uvicorn.run(create_app(settings), host=host, port=port, **logging_options)
