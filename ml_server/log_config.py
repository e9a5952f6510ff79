"""Logging of ``mmal serve`` and ``mmal worker``: one format and one level for the whole process.

The level comes from ``LOG_LEVEL`` (label-studio-ml-backend's name, a :class:`Settings` field) unless the
command's ``--log-level`` flag says otherwise. Operators grep the structured lines, one JSON object each:
``training {...}`` (:func:`ml_server.training.training_log_record`), ``job_failed {...}``
(:func:`ml_server.jobs.job_failure_record`) and, at DEBUG, ``settings {...}`` (:func:`settings_record`).
"""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

from ml_server.settings import LOG_LEVELS, Settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
SECRET_FIELDS = ("label_studio_api_key", "basic_auth_pass")
"""Settings never written to a log in clear."""


def effective_level(flag: str | None, settings: Settings) -> str:
    """The level a command runs at: its ``--log-level`` flag, else ``LOG_LEVEL``; upper case."""
    level = (flag or settings.log_level).strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {flag!r}")
    return level


def configure_logging(level: str) -> None:
    """Send every logger's records at ``level`` and above to stderr in :data:`LOG_FORMAT`.

    ``force``: a library that configured the root logger on import must not keep its own level.
    """
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, force=True)


def uvicorn_log_config(level: str) -> dict[str, Any]:
    """uvicorn's own logging config plus the root logger at ``level`` in :data:`LOG_FORMAT`.

    uvicorn applies it in every process it runs, so with ``mmal serve --workers N`` the app's loggers in
    the worker processes log at the same level as in a single process.
    """
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["mmal"] = {"format": LOG_FORMAT}
    config["handlers"]["mmal"] = {"class": "logging.StreamHandler", "formatter": "mmal", "stream": "ext://sys.stderr"}
    config["root"] = {"handlers": ["mmal"], "level": level.upper()}
    return config


def settings_record(settings: Settings) -> dict[str, Any]:
    """The effective settings as JSON-ready values, with :data:`SECRET_FIELDS` masked."""
    record = settings.model_dump(mode="json")
    for name in SECRET_FIELDS:
        if record.get(name):
            record[name] = "***"
    return record


def log_settings(logger: logging.Logger, settings: Settings) -> None:
    """At DEBUG, one ``settings {...}`` line: what a deployment really runs with."""
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("settings %s", json.dumps(settings_record(settings), sort_keys=True))
