"""Multimodal dataset, presence masks, labels and labelled/unlabelled pools.

A missing modality is first-class: every modality carries a boolean presence mask, and the feature
rows of absent items are zero-filled *only together with* ``mask == False`` so no model can mistake
zeros for data. Labels use ``UNLABELED`` (-1) for the explicit "not yet labelled" state, and pools
are index sets into the full dataset so strategies always answer in dataset indices.

Multi-label data (an item tagged with a *set* of classes) has ``labels`` of shape (N, C): row i is
the item's 0/1 indicator vector, or all ``UNLABELED`` while it has no label. An empty set (all 0) is
a valid label ("none of these"), distinct from "not labelled".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

UNLABELED: int = -1


class DataError(ValueError):
    """Bad dataset input; the message names the modality, field or item that is wrong."""


class QueryError(DataError):
    """A query that cannot be answered (empty pool, n too large, unknown strategy or bad settings)."""


@dataclass
class MultimodalDataset:
    """N items with two or more named modalities.

    ``modalities[name]`` is either a feature array with N rows (any trailing shape: vectors
    ``(N, d)``, images ``(N, 3, H, W)``, token ids ``(N, L)``) or a list of N raw inputs
    (image paths/bytes, strings) that an encoder turns into features (see ``backend.encoders``).
    ``masks[name][i]`` is True when item i has that modality. ``labels[i]`` is a class index or
    ``UNLABELED``; for multi-label data ``labels`` is (N, C) (see the module docstring).
    ``true_labels`` (optional, same shape as ``labels``) holds the ground truth a simulated oracle
    answers with.
    """

    modalities: dict[str, Any]
    labels: np.ndarray
    class_names: list[str]
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    ids: np.ndarray | None = None
    true_labels: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.modalities) < 2:
            raise DataError(f"a multimodal dataset needs at least 2 modalities, got {list(self.modalities)}")
        self.labels = np.asarray(self.labels, dtype=np.int64)
        c = len(self.class_names)
        if self.labels.ndim == 2:
            self.labels = _check_label_sets(self.labels, c, "labels", self.ids)
        elif self.labels.ndim != 1:
            raise DataError(f"labels must be (N,) class indices or (N, C) label sets, got shape {self.labels.shape}")
        n = len(self.labels)
        for name, values in self.modalities.items():
            if len(values) != n:
                raise DataError(f"modality '{name}' has {len(values)} items, labels have {n}")
        if self.ids is None:
            self.ids = np.array([str(i) for i in range(n)], dtype=object)
        else:
            self.ids = np.asarray(self.ids, dtype=object)
            if len(self.ids) != n:
                raise DataError(f"ids have {len(self.ids)} entries, labels have {n}")
            if len(set(self.ids.tolist())) != n:
                raise DataError("item ids must be unique")
        masks = {}
        for name in self.modalities:
            m = self.masks.get(name)
            m = np.ones(n, dtype=bool) if m is None else np.asarray(m, dtype=bool)
            if m.shape != (n,):
                raise DataError(f"mask of modality '{name}' has shape {m.shape}, expected ({n},)")
            masks[name] = m
        unknown = set(self.masks) - set(self.modalities)
        if unknown:
            raise DataError(f"masks given for unknown modalities {sorted(unknown)}")
        self.masks = masks
        if not self.multi_label:
            bad = np.flatnonzero((self.labels != UNLABELED) & ((self.labels < 0) | (self.labels >= c)))
            if bad.size:
                raise DataError(f"item {self.ids[bad[0]]!r} has label {self.labels[bad[0]]}, outside 0..{c - 1}")
        if self.true_labels is not None:
            self.true_labels = np.asarray(self.true_labels, dtype=np.int64)
            if self.true_labels.shape != self.labels.shape:
                raise DataError(f"true_labels has shape {self.true_labels.shape}, expected {self.labels.shape}")
            if self.multi_label:
                self.true_labels = _check_label_sets(self.true_labels, c, "true_labels", self.ids)
        for name, values in self.modalities.items():
            if isinstance(values, np.ndarray):
                absent = ~self.masks[name]
                if absent.any() and np.issubdtype(values.dtype, np.number):
                    # zero-fill absent rows, always together with their mask
                    if np.any(values[absent] != 0):
                        values = values.copy()
                        values[absent] = 0
                        self.modalities[name] = values

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def modality_names(self) -> list[str]:
        return list(self.modalities)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def multi_label(self) -> bool:
        """True when each item's label is a set of classes ((N, C) indicator rows)."""
        return self.labels.ndim == 2

    def labeled_mask(self) -> np.ndarray:
        """(N,) bool: which items carry a label (single- or multi-label)."""
        return is_labeled(self.labels)

    def is_featurized(self) -> bool:
        """True when every modality is a numeric array (ready for a fusion model)."""
        return all(isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.number) for v in self.modalities.values())

    def feature_shape(self, name: str) -> tuple[int, ...]:
        values = self.modalities[name]
        if not isinstance(values, np.ndarray):
            raise DataError(f"modality '{name}' holds raw inputs; featurize it first")
        return tuple(values.shape[1:])

    def subset(self, indices: Sequence[int] | np.ndarray) -> "MultimodalDataset":
        idx = np.asarray(indices, dtype=np.int64)
        mods = {k: (v[idx] if isinstance(v, np.ndarray) else [v[i] for i in idx]) for k, v in self.modalities.items()}
        return MultimodalDataset(
            modalities=mods,
            labels=self.labels[idx].copy(),
            class_names=list(self.class_names),
            masks={k: m[idx].copy() for k, m in self.masks.items()},
            ids=self.ids[idx].copy(),
            true_labels=None if self.true_labels is None else self.true_labels[idx].copy(),
            meta=dict(self.meta),
        )

    def with_masks(self, masks: Mapping[str, np.ndarray]) -> "MultimodalDataset":
        """A copy whose presence masks are replaced (e.g. to inject missingness)."""
        new = {k: np.asarray(masks.get(k, m), dtype=bool) for k, m in self.masks.items()}
        mods = {k: (v.copy() if isinstance(v, np.ndarray) else list(v)) for k, v in self.modalities.items()}
        return MultimodalDataset(mods, self.labels.copy(), list(self.class_names), new, self.ids.copy(),
                                 None if self.true_labels is None else self.true_labels.copy(), dict(self.meta))

    def presence_matrix(self) -> np.ndarray:
        """(N, M) bool matrix of which modalities each item has, columns in ``modality_names`` order."""
        return np.stack([self.masks[k] for k in self.modalities], axis=1)


