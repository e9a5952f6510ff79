"""One training of one Label Studio project (the body of the RQ job in :mod:`ml_server.jobs`).

Label Studio is the source of truth: every task and annotation is pulled through label-studio-sdk at the
start, so the webhook that triggered the job only says *when*, never *what*. The work is split in two:

- :func:`build_version` (no Label Studio access): featurize, train, rank the pool with the strategy,
  save the model as a new version (not serving yet), and return the predictions for every task;
- :func:`run_training`: pull, :func:`build_version`, then publish the head of the ranking first, so the
  annotator's next task comes from the new model within seconds even at 10k tasks:

      push the top MMAL_PUBLISH_HEAD predictions -> make the version current here -> set
      project.model_version (and sampling) -> push the rest in bulk

  Label Studio's uncertainty sampling only serves tasks with a prediction of ``project.model_version``,
  so after the switch the head is what annotators get; the rest fills in behind it. A failure anywhere
  puts the previous version back and removes the half-made one (its directory and its predictions).

Below ``MMAL_MIN_ANNOTATIONS`` labels the job encodes every task ahead (the feature cache makes the
first training as quick as later ones) and publishes the *cold-start* order (:mod:`backend.cold_start`:
typical items of k-means clusters of the pretrained features, round-robin), so the first labels cover
the data instead of following Label Studio's id order.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from backend.data import DataError, Pool
from connectors.label_config import LabelConfig, parse_label_config, predicted_labels
from connectors.labelstudio import LabelStudioConnector
from ml_server.fetch import Fetcher, FetchPolicy
from ml_server.model_store import ColdStart, ModelStore, version_name
from ml_server.scoring import LABELED_SCORE, pool_scores
from ml_server.settings import Settings

if TYPE_CHECKING:
    from backend.strategies.spec import StrategySpec

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


def choices_result(config: LabelConfig, label: str | list[str]) -> list[dict[str, Any]]:
    """The Label Studio result for a predicted class (multi-label: a list of classes; none -> no region)."""
    if isinstance(label, list) and not label:
        return []
    return [config.choices_region(label)]


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
                  store: ModelStore, fetcher: Fetcher | None, spec: StrategySpec | None = None) -> BuiltVersion:
    """Featurize ``tasks``, train on the labelled ones, rank the rest, save a new version (not current).

    ``spec``: the settings' strategy when already checked (else ``settings.strategy_spec``)."""
    from backend.diagnostics import diagnose
    from backend.encoders import FeatureCache
    from backend.models.fusion import FusionConfig
    from backend.models.trainer import TrainConfig, TrainedFusionModel, train_model
    from backend.strategies.ranking import rank
    from ml_server.dataset import apply_scaling, build_task_dataset, feature_scaling, modality_specs

    timings: dict[str, float] = {}
    strategy = (spec or settings.strategy_spec).build()
    config = parse_label_config(label_config)
    specs = modality_specs(config, settings.featurizers, settings.featurizer_params)
    t1 = time.time()
    td = build_task_dataset(list(tasks), config, specs, fetcher, FeatureCache(settings.cache_dir))
    timings["featurize_s"] = time.time() - t1
    scaling = feature_scaling(td.dataset)
    ds, labeled = apply_scaling(td.dataset, scaling), td.labeled
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
    recipe = training_recipe(settings.recipe, ds)
    model: TrainedFusionModel = train_model(
        ds, labeled, fusion=FusionConfig(kind=settings.fusion),
        train=TrainConfig(epochs=settings.epochs, patience=settings.patience, warm_start=settings.warm_start,
                          device=settings.device, recipe=recipe),
        seed=settings.seed, init=init if recipe == "sgd" else None)
    timings["train_s"] = time.time() - t2

    t3 = time.time()
    pool = Pool.from_labeled(len(ds), labeled)
    ranking = rank(strategy, model, ds, pool, seed=settings.seed, batch=settings.query_batch)
    scores = pool_scores(ranking)
    predicted = predicted_labels(model.predict(ds, np.arange(len(ds))).probs, config.class_names, config.multi_label)
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

    version = store.new_version(project_id, tag=settings.strategy)
    task_ranking: dict[int, tuple[str | list[str], float]] = {}
    labeled_rows = set(labeled.tolist())
    predictions = []
    for i, tid in enumerate(td.task_ids.tolist()):
        label = predicted[i]
        score = LABELED_SCORE if i in labeled_rows else float(scores[i])
        task_ranking[tid] = (label, score)
        predictions.append({"task": tid, "result": choices_result(config, label), "score": score,
                            "model_version": version})
    last = model.history[-1] if model.history else {}
    summary = {
        "project": project_id, "model_version": version, "previous_version": previous,
        "n_tasks": len(ds), "n_labeled": int(labeled.size), "strategy": settings.strategy,
        "strategy_params": settings.strategy_params, "ranking_kind": ranking.kind, "fusion": settings.fusion,
        "recipe": recipe,
        "device": str(model.device), "epochs_run": model.meta.get("epochs_run"), "val_acc": last.get("val_acc"),
        "fetch_errors": td.fetch_errors, "unknown_labels": td.unknown_labels, "timings": timings,
        "diagnostics": diagnostics, "reliance": (diagnostics or {}).get("contribution"),
        "featurizers": {s.name: s.featurizer for s in specs},
    }
    meta = {**summary, "labels": label_fingerprint(list(tasks), config), "label_config": label_config,
            "modalities": [s.to_dict() for s in specs], "feature_scaling": scaling,
            "class_names": list(config.class_names), "control": config.control.name, "seed": settings.seed}
    store.save(project_id, version, model, meta, task_ranking, ranking.calibration())
    return BuiltVersion(version, previous, predictions, summary)


