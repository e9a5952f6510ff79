"""Missing modalities: presence patterns given the class (MCAR or MNAR), shared by the synthetic process
and the injection into real datasets, so both lose modalities the same way."""

from __future__ import annotations

import numpy as np

from backend.data import DataError, MultimodalDataset


def presence_strata(labels: np.ndarray) -> np.ndarray:
    """(n,) what class-dependent (MNAR) missingness depends on: the class, or for (n, C) label sets the
    lowest-numbered class of the set (C for the empty set), a fixed rule that needs no frequencies."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        return labels
    return np.where(labels.any(axis=1), labels.argmax(axis=1), labels.shape[1])


def _presence(p: dict, names: list[str], n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(patterns (P, M), P(pattern | stratum) (n_classes, P)); strata are classes, or for label sets the
    C + 1 values of :func:`presence_strata` (pass ``n_classes`` = C + 1)."""
    m = len(names)
    kind, rate = p.get("missing"), float(p.get("missing_rate") or 0.0)
    if kind is None or rate == 0.0:
        return np.ones((1, m), dtype=bool), np.ones((n_classes, 1))
    if kind not in ("mcar", "mnar"):
        raise DataError(f"missing must be None, 'mcar' or 'mnar', got {kind!r}")
    which = p.get("missing_modalities") or names
    unknown = set(which) - set(names)
    if unknown:
        raise DataError(f"missing_modalities {sorted(unknown)} are not modalities of this scenario ({names})")
    idx = [names.index(w) for w in which]
    if not 0.0 < rate < 1.0:
        raise DataError(f"missing_rate must be in (0, 1), got {rate}")
    alpha = float(p.get("mnar_strength", 0.8)) if kind == "mnar" else 0.0
    # patterns: all present, or exactly one of `which` absent (never an item with nothing)
    pats = [np.ones(m, dtype=bool)]
    for j in idx:
        q = np.ones(m, dtype=bool)
        q[j] = False
        pats.append(q)
    probs = np.zeros((n_classes, len(pats)))
    for y in range(n_classes):
        for t, j in enumerate(idx):
            if len(idx) == 1:
                sign = 1.0 if y % 2 == 0 else -1.0
            elif len(idx) % 2 == 1 and t == len(idx) - 1:
                sign = 0.0
            else:
                sign = 1.0 if (y + t) % 2 == 0 else -1.0
            probs[y, 1 + t] = rate * (1.0 + alpha * sign)
        probs[y, 0] = 1.0 - probs[y, 1:].sum()
    if (probs < -1e-12).any() or (probs[:, 1:] > 1 + 1e-12).any():
        raise DataError(f"missing_rate {rate} is too high for {len(idx)} modalities "
                        f"(each item keeps at least one modality: rate * (1 + strength) * count must be <= 1)")
    return np.array(pats), np.clip(probs, 0.0, 1.0)


def _inject_missing(ds: MultimodalDataset, patterns: np.ndarray, pattern_probs: np.ndarray,
                    rng: np.random.Generator) -> MultimodalDataset:
    """Draw a presence pattern per item given its true class (label sets: :func:`presence_strata`), as the
    synthetic process does, and apply it.

    An item of a file that already lacks some modality could lose its last one: it keeps what it had.
    """
    y = presence_strata(ds.true_labels)
    cum = np.cumsum(pattern_probs[y], axis=1)
    u = rng.random(len(ds))[:, None]
    pat = np.minimum((u >= cum).sum(axis=1), len(patterns) - 1)
    present = patterns[pat]
    masks = {k: ds.masks[k] & present[:, j] for j, k in enumerate(ds.modality_names)}
    empty = ~np.stack(list(masks.values()), axis=1).any(axis=1)
    if empty.any():
        masks = {k: np.where(empty, ds.masks[k], v) for k, v in masks.items()}
    return ds.with_masks(masks)