def is_labeled(labels: np.ndarray) -> np.ndarray:
    """(N,) bool from (N,) class indices or (N, C) label sets: the rows that are not ``UNLABELED``."""
    labels = np.asarray(labels)
    return labels[:, 0] != UNLABELED if labels.ndim == 2 else labels != UNLABELED


def label_strata(labels: np.ndarray) -> np.ndarray:
    """(n,) stratum per labelled item for stratified splits: the class, or for label sets the rarest
    class of the set (its frequency among these rows; -1 for the empty set), the usual cheap stand-in
    for iterative stratification."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        return labels
    freq = labels.sum(axis=0)
    rank = np.where(labels > 0, freq[None, :], np.inf)
    return np.where(labels.any(axis=1), rank.argmin(axis=1), -1)


def _check_label_sets(labels: np.ndarray, n_classes: int, what: str, ids: Any) -> np.ndarray:
    """(N, C) label sets: C columns, every row all 0/1 or all ``UNLABELED`` (the message names the item)."""
    if labels.shape[1] != n_classes:
        raise DataError(f"{what} has {labels.shape[1]} columns, the dataset has {n_classes} classes")
    unlabeled = (labels == UNLABELED).all(axis=1)
    bad = np.flatnonzero(~unlabeled & ~np.isin(labels, (0, 1)).all(axis=1))
    if bad.size:
        name = ids[bad[0]] if ids is not None and len(ids) == len(labels) else bad[0]
        raise DataError(f"item {name!r}: {what} row {labels[bad[0]].tolist()} must be all 0/1 (a label set) "
                        f"or all {UNLABELED} (not labelled)")
    return labels


@dataclass(frozen=True)
class Pool:
    """Labelled and unlabelled index sets into a dataset of ``size`` items (disjoint, sorted)."""

    labeled: np.ndarray
    unlabeled: np.ndarray
    size: int

    @classmethod
    def from_labeled(cls, size: int, labeled: Sequence[int] | np.ndarray) -> "Pool":
        lab = np.unique(np.asarray(labeled, dtype=np.int64))
        if lab.size and (lab[0] < 0 or lab[-1] >= size):
            raise DataError(f"labelled index out of range 0..{size - 1}")
        unl = np.setdiff1d(np.arange(size, dtype=np.int64), lab, assume_unique=True)
        return cls(lab, unl, size)

    @classmethod
    def from_dataset(cls, dataset: MultimodalDataset) -> "Pool":
        return cls.from_labeled(len(dataset), np.flatnonzero(dataset.labeled_mask()))

    def add(self, indices: Sequence[int] | np.ndarray) -> "Pool":
        idx = np.asarray(indices, dtype=np.int64)
        bad = np.setdiff1d(idx, self.unlabeled)
        if bad.size:
            raise DataError(f"items {bad[:5].tolist()} are not in the unlabelled pool")
        return Pool.from_labeled(self.size, np.concatenate([self.labeled, idx]))