def run_training(project_id: int, settings: Settings, setup: Mapping[str, Any], reason: str = "",
                 superseded: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Pull, train, publish (see the module docstring); returns a JSON-safe summary.

    ``superseded()`` says whether labels changed since this job started (a newer training waits): then the
    tail of the predictions is not pushed (see :func:`_publish_head_first`).

    ``{"status": "waiting", ...}`` when fewer than ``min_annotations`` tasks are labelled; then, with
    ``MMAL_ENCODE_AHEAD``, every task is encoded and the cold-start order published (``"cold_start"``).
    ``{"status": "scored", ...}`` when a model serves and the labels are the ones it was trained on (tasks
    were imported): the new tasks are encoded and scored by the serving model, nothing is retrained.
    Only a job queued for tasks (``reason`` in :data:`SCORING_REASONS`) may skip the training; one queued by
    an annotation webhook or START_TRAINING always trains.
    """
    t0 = time.time()
    spec = settings.strategy_spec  # fail fast on a bad strategy
    url, token = label_studio_access(settings, setup)
    ls = LabelStudioConnector(url, token)
    store = ModelStore(settings.model_dir)
    try:
        project = ls.get_project(project_id)
        label_config = project["label_config"]
        config = parse_label_config(label_config)
        tasks, pull_info = pull_project_tasks(ls, store, project_id)
        pull_s = time.time() - t0
        n_labeled = count_labeled(tasks, config)
        if n_labeled < settings.min_annotations:
            log.info("project %s: %d labelled tasks, %d needed before the first training", project_id, n_labeled,
                     settings.min_annotations)
            waiting: dict[str, Any] = {"status": "waiting", "project": project_id, "n_labeled": n_labeled,
                                       "min_annotations": settings.min_annotations, "n_tasks": len(tasks),
                                       "pull": pull_info}
            if settings.encode_ahead and store.current_version(project_id) is None and tasks:
                with make_fetcher(settings, url, ls) as fetcher:
                    waiting["cold_start"] = publish_cold_start(ls, store, project_id, tasks, label_config,
                                                               settings, fetcher, pull_s=pull_s,
                                                               superseded=superseded)
            return waiting
        labels_key = label_fingerprint(tasks, config)
        current = store.current_version(project_id)
        if current is not None and reason in SCORING_REASONS and \
                store.read_meta(project_id, current).get("labels") == labels_key:
            scored = score_new_tasks(ls, store, project_id, tasks, label_config, settings, url)
            scored["timings"]["pull_s"] = pull_s
            return scored
        with make_fetcher(settings, url, ls) as fetcher:
            built = build_version(project_id, tasks, label_config, settings, store, fetcher, spec)
        publish_timings = publish(ls, store, project_id, built, settings, superseded=superseded)
        summary = dict(built.summary)
        summary["timings"] = {**summary["timings"], "pull_s": pull_s, **publish_timings,
                              "total_s": time.time() - t0}
        summary["pruned_versions"] = _prune(ls, store, project_id, settings, keep_current=built.version)
        summary.update({"status": "trained", "n_predictions": len(built.predictions), "pull": pull_info})
        log.info("training %s", json.dumps(training_log_record(summary), sort_keys=True))
        return summary
    finally:
        ls.close()


SCORING_REASONS = frozenset({"TASKS_CREATED", "TASKS_DELETED", "connected"})
"""Why a job was queued when it is about tasks, not labels (see :func:`run_training`)."""


def pull_project_tasks(ls: LabelStudioConnector, store: ModelStore,
                       project_id: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Every task of the project with its annotations, read incrementally: Label Studio takes about 4 ms a
    task to serialise a whole one, so 10k tasks cost 40 s a job. Here each job reads a cheap index (id,
    updated_at, annotation counts), then in full only the tasks that are annotated, were annotated, are
    new or changed; the data of the others comes from the project's task cache (MODEL_DIR, written by
    the job that holds the project's lock). Label Studio stays the source of truth for every label."""
    index = ls.task_index(project_id)
    cache = store.load_task_cache(project_id)
    annotated, stale = [], []
    for tid, head in index.items():
        cached = cache.get(tid)
        if int(head.get("total_annotations") or 0) + int(head.get("cancelled_annotations") or 0) > 0 \
                or (cached is not None and cached.get("annotations")):
            annotated.append(tid)
        elif cached is None or cached.get("updated_at") != head.get("updated_at"):
            stale.append(tid)
    fresh = ls.tasks_by_id(project_id, annotated) + ls.tasks_by_id(project_id, stale, include=ls.DATA_FIELDS)
    keep = ("id", "project", "data", "annotations", "is_labeled", "updated_at", "total_annotations",
            "cancelled_annotations")
    changed = bool(stale) or any(t not in index for t in cache)
    for task in fresh:
        slim = {k: task[k] for k in keep if k in task}
        slim.setdefault("annotations", [])
        tid = int(task["id"])
        changed = changed or cache.get(tid) != slim
        cache[tid] = slim
    tasks = [cache[tid] for tid in sorted(index) if tid in cache]
    if changed:
        store.save_task_cache(project_id, {int(t["id"]): t for t in tasks})
    return tasks, {"indexed": len(index), "read_whole": len(annotated), "read_data": len(stale)}


def training_recipe(setting: str, dataset: Any) -> str:
    """``MMAL_RECIPE`` -> the recipe for this dataset (``auto``: :func:`backend.models.config.auto_recipe`)."""
    from backend.models.trainer import auto_recipe

    return auto_recipe(dataset) if setting == "auto" else setting


def label_fingerprint(tasks: list[Mapping[str, Any]], config: LabelConfig) -> str:
    """A digest of every (task, class) label: equal when no label changed since a training."""
    import hashlib

    from ml_server.dataset import task_label

    pairs = sorted((int(t["id"]), label) for t in tasks if (label := task_label(t, config)) is not None)
    return hashlib.blake2b(json.dumps(pairs).encode(), digest_size=12).hexdigest()


def score_new_tasks(ls: LabelStudioConnector, store: ModelStore, project_id: int, tasks: list[Mapping[str, Any]],
                    label_config: str, settings: Settings, url: str) -> dict[str, Any]:
    """Tasks the serving version never ranked (imported since): encode them and push their predictions of
    that version, scored as ``/predict`` would (the strategy's priority placed among the training's pool),
    so Label Studio's sampling can serve them without waiting for the next training."""
    from backend.encoders import FeatureCache
    from ml_server.predictor import predict_tasks

    t0 = time.time()
    loaded = store.get_current(project_id, device=settings.device)
    if loaded is None:
        return {"status": "scored", "project": project_id, "n_scored": 0, "timings": {}}
    new = [t for t in tasks if int(t["id"]) not in loaded.ranking]
    predictions: list[dict[str, Any]] = []
    errors = 0
    if new:
        items = predict_tasks(project_id, new, label_config, loaded, lambda: make_fetcher(settings, url, ls),
                              FeatureCache(settings.cache_dir), lambda meta: settings.version_strategy(meta).build())
        for task, item in zip(new, items):
            if "error" in item:
                errors += 1
                log.warning("project %s: %s", project_id, item["error"])
                continue
            predictions.append({"task": int(task["id"]), **item})
        ls.push_predictions(project_id, predictions, chunk=settings.prediction_chunk)
    summary = {"status": "scored", "project": project_id, "model_version": loaded.version,
               "n_scored": len(predictions), "n_unusable": errors, "timings": {"score_s": time.time() - t0}}
    log.info("scoring %s", json.dumps({"event": "scoring", **summary}, sort_keys=True))
    return summary


def training_log_record(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The one structured log line a training writes (and /status shows as ``last_training``)."""
    timings = summary.get("timings") or {}
    return {"event": "training", "project": summary.get("project"), "model_version": summary.get("model_version"),
            "strategy": summary.get("strategy"), "recipe": summary.get("recipe"), "n_labeled": summary.get("n_labeled"),
            "n_tasks": summary.get("n_tasks"), "val_acc": summary.get("val_acc"),
            "reliance": summary.get("reliance"), "device": summary.get("device"),
            "timings_s": {k.removesuffix("_s"): round(float(v), 3) for k, v in timings.items()}}


def cold_start_order(tasks: list[Mapping[str, Any]], label_config: str, settings: Settings,
                     fetcher: Fetcher | None) -> tuple[list[int], list[int], dict[str, Any]]:
    """Encode every task (filling the feature cache) and order the unlabelled ones for a cold start.

    Returns (unlabelled task ids best first, labelled task ids, info). ``coverage`` orders by
    :func:`backend.cold_start.coverage_order` on the features; ``random`` by a seeded hash of the id.
    """
    from backend.cold_start import coverage_features, coverage_order
    from backend.encoders import FeatureCache
    from ml_server.dataset import build_task_dataset, modality_specs
    from ml_server.predictor import cold_start_score

    config = parse_label_config(label_config)
    specs = modality_specs(config, settings.featurizers, settings.featurizer_params)
    t1 = time.time()
    td = build_task_dataset(list(tasks), config, specs, fetcher, FeatureCache(settings.cache_dir))
    info: dict[str, Any] = {"featurize_s": time.time() - t1, "fetch_errors": td.fetch_errors}
    ds = td.dataset
    labeled = np.flatnonzero(ds.labeled_mask())
    unl = np.flatnonzero(~ds.labeled_mask())
    t2 = time.time()
    if settings.cold_start == "coverage" and unl.size > 1:
        x = coverage_features({m: ds.modalities[m] for m in ds.modality_names}, ds.masks)
        order = coverage_order(x, settings.cold_start_clusters, labeled=labeled, seed=settings.seed)
    else:
        pid = tasks[0].get("project") if tasks else None
        order = unl[np.argsort([cold_start_score(pid, int(td.task_ids[i])) for i in unl], kind="stable")]
    info["order_s"] = time.time() - t2
    return td.task_ids[order].tolist(), td.task_ids[labeled].tolist(), info


def publish_cold_start(ls: LabelStudioConnector, store: ModelStore, project_id: int,
                       tasks: list[Mapping[str, Any]], label_config: str, settings: Settings,
                       fetcher: Fetcher | None, pull_s: float = 0.0,
                       superseded: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Encode ahead and publish the cold-start order as a model version of its own (no classes yet).

    Skipped (``"unchanged"``) when the published one already covers exactly these tasks: a label below
    the minimum changes nothing Label Studio's sampling needs (it never serves a labelled task). A
    publication cut short (``superseded``) is recorded without its task fingerprint, so the next one
    publishes in full.
    """
    t0 = time.time()
    order, labeled_ids, info = cold_start_order(tasks, label_config, settings, fetcher)
    fingerprint = _task_fingerprint([int(t["id"]) for t in tasks])
    previous = store.cold_start(project_id)
    if previous is not None and previous.meta.get("tasks") == fingerprint \
            and previous.meta.get("kind") == settings.cold_start:
        return {"status": "unchanged", "model_version": previous.version, **info}
    version = version_name(0, settings.cold_start)
    n = max(len(order), 1)
    scores = {tid: r / n for r, tid in enumerate(order)}
    scores.update({tid: LABELED_SCORE for tid in labeled_ids})
    predictions = [{"task": tid, "result": [], "score": scores[tid], "model_version": version}
                   for tid in order + labeled_ids]
    cold = ColdStart(version, scores, {"kind": settings.cold_start, "tasks": fingerprint, "n_tasks": len(tasks),
                                       "clusters": settings.cold_start_clusters})
    previous_version = previous.version if previous is not None else None
    timings = _publish_head_first(ls, project_id, version, predictions, settings,
                                  switch=lambda: store.save_cold_start(project_id, cold),
                                  undo=lambda: _restore_cold_start(store, project_id, previous),
                                  superseded=superseded)
    if timings.get("rest_skipped"):
        store.save_cold_start(project_id, ColdStart(version, scores, {**cold.meta, "tasks": None, "partial": True}))
    if previous_version and previous_version != version:
        try:
            ls.delete_model_version(project_id, previous_version)
        except Exception as exc:  # housekeeping
            log.warning("project %s: could not delete the old cold-start order %s: %s", project_id,
                        previous_version, exc)
    record = {"event": "cold_start", "project": project_id, "model_version": version, "kind": settings.cold_start,
              "n_tasks": len(tasks), "n_labeled": len(labeled_ids),
              "timings_s": {"pull": round(pull_s, 3), "encode": round(info["featurize_s"], 3),
                            "order": round(info["order_s"], 3),
                            **{k.removesuffix("_s"): round(v, 3) for k, v in timings.items()},
                            "total": round(pull_s + time.time() - t0, 3)}}
    log.info("cold start %s", json.dumps(record, sort_keys=True))
    return {"status": "published", "model_version": version, "fetch_errors": info["fetch_errors"],
            "timings": record["timings_s"]}


def _restore_cold_start(store: ModelStore, project_id: int, previous: ColdStart | None) -> None:
    if previous is not None:
        store.save_cold_start(project_id, previous)
    else:
        (store.project_dir(project_id) / "cold_start.json").unlink(missing_ok=True)


def _task_fingerprint(task_ids: list[int]) -> str:
    import hashlib

    return hashlib.blake2b(",".join(map(str, sorted(task_ids))).encode(), digest_size=12).hexdigest()


def publish(ls: LabelStudioConnector, store: ModelStore, project_id: int, built: BuiltVersion,
            settings: Settings, superseded: Callable[[], bool] | None = None) -> dict[str, float]:
    """Head first, switch, rest in bulk (module docstring); on failure the previous version serves again."""
    def switch() -> None:
        store.set_current(project_id, built.version)

    def undo() -> None:
        if built.previous is not None:
            store.set_current(project_id, built.previous)
        else:
            (store.project_dir(project_id) / "current.json").unlink(missing_ok=True)

    previous_ls = built.previous
    if previous_ls is None:
        cold = store.cold_start(project_id)
        previous_ls = cold.version if cold is not None else None
    try:
        return _publish_head_first(ls, project_id, built.version, built.predictions, settings, switch=switch,
                                   undo=undo, previous=previous_ls, superseded=superseded)
    except BaseException:
        _undo(ls, store, project_id, built.version)
        raise


def _publish_head_first(ls: LabelStudioConnector, project_id: int, version: str,
                        predictions: list[dict[str, Any]], settings: Settings, *, switch: Any, undo: Any,
                        previous: str | None = None, superseded: Callable[[], bool] | None = None
                        ) -> dict[str, float]:
    """Push the ``publish_head`` lowest-score predictions, switch (here via ``switch``, then Label Studio's
    model_version and sampling), push the rest. A failure after the switch calls ``undo`` and points
    Label Studio back at ``previous`` before re-raising; the caller deletes the new version's predictions.

    The rest goes in chunks of ``prediction_chunk``; before each, ``superseded()`` is asked whether labels
    changed meanwhile. Then the rest is left out (``rest_skipped`` in the timings): the waiting training
    publishes every task anew, and pushing a stale tail (about 100 s at 10k tasks on the 2-core box) only
    delays it. Annotators are served from the head meanwhile, which is already in."""
    ordered = sorted(predictions, key=lambda p: (p["score"], p["task"]))
    head_n = len(ordered) if settings.publish_head <= 0 else min(settings.publish_head, len(ordered))
    timings: dict[str, float] = {}
    t = time.time()
    ls.push_predictions(project_id, ordered[:head_n], chunk=settings.prediction_chunk)
    timings["push_head_s"] = time.time() - t
    t = time.time()
    switched = False
    try:
        switch()
        switched = True
        ls.set_model_version(project_id, version)
        if settings.ls_sampling == "uncertainty":
            if ls.set_sampling(project_id):
                log.info("project %s: sampling set to 'Uncertainty sampling' so annotators get the lowest score "
                         "first (MMAL_LS_SAMPLING=keep leaves it alone)", project_id)
        timings["switch_s"] = time.time() - t
        t = time.time()
        chunk = max(1, settings.prediction_chunk)
        for start in range(head_n, len(ordered), chunk):
            if superseded is not None and superseded():
                timings["rest_skipped"] = float(len(ordered) - start)
                log.info("project %s: labels changed while publishing %s; %d predictions of the tail left to the "
                         "next training", project_id, version, len(ordered) - start)
                break
            ls.push_predictions(project_id, ordered[start:start + chunk], chunk=chunk)
        timings["push_rest_s"] = time.time() - t
    except BaseException:
        if switched:
            undo()
            if previous is not None:
                try:
                    ls.set_model_version(project_id, previous)
                except Exception as exc:
                    log.warning("project %s: could not point Label Studio back at %s: %s", project_id, previous,
                                exc)
        try:
            ls.delete_model_version(project_id, version)
        except Exception as exc:
            log.warning("project %s: could not delete predictions of failed version %s: %s", project_id,
                        version, exc)
        raise
    return timings


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
