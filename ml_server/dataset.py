"""Label Studio tasks -> a featurized :class:`MultimodalDataset` (one modality per object tag).

Used by the training job (every task of a project, labels from annotations) and by ``/predict`` (a batch
of tasks, no labels), with the same featurizers, so a task is encoded identically in both. A modality
that is absent from a task's data (or empty) is *missing* for that task: a missing modality is
first-class, the fusion model is trained for it, and the task is predicted from what it has. A value
that is there but unusable (not a URL, refused or failed fetch, bytes that are not an image) is a
*problem* of that task, recorded with the field it concerns (``data.image: ...``), as is a task with no
usable value at all: training still uses the rest of the task (the bad modality counts as missing),
``/predict`` answers such a task with an error instead of a prediction (see ml_server/predictor.py).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from backend.data import UNLABELED, DataError, MultimodalDataset
from backend.encoders import FeatureCache, Featurizer, featurize, get_featurizer
from backend.encoders.base import ItemError
from connectors.label_config import LabelConfig, LabelConfigError
from ml_server.fetch import Fetcher, FetchError

log = logging.getLogger(__name__)

URL_VALUED_TAGS = {"Image", "Audio", "AudioPlus", "Video", "Pdf", "Bitmask"}


@dataclass(frozen=True)
class ModalitySpec:
    """How one object tag becomes one modality: the tag, the featurizer name and its parameters."""

    name: str
    tag_type: str
    data_key: str
    featurizer: str
    params: dict[str, Any] = field(default_factory=dict)
    value_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "tag_type": self.tag_type, "data_key": self.data_key,
                "featurizer": self.featurizer, "params": dict(self.params), "value_type": self.value_type}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModalitySpec":
        return cls(d["name"], d["tag_type"], d["data_key"], d["featurizer"], dict(d.get("params") or {}),
                   d.get("value_type"))

    def build(self) -> Featurizer:
        return get_featurizer(self.featurizer, **self.params)

    @property
    def url_valued(self) -> bool:
        return self.tag_type in URL_VALUED_TAGS or (self.value_type or "").lower() == "url"


def modality_specs(config: LabelConfig, featurizers: Mapping[str, str],
                   featurizer_params: Mapping[str, Mapping[str, Any]]) -> list[ModalitySpec]:
    """One spec per object tag that has a featurizer for its type (``MMAL_FEATURIZERS``).

    Raises LabelConfigError when fewer than two modalities remain: the fusion model is multimodal.
    """
    specs = []
    skipped = []
    for obj in config.objects:
        fz = featurizers.get(obj.type)
        if fz is None:
            skipped.append(f"{obj.name} ({obj.type})")
            continue
        specs.append(ModalitySpec(obj.name, obj.type, obj.data_key, fz, dict(featurizer_params.get(fz, {})),
                                  obj.value_type))
    if len(specs) < 2:
        raise LabelConfigError(
            f"this backend needs at least 2 object tags it can featurize; usable: {[s.name for s in specs]}"
            + (f", without a featurizer (set MMAL_FEATURIZERS): {skipped}" if skipped else ""))
    return specs


def _as_text(value: Any) -> str | None:
    """Text of a task value: strings as they are; Paragraphs/Chat lists joined; dicts as JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for item in value:
            if isinstance(item, dict):
                parts.append(str(item.get("text", item.get("content", json.dumps(item, sort_keys=True)))))
            else:
                parts.append(str(item))
        return "\n".join(parts)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def raw_value(spec: ModalitySpec, kind: str, task: Mapping[str, Any], fetcher: Fetcher | None,
              errors: Counter, problems: list[str] | None = None) -> Any:
    """The raw input of one modality of one task (bytes for URL-valued tags, str for text), or None.

    None for a missing value; for an unusable one too, after appending ``data.<key>: <reason>`` to
    ``problems``."""
    data = task.get("data") or {}
    value = data.get(spec.data_key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    where = f"data.{spec.data_key}"
    if spec.url_valued:
        if not isinstance(value, str):
            errors[f"{spec.name}: not a URL"] += 1
            _note(problems, f"{where}: expected a URL string for <{spec.tag_type}>, got {type(value).__name__}")
            return None
        if fetcher is None:
            errors[f"{spec.name}: no fetcher"] += 1
            _note(problems, f"{where}: cannot fetch (no fetcher configured)")
            return None
        try:
            data_bytes = fetcher.fetch(value)
        except (FetchError, DataError) as exc:
            log.warning("task %s, %s: %s", task.get("id"), spec.name, exc)
            errors[f"{spec.name}: {type(exc).__name__}"] += 1
            _note(problems, f"{where}: {exc}")
            return None
        if kind == "text":
            return data_bytes.decode("utf-8", errors="replace")
        return data_bytes
    if kind == "text" or isinstance(value, (list, dict)):
        return _as_text(value)
    return value


def _note(problems: list[str] | None, message: str) -> None:
    if problems is not None:
        problems.append(message)


def no_usable_value(task: Mapping[str, Any], data_keys: Iterable[str]) -> str | None:
    """The problem of a task whose data has no non-empty value for any key the label config reads
    (every modality missing: nothing to predict from), else None."""
    keys = list(dict.fromkeys(data_keys))
    data = task.get("data")
    data = data if isinstance(data, Mapping) else {}
    for k in keys:
        v = data.get(k)
        if v is not None and not (isinstance(v, str) and not v.strip()):
            return None
    present = ", ".join(repr(k) for k in list(data)[:10]) or "none"
    return (f"data: no value for any key the label config reads ({', '.join('data.' + k for k in keys)}); "
            f"keys present: {present}")


def task_label(task: Mapping[str, Any], config: LabelConfig) -> str | tuple[str, ...] | None:
    """The class a task's annotations give it, or None when it has no usable annotation; for a
    multi-label control the tuple of every class chosen (in config order).

    Cancelled (skipped) annotations are ignored; a ground-truth annotation wins, otherwise the most
    recently updated one (its whole set, multi-label: sets are not merged across annotators).
    """
    candidates = []
    annotations = task.get("annotations")
    for ann in annotations if isinstance(annotations, list) else []:
        if not isinstance(ann, Mapping) or ann.get("was_cancelled"):
            continue
        result = ann.get("result")
        choice = _annotation_label(result, config) if isinstance(result, list) else None
        if choice is not None:
            ann_id = ann.get("id")
            candidates.append((bool(ann.get("ground_truth")), str(ann.get("updated_at") or ""),
                               ann_id if isinstance(ann_id, int) else 0, choice))
    if not candidates:
        return None
    return max(candidates)[3]


def annotation_choices(result: Iterable[Any], config: LabelConfig) -> list[str] | None:
    """The known classes chosen in the Choices control of an annotation result, in config order.

    None when the result names only classes the config does not have (a changed config: no usable
    label). An empty list when it has no choice of the control at all: for a multi-label control that
    is the empty set, a label ("none of these"); :func:`annotation_choice` reads it as no class.
    """
    chosen: set[str] = set()
    unknown = False
    for region in result:
        if not isinstance(region, Mapping) or region.get("from_name") != config.control.name:
            continue
        value = region.get("value")
        choices = value.get("choices") if isinstance(value, Mapping) else None
        for c in choices if isinstance(choices, list) else []:
            if isinstance(c, str) and c in config.control.choices:
                chosen.add(c)
            else:
                unknown = True
    if unknown and not chosen:
        return None
    return [c for c in config.control.choices if c in chosen]


def annotation_choice(result: Iterable[Any], config: LabelConfig) -> str | None:
    """The first chosen class of the Choices control in an annotation result (None if none/unknown)."""
    chosen = annotation_choices(result, config)
    return chosen[0] if chosen else None


def _annotation_label(result: Iterable[Any], config: LabelConfig) -> str | tuple[str, ...] | None:
    """An annotation's label: its class, or (multi-label) the tuple of its classes, possibly empty."""
    if config.multi_label:
        chosen = annotation_choices(result, config)
        return None if chosen is None else tuple(chosen)
    return annotation_choice(result, config)


@dataclass
class TaskDataset:
    """A featurized dataset of tasks plus the bookkeeping around it."""

    dataset: MultimodalDataset
    task_ids: np.ndarray  # (N,) int64, row order of the dataset
    specs: list[ModalitySpec]
    fetch_errors: dict[str, int]
    unknown_labels: int = 0
    problems: dict[int, list[str]] = field(default_factory=dict)  # row -> "data.<key>: reason" (module doc)

    @property
    def labeled(self) -> np.ndarray:
        return np.flatnonzero(self.dataset.labeled_mask())


def build_task_dataset(tasks: list[Mapping[str, Any]], config: LabelConfig, specs: list[ModalitySpec],
                       fetcher: Fetcher | None, cache: FeatureCache | None, *, with_labels: bool = True,
                       batch_size: int = 256) -> TaskDataset:
    """Fetch, decode and featurize ``tasks`` (see module docstring). Labels come from annotations when
    ``with_labels``; everything else is UNLABELED."""
    if not tasks:
        raise DataError("no tasks to build a dataset from")
    featurizers = {s.name: s.build() for s in specs}
    errors: Counter = Counter()
    raw: dict[str, list[Any]] = {s.name: [] for s in specs}
    ids, labels = [], []
    index = {c: i for i, c in enumerate(config.class_names)}
    unknown = 0
    problems: dict[int, list[str]] = {}
    for pos, task in enumerate(tasks):
        tid = task.get("id")
        if not isinstance(tid, int):
            raise DataError(f"task at position {pos} has no integer id")
        ids.append(tid)
        found: list[str] = []
        for s in specs:
            raw[s.name].append(raw_value(s, featurizers[s.name].kind, task, fetcher, errors, found))
        if not found and all(raw[s.name][-1] is None for s in specs):
            found.append(no_usable_value(task, [s.data_key for s in specs]) or "data: no usable value")
        if found:
            problems[pos] = found
        label: Any = [UNLABELED] * len(index) if config.multi_label else UNLABELED
        if with_labels:
            choice = task_label(task, config)
            if choice is not None and config.multi_label:
                label = [int(c in choice) for c in config.class_names]
            elif choice is not None:
                label = index[choice]
            elif task.get("annotations"):
                unknown += 1
        labels.append(label)
    task_ids = np.asarray(ids, dtype=np.int64)
    label_array = np.asarray(labels, dtype=np.int64).reshape(len(ids), -1) if config.multi_label \
        else np.asarray(labels, dtype=np.int64)
    dataset = _featurize_robust(raw, featurizers, label_array, config.class_names,
                                task_ids, cache, batch_size, errors, problems, {s.name: s.data_key for s in specs})
    return TaskDataset(dataset, task_ids, list(specs), dict(errors), unknown, problems)


def _featurize_robust(raw: dict[str, list[Any]], featurizers: dict[str, Featurizer], labels: np.ndarray,
                      class_names: list[str], task_ids: np.ndarray, cache: FeatureCache | None,
                      batch_size: int, errors: Counter, problems: dict[int, list[str]],
                      data_keys: Mapping[str, str]) -> MultimodalDataset:
    """Featurize; if an item cannot be decoded, mark just that item's modality missing and retry."""
    def make() -> MultimodalDataset:
        masks = {k: np.array([v is not None for v in vals], dtype=bool) for k, vals in raw.items()}
        ds = MultimodalDataset({k: list(v) for k, v in raw.items()}, labels.copy(), list(class_names), masks,
                               ids=np.array([str(t) for t in task_ids], dtype=object))
        return featurize(ds, featurizers, cache=cache, batch_size=batch_size)

    try:
        return make()
    except DataError:
        pass
    # slow path, only when something is undecodable: find the bad items one by one
    for name, values in raw.items():
        fz = featurizers[name]
        for i, v in enumerate(values):
            if v is None:
                continue
            try:
                fz.featurize([v])
            except DataError as exc:
                log.warning("task %s, %s: cannot featurize (%s); treated as missing", task_ids[i], name, exc)
                errors[f"{name}: undecodable"] += 1
                reason = exc.reason if isinstance(exc, ItemError) else str(exc)
                problems.setdefault(i, []).append(f"data.{data_keys[name]}: cannot featurize: {reason}")
                values[i] = None
    return make()


def feature_scaling(dataset: MultimodalDataset) -> dict[str, dict[str, list[float]]]:
    """Per-dimension mean and standard deviation of every vector modality (float, 2-D) over the items
    that have it: the pool's statistics, taken at training time and kept with the model version.

    Why: pretrained embeddings have a few large dimensions that dominate the ``sgd`` recipe's network
    trained on a dozen labels; standardised, the same features and labels gave 0.72 instead of 0.58
    accuracy on unlabelled emoji tasks (3 classes, 12 random labels, 6 draws, measured once for issue
    12). The ``probe`` recipe standardises its inputs itself, so for it this is a no-op in effect. Token
    ids and pixel grids (the ``simple`` featurizers) are left alone.
    """
    stats: dict[str, dict[str, list[float]]] = {}
    for name, values in dataset.modalities.items():
        if not (isinstance(values, np.ndarray) and values.ndim == 2 and np.issubdtype(values.dtype, np.floating)):
            continue
        rows = values[dataset.masks[name]]
        if rows.shape[0] == 0:
            continue
        std = rows.std(axis=0)
        stats[name] = {"mean": rows.mean(axis=0).tolist(), "std": np.where(std > 1e-6, std, 1.0).tolist()}
    return stats


def apply_scaling(dataset: MultimodalDataset, stats: Mapping[str, Mapping[str, list[float]]] | None) -> MultimodalDataset:
    """``dataset`` with each modality of ``stats`` standardised (absent rows stay zero, with their mask)."""
    if not stats:
        return dataset
    from dataclasses import replace

    modalities = dict(dataset.modalities)
    for name, st in stats.items():
        if name not in modalities:
            continue
        x = np.asarray(modalities[name], dtype=np.float32)
        mean = np.asarray(st["mean"], dtype=np.float32)
        std = np.asarray(st["std"], dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != mean.shape[0]:
            raise DataError(f"modality '{name}': features of width {x.shape[1:]} do not match the model's "
                            f"scaling ({mean.shape[0]}); was the featurizer changed?")
        scaled = (x - mean) / std
        scaled[~dataset.masks[name]] = 0.0
        modalities[name] = scaled
    return replace(dataset, modalities=modalities)
