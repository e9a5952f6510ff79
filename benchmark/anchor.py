"""The linear-probe anchor: what a plain logistic regression reaches on the same labels and features.

Why (issue 17): the simplest thing a practitioner would try on frozen features is scikit-learn's
LogisticRegression on the standardised, concatenated feature vectors. Every real-data round records its
test accuracy (``anchor_acc``) beside the model's, so a recipe that falls below it shows at once. The
anchor is fixed on purpose (C = 0.5, no tuning, as measured in the issue): it is a reference, not a
competitor that gets tuned. Features are standardised with the statistics of the pool's items that
have the modality; an absent modality's block is 0 (the pool mean). Only scenarios whose modalities
are all feature vectors get an anchor (raw pixels / token ids are not what a probe reads).
"""

from __future__ import annotations

import numpy as np

from backend.data import MultimodalDataset

ANCHOR_C = 0.5
ANCHOR_COLUMN = "anchor_acc"


class LinearProbeAnchor:
    """Standardisation fixed from a pool; :meth:`accuracy` fits the probe on some labelled pool items."""

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

    def accuracy(self, labeled: np.ndarray, labels: np.ndarray) -> float:
        """Test accuracy of the probe fitted on pool rows ``labeled`` with ``labels``."""
        from sklearn.linear_model import LogisticRegression
        from threadpoolctl import threadpool_limits

        labels = np.asarray(labels)
        if len(np.unique(labels)) < 2:  # one class seen: the probe predicts it
            return float((self.y_test == labels[0]).mean())
        with threadpool_limits(self.threads):
            clf = LogisticRegression(C=ANCHOR_C, max_iter=1000)
            clf.fit(self.x_pool[np.asarray(labeled)], labels)
            return float((clf.predict(self.x_test) == self.y_test).mean())
