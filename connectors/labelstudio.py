"""The one wrapper around label-studio-sdk that the ML server, the training worker and the tests use.

Label Studio is the source of truth for labels: a training job pulls every task with its annotations
from here (never from webhook payloads), so a lost webhook loses no label. Predictions go back in bulk
(one request per ``chunk`` tasks, not one per task), and the project's ``model_version`` is switched to
the new version afterwards, which is what makes Label Studio's score ordering use them.

Tokens: a legacy token is sent as ``Token ...``; a personal access token (a JWT refresh token) is
exchanged for short-lived access tokens by the SDK itself.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any, Iterator, Mapping, Sequence

import httpx

log = logging.getLogger(__name__)


class LabelStudioError(RuntimeError):
    """A Label Studio request that failed; the message names the call and the project/task."""


UNCERTAINTY_SAMPLING = "Uncertainty sampling"
"""Label Studio's project ``sampling`` that serves the lowest prediction score first."""

def _failure(what: str, exc: Exception) -> LabelStudioError:
    """A LabelStudioError that names the call, the HTTP status and Label Studio's answer.

    Why not ``str(exc)``: the SDK's ApiError message carries every *response header*, ``set-cookie:
    sessionid=...`` included, and these messages end up in worker logs and in ``/status``.
    """
    status = getattr(exc, "status_code", None)
    if status is None:
        return LabelStudioError(f"{what}: {type(exc).__name__}: {exc}")
    body = getattr(exc, "body", None)
    detail = body.get("detail") or body if isinstance(body, dict) else body
    return LabelStudioError(f"{what}: HTTP {status}: {str(detail)[:300]}")


def _cause(exc: Exception) -> Exception | None:
    """The exception to chain: none for an SDK ApiError (its text holds the response headers, see _failure)."""
    return None if getattr(exc, "status_code", None) is not None else exc


