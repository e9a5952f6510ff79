"""Request and response bodies of the ML backend, as Label Studio 1.23.2 sends and expects them.

Requests are validated loosely (``extra="allow"``): Label Studio adds fields between releases, and a
backend that rejects an unknown field breaks on the next upgrade. The fields the backend relies on are
typed; the shapes were captured from a real Label Studio (``/work/shared/reference``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class HealthResponse(BaseModel):
    status: Literal["UP"] = "UP"
    model_class: str = "MMALFusionBackend"


class SetupRequest(_Loose):
    """``POST /setup``: ``project`` is ``"<id>.<created_at unix ts>"``; ``schema`` the label config XML."""

    project: str
    label_schema: str | None = Field(None, alias="schema")
    hostname: str | None = None
    access_token: str | None = None
    extra_params: dict[str, Any] | str | None = None
    model_version: str | None = None

    @field_validator("hostname")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        """Label Studio reports its own base URL here; anything else could never be reached, so it is a 422
        now rather than a failed training job later."""
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"must be Label Studio's base URL starting with http:// or https://, got {value[:100]!r}")
        return value

    @field_validator("access_token")
    @classmethod
    def _header_safe(cls, value: str | None) -> str | None:
        """The token goes into an HTTP header: printable ASCII only (Label Studio's tokens always are)."""
        if value and not (value.isascii() and value.isprintable() and " " not in value.strip()):
            raise ValueError("must be a Label Studio API token (printable ASCII, no spaces)")
        return value


class SetupResponse(BaseModel):
    model_version: str


class PredictParams(_Loose):
    login: str | None = None
    password: str | None = None
    context: Any = None


INT64_MAX = 2**63 - 1


class Task(_Loose):
    """One task of ``POST /predict``. The fields the backend reads are typed, so a malformed task is a 422
    that names it (``tasks.3.data``) instead of a failure deep inside featurizing; the rest passes through.
    A ``data`` object is required (Label Studio always sends one); a key missing *inside* it is a missing
    modality, which the model handles."""

    data: dict[str, Any]
    id: StrictInt | None = Field(None, ge=-INT64_MAX, le=INT64_MAX)
    annotations: list[Any] | None = None
    total_annotations: int | None = None
    cancelled_annotations: int | None = None
    is_labeled: bool | None = None


class PredictRequest(_Loose):
    """``POST /predict``: full task objects, the project uid, the label config."""

    tasks: list[Task]
    project: str | None = None
    label_config: str | None = None
    params: PredictParams | None = None


class ChoicesValue(BaseModel):
    choices: list[str]


class ResultRegion(BaseModel):
    from_name: str
    to_name: str
    type: Literal["choices"] = "choices"
    value: ChoicesValue


class PredictionItem(BaseModel):
    """One item per task: the predicted class (empty before the first training), the priority score
    (LOW = label first) and the model version that made it; or, for a task whose data is unusable,
    ``error`` naming the field and the reason and neither ``result`` nor ``score`` (absent, not null:
    Label Studio skips an item without ``result`` and keeps the rest of the batch)."""

    result: list[ResultRegion] | None = None
    score: float | None = None
    model_version: str
    error: str | None = None


class PredictResponse(BaseModel):
    results: list[PredictionItem]


class WebhookRequest(_Loose):
    """``POST /webhook``: ``action`` plus a payload; ``project`` is a full project object."""

    action: str
    project: dict[str, Any] | None = None
    annotation: dict[str, Any] | None = None
    task: dict[str, Any] | None = None


class WebhookResponse(BaseModel):
    status: Literal["queued", "coalesced", "ignored"]
    action: str
    project: int | None = None
    job_id: str | None = None
    reason: str | None = None  # why nothing was queued (e.g. a duplicate event)


class JobStatusRequest(_Loose):
    job: str | None = None


class JobStatusResponse(BaseModel):
    job_status: str


class VersionsResponse(BaseModel):
    versions: list[str]


class ProjectStatus(BaseModel):
    project: int
    model_version: str | None
    training: dict[str, Any]
    last_training: dict[str, Any] | None = None
    diagnostics: dict[str, Any] | None = None
    error: str | None = None


class StatusResponse(BaseModel):
    model_class: str
    queue: dict[str, Any]
    projects: list[ProjectStatus]
