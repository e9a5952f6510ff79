"""Settings of the ML backend and its training workers, read from the environment (pydantic-settings).

Label Studio's own names are used where they exist (``LABEL_STUDIO_URL``, ``LABEL_STUDIO_API_KEY``,
``BASIC_AUTH_USER``/``BASIC_AUTH_PASS``, ``REDIS_URL``, ``MODEL_DIR``); everything specific to mmal is
prefixed ``MMAL_``. A project can override the learning settings (strategy, minimum annotations, ...)
through the backend's *extra params* in Label Studio (see :class:`ProjectOverrides`).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Mapping, get_args

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

if TYPE_CHECKING:
    from backend.strategies.spec import StrategySpec

LogLevelName = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LOG_LEVELS: tuple[str, ...] = get_args(LogLevelName)
"""Levels of ``LOG_LEVEL`` / ``--log-level`` (any case)."""

TRAINING_QUEUE = "mmal-ls-training"
"""Name of the RQ queue the training jobs go to (``mmal worker`` listens on it)."""

FEATURIZER_PRESETS: dict[str, dict[str, str]] = {
    # the packaged pretrained encoders (offline): a useful model from the first dozen labels
    "pretrained": {"Image": "efficientnet_lite0", "Text": "minilm", "HyperText": "minilm", "Paragraphs": "minilm",
                   "Markdown": "minilm"},
    # small encoders trained from scratch: fast, but they need hundreds of labels before they help
    "simple": {"Image": "image_pixels", "Text": "text_tokens", "HyperText": "text_tokens",
               "Paragraphs": "text_tokens", "Markdown": "text_tokens"},
}
"""Named featurizer sets for ``MMAL_FEATURIZERS`` (or a project's ``featurizers`` extra param)."""

DEFAULT_FEATURIZERS: dict[str, str] = dict(FEATURIZER_PRESETS["pretrained"])


def featurizer_map(value: Any) -> Any:
    """``MMAL_FEATURIZERS`` / the ``featurizers`` extra param -> tag type -> featurizer name.

    A preset name (``pretrained``, ``simple``), a JSON object that overrides the defaults per tag type
    (``{"Image": "hf_image"}``), or both: ``{"preset": "simple", "Text": "minilm"}``. Empty = the defaults.
    """
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return dict(DEFAULT_FEATURIZERS)
        if text in FEATURIZER_PRESETS:
            return dict(FEATURIZER_PRESETS[text])
        try:
            value = json.loads(text)
        except ValueError:
            raise ValueError(f"featurizers: {text!r} is neither a preset ({', '.join(FEATURIZER_PRESETS)}) "
                             "nor a JSON object of tag type -> featurizer") from None
    if isinstance(value, dict):
        value = dict(value)
        preset = value.pop("preset", "pretrained")
        if preset not in FEATURIZER_PRESETS:
            raise ValueError(f"featurizers: unknown preset {preset!r}; known: {', '.join(FEATURIZER_PRESETS)}")
        value = {**FEATURIZER_PRESETS[preset], **value}
    return value


def _parse_json_or_csv(value: Any) -> Any:
    """Env values may be JSON (``["a","b"]``) or a comma-separated list (``a,b``)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") or text.startswith("{"):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Every knob of ``mmal serve`` and ``mmal worker``; all have working defaults for a local setup."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True,
                                      protected_namespaces=())

    # --- Label Studio ------------------------------------------------------------------------------
    label_studio_url: str | None = Field(
        None, validation_alias=AliasChoices("LABEL_STUDIO_URL", "label_studio_url"),
        description="Base URL of Label Studio as the backend reaches it (compose: http://label-studio:8080); "
                    "unset = the hostname Label Studio sends in /setup.")
    label_studio_api_key: str | None = Field(
        None, validation_alias=AliasChoices("LABEL_STUDIO_API_KEY", "label_studio_api_key"),
        description="Legacy token or personal access token (JWT refresh token) of a user with access to the "
                    "projects; unset = the token Label Studio sends in /setup.")
    # --- infrastructure ----------------------------------------------------------------------------
    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias=AliasChoices("REDIS_URL", "redis_url"))
    model_dir: Path = Field(Path("models"), validation_alias=AliasChoices("MODEL_DIR", "model_dir"),
                            description="Where model versions are stored (shared by server and workers).")
    basic_auth_user: str | None = Field(None, validation_alias=AliasChoices("BASIC_AUTH_USER", "basic_auth_user"))
    basic_auth_pass: str | None = Field(None, validation_alias=AliasChoices("BASIC_AUTH_PASS", "basic_auth_pass"))
    server_threads: int = Field(1, ge=0, validation_alias=AliasChoices("MMAL_SERVER_THREADS", "server_threads"),
                                description="torch threads of `mmal serve` (0: torch's default). /predict runs many "
                                            "small forward passes, where OpenMP threads spin-wait more than they help: "
                                            "1 thread made a 100-task call 3.6x cheaper in CPU (perf/RESULTS.md).")
    log_level: LogLevelName = Field(
        "INFO", validation_alias=AliasChoices("LOG_LEVEL", "log_level"),
        description="Log level of `mmal serve` and `mmal worker` (label-studio-ml-backend's name); their "
                    "--log-level flag overrides it. DEBUG also logs the effective settings, secrets masked.")
    # --- learning ------------------------------------------------------------------------------------
    strategy: str = Field("margin", validation_alias=AliasChoices("MMAL_STRATEGY", "strategy"),
                          description="Query strategy that orders the tasks (see `mmal strategies`): a name or a "
                                      "spec such as reducible_margin(quota=0); checked by `strategy_spec`.")
    strategy_params: Annotated[dict[str, Any], NoDecode] = Field(default_factory=dict,
                                            validation_alias=AliasChoices("MMAL_STRATEGY_PARAMS", "strategy_params"),
                                            description="Settings of the strategy (JSON), on top of the spec's.")
    min_annotations: int = Field(10, ge=1, validation_alias=AliasChoices("MMAL_MIN_ANNOTATIONS", "min_annotations"),
                                 description="Labelled tasks needed before the first training.")
    query_batch: int = Field(100, ge=1, validation_alias=AliasChoices("MMAL_QUERY_BATCH", "query_batch"),
                             description="Batch size for strategies that select a batch (no per-item score).")
    fusion: Literal["early", "intermediate", "late"] = Field(
        "intermediate", validation_alias=AliasChoices("MMAL_FUSION", "fusion"))
    recipe: Literal["auto", "probe", "sgd"] = Field(
        "auto", validation_alias=AliasChoices("MMAL_RECIPE", "recipe"),
        description="Training recipe: probe = standardised features, per-modality and joint logistic heads by "
                    "L-BFGS (C by cross-validation), a small MLP expert and the sgd network as further experts, "
                    "fused as a product of experts weighted on held-out predictions (docs/model_recipe.md: +13 to "
                    "+17 AUBC points over sgd on emoji, +6 to +10 on mfeat, above a linear probe at every budget); "
                    "sgd = the fusion network by AdamW (MMAL_EPOCHS, MMAL_PATIENCE, MMAL_FUSION); auto = probe "
                    "when every modality is a feature vector (the pretrained featurizers), else sgd.")
    epochs: int = Field(100, ge=1, validation_alias=AliasChoices("MMAL_EPOCHS", "epochs"))
    patience: int = Field(15, ge=1, validation_alias=AliasChoices("MMAL_PATIENCE", "patience"))
    warm_start: bool = Field(False, validation_alias=AliasChoices("MMAL_WARM_START", "warm_start"))
    seed: int = Field(0, validation_alias=AliasChoices("MMAL_SEED", "seed"))
    device: str | None = Field(None, validation_alias=AliasChoices("MMAL_DEVICE", "device"),
                               description="Training device (cpu, cuda, cuda:1); unset = GPU when present.")
    featurizers: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=lambda: dict(DEFAULT_FEATURIZERS), validation_alias=AliasChoices("MMAL_FEATURIZERS",
                                                                                         "featurizers"),
        description="Label-config object tag type -> featurizer name: a preset (pretrained = EfficientNet-Lite0 "
                    "and MiniLM, the default; simple = small encoders trained from scratch) or a JSON object, "
                    "e.g. {\"Image\": \"hf_image\"} with MMAL_FEATURIZER_PARAMS naming the model folder.")
    featurizer_params: Annotated[dict[str, dict[str, Any]], NoDecode] = Field(
        default_factory=dict, validation_alias=AliasChoices("MMAL_FEATURIZER_PARAMS", "featurizer_params"),
        description="Featurizer name -> constructor parameters, e.g. {\"image_pixels\": {\"size\": 32}}.")
    feature_cache_dir: Path | None = Field(None, validation_alias=AliasChoices("MMAL_FEATURE_CACHE_DIR",
                                                                              "feature_cache_dir"),
                                           description="Feature cache; unset = MODEL_DIR/feature-cache.")
    keep_versions: int = Field(5, ge=1, validation_alias=AliasChoices("MMAL_KEEP_VERSIONS", "keep_versions"),
                               description="Model versions kept on disk per project (the current one always).")
    keep_prediction_versions: int = Field(
        2, ge=0, validation_alias=AliasChoices("MMAL_KEEP_PREDICTION_VERSIONS", "keep_prediction_versions"),
        description="Model versions whose predictions stay in Label Studio (0 = never delete any).")
    diagnostics_sample: int = Field(2000, ge=0, validation_alias=AliasChoices("MMAL_DIAGNOSTICS_SAMPLE",
                                                                              "diagnostics_sample"),
                                    description="Labelled tasks the modality diagnostics look at (0 = off).")
    # --- the annotators' queue -------------------------------------------------------------------------
    ls_sampling: Literal["uncertainty", "keep"] = Field(
        "uncertainty", validation_alias=AliasChoices("MMAL_LS_SAMPLING", "ls_sampling"),
        description="uncertainty: when the backend publishes an order it sets the project's sampling to "
                    "'Uncertainty sampling', so 'Label All Tasks' serves the lowest score (the strategy's top "
                    "task) first, also in Community edition, whose settings page greys that option out; keep: "
                    "never change the project's sampling.")
    cold_start: Literal["coverage", "random"] = Field(
        "coverage", validation_alias=AliasChoices("MMAL_COLD_START", "cold_start"),
        description="Order before the first training: coverage = typical items of k-means clusters of the "
                    "pretrained features, round-robin (the first labels span the data); random = a seeded "
                    "random order.")
    cold_start_clusters: int = Field(
        50, ge=1, validation_alias=AliasChoices("MMAL_COLD_START_CLUSTERS", "cold_start_clusters"),
        description="k-means clusters of the coverage cold start: the first this-many tasks are one typical "
                    "item of each cluster.")
    encode_ahead: bool = Field(
        True, validation_alias=AliasChoices("MMAL_ENCODE_AHEAD", "encode_ahead"),
        description="Encode a project's tasks in the background when it connects and when tasks are imported "
                    "(and publish the cold-start order), so the first training does not pay for it.")
    publish_head: int = Field(
        100, ge=0, validation_alias=AliasChoices("MMAL_PUBLISH_HEAD", "publish_head"),
        description="After a training, the predictions of this many top-ranked tasks are pushed first and the "
                    "project switches to the new version at once; the rest follows in bulk (0: all first).")
    # --- queue ---------------------------------------------------------------------------------------
    queue: str = Field(TRAINING_QUEUE, validation_alias=AliasChoices("MMAL_QUEUE", "queue"))
    job_timeout: int = Field(3600, ge=10, validation_alias=AliasChoices("MMAL_JOB_TIMEOUT", "job_timeout"))
    train_debounce: float = Field(3.0, ge=0, validation_alias=AliasChoices("MMAL_TRAIN_DEBOUNCE", "train_debounce"),
                                  description="A training job waits until no webhook came for this many seconds "
                                              "(at most MMAL_TRAIN_DEBOUNCE_MAX) before pulling: a burst of "
                                              "annotations becomes one training, not one now and one follow-up.")
    train_debounce_max: float = Field(60.0, ge=0, validation_alias=AliasChoices("MMAL_TRAIN_DEBOUNCE_MAX",
                                                                                "train_debounce_max"))
    job_retries: int = Field(1, ge=0, validation_alias=AliasChoices("MMAL_JOB_RETRIES", "job_retries"),
                             description="Retries of a failed training job (e.g. Label Studio briefly down).")
    job_retry_interval: int = Field(30, ge=0, validation_alias=AliasChoices("MMAL_JOB_RETRY_INTERVAL",
                                                                            "job_retry_interval"))
    worker_class: Literal["fork", "spawn", "simple"] = Field(
        "fork", validation_alias=AliasChoices("MMAL_WORKER_CLASS", "worker_class"),
        description="RQ worker kind: fork (a fresh work horse per job), spawn, or simple (in-process).")
    prediction_chunk: int = Field(500, ge=1, validation_alias=AliasChoices("MMAL_PREDICTION_CHUNK",
                                                                          "prediction_chunk"),
                                  description="Predictions per bulk import request to Label Studio.")
    max_request_bytes: int = Field(100_000_000, ge=1024, validation_alias=AliasChoices("MMAL_MAX_REQUEST_BYTES",
                                                                                       "max_request_bytes"),
                                   description="Largest request body the server accepts (413 above it); "
                                               "/predict batches with inline data: images are the big ones.")
    # --- remote task data ----------------------------------------------------------------------------
    fetch_max_bytes: int = Field(20_000_000, ge=1, validation_alias=AliasChoices("MMAL_FETCH_MAX_BYTES",
                                                                                  "fetch_max_bytes"))
    fetch_timeout: float = Field(10.0, gt=0, validation_alias=AliasChoices("MMAL_FETCH_TIMEOUT", "fetch_timeout"))
    fetch_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=AliasChoices("MMAL_FETCH_ALLOWED_HOSTS", "fetch_allowed_hosts"),
        description="Hosts task URLs may point to besides Label Studio (exact names, '*.example.com', or '*').")
    fetch_max_redirects: int = Field(3, ge=0, validation_alias=AliasChoices("MMAL_FETCH_MAX_REDIRECTS",
                                                                             "fetch_max_redirects"))

    @field_validator("label_studio_api_key", "basic_auth_user", "basic_auth_pass", "device", "feature_cache_dir",
                     mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # `NAME=` in an env file (.env.example's way of saying "unset") must not mean "" (or Path("."))
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("fetch_allowed_hosts", mode="before")
    @classmethod
    def _hosts(cls, value: Any) -> Any:
        return _parse_json_or_csv(value)

    @field_validator("strategy_params", "featurizer_params", mode="before")
    @classmethod
    def _json_dict(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else {}
        return value

    @field_validator("featurizers", mode="before")
    @classmethod
    def _featurizers(cls, value: Any) -> Any:
        return featurizer_map(value)

    @field_validator("label_studio_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None:
            value = value.strip().rstrip("/") or None
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"LABEL_STUDIO_URL must start with http:// or https://, got {value!r}")
        return value

    @property
    def auth_enabled(self) -> bool:
        """Basic auth protects every endpoint but /health when both user and password are set."""
        return bool(self.basic_auth_user) and bool(self.basic_auth_pass)

    @property
    def cache_dir(self) -> Path:
        return self.feature_cache_dir or (self.model_dir / "feature-cache")

    @property
    def strategy_spec(self) -> StrategySpec:
        """``strategy`` with ``strategy_params`` on top, checked against the registry (raises ``QueryError``).

        A property, not a validated field: a worker with a bad ``MMAL_STRATEGY`` still starts and each job
        fails naming it, and ``/setup`` refuses a project's bad one with a 400.
        """
        from backend.strategies.spec import StrategySpec

        return StrategySpec.parse(self.strategy, **self.strategy_params)

    def version_strategy(self, meta: Mapping[str, Any]) -> StrategySpec:
        """The strategy a model version was ranked with (its ``meta``); a version that names none gets these
        settings' strategy name (without their params)."""
        from backend.strategies.spec import StrategySpec

        return StrategySpec.parse(meta.get("strategy") or self.strategy, **(meta.get("strategy_params") or {}))


class ProjectOverrides(BaseModel):
    """Per-project learning settings from the backend's *extra params* (JSON) in Label Studio.

    Example extra params: ``{"strategy": "entropy", "min_annotations": 20, "strategy_params": {}}``.
    Unknown keys are an error so a typo does not go unnoticed.
    """

    model_config = ConfigDict(extra="forbid")

    strategy: str | None = None
    strategy_params: dict[str, Any] | None = None
    min_annotations: int | None = Field(None, ge=1)
    query_batch: int | None = Field(None, ge=1)
    fusion: Literal["early", "intermediate", "late"] | None = None
    recipe: Literal["auto", "probe", "sgd"] | None = None
    epochs: int | None = Field(None, ge=1)
    seed: int | None = None
    featurizers: dict[str, str] | None = None
    featurizer_params: dict[str, dict[str, Any]] | None = None
    cold_start: Literal["coverage", "random"] | None = None
    ls_sampling: Literal["uncertainty", "keep"] | None = None

    @field_validator("featurizers", mode="before")
    @classmethod
    def _featurizers(cls, value: Any) -> Any:
        return None if value is None else featurizer_map(value)

    def apply(self, settings: Settings) -> Settings:
        """A copy of ``settings`` with these overrides applied."""
        changes = {k: v for k, v in self.model_dump().items() if v is not None}
        return settings.model_copy(update=changes)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings from the environment (cached; tests build :class:`Settings` directly)."""
    return Settings()
