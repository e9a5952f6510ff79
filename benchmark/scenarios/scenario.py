"""What a scenario is (:class:`Scenario`), its default parameters and its fixed training recipe."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backend.data import DataError, MultimodalDataset
from backend.models.fusion import FusionConfig
from backend.models.trainer import TrainConfig
from benchmark.scenarios.process import DEFAULT_MC_SAMPLES, Process


# ----------------------------------------------------------------------------------------------
# Scenario
# ----------------------------------------------------------------------------------------------
@dataclass
class Scenario:
    """A benchmark dataset with its ground truth and its fixed training recipe.

    pool: the unlabelled training pool (``labels`` all UNLABELED, ``true_labels`` set: the oracle's answers).
    val: labelled validation items (recipe selection only). test: labelled held-out items.
    informativeness: Bayes-optimal accuracy from each modality alone (with its presence), ``"all"``
    from every modality, ``"chance"`` from none (multi-label: subset accuracies, whole sets right).
    informativeness_present: each modality alone on the items that have it (what a unimodal head can
    reach; the representation-gap reference).
    informativeness_kind: ``"bayes"`` (synthetic: ground truth of the generating process) or
    ``"estimated"`` (real data: a full-pool unimodal model of the same recipe, see
    :func:`make_real_scenario`).
    """

    name: str
    params: dict[str, Any]
    pool: MultimodalDataset
    val: MultimodalDataset
    test: MultimodalDataset
    informativeness: dict[str, float]
    informativeness_present: dict[str, float]
    chance: float
    fusion: FusionConfig
    train: TrainConfig
    description: str
    roles: dict[str, str] = field(default_factory=dict)
    truth: dict[str, Any] = field(default_factory=dict)  # hidden per-item truth of the pool (never for strategies)
    process: Process | None = None
    informativeness_kind: str = "bayes"

    @property
    def modality_names(self) -> list[str]:
        """Modality names in dataset order."""
        return self.pool.modality_names

    def modality_informativeness(self) -> dict[str, float]:
        """Only the per-modality entries (what ``backend.diagnostics.reliance_gap`` expects)."""
        return {k: self.informativeness[k] for k in self.modality_names}

    def summary(self) -> dict[str, Any]:
        """JSON-safe description for run.json and the report (multi-label: also the mean set size of the pool)."""
        multi = self.pool.multi_label
        sizes = {"label_cardinality": float(self.pool.true_labels.sum(axis=1).mean())} if multi else {}
        return {
            "name": self.name, "description": self.description, "params": self.params,
            "n_pool": len(self.pool), "n_val": len(self.val), "n_test": len(self.test),
            "n_classes": self.pool.n_classes, "multi_label": multi, **sizes,
            "modalities": self.modality_names, "roles": self.roles,
            "informativeness": self.informativeness, "informativeness_present": self.informativeness_present,
            "informativeness_kind": self.informativeness_kind, "chance": self.chance,
            "fusion": self.fusion.to_dict(), "train": self.train.to_dict(),
            "presence_rate": {k: float(self.pool.masks[k].mean()) for k in self.modality_names},
        }


DEFAULT_PARAMS: dict[str, Any] = {
    "n_items": 1500,  # pool size
    "n_test": 1000,
    "n_val": 500,
    "dims": 16,  # features per modality (int, or one int per modality)
    "n_classes": 4,
    "n_modalities": 2,
    "noise": 1.0,  # multiplies every modality's calibrated noise std (1 = the stated accuracies)
    "missing": None,  # None, "mcar" or "mnar"
    "missing_rate": 0.0,  # each modality in missing_modalities is absent at this rate
    "missing_modalities": None,  # default: all modalities
    "mnar_strength": 0.8,  # MNAR: rate * (1 +/- strength) depending on the class
    "corrupt_rate": 0.0,  # share of items carrying a corrupted copy of each modality
    "corrupt_modalities": None,  # default: all modalities
    "corrupt_sigma": 5.0,  # corruption noise std (latent means are 1 apart)
    "mc_samples": DEFAULT_MC_SAMPLES,
}


def _seed_sequence(name: str, seed: int) -> np.random.SeedSequence:
    """Streams derived from (scenario name, seed) only: stable across processes and machines."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.SeedSequence([int(seed), zlib.crc32(name.encode("utf-8"))])


def default_recipe(base: str, n_classes: int) -> tuple[FusionConfig, TrainConfig]:
    """The fixed per-scenario training recipe (identical for every strategy; see benchmark.protocol).

    ``recipe="auto"``: the probe with its MLP expert wherever every modality is a feature vector (the
    synthetic scenarios, real data with pretrained featurizers, vector files), the SGD-trained fusion
    network on pixels and token ids (docs/model_recipe.md); the network settings below apply to the latter.
    """
    fusion = FusionConfig(kind="intermediate", hidden=64, embed_dim=32, dropout=0.1)
    train = TrainConfig(epochs=60, lr=3e-3, weight_decay=1e-4, batch_size=64, patience=8, val_fraction=0.2,
                        aux_weight=1.0, warm_start=False, device="cpu", amp=False, recipe="auto")
    return fusion, train