def _dump(obj: Any) -> dict[str, Any]:
    """SDK pydantic objects -> plain dicts (with Label Studio's field names)."""
    if isinstance(obj, Mapping):
        return dict(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json", by_alias=True, exclude_unset=False)
    if hasattr(obj, "dict"):
        return obj.dict()
    raise TypeError(f"cannot convert {type(obj).__name__} to a dict")


def basic_auth_header(user: str, password: str) -> str:
    """``Basic base64(user:password)``: the header value Label Studio must send to a protected backend."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class LabelStudioConnector:
    """Pull tasks and annotations, push predictions in bulk, set the model version, register a backend."""

    def __init__(self, url: str, api_key: str, *, timeout: float = 60.0) -> None:
        if not url or not url.startswith(("http://", "https://")):
            raise ValueError(f"Label Studio URL must start with http:// or https://, got {url!r}")
        if not api_key:
            raise ValueError("a Label Studio API key (legacy token or personal access token) is required")
        from label_studio_sdk import LabelStudio

        self.url = url.rstrip("/")
        self.timeout = timeout
        self.sdk = LabelStudio(base_url=self.url, api_key=api_key, timeout=timeout)
        self._http: httpx.Client | None = None

    # --- raw access ----------------------------------------------------------------------------------
    def auth_headers(self) -> dict[str, str]:
        """The Authorization header the SDK would send now (refreshing a personal access token if due)."""
        headers = self.sdk._client_wrapper.get_headers()  # the SDK owns token refresh
        return {k: v for k, v in headers.items() if k.lower() == "authorization"}

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """An authenticated request to a Label Studio API path (for endpoints the SDK does not wrap)."""
        if self._http is None:
            self._http = httpx.Client(base_url=self.url, timeout=self.timeout, trust_env=False)
        headers = {**self.auth_headers(), **kwargs.pop("headers", {})}
        response = self._http.request(method, path, headers=headers, **kwargs)
        if response.status_code >= 400:
            raise LabelStudioError(f"{method} {path}: HTTP {response.status_code}: {response.text[:300]}")
        return response

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    # --- projects -------------------------------------------------------------------------------------
    def get_project(self, project_id: int) -> dict[str, Any]:
        """The project as a dict (``label_config``, ``model_version``, ``title``, ...)."""
        try:
            return _dump(self.sdk.projects.get(id=int(project_id)))
        except Exception as exc:
            raise _failure(f"reading project {project_id}", exc) from _cause(exc)

    def create_project(self, title: str, label_config: str, **fields: Any) -> int:
        """Create a project; returns its id."""
        project = self.sdk.projects.create(title=title, label_config=label_config, **fields)
        return int(project.id)

    def set_model_version(self, project_id: int, version: str) -> None:
        """Point the project at ``version`` so the Data Manager score and uncertainty sampling use it.

        Label Studio refuses (400) a version that has no predictions yet: push predictions first.
        """
        try:
            self.sdk.projects.update(id=int(project_id), model_version=version)
        except Exception as exc:
            raise _failure(f"setting model_version {version!r} of project {project_id}", exc) from _cause(exc)

    def set_sampling(self, project_id: int, sampling: str = UNCERTAINTY_SAMPLING) -> bool:
        """Set the project's task sampling (what "Label All Tasks" / ``/next`` serves); returns whether it changed.

        Community edition's settings page greys out "Uncertainty sampling", but its ``/next`` honours the
        field (``projects/functions/next_task.py``): the unsolved task with the lowest score of
        ``project.model_version`` comes first (with several annotators, one of the first annotators + 1).
        """
        current = self.get_project(project_id).get("sampling")
        if current == sampling:
            return False
        try:
            self.sdk.projects.update(id=int(project_id), sampling=sampling)
        except Exception as exc:
            raise _failure(f"setting sampling {sampling!r} of project {project_id}", exc) from _cause(exc)
        return True

    def next_task(self, project_id: int) -> dict[str, Any] | None:
        """The task Label Studio serves this token's user next ("Label All Tasks"), or None when done."""
        try:
            return self.request("GET", f"/api/projects/{int(project_id)}/next").json()
        except LabelStudioError as exc:
            if "HTTP 404" in str(exc):  # nothing left to label
                return None
            raise

    def delete_model_version(self, project_id: int, version: str) -> int:
        """Delete every prediction of ``version`` in the project; returns how many were deleted."""
        r = self.request("DELETE", f"/api/projects/{int(project_id)}/model-versions/",
                         json={"model_version": version})
        try:
            return int(r.json())
        except (ValueError, TypeError):
            return 0

    def model_versions(self, project_id: int) -> dict[str, int]:
        """model_version -> number of predictions in the project."""
        data = self.request("GET", f"/api/projects/{int(project_id)}/model-versions/").json()
        if isinstance(data, dict):
            return {str(k): int(v) for k, v in data.items()}
        return {str(d.get("model_version")): int(d.get("count", 0)) for d in data if isinstance(d, dict)}

    # --- tasks ----------------------------------------------------------------------------------------
    def import_tasks(self, project_id: int, tasks: Sequence[Mapping[str, Any]]) -> list[int]:
        """Import task dicts (``{"data": {...}}`` or bare data dicts); returns the new task ids in order."""
        resp = self.sdk.projects.import_tasks(id=int(project_id), request=list(tasks), return_task_ids=True)
        ids = getattr(resp, "task_ids", None)
        if ids is None:
            ids = _dump(resp).get("task_ids")
        if ids is None:
            raise LabelStudioError(f"import into project {project_id} returned no task ids")
        return [int(i) for i in ids]

    def iter_tasks(self, project_id: int, *, page_size: int = 500, query: Mapping[str, Any] | None = None,
                   fields: str = "all") -> Iterator[dict[str, Any]]:
        """Every task of the project with its annotations (and predictions), page by page, as dicts.

        ``query`` is a Data Manager query, e.g. ``{"ordering": ["tasks:predictions_score"]}``.
        """
        kwargs: dict[str, Any] = {"project": int(project_id), "page_size": int(page_size), "fields": fields}
        if query is not None:
            kwargs["query"] = json.dumps(dict(query))
        try:
            for task in self.sdk.tasks.list(**kwargs):
                yield _dump(task)
        except Exception as exc:  # the SDK raises its own ApiError types
            raise _failure(f"listing tasks of project {project_id}", exc) from _cause(exc)

    def _task_pages(self, project_id: int, params: Mapping[str, Any], page_size: int) -> Iterator[dict[str, Any]]:
        """Tasks of ``/api/tasks`` page by page, read as plain JSON (the SDK's typed parsing costs more than
        Label Studio's own serialisation at 10k tasks)."""
        page, seen = 1, 0
        while True:
            try:
                r = self.request("GET", "/api/tasks", params={"project": int(project_id), "page": page,
                                                             "page_size": int(page_size), **params})
            except LabelStudioError as exc:
                if "HTTP 404" in str(exc) and page > 1:  # past the last page
                    return
                raise
            body = r.json()
            items = body.get("tasks", []) if isinstance(body, dict) else body
            yield from items
            seen += len(items)
            total = body.get("total") if isinstance(body, dict) else None
            if not items or len(items) < page_size or (isinstance(total, int) and seen >= total):
                return
            page += 1

    def task_index(self, project_id: int, *, page_size: int = 2000) -> dict[int, dict[str, Any]]:
        """id -> {updated_at, total_annotations, cancelled_annotations} of every task: a few fields, cheap."""
        fields = "id,updated_at,total_annotations,cancelled_annotations"
        return {int(t["id"]): t for t in self._task_pages(project_id, {"fields": "task_only", "include": fields},
                                                          page_size)}

    DATA_FIELDS = "id,project,data,is_labeled,updated_at,total_annotations,cancelled_annotations"
    """A task without its annotations and predictions (with ``include``, Label Studio 1.23.2 reduces
    annotations to their ids, so annotated tasks are read whole)."""

    def tasks_by_id(self, project_id: int, task_ids: Sequence[int], *, chunk: int = 200,
                    include: str | None = None) -> list[dict[str, Any]]:
        """The tasks ``task_ids`` with the fields ``include`` (None: every field, predictions included)."""
        out: list[dict[str, Any]] = []
        ids = [int(i) for i in task_ids]
        for s in range(0, len(ids), chunk):
            part = ids[s:s + chunk]
            params: dict[str, Any] = {"fields": "all",
                                      "query": json.dumps({"selectedItems": {"all": False, "included": part}})}
            if include:
                params["include"] = include
            out.extend(self._task_pages(project_id, params, max(len(part), 1)))
        return out

    def pull_tasks(self, project_id: int, *, page_size: int = 500) -> list[dict[str, Any]]:
        """All tasks of the project with their annotations: what a training job learns from."""
        return list(self.iter_tasks(project_id, page_size=page_size))

    def task_ids_by_score(self, project_id: int, descending: bool = False) -> list[int]:
        """Task ids in Label Studio's own order by prediction score (ascending = what to label first)."""
        key = "-tasks:predictions_score" if descending else "tasks:predictions_score"
        return [int(t["id"]) for t in self.iter_tasks(project_id, query={"ordering": [key]}, fields="task_only")]

    def create_annotation(self, task_id: int, result: list[dict[str, Any]], **fields: Any) -> int:
        """Create an annotation on a task (as the token's user); returns its id."""
        ann = self.sdk.annotations.create(id=int(task_id), result=result, **fields)
        return int(ann.id)

    def retrieve_predictions(self, project_id: int) -> None:
        """Make Label Studio call the backend's /predict for every task lacking a current prediction."""
        self.request("POST", "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": int(project_id)},
                     json={"selectedItems": {"all": True, "excluded": []}})

    # --- predictions ----------------------------------------------------------------------------------
    def push_predictions(self, project_id: int, predictions: Sequence[Mapping[str, Any]], *,
                         chunk: int = 500) -> int:
        """Create predictions in bulk (``{"task", "result", "score", "model_version"}`` each); returns the count."""
        created = 0
        for start in range(0, len(predictions), max(1, chunk)):
            part = [dict(p) for p in predictions[start:start + chunk]]
            try:
                resp = self.sdk.projects.import_predictions(id=int(project_id), request=part)
            except Exception as exc:
                raise _failure(f"importing {len(part)} predictions into project {project_id}", exc) from _cause(exc)
            created += int(getattr(resp, "created", None) or len(part))
        return created

    # --- ML backends ----------------------------------------------------------------------------------
    def register_backend(self, project_id: int, url: str, *, title: str = "mmal",
                         basic_auth: tuple[str, str] | None = None, extra_params: Mapping[str, Any] | None = None,
                         timeout: float | None = None) -> dict[str, Any]:
        """Connect an ML backend to a project (Label Studio calls its /health and /setup while doing so).

        With ``basic_auth``, Label Studio's ML calls use it, and the webhook it creates for the backend
        (which carries no auth by default) gets the same Authorization header, so /webhook can stay protected.
        """
        kwargs: dict[str, Any] = {"url": url, "project": int(project_id), "title": title}
        if basic_auth is not None:
            kwargs.update({"auth_method": "BASIC_AUTH", "basic_auth_user": basic_auth[0],
                           "basic_auth_pass": basic_auth[1]})
        if extra_params is not None:
            kwargs["extra_params"] = dict(extra_params)
        if timeout is not None:
            kwargs["timeout"] = float(timeout)
        try:
            backend = _dump(self.sdk.ml.create(**kwargs))
        except Exception as exc:
            raise _failure(f"registering backend {url} for project {project_id}", exc) from _cause(exc)
        if basic_auth is not None:
            self.protect_webhook(project_id, url, basic_auth)
        return backend

    def webhooks(self, project_id: int) -> list[dict[str, Any]]:
        """The project's webhooks as dicts (``id``, ``url``, ``headers``, ...)."""
        return [_dump(h) for h in self.sdk.webhooks.list(project=str(int(project_id)))]

    def protect_webhook(self, project_id: int, backend_url: str, basic_auth: tuple[str, str]) -> int:
        """Add the Basic auth header to the webhook(s) Label Studio created for ``backend_url``; returns how many."""
        target = backend_url.rstrip("/") + "/webhook"
        n = 0
        for _ in range(20):  # the webhook is created right after the backend record
            for hook in self.webhooks(project_id):
                if str(hook.get("url", "")).rstrip("/") == target:
                    headers = dict(hook.get("headers") or {})
                    headers["Authorization"] = basic_auth_header(*basic_auth)
                    self.sdk.webhooks.update(id=int(hook["id"]), headers=headers)
                    n += 1
            if n:
                return n
            time.sleep(0.1)
        raise LabelStudioError(f"project {project_id}: no webhook to {target} found to protect")

    def train(self, backend_id: int) -> None:
        """Ask Label Studio to send START_TRAINING to the backend (what the UI's "Start training" does)."""
        self.sdk.ml.train(id=int(backend_id))
