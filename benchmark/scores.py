"""Test-set scores of one model's predictions: accuracy and F1 for classes, and for label sets.

Why one place: the benchmark scores a model in three spots (every round's test set, recipe selection
on validation data, the real-data informativeness estimates) and a multi-label scenario must be
scored the same way in all of them. Conventions (those of scikit-learn with ``zero_division=0``):

- single-label: ``accuracy`` = share of items whose class is predicted; ``macro_f1`` = mean over
  classes of the per-class F1 (0 for a class never predicted correctly).
- multi-label (label sets as (n, C) 0/1 rows; a class is predicted when its sigmoid is >= 1/2, as
  the diagnostics and the server's pre-annotations read it): ``subset_accuracy`` = share of items
  whose *whole* set is predicted exactly; ``accuracy`` is the same number (so learning curves, AUBC
  and the modality diagnostics, whose head accuracies are subset accuracies too, keep one meaning);
  ``micro_f1`` = 2 TP / (2 TP + FP + FN) pooled over every (item, class); ``macro_f1`` = mean over
  classes of the per-class F1 (0 for a class with no true and no predicted member).
"""

from __future__ import annotations

from typing import Any

import numpy as np

MULTI_LABEL_THRESHOLD = 0.5
HEADLINE = {False: "accuracy", True: "micro_f1"}  # the metric learning curves and AUBC use
"""The metric a curve is drawn on: accuracy for classes, micro-F1 for label sets (the subset accuracy of
sets over many classes stays near 0 early in a run and hides differences between strategies)."""


def predicted_labels(probs: Any, multi_label: bool) -> np.ndarray:
    """(n,) argmax classes, or (n, C) int64 label sets (each class's probability >= 1/2)."""
    p = np.asarray(probs.detach().cpu() if hasattr(probs, "detach") else probs)
    if multi_label:
        return (p >= MULTI_LABEL_THRESHOLD).astype(np.int64)
    return p.argmax(axis=1).astype(np.int64)


def hits(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(n,) bool: the predicted class is the label, or the predicted set is exactly the label set."""
    pred, y = np.asarray(pred), np.asarray(y)
    if pred.shape != y.shape:
        raise ValueError(f"predictions have shape {pred.shape}, labels {y.shape}")
    return (pred == y).all(axis=1) if y.ndim == 2 else pred == y


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Elementwise 2 tp / (2 tp + fp + fn), 0 where the denominator is 0."""
    den = 2 * tp + fp + fn
    return np.where(den > 0, 2 * tp / np.maximum(den, 1), 0.0)


def single_label_scores(pred: np.ndarray, y: np.ndarray, n_classes: int) -> dict[str, float]:
    """``accuracy`` and ``macro_f1`` of class predictions over ``n_classes`` classes."""
    pred, y = np.asarray(pred), np.asarray(y)
    onehot_p = pred[:, None] == np.arange(n_classes)[None, :]
    onehot_y = y[:, None] == np.arange(n_classes)[None, :]
    return {"accuracy": float(hits(pred, y).mean()), "macro_f1": float(_per_class_f1(onehot_p, onehot_y).mean())}


def _per_class_f1(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    tp = (p & t).sum(axis=0)
    return _f1(tp, (p & ~t).sum(axis=0), (~p & t).sum(axis=0))


def multi_label_scores(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """``accuracy`` (= ``subset_accuracy``), ``subset_accuracy``, ``micro_f1`` and ``macro_f1`` of
    predicted label sets against true ones, both (n, C) 0/1."""
    pred, y = np.asarray(pred), np.asarray(y)
    if pred.ndim != 2 or pred.shape != y.shape:
        raise ValueError(f"label sets must be (n, C) of one shape, got {pred.shape} and {y.shape}")
    p, t = pred > 0, y > 0
    tp, fp, fn = (p & t).sum(), (p & ~t).sum(), (~p & t).sum()
    subset = float(hits(p, t).mean())
    return {"accuracy": subset, "subset_accuracy": subset, "micro_f1": float(_f1(tp, fp, fn)),
            "macro_f1": float(_per_class_f1(p, t).mean())}


def label_scores(pred: np.ndarray, y: np.ndarray, n_classes: int) -> dict[str, float]:
    """:func:`multi_label_scores` for label sets ((n, C) ``y``), else :func:`single_label_scores`."""
    return multi_label_scores(pred, y) if np.asarray(y).ndim == 2 else single_label_scores(pred, y, n_classes)
