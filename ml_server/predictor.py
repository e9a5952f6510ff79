"""``/predict``: one prediction per task, in order, from the serving model version.

- A task the last training ranked (and that is still unlabelled) gets exactly the label and score the
  worker wrote to Label Studio, so ``/predict`` and the bulk predictions never disagree.
- A task the training never saw (imported later) is featurized like the training data, predicted, and
  scored by placing its strategy priority among that training's pool (see :mod:`ml_server.scoring`).
- A labelled task gets score 1.0 (nothing left to learn from labelling it).
- Before the first training there is no model: every task gets an empty result and a *cold-start*
  score. Once the project's tasks were encoded ahead (ml_server/training.py), that is the published
  coverage order (typical items of k-means clusters of the pretrained features, its own model version
  ``mmal-0-coverage-...``); before that, or for a task imported since, a seeded hash of project and task
  id in [0, 1), i.e. a random order (model version ``mmal-untrained``, or the cold-start version when
  there is one, so Label Studio's sampling still counts the task).
- A task whose data is unusable (a value that is not a URL, a refused or failed fetch, bytes that are not
  an image, or no value at all for any key the label config reads) gets an item with ``error`` naming
  the field and the reason, and no ``result``: Label Studio 1.23.2 skips exactly such an item (and logs
  it) while keeping the predictions of the rest of the batch (``ml/models.py``,
  ``_get_predictions_from_ml_backend``), whereas any non-200 answer drops the whole batch. When *every*
  task of a request is unusable, the endpoint answers 422 instead (app.py). A modality that is merely
  absent is not a problem: it is predicted from the modalities the task has.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Mapping

import numpy as np

from backend.strategies.ranking import item_priority
from connectors.label_config import LabelConfig, LabelConfigError, parse_label_config, predicted_labels
from ml_server.dataset import ModalitySpec, apply_scaling, build_task_dataset, no_usable_value, task_label
from ml_server.fetch import Fetcher
from ml_server.model_store import ColdStart, LoadedVersion
from ml_server.scoring import LABELED_SCORE, calibrated_score

log = logging.getLogger(__name__)

UNTRAINED_VERSION = "mmal-untrained"


def parse_project_id(project: Any, tasks: list[Mapping[str, Any]] | None = None) -> int | None:
    """Label Studio's project uid ``"<id>.<created ts>"`` (or a bare id) -> the integer id."""
    if isinstance(project, bool):
        return None
    if isinstance(project, int):
        return project if 0 <= project < 10**18 else None
    if isinstance(project, str) and project.strip():
        head = project.strip().split(".", 1)[0]
        # ASCII digits only ('²'.isdigit() is True), and short enough to be an id and a file name
        if head.isascii() and head.isdigit() and len(head) <= 18:
            return int(head)
    for t in tasks or []:
        pid = t.get("project") if isinstance(t, Mapping) else None
        if isinstance(pid, int) and not isinstance(pid, bool) and 0 <= pid < 10**18:
            return pid
    return None


