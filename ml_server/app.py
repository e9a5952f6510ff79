"""The Label Studio ML backend: a FastAPI app (``mmal serve``, port 9090).

Endpoints, exactly as Label Studio 1.23.2 calls them (one router per concern, :mod:`ml_server.routers`):

- ``GET /health``    instant ``{"status": "UP", "model_class": ...}`` (no auth; Label Studio allows 1 s)
- ``POST /setup``    validates the label config, remembers the project, answers the serving model version
- ``POST /predict``  one item per task, in order: predicted class + score (LOW = label first)
- ``POST /webhook``  annotation events and START_TRAINING enqueue a (coalesced) training job; never trains
- ``GET /metrics``   ``{}`` (Label Studio's probe); Prometheus text is at ``GET /prometheus``
- ``GET /status``    model versions, training state, queue depth, latest modality diagnostics per project
- ``GET /versions``, ``POST /job_status``: what older Label Studio code paths still ask

Basic auth protects everything but ``/health`` when ``BASIC_AUTH_USER`` and ``BASIC_AUTH_PASS`` are set
(checked once, by :class:`ml_server.gate.RequestGate`). The endpoints share one
:class:`ml_server.state.BackendState` through the dependencies of :mod:`ml_server.deps`.
"""

from __future__ import annotations

import logging
import os

from fastapi import FastAPI, Request

from ml_server.deps import auth_dependencies
from ml_server.gate import RequestGate
from ml_server.routers import health, labelstudio, legacy, monitoring
from ml_server.routers.health import MODEL_CLASS
from ml_server.settings import Settings, get_settings
from ml_server.state import BackendState

__all__ = ["MODEL_CLASS", "create_app", "serve"]

log = logging.getLogger(__name__)


async def count_requests(request: Request, call_next):
    """Middleware: count every answer by route and status code (``mmal_requests_total``)."""
    response = await call_next(request)
    route = request.scope.get("route")
    endpoint = getattr(route, "path", "unmatched")
    request.app.state.backend.metrics.requests.labels(endpoint, str(response.status_code)).inc()
    return response


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ML backend app; ``settings`` default to the environment (see :mod:`ml_server.settings`)."""
    settings = settings or get_settings()
    app = FastAPI(title="mmal Label Studio ML backend", version="1")
    app.state.backend = BackendState(settings)
    app.add_middleware(RequestGate, settings=settings)
    app.middleware("http")(count_requests)  # outside the gate: refused requests are counted too
    auth = auth_dependencies(settings)
    app.include_router(health.router)
    for router in (labelstudio.router, monitoring.router, legacy.router):
        app.include_router(router, dependencies=auth)
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
