"""Modality diagnostics: how much the model relies on each modality, and how much it could.

The seed paper's first finding is that multimodal models lean on one modality and neglect the
others. To see (and later fix) that we need numbers per round:

- **Exact Shapley contributions** of each modality to the fused probability of the predicted class
  (multi-label: the mean over classes of the probability of the predicted side, in or out of the set),
  computed over *all* 2^M subsets of modalities (a modality outside the subset is treated as absent
  through ``model.predict(drop=...)``, the same masking the model sees for genuinely missing data).
  One forward pass per subset over all items, not per item.
- **Contribution shares**: mean |phi_k| normalised to sum to 1 (dataset level) or per item.
- **Unimodal accuracy** of each modality's auxiliary head (what each modality has learned alone).
- **Reliance gap**: how far the reliance shares are from the shares the modalities *deserve* given
  how informative each one is on its own (known for synthetic data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from backend.data import DataError, MultimodalDataset, is_labeled
from backend.models.api import ActiveModel

MAX_SHAPLEY_MODALITIES = 12  # 2^12 = 4096 forward passes; beyond that exact Shapley is not sensible
FUSED_KEY = "fused"


def _as_indices(dataset: MultimodalDataset, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """Validated int64 dataset indices (clear error naming the bad index)."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size:
        bad = idx[(idx < 0) | (idx >= len(dataset))]
        if bad.size:
            raise DataError(f"index {int(bad[0])} is outside the dataset (0..{len(dataset) - 1})")
    return idx


def _check_model(model: ActiveModel, dataset: MultimodalDataset) -> list[str]:
    names = list(model.modality_names)
    missing = [k for k in names if k not in dataset.modalities]
    if missing:
        raise DataError(f"model modalities {missing} are not in the dataset (has {dataset.modality_names})")
    if len(names) < 1:
        raise DataError("model has no modalities")
    return names


def shapley_weights(m: int) -> np.ndarray:
    """w[s] = s! (m-s-1)! / m!: weight of a marginal contribution joining a coalition of size s."""
    return np.array([math.factorial(s) * math.factorial(m - s - 1) / math.factorial(m) for s in range(m)])


def shapley_from_values(values: torch.Tensor) -> torch.Tensor:
    """Exact Shapley values from a full characteristic function.

    ``values`` is (n, 2^M): column ``S`` (a bitmask, bit k = player k present) holds v(S) per item.
    Returns (n, M): phi_k = sum_{S not containing k} w(|S|) * (v(S + k) - v(S)), with
    w(s) = s!(M-s-1)!/M!. Satisfies efficiency: sum_k phi_k = v(all) - v(empty).
    """
    if values.ndim != 2:
        raise DataError(f"values must be (n, 2^M), got shape {tuple(values.shape)}")
    n_sub = values.shape[1]
    m = n_sub.bit_length() - 1
    if n_sub != 1 << m or m < 1:
        raise DataError(f"values need 2^M columns for M >= 1, got {n_sub}")
    w = shapley_weights(m)
    phi = torch.zeros(values.shape[0], m, dtype=values.dtype, device=values.device)
    for k in range(m):
        bit = 1 << k
        for s in range(n_sub):
            if s & bit:
                continue
            phi[:, k] += float(w[bin(s).count("1")]) * (values[:, s | bit] - values[:, s])
    return phi


def _targets(
    dataset: MultimodalDataset, idx: np.ndarray, full_probs: torch.Tensor, target: str | np.ndarray | torch.Tensor
) -> torch.Tensor:
    """Class whose probability is explained: the full model's prediction, the label, or given
    (multi-label: an (n, C) 0/1 label set per item)."""
    if isinstance(target, str):
        if target == "predicted":
            if dataset.multi_label:
                return (full_probs >= 0.5).long()
            return full_probs.argmax(dim=1)
        if target == "label":
            y = _truth(dataset, idx)
            if not is_labeled(y).all():
                bad = idx[np.flatnonzero(~is_labeled(y))[0]]
                raise DataError(f"target='label' but item {dataset.ids[bad]!r} has no label or true label")
            return torch.as_tensor(y, device=full_probs.device)
        raise DataError(f"target must be 'predicted', 'label' or an array of classes, got {target!r}")
    t = torch.as_tensor(np.asarray(target), dtype=torch.int64)
    if dataset.multi_label:
        if t.shape != (len(idx), full_probs.shape[1]) or not bool(((t == 0) | (t == 1)).all()):
            raise DataError(f"target label sets must be 0/1 of shape ({len(idx)}, {full_probs.shape[1]}), "
                            f"got {tuple(t.shape)}")
        return t.to(full_probs.device)
    if t.shape != (len(idx),):
        raise DataError(f"target array has shape {tuple(t.shape)}, expected ({len(idx)},)")
    if t.numel() and (t.min() < 0 or t.max() >= full_probs.shape[1]):
        raise DataError(f"target classes must lie in 0..{full_probs.shape[1] - 1}")
    return t.to(full_probs.device)


