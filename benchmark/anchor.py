"""The linear-probe anchor: what a plain logistic regression reaches on the same labels and features.

Why (issue 17): the simplest thing a practitioner would try on frozen features is scikit-learn's
LogisticRegression on the standardised, concatenated feature vectors. Every real-data round records its
test accuracy (``anchor_acc``) beside the model's, so a recipe that falls below it shows at once. The
anchor is fixed on purpose (C = 0.5, no tuning, as measured in the issue): it is a reference, not a
competitor that gets tuned. Features are standardised with the statistics of the pool's items that
have the modality; an absent modality's block is 0 (the pool mean). Only scenarios whose modalities
are all feature vectors get an anchor (raw pixels / token ids are not what a probe reads).

Multi-label scenarios (label sets) get the one-vs-rest form: one such logistic regression per class
(a class whose labelled items all agree is predicted as that constant), scored like the model
(:mod:`benchmark.scores`): ``anchor_acc`` is then the subset accuracy and ``anchor_micro_f1`` the
micro-F1 the multi-label learning curves are drawn on.
"""

from __future__ import annotations

import numpy as np

from backend.data import MultimodalDataset
from benchmark.scores import multi_label_scores

ANCHOR_C = 0.5
ANCHOR_COLUMN = "anchor_acc"
ANCHOR_COLUMNS = {"accuracy": ANCHOR_COLUMN, "micro_f1": "anchor_micro_f1"}
"""The anchor's column for each curve metric (:data:`benchmark.scores.HEADLINE`)."""


class LinearProbeAnchor:
    """Standardisation fixed from a pool; :meth:`scores` fits the probe on some labelled pool items."""

    def __init__(self, pool: MultimodalDataset, test: MultimodalDataset, threads: int = 1) -> None:
        self.threads = int(threads)
        self._stats = {}
        for k in pool.modality_names:
            x = np.asarray(pool.modalities[k], dtype=np.float64)[pool.masks[k]]
            mean = x.mean(0) if len(x) else np.zeros(pool.modalities[k].shape[1])
            std = x.std(0) if len(x) > 1 else np.ones_like(mean)
            self._stats[k] = (mean, np.where(std > 1e-6, std, 1.0))
        self.x_pool = self.transform(pool)
        self.x_test = self.transform(test)
        self.y_test = test.labels

    @staticmethod
    def applies(pool: MultimodalDataset) -> bool:
        """True when every modality is a float feature vector."""
        return all(np.asarray(v).ndim == 2 and np.asarray(v).dtype.kind == "f" for v in pool.modalities.values())

    def transform(self, ds: MultimodalDataset) -> np.ndarray:
        """Standardised features of every modality side by side (absent blocks = 0)."""
        parts = []
        for k in ds.modality_names:
            mean, std = self._stats[k]
            z = (np.asarray(ds.modalities[k], dtype=np.float64) - mean) / std
            parts.append(np.where(ds.masks[k][:, None], z, 0.0))
        return np.concatenate(parts, axis=1)

    def scores(self, labeled: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """The anchor's columns (:data:`ANCHOR_COLUMNS`) for the probe fitted on pool rows ``labeled`` with
        ``labels``: test accuracy, or for label sets ((n, C) rows) subset accuracy and micro-F1."""
        from threadpoolctl import threadpool_limits

        labels = np.asarray(labels)
        x = self.x_pool[np.asarray(labeled)]
        with threadpool_limits(self.threads):
            if labels.ndim == 2:
                pred = np.empty((len(self.x_test), labels.shape[1]), dtype=np.int64)
                for c in range(labels.shape[1]):
                    pred[:, c] = self._fit_predict(x, labels[:, c])
                s = multi_label_scores(pred, self.y_test)
                return {ANCHOR_COLUMN: s["accuracy"], ANCHOR_COLUMNS["micro_f1"]: s["micro_f1"]}
            return {ANCHOR_COLUMN: float((self._fit_predict(x, labels) == self.y_test).mean())}

    def _fit_predict(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Test predictions of one probe; one value seen: the probe predicts it."""
        from sklearn.linear_model import LogisticRegression

        if len(np.unique(y)) < 2:
            return np.full(len(self.x_test), y[0], dtype=np.int64)
        return LogisticRegression(C=ANCHOR_C, max_iter=1000).fit(x, y).predict(self.x_test)
