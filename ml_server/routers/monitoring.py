"""``GET /metrics`` (Label Studio's probe), ``GET /prometheus``, ``GET /status``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ml_server import jobs
from ml_server.deps import AppSettings, State, Store
from ml_server.routers.health import MODEL_CLASS
from ml_server.schemas import ProjectStatus, StatusResponse

router = APIRouter()


@router.get("/metrics")
def metrics() -> dict:
    return {}


@router.get("/prometheus")
def prometheus(state: State, settings: AppSettings) -> Response:
    try:
        state.metrics.queue_depth.set(jobs.queue_depth(state.redis, settings))
    except Exception:
        pass
    return PlainTextResponse(generate_latest(state.metrics.registry).decode(), media_type=CONTENT_TYPE_LATEST)


@router.get("/status", response_model=StatusResponse)
def status(state: State, settings: AppSettings, store: Store) -> StatusResponse:
    queue: dict[str, Any] = {"name": settings.queue}
    projects = set(store.projects())
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
        version = store.current_version(pid)
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
                diagnostics = store.read_meta(pid, version).get("diagnostics")
            except Exception:
                diagnostics = None
        out.append(ProjectStatus(project=pid, model_version=version, training=training,
                                 last_training=record.get("last_training"), diagnostics=diagnostics))
    return StatusResponse(model_class=MODEL_CLASS, queue=queue, projects=out)