def modality_shapley(
    model: ActiveModel,
    dataset: MultimodalDataset,
    indices: Sequence[int] | np.ndarray,
    *,
    target: str | np.ndarray | torch.Tensor = "predicted",
    batch_size: int = 8192,
    full_probs: torch.Tensor | None = None,
) -> torch.Tensor:
    """(n, M) exact per-item Shapley values of the modalities, columns in ``model.modality_names`` order.

    Players are modalities; v(S) = fused probability of the target class when the modalities outside
    S are treated as absent (``model.predict(drop=...)``). ``target="predicted"`` explains the full
    model's predicted class (as BMMAL does); ``"label"`` the item's label (or true label); an array
    gives one class per item. Cost: 2^M forward passes over all items (in chunks of ``batch_size``).
    A modality an item already lacks is a dummy player for it (phi = 0), as it should be.
    Returned as float64 on the model's device. ``full_probs`` (n, C): the caller's already computed
    ``model.predict(dataset, indices).probs``, saving one forward pass.
    """
    names = _check_model(model, dataset)
    m = len(names)
    if m > MAX_SHAPLEY_MODALITIES:
        raise DataError(f"exact Shapley over {m} modalities needs 2^{m} passes; at most {MAX_SHAPLEY_MODALITIES}")
    idx = _as_indices(dataset, indices)
    device = torch.device(model.device)
    if idx.size == 0:
        return torch.zeros(0, m, dtype=torch.float64, device=device)
    if batch_size <= 0:
        raise DataError(f"batch_size must be positive, got {batch_size}")
    tgt = None
    if not isinstance(target, str):
        tgt = np.asarray(target.detach().cpu() if isinstance(target, torch.Tensor) else target)
        tgt = tgt.reshape(idx.size, -1) if dataset.multi_label and tgt.size else tgt.reshape(-1)
        if len(tgt) != idx.size:
            raise DataError(f"target array has {tgt.size} entries, expected one per item ({idx.size})")
    if full_probs is not None and tuple(full_probs.shape[:1]) != (idx.size,):
        raise DataError(f"full_probs has {full_probs.shape[0]} rows, expected one per item ({idx.size})")
    out = []
    for start in range(0, idx.size, batch_size):
        chunk = idx[start : start + batch_size]
        if full_probs is None:
            full = model.predict(dataset, chunk).probs
        else:
            full = full_probs[start : start + batch_size].to(device)
        t = _targets(dataset, chunk, full, target if isinstance(target, str) else tgt[start : start + batch_size])
        rows = torch.arange(chunk.size, device=full.device)
        values = torch.empty(chunk.size, 1 << m, dtype=torch.float64, device=full.device)
        full_mask = (1 << m) - 1
        for s in range(1 << m):
            if s == full_mask:
                probs = full
            else:
                drop = [names[k] for k in range(m) if not s & (1 << k)]
                probs = model.predict(dataset, chunk, drop=drop).probs
            values[:, s] = _target_probability(probs, rows, t)
        out.append(shapley_from_values(values))
    return torch.cat(out, dim=0).to(device)


