"""One training of one Label Studio project (the body of the RQ job in :mod:`ml_server.jobs`).

Label Studio is the source of truth: every task and annotation is pulled through label-studio-sdk at the
start, so the webhook that triggered the job only says *when*, never *what*. The work is split in two:

- :func:`build_version` (no Label Studio access): featurize, train, rank the pool with the strategy,
  save the model as a new version (not serving yet), and return the predictions for every task;
- :func:`run_training`: pull, :func:`build_version`, then publish in an order that keeps the previous
  model serving until the new one is complete everywhere:

      push predictions of the new version (bulk) -> make it current here -> set project.model_version

  A failure before the switch removes the half-made version (its directory and its predictions).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from backend.data import DataError, Pool
from connectors.labelstudio import LabelStudioConnector
from ml_server.fetch import Fetcher, FetchPolicy
from ml_server.label_config import LabelConfig, parse_label_config
from ml_server.model_store import ModelStore
from ml_server.settings import Settings

log = logging.getLogger(__name__)


def label_studio_access(settings: Settings, setup: Mapping[str, Any]) -> tuple[str, str]:
    """(URL, API key) to reach Label Studio: the settings first, else what /setup reported."""
    url = settings.label_studio_url or (setup.get("hostname") or "").rstrip("/")
    token = settings.label_studio_api_key or setup.get("access_token") or ""
    if not url:
        raise DataError("Label Studio URL unknown: set LABEL_STUDIO_URL (or let Label Studio call /setup first)")
    if not token:
        raise DataError("Label Studio API key unknown: set LABEL_STUDIO_API_KEY (or let Label Studio call /setup)")
    return url, token


def make_fetcher(settings: Settings, ls_url: str | None, connector: LabelStudioConnector | None) -> Fetcher:
    """A fetcher under the settings' limits; Label Studio's host gets the connector's token."""
    policy = FetchPolicy(label_studio_url=ls_url, allowed_hosts=list(settings.fetch_allowed_hosts),
                         max_bytes=settings.fetch_max_bytes, timeout=settings.fetch_timeout,
                         max_redirects=settings.fetch_max_redirects)
    return Fetcher(policy, auth_headers=connector.auth_headers if connector is not None else None,
                   cache_dir=settings.cache_dir / "fetched")


def choices_result(config: LabelConfig, label: str) -> list[dict[str, Any]]:
    """A Label Studio ``choices`` result region for one class."""
    to_name = config.control.to_name or config.objects[0].name
    return [{"from_name": config.control.name, "to_name": to_name, "type": "choices",
             "value": {"choices": [label]}}]


@dataclass
class BuiltVersion:
    """A trained, saved (not yet serving) model version and what to publish for it."""

    version: str
    previous: str | None
    predictions: list[dict[str, Any]]
    summary: dict[str, Any]


def count_labeled(tasks: list[Mapping[str, Any]], config: LabelConfig) -> int:
    """Tasks with a usable annotation (what the minimum-annotations rule counts)."""
    from ml_server.dataset import task_label

    return sum(1 for t in tasks if task_label(t, config) is not None)


def build_version(project_id: int, tasks: list[Mapping[str, Any]], label_config: str, settings: Settings,
                  store: ModelStore, fetcher: Fetcher | None) -> BuiltVersion:
    """Featurize ``tasks``, train on the labelled ones, rank the rest, save a new version (not current)."""
    from backend.diagnostics import diagnose
    from backend.encoders import FeatureCache
    from backend.models.fusion import FusionConfig
    from backend.models.trainer import TrainConfig, TrainedFusionModel, train_model
    from backend.strategies.base import get_strategy
    from ml_server.dataset import build_task_dataset, modality_specs
    from ml_server.scoring import LABELED_SCORE, rank_pool

    timings: dict[str, float] = {}
    strategy = get_strategy(settings.strategy, **settings.strategy_params)
    config = parse_label_config(label_config)
    specs = modality_specs(config, settings.featurizers, settings.featurizer_params)
    t1 = time.time()
    td = build_task_dataset(list(tasks), config, specs, fetcher, FeatureCache(settings.cache_dir))
    timings["featurize_s"] = time.time() - t1
    ds, labeled = td.dataset, td.labeled
    if labeled.size == 0:
        raise DataError(f"project {project_id}: no labelled task to train on")

    previous = store.current_version(project_id)
    init = None
    if settings.warm_start and previous is not None:
        try:
            init = store.load(project_id, previous, device=settings.device).model
        except Exception as exc:  # an incompatible previous model only means a cold start
            log.warning("project %s: cannot warm-start from %s: %s", project_id, previous, exc)
    t2 = time.time()
    model: TrainedFusionModel = train_model(
        ds, labeled, fusion=FusionConfig(kind=settings.fusion),
        train=TrainConfig(epochs=settings.epochs, patience=settings.patience, warm_start=settings.warm_start,
                          device=settings.device),
        seed=settings.seed, init=init)
    timings["train_s"] = time.time() - t2

    t3 = time.time()
    pool = Pool.from_labeled(len(ds), labeled)
    ranking = rank_pool(strategy, model, ds, pool, seed=settings.seed, batch=settings.query_batch)
    scores = ranking.scores()
    predicted = model.predict(ds, np.arange(len(ds))).probs.argmax(dim=1).cpu().numpy()
    timings["rank_s"] = time.time() - t3

    diagnostics = None
    if settings.diagnostics_sample > 0:
        try:
            sample = labeled
            if sample.size > settings.diagnostics_sample:
                rng = np.random.default_rng(settings.seed)
                sample = np.sort(rng.choice(sample, settings.diagnostics_sample, replace=False))
            diagnostics = diagnose(model, ds, sample).to_dict(per_item=False)
        except Exception as exc:  # diagnostics inform, they never block a training
            log.warning("project %s: diagnostics failed: %s", project_id, exc)

    version = store.new_version(project_id)
    task_ranking: dict[int, tuple[str, float]] = {}
    predictions = []
    for i, tid in enumerate(td.task_ids.tolist()):
        label = config.class_names[int(predicted[i])]
        score = LABELED_SCORE if ds.labels[i] >= 0 else float(scores[i])
        task_ranking[tid] = (label, score)
        predictions.append({"task": tid, "result": choices_result(config, label), "score": score,
                            "model_version": version})
    last = model.history[-1] if model.history else {}
    summary = {
        "project": project_id, "model_version": version, "previous_version": previous,
        "n_tasks": len(ds), "n_labeled": int(labeled.size), "strategy": settings.strategy,
        "strategy_params": settings.strategy_params, "ranking_kind": ranking.kind, "fusion": settings.fusion,
        "device": str(model.device), "epochs_run": model.meta.get("epochs_run"), "val_acc": last.get("val_acc"),
        "fetch_errors": td.fetch_errors, "unknown_labels": td.unknown_labels, "timings": timings,
        "diagnostics": diagnostics,
    }
    meta = {**summary, "label_config": label_config, "modalities": [s.to_dict() for s in specs],
            "class_names": list(config.class_names), "control": config.control.name, "seed": settings.seed}
    store.save(project_id, version, model, meta, task_ranking, ranking.calibration())
    return BuiltVersion(version, previous, predictions, summary)


