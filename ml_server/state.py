"""What the server's endpoints share: settings, model store, Redis, per-project setup, caches, metrics.

One :class:`BackendState` per app (``app.state.backend``); endpoints get it through
:func:`ml_server.deps.get_state`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ml_server import jobs
from ml_server.model_store import ModelStore
from ml_server.settings import Settings

log = logging.getLogger("ml_server.app")  # the server's log name (operators filter on it)


class Metrics:
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
        self.metrics = Metrics()
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
