"""The server's endpoints, one router per concern (FastAPI's "bigger applications" layout).

Handlers carry no docstrings on purpose: FastAPI would publish them as descriptions in the OpenAPI schema,
which stays as it was. What each endpoint does is said here and in :mod:`ml_server.app`.

- :mod:`~ml_server.routers.health`: ``GET /health`` (no auth)
- :mod:`~ml_server.routers.labelstudio`: what Label Studio calls: ``POST /setup``, ``/predict``, ``/webhook``
- :mod:`~ml_server.routers.monitoring`: ``GET /metrics``, ``/prometheus``, ``/status``
- :mod:`~ml_server.routers.legacy`: ``GET /versions``, ``POST /job_status`` (older Label Studio code paths)
"""