def run_training(project_id: int, settings: Settings, setup: Mapping[str, Any]) -> dict[str, Any]:
    """Pull, train, publish (see the module docstring); returns a JSON-safe summary.

    ``{"status": "waiting", ...}`` when fewer than ``min_annotations`` tasks are labelled.
    """
    from backend.strategies.base import get_strategy

    t0 = time.time()
    get_strategy(settings.strategy, **settings.strategy_params)  # fail fast on a bad strategy
    url, token = label_studio_access(settings, setup)
    ls = LabelStudioConnector(url, token)
    store = ModelStore(settings.model_dir)
    try:
        project = ls.get_project(project_id)
        label_config = project["label_config"]
        config = parse_label_config(label_config)
        tasks = ls.pull_tasks(project_id)
        pull_s = time.time() - t0
        n_labeled = count_labeled(tasks, config)
        if n_labeled < settings.min_annotations:
            log.info("project %s: %d labelled tasks, %d needed before the first training", project_id, n_labeled,
                     settings.min_annotations)
            return {"status": "waiting", "project": project_id, "n_labeled": n_labeled,
                    "min_annotations": settings.min_annotations, "n_tasks": len(tasks)}
        with make_fetcher(settings, url, ls) as fetcher:
            built = build_version(project_id, tasks, label_config, settings, store, fetcher)
        t4 = time.time()
        publish(ls, store, project_id, built, settings)
        summary = dict(built.summary)
        summary["timings"] = {**summary["timings"], "pull_s": pull_s, "publish_s": time.time() - t4,
                              "total_s": time.time() - t0}
        summary["pruned_versions"] = _prune(ls, store, project_id, settings, keep_current=built.version)
        summary.update({"status": "trained", "n_predictions": len(built.predictions)})
        return summary
    finally:
        ls.close()


def publish(ls: LabelStudioConnector, store: ModelStore, project_id: int, built: BuiltVersion,
            settings: Settings) -> None:
    """Push the version's predictions in bulk, make it current here, then in Label Studio; undo on failure."""
    try:
        ls.push_predictions(project_id, built.predictions, chunk=settings.prediction_chunk)
        store.set_current(project_id, built.version)
        try:
            ls.set_model_version(project_id, built.version)
        except BaseException:
            if built.previous is not None:
                store.set_current(project_id, built.previous)
            raise
    except BaseException:
        _undo(ls, store, project_id, built.version)
        raise


def _undo(ls: LabelStudioConnector, store: ModelStore, project_id: int, version: str) -> None:
    """Best effort: remove a version that never became current (its predictions and its directory)."""
    try:
        ls.delete_model_version(project_id, version)
    except Exception as exc:
        log.warning("project %s: could not delete predictions of failed version %s: %s", project_id, version, exc)
    try:
        if store.current_version(project_id) != version:
            store.discard(project_id, version)
    except Exception as exc:
        log.warning("project %s: could not discard failed version %s: %s", project_id, version, exc)


def _prune(ls: LabelStudioConnector, store: ModelStore, project_id: int, settings: Settings,
           keep_current: str) -> list[str]:
    """Old versions: keep ``keep_versions`` on disk and the predictions of ``keep_prediction_versions``."""
    store.prune(project_id, settings.keep_versions)
    deleted: list[str] = []
    if settings.keep_prediction_versions <= 0:
        return deleted
    try:
        mine = sorted((v for v in ls.model_versions(project_id) if v.startswith("mmal-") and v != "mmal-untrained"),
                      key=_version_order)
        for v in mine[:-settings.keep_prediction_versions]:
            if v != keep_current:
                ls.delete_model_version(project_id, v)
                deleted.append(v)
    except Exception as exc:  # pruning is housekeeping, never a failure
        log.warning("project %s: pruning old predictions failed: %s", project_id, exc)
    return deleted


def _version_order(version: str) -> tuple[int, str]:
    parts = version.split("-")
    try:
        return int(parts[1]), version
    except (IndexError, ValueError):
        return -1, version
