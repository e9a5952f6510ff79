"""A simulated annotator: answers with the true label (optionally noisy) and charges a cost.

Why pre-drawn answers: label noise must not depend on the order in which a strategy asks, or two
strategies asking for the same item would get different labels and the comparison would measure
luck. Every item's answer is drawn once from the seed; every strategy sees the same answer.
Why per-modality cost: in multimodal annotation an item with more modalities takes longer to
review, so a budget in cost units (not items) is what a labelling team actually spends.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from backend.data import DataError, MultimodalDataset


class BudgetError(DataError):
    """A labelling request that exceeds the remaining budget."""


@dataclass(frozen=True)
class OracleConfig:
    """noise_rate: share of answers replaced by a uniformly drawn *other* class (label sets: by the true
    set with one uniformly drawn class toggled, added or removed: still exactly one wrong answer).
    cost_per_item: fixed cost of every answer. cost_per_modality: extra cost per *present* modality,
    one number for all modalities or name -> cost."""

    noise_rate: float = 0.0
    cost_per_item: float = 1.0
    cost_per_modality: float | dict[str, float] = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.noise_rate) < 1.0:
            raise DataError(f"oracle noise_rate must be in [0, 1), got {self.noise_rate}")
        if float(self.cost_per_item) < 0:
            raise DataError(f"oracle cost_per_item must be >= 0, got {self.cost_per_item}")
        costs = self.cost_per_modality.values() if isinstance(self.cost_per_modality, Mapping) else [self.cost_per_modality]
        if any(float(c) < 0 for c in costs):
            raise DataError(f"oracle cost_per_modality must be >= 0, got {self.cost_per_modality}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict (for run.json and RQ payloads)."""
        d = asdict(self)
        if isinstance(self.cost_per_modality, Mapping):
            d["cost_per_modality"] = dict(self.cost_per_modality)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "OracleConfig":
        """Inverse of :meth:`to_dict` (None: the defaults)."""
        return cls(**dict(d or {}))


@dataclass
class SimulatedOracle:
    """Answers label requests for the items of ``dataset`` from its ``true_labels`` (classes, or label sets
    as (N, C) rows for a multi-label dataset: every answer is then a whole set).

    ``budget`` (cost units, None = unlimited) caps what :meth:`label` may spend in total.
    """

    dataset: MultimodalDataset
    config: OracleConfig = field(default_factory=OracleConfig)
    budget: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dataset.true_labels is None:
            raise DataError("the simulated oracle needs dataset.true_labels (the ground truth it answers with)")
        if self.budget is not None and float(self.budget) < 0:
            raise DataError(f"budget must be >= 0 or None, got {self.budget}")
        truth = self.dataset.true_labels
        c = self.dataset.n_classes
        rng = np.random.default_rng(self.seed)
        flip = rng.random(len(truth)) < float(self.config.noise_rate)
        if truth.ndim == 2:
            other = truth.copy()
            other[np.arange(len(truth)), rng.integers(0, c, len(truth))] ^= 1
            flip = flip[:, None]
        else:
            other = (truth + rng.integers(1, c, len(truth))) % c if c > 1 else truth
        self.answers = np.where(flip, other, truth).astype(np.int64)
        self.flipped = flip.reshape(-1)
        per_mod = self.config.cost_per_modality
        names = self.dataset.modality_names
        if isinstance(per_mod, Mapping):
            unknown = set(per_mod) - set(names)
            if unknown:
                raise DataError(f"cost_per_modality names unknown modalities {sorted(unknown)} (have {names})")
            mod_cost = np.array([float(per_mod.get(k, 0.0)) for k in names])
        else:
            mod_cost = np.full(len(names), float(per_mod))
        self.item_costs = float(self.config.cost_per_item) + self.dataset.presence_matrix().astype(np.float64) @ mod_cost
        self.spent = 0.0
        self.n_answered = 0

    @property
    def remaining(self) -> float:
        """Budget left (inf when unlimited)."""
        return float("inf") if self.budget is None else float(self.budget) - self.spent

    def _idx(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self.answers)):
            bad = idx[(idx < 0) | (idx >= len(self.answers))][0]
            raise DataError(f"oracle asked for item {int(bad)}, outside 0..{len(self.answers) - 1}")
        return idx

    def cost(self, indices: Sequence[int] | np.ndarray) -> float:
        """Total cost of labelling ``indices``."""
        return float(self.item_costs[self._idx(indices)].sum())

    def affordable(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """The longest prefix of ``indices`` (best first) that fits the remaining budget."""
        idx = self._idx(indices)
        if self.budget is None:
            return idx
        cum = np.cumsum(self.item_costs[idx])
        return idx[: int(np.searchsorted(cum, self.remaining + 1e-9, side="right"))]

    def label(self, indices: Sequence[int] | np.ndarray, *, charge: bool = True) -> np.ndarray:
        """The answers for ``indices``; charges their cost (``BudgetError`` when it does not fit)."""
        idx = self._idx(indices)
        if charge:
            c = float(self.item_costs[idx].sum())
            if c > self.remaining + 1e-9:
                raise BudgetError(f"labelling {idx.size} items costs {c:g} but only {self.remaining:g} of the budget is left")
            self.spent += c
            self.n_answered += int(idx.size)
        return self.answers[idx].copy()