def _target_probability(probs: torch.Tensor, rows: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(n,) float64 probability of each item's target: the class's, or for label sets (t (n, C) 0/1)
    the mean over classes of the probability of the target side."""
    if t.ndim == 2:
        p = probs.to(torch.float64)
        return (t * p + (1 - t) * (1 - p)).mean(dim=1)
    return probs[rows, t].to(torch.float64)


def item_shares(phi: torch.Tensor | np.ndarray) -> np.ndarray:
    """(n, M) per-item shares |phi_ik| / sum_k |phi_ik|; uniform 1/M for an item whose phi are all zero."""
    a = np.abs(np.asarray(phi.detach().cpu() if isinstance(phi, torch.Tensor) else phi, dtype=np.float64))
    if a.ndim != 2 or a.shape[1] < 1:
        raise DataError(f"phi must be (n, M), got shape {a.shape}")
    tot = a.sum(axis=1, keepdims=True)
    uniform = np.full_like(a, 1.0 / a.shape[1])
    return np.where(tot > 0, a / np.where(tot > 0, tot, 1.0), uniform)


def contribution_shares(phi: torch.Tensor | np.ndarray) -> np.ndarray:
    """(M,) dataset-level reliance shares: mean_i |phi_ik| normalised to sum to 1 (uniform when all zero).

    Mean absolute contribution (not the mean of per-item shares) so that items where the model is
    barely moved by any modality weigh little.
    """
    a = np.abs(np.asarray(phi.detach().cpu() if isinstance(phi, torch.Tensor) else phi, dtype=np.float64))
    if a.ndim != 2 or a.shape[1] < 1:
        raise DataError(f"phi must be (n, M), got shape {a.shape}")
    if a.shape[0] == 0:
        return np.full(a.shape[1], 1.0 / a.shape[1])
    mean = a.mean(axis=0)
    tot = mean.sum()
    return mean / tot if tot > 0 else np.full(a.shape[1], 1.0 / a.shape[1])


def imbalance(shares: np.ndarray | Mapping[str, float]) -> float:
    """max share - min share, in [0, 1]: 0 when the model relies on all modalities equally."""
    s = np.asarray(list(shares.values()) if isinstance(shares, Mapping) else shares, dtype=np.float64)
    return float(s.max() - s.min()) if s.size else 0.0


def _truth(dataset: MultimodalDataset, idx: np.ndarray) -> np.ndarray:
    """Ground truth per item: its label where labelled, else the oracle's true label, else UNLABELED."""
    y = dataset.labels[idx].copy()
    if dataset.true_labels is not None:
        miss = ~is_labeled(y)
        y[miss] = dataset.true_labels[idx][miss]
    return y


def unimodal_accuracy(
    model: ActiveModel, dataset: MultimodalDataset, indices: Sequence[int] | np.ndarray
) -> dict[str, float]:
    """Accuracy of each modality's auxiliary head and of the fused prediction (key ``"fused"``).

    A head is scored only on items that have its modality (absent items carry no evidence of what
    the modality learned); items with no label and no true label are skipped. NaN where no item
    qualifies. Multi-label: the share of items whose whole label set is predicted (subset accuracy,
    each class's sigmoid on its side of 1/2).
    """
    names = _check_model(model, dataset)
    if FUSED_KEY in names:
        raise DataError(f"a modality named '{FUSED_KEY}' clashes with the fused-accuracy key")
    idx = _as_indices(dataset, indices)
    y = _truth(dataset, idx)
    keep = is_labeled(y)
    idx, y = idx[keep], y[keep]
    out: dict[str, float] = {k: float("nan") for k in names}
    out[FUSED_KEY] = float("nan")
    if idx.size == 0:
        return out
    pred = model.predict(dataset, idx)
    yt = torch.as_tensor(y, device=pred.probs.device)

    def hits(p: torch.Tensor) -> torch.Tensor:
        return ((p >= 0.5) == (yt > 0)).all(dim=1) if dataset.multi_label else p.argmax(1) == yt

    out[FUSED_KEY] = float(hits(pred.probs).double().mean())
    for k in names:
        present = torch.as_tensor(dataset.masks[k][idx], device=pred.probs.device)
        if present.any():
            hit = hits(pred.unimodal_probs[k])
            out[k] = float(hit[present].double().mean())
    return out


def informativeness_shares(informativeness: Mapping[str, float], chance: float) -> dict[str, float]:
    """Share each modality deserves: max(acc_k - chance, 0) / sum_j max(acc_j - chance, 0); uniform if all 0."""
    if not informativeness:
        raise DataError("informativeness is empty")
    if not 0.0 <= chance < 1.0:
        raise DataError(f"chance must be in [0, 1), got {chance}")
    gains = {}
    for k, acc in informativeness.items():
        if not (0.0 <= float(acc) <= 1.0):
            raise DataError(f"informativeness of modality '{k}' must be an accuracy in [0, 1], got {acc}")
        gains[k] = max(float(acc) - chance, 0.0)
    tot = sum(gains.values())
    if tot <= 0:
        return {k: 1.0 / len(gains) for k in gains}
    return {k: g / tot for k, g in gains.items()}


def reliance_gap(
    shares: Mapping[str, float], informativeness: Mapping[str, float], chance: float
) -> float:
    """Total-variation distance between reliance and informativeness shares, in [0, 1].

    ``shares``: name -> reliance share (e.g. :func:`contribution_shares`, summing to 1).
    ``informativeness``: name -> best accuracy achievable from that modality alone; ``chance``: the
    accuracy of guessing. Then

        info_k = max(acc_k - chance, 0) / sum_j max(acc_j - chance, 0)   (uniform if all zero)
        gap    = 1/2 * sum_k |share_k - info_k|

    0 = the model relies on each modality exactly as much as it can tell; 1 = it relies entirely on
    modalities that carry no information while an informative one is ignored.
    """
    if set(shares) != set(informativeness):
        raise DataError(f"shares cover {sorted(shares)} but informativeness covers {sorted(informativeness)}")
    s = np.array([float(shares[k]) for k in shares])
    if np.any(s < 0) or not np.isclose(s.sum(), 1.0, atol=1e-6):
        raise DataError(f"shares must be non-negative and sum to 1, got {dict(shares)}")
    info = informativeness_shares(informativeness, chance)
    return float(0.5 * sum(abs(float(shares[k]) - info[k]) for k in shares))


def _json_float(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


@dataclass
class RoundDiagnostics:
    """Modality diagnostics of one model on one set of items (typically a round of active learning).

    contribution: name -> dataset-level reliance share (sums to 1).
    per_item: (n, M) per-item shares, columns in ``names`` order.
    unimodal_acc: name -> accuracy of that modality's head on items having it (NaN if none).
    fused_acc: accuracy of the fused prediction (NaN if no ground truth).
    reliance_gap: TV distance to informativeness shares, None when informativeness is unknown.
    """

    contribution: dict[str, float]
    per_item: np.ndarray
    unimodal_acc: dict[str, float]
    fused_acc: float
    reliance_gap: float | None = None
    names: list[str] = field(default_factory=list)
    indices: np.ndarray | None = None

    @property
    def imbalance(self) -> float:
        """max share - min share."""
        return imbalance(self.contribution)

    @property
    def dominant(self) -> str:
        """The modality the model relies on most."""
        return max(self.contribution, key=lambda k: self.contribution[k])

    def to_dict(self, per_item: bool = True) -> dict[str, Any]:
        """JSON-safe dict (NaN -> None); ``per_item=False`` leaves the (n, M) array out for compact logs."""
        d: dict[str, Any] = {
            "names": list(self.names),
            "contribution": {k: float(v) for k, v in self.contribution.items()},
            "imbalance": self.imbalance,
            "dominant": self.dominant,
            "unimodal_acc": {k: _json_float(v) for k, v in self.unimodal_acc.items()},
            "fused_acc": _json_float(self.fused_acc),
            "reliance_gap": _json_float(self.reliance_gap),
            "n_items": int(self.per_item.shape[0]),
        }
        if per_item:
            d["per_item"] = np.round(self.per_item, 6).tolist()
            if self.indices is not None:
                d["indices"] = [int(i) for i in self.indices]
        return d


def diagnose(
    model: ActiveModel,
    dataset: MultimodalDataset,
    indices: Sequence[int] | np.ndarray,
    informativeness: Mapping[str, float] | None = None,
    chance: float | None = None,
) -> RoundDiagnostics:
    """All diagnostics for ``indices`` in one call: Shapley shares, head accuracies, reliance gap.

    ``chance`` defaults to 1 / n_classes when ``informativeness`` is given.
    """
    names = _check_model(model, dataset)
    idx = _as_indices(dataset, indices)
    if idx.size == 0:
        raise DataError("diagnose needs at least one item")
    phi = modality_shapley(model, dataset, idx)
    shares = contribution_shares(phi)
    contribution = {k: float(s) for k, s in zip(names, shares)}
    acc = unimodal_accuracy(model, dataset, idx)
    fused = acc.pop(FUSED_KEY)
    gap = None
    if informativeness is not None:
        c = 1.0 / model.n_classes if chance is None else float(chance)
        gap = reliance_gap(contribution, informativeness, c)
    return RoundDiagnostics(contribution, item_shares(phi), acc, fused, gap, names, idx)
