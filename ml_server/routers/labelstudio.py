"""What Label Studio calls: ``POST /setup``, ``POST /predict``, ``POST /webhook``."""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from connectors.label_config import LabelConfigError, parse_label_config
from ml_server import jobs
from ml_server.deps import AppSettings, State
from ml_server.predictor import UNTRAINED_VERSION, parse_project_id, predict_tasks
from ml_server.schemas import (PredictRequest, PredictResponse, SetupRequest, SetupResponse, WebhookRequest,
                               WebhookResponse)

log = logging.getLogger("ml_server.app")  # the server's log name (operators filter on it)

router = APIRouter()


@router.post("/setup", response_model=SetupResponse)
def setup(body: SetupRequest, state: State, settings: AppSettings) -> SetupResponse:
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


@router.post("/predict", response_model=PredictResponse, response_model_exclude_none=True)
def predict(body: PredictRequest, state: State) -> PredictResponse:
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


@router.post("/webhook", response_model=WebhookResponse)
def webhook(body: WebhookRequest, state: State, settings: AppSettings) -> WebhookResponse | JSONResponse:
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
