"""RQ worker for the training queue (``mmal worker``; scale with ``--scale worker=N`` in compose).

The default worker forks a fresh work horse per job, so a job's memory (model, features) is returned
when it ends and a crash kills only that job. CUDA and fork: the parent never touches CUDA (it imports
nothing that initialises it), so each forked job can use the GPU; ``MMAL_WORKER_CLASS=spawn`` starts
a fresh interpreter per job instead, for platforms where forking is unsafe.
"""

from __future__ import annotations

import logging
from typing import Sequence

from ml_server.settings import TRAINING_QUEUE, Settings, get_settings

__all__ = ["run_worker", "preload", "TRAINING_QUEUE", "worker_queues", "MAINTENANCE_INTERVAL", "WORKER_TTL",
           "HEARTBEAT_MAX_AGE"]

log = logging.getLogger(__name__)

MAINTENANCE_INTERVAL = 60
"""Seconds between RQ maintenance passes of a worker (abandoned-job detection; RQ's default is 600)."""
WORKER_TTL = MAINTENANCE_INTERVAL + 15
"""RQ's worker_ttl: an idle worker sends a heartbeat every WORKER_TTL - 15 s (60 s)."""
HEARTBEAT_MAX_AGE = WORKER_TTL + 60
"""Oldest heartbeat of a live worker: RQ lets a worker's key expire this long after its last heartbeat (a
busy fork worker beats every 30 s). ``python -m ml_server.healthcheck worker`` allows this much."""


def worker_queues(settings: Settings | None = None, extra_queues: Sequence[str] = ()) -> list[str]:
    """Queue names a worker listens on: the training queue first, then ``extra_queues``."""
    settings = settings or get_settings()
    names = [settings.queue]
    for q in extra_queues:
        if q not in names:
            names.append(q)
    return names


def preload() -> None:
    """Import what a training job needs once, in the parent, so each forked job starts at once.

    Importing torch does not initialise CUDA; nothing here touches the GPU, so forked jobs can still use it.
    """
    import backend.diagnostics  # noqa: F401
    import backend.models.trainer  # noqa: F401
    import connectors.labelstudio  # noqa: F401
    import label_studio_sdk  # noqa: F401
    import ml_server.predictor  # noqa: F401
    import ml_server.training  # noqa: F401
    import backend.strategies  # noqa: F401  (registers the strategies)
    from backend.encoders.registry import list_featurizers

    list_featurizers()


def run_worker(redis_url: str | None = None, burst: bool = False, extra_queues: Sequence[str] = (),
               name: str | None = None, with_scheduler: bool = True, max_jobs: int | None = None,
               log_level: str | None = None) -> bool:
    """Work training jobs (and ``extra_queues``, e.g. the benchmark queue) until stopped.

    ``burst``: exit when the queues are empty. ``with_scheduler`` runs RQ's scheduler for job retries
    with an interval. ``log_level`` (any case) overrides ``LOG_LEVEL``. Returns whether any job was processed.
    """
    import redis
    from rq import SimpleWorker, SpawnWorker, Worker

    from ml_server.log_config import configure_logging, effective_level, log_settings

    settings = get_settings()
    level = effective_level(log_level, settings)
    configure_logging(level)
    log_settings(log, settings)
    if settings.worker_class == "fork":
        preload()
    url = redis_url or settings.redis_url
    conn = redis.Redis.from_url(url)
    cls = {"fork": Worker, "spawn": SpawnWorker, "simple": SimpleWorker}[settings.worker_class]
    # RQ finds jobs abandoned by a killed worker (and retries or fails them) in its maintenance pass, by
    # default every 10 minutes, and an idle worker only looks every worker_ttl - 15 s (405 s). Once a
    # minute bounds the wait after a crash to about 2.5 minutes (the dead job's heartbeat lasts 90 s).
    queues = worker_queues(settings, extra_queues)
    worker = cls(queues, connection=conn, name=name, maintenance_interval=MAINTENANCE_INTERVAL,
                 worker_ttl=WORKER_TTL)
    log.debug("worker %s (%s) on queues %s of %s", worker.name, settings.worker_class, queues,
              conn.connection_pool.connection_kwargs.get("host"))
    return bool(worker.work(burst=burst, with_scheduler=with_scheduler, max_jobs=max_jobs, logging_level=level))