def cold_start_score(project_id: int | None, task_id: Any) -> float:
    """A deterministic pseudo-random score in [0, 1) per (project, task): a random initial order."""
    digest = hashlib.blake2b(f"{project_id}:{task_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def is_labeled(task: Mapping[str, Any], config: LabelConfig | None) -> bool:
    """True when the task has a usable (non-cancelled) annotation."""
    if config is not None and task.get("annotations"):
        return task_label(task, config) is not None
    total = int(task.get("total_annotations") or 0) - int(task.get("cancelled_annotations") or 0)
    return bool(task.get("is_labeled")) or total > 0


def _result(config: LabelConfig, label: str | list[str]) -> list[dict[str, Any]]:
    """The prediction's result: one ``choices`` region, or none when the label no longer fits the config
    (a class renamed since the training) or is the empty set."""
    labels = label if isinstance(label, list) else [label]
    if not labels or not set(labels) <= set(config.class_names) or isinstance(label, list) != config.multi_label:
        return []
    return [config.choices_region(label)]


def error_item(task: Mapping[str, Any], problems: list[str], version: str) -> dict[str, Any]:
    """The answer for a task that cannot be predicted: the reasons, no ``result`` (Label Studio skips it)."""
    tid = task.get("id")
    who = f"task {tid}" if isinstance(tid, int) else "task"
    return {"error": f"{who}: " + "; ".join(problems), "model_version": version}


def cold_start(project_id: int | None, tasks: list[Mapping[str, Any]],
               label_config: str | None = None, published: ColdStart | None = None) -> list[dict[str, Any]]:
    """Cold-start scores before the first training (the ``published`` order where it has the task, else
    random); a task with nothing the label config reads is an error item (checked when the config can
    be parsed: there is no model to featurize with yet)."""
    keys: list[str] = []
    if label_config:
        try:
            keys = [o.data_key for o in parse_label_config(label_config).objects]
        except LabelConfigError:
            keys = []
    version = published.version if published is not None else UNTRAINED_VERSION
    scores = published.scores if published is not None else {}
    out = []
    for t in tasks:
        problem = no_usable_value(t, keys) if keys else None
        tid = t.get("id")
        score = scores.get(tid) if isinstance(tid, int) else None
        if score is None:
            score = cold_start_score(project_id, tid)
        elif score < LABELED_SCORE and is_labeled(t, None):
            score = LABELED_SCORE
        out.append(error_item(t, [problem], version) if problem else
                   {"result": [], "score": float(score), "model_version": version})
    return out


def predict_tasks(project_id: int | None, tasks: list[Mapping[str, Any]], label_config: str | None,
                  loaded: LoadedVersion | None, fetcher_factory: Any, cache: Any,
                  strategy_factory: Any, published: ColdStart | None = None) -> list[dict[str, Any]]:
    """Exactly one item per task, in order (see the module docstring); ``published``: the cold-start order."""
    if not tasks:
        return []
    if loaded is None:
        return cold_start(project_id, tasks, label_config, published)
    meta = loaded.meta
    try:
        config = parse_label_config(label_config or meta["label_config"], meta.get("control"))
    except LabelConfigError:
        config = parse_label_config(meta["label_config"], meta.get("control"))
    version = loaded.version
    out: list[dict[str, Any] | None] = [None] * len(tasks)
    todo: list[int] = []
    for i, task in enumerate(tasks):
        tid = task.get("id")
        labeled = is_labeled(task, config)
        ranked = loaded.ranking.get(tid) if isinstance(tid, int) else None
        if ranked is not None:
            label, score = ranked
            out[i] = {"result": _result(config, label),
                      "score": LABELED_SCORE if labeled else float(score), "model_version": version}
        else:
            todo.append(i)
    if todo:
        sub = [tasks[i] for i in todo]
        labels, scores, problems = _predict_new(sub, config, loaded, fetcher_factory, cache, strategy_factory)
        for j, i in enumerate(todo):
            if j in problems:
                out[i] = error_item(tasks[i], problems[j], version)
                continue
            label = labels[j]
            score = LABELED_SCORE if is_labeled(tasks[i], config) else float(scores[j])
            out[i] = {"result": _result(config, label), "score": score, "model_version": version}
    return [o for o in out if o is not None]


def _predict_new(tasks: list[Mapping[str, Any]], config: LabelConfig, loaded: LoadedVersion,
                 fetcher_factory: Any, cache: Any,
                 strategy_factory: Any) -> tuple[list[str | list[str]], np.ndarray, dict[int, list[str]]]:
    meta = loaded.meta
    specs = [ModalitySpec.from_dict(d) for d in meta["modalities"]]
    model = loaded.model
    # tasks without an integer id, or a batch that repeats an id, still need one answer per task: the rows
    # then get temporary ids by position (the dataset needs unique ids; answers are matched by position)
    ids = [t.get("id") for t in tasks]
    if all(isinstance(i, int) for i in ids) and len(set(ids)) == len(ids):
        fixed = list(tasks)
    else:
        fixed = [dict(t, id=-(k + 1)) for k, t in enumerate(tasks)]
    fetcher: Fetcher | None = fetcher_factory()
    try:
        td = build_task_dataset(fixed, config, specs, fetcher, cache, with_labels=False)
    finally:
        if fetcher is not None:
            fetcher.close()
    ds = apply_scaling(td.dataset, meta.get("feature_scaling"))
    idx = np.arange(len(ds))
    pred = model.predict(ds, idx)
    labels = predicted_labels(pred.probs, list(model.class_names), bool(getattr(model, "multi_label", False)))
    strategy = strategy_factory(meta)
    kind = meta.get("ranking_kind", "strategy")
    memo = _Memoized(model, ds, idx, pred)  # the strategy's score reuses this forward pass
    try:
        pri = item_priority(strategy, memo, ds, idx, seed=int(meta.get("seed", 0)), kind=kind)
    except Exception as exc:  # never fail /predict over a score
        log.warning("priority failed (%s); using margin", exc)
        pri = item_priority(strategy, memo, ds, idx, kind="margin")
    assert ds.labels.shape[0] == len(tasks) and not ds.labeled_mask().any()
    return labels, calibrated_score(pri, loaded.calibration), td.problems


class _Memoized:
    """A model whose predictions on one (dataset, indices) are already known: labels and the strategy's
    priority of a ``/predict`` batch need the same forward pass, so it runs once. Anything else
    (other indices, dropped modalities, MC dropout) goes to the model."""

    def __init__(self, model: Any, dataset: Any, indices: np.ndarray, pred: Any) -> None:
        self._model, self._dataset, self._indices, self._pred = model, dataset, np.asarray(indices), pred

    def predict(self, dataset: Any, indices: Any, *, drop: Any = ()) -> Any:
        if dataset is self._dataset and not drop and np.array_equal(np.asarray(indices), self._indices):
            return self._pred
        return self._model.predict(dataset, indices, drop=drop)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)
