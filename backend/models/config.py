"""The training recipe's settings: :class:`TrainConfig`, its allowed values, and what ``recipe="auto"`` picks.

Why a module of its own: the benchmark's config, the ML server and the CLI's ``--train`` flags read and
validate these settings; they are neither the model object nor the training loop.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from backend.data import DataError, MultimodalDataset

BALANCE_MODES = ("none", "ogm_ge", "warmup", "mmpareto")
RECIPES = ("auto", "sgd", "probe")


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe; identical for every strategy within a benchmark scenario."""

    epochs: int = 200
    lr: float = 3e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    patience: int = 15
    val_fraction: float = 0.2
    min_val: int = 10  # below this many validation items, train a fixed number of epochs instead
    aux_weight: float = 1.0
    warm_start: bool = False
    device: str | None = None
    amp: bool = True
    # training-side modality balancing (see modality_confidence / ogm_coefficients / train_model)
    modality_balance: str = "none"  # "none" | "ogm_ge" | "warmup" | "mmpareto"
    ogm_alpha: float = 0.5  # k_m = 1 - tanh(alpha * (rho_m - 1)) for the dominant modality
    ogm_noise: bool = True  # OGM-GE's generalisation enhancement: + N(0, std(grad)) on encoder gradients
    ogm_score: str = "contribution"  # "contribution": fused head from m alone; "head": m's auxiliary head
    ogm_apply: str = "grad"  # "grad": scale encoder gradients (as in the paper); "lr": scale encoder step sizes
    warmup_epochs: int = 10  # "warmup": epochs of unimodal training (encoders + aux heads) before the recipe
    warmup_loss: str = "unimodal"  # "joint": the same epochs on the usual loss (a control: more epochs, no balancing)
    # "sgd": the fusion module trained by AdamW with early stopping (everything above);
    # "probe": backend.models.probe (linear heads and an MLP expert, C / penalty / steps by CV, product of
    # experts; vector features only; epochs/lr/batch_size/patience/val_fraction/aux_weight/modality_balance
    # do not apply); "auto": probe where every modality is a feature vector, else sgd (auto_recipe)
    recipe: str = "sgd"
    probe_cs: tuple[float, ...] = (0.01, 0.04, 0.16, 0.64, 2.5, 10.0)  # candidate C (sklearn's convention)
    probe_folds: int = 3  # cross-validation folds that choose C per modality
    probe_max_iter: int = 200  # L-BFGS iterations per fit
    probe_pull: float = 0.01  # product-of-experts weights: penalty on ||w - 1||^2 + ||b||^2
    probe_joint: bool = True  # one more expert on all modalities side by side (the concatenated probe)
    probe_interaction: int = 64  # hidden width of the MLP expert on all modalities (0: none)
    probe_interaction_rank: int = 64  # principal directions per modality the MLP expert reads
    probe_network: bool = True  # the sgd recipe's fusion network as one more expert (weighted on its val items)

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise DataError(f"recipe must be one of {list(RECIPES)}, got {self.recipe!r}")
        try:
            cs = tuple(float(c) for c in self.probe_cs)
        except (TypeError, ValueError):
            raise DataError(f"probe_cs must be a list of positive numbers, got {self.probe_cs!r}") from None
        if not cs or not all(c > 0 and math.isfinite(c) for c in cs):
            raise DataError(f"probe_cs must be a non-empty list of positive numbers, got {self.probe_cs!r}")
        object.__setattr__(self, "probe_cs", cs)
        if self.probe_folds < 2:
            raise DataError(f"probe_folds must be >= 2, got {self.probe_folds}")
        if self.probe_max_iter < 1:
            raise DataError(f"probe_max_iter must be >= 1, got {self.probe_max_iter}")
        if self.probe_interaction < 0 or self.probe_interaction_rank < 1:
            raise DataError(f"probe_interaction must be >= 0 and probe_interaction_rank >= 1, got "
                            f"{self.probe_interaction} and {self.probe_interaction_rank}")
        if not self.probe_pull >= 0:
            raise DataError(f"probe_pull must be >= 0, got {self.probe_pull}")
        if self.recipe == "probe" and self.modality_balance != "none":
            raise DataError(f"modality_balance {self.modality_balance!r} applies to recipe 'sgd' only "
                            "(the probe trains every modality's head on its own)")
        if self.modality_balance not in BALANCE_MODES:
            raise DataError(f"modality_balance must be one of {list(BALANCE_MODES)}, got {self.modality_balance!r}")
        if self.ogm_score not in ("contribution", "head"):
            raise DataError(f"ogm_score must be 'contribution' or 'head', got {self.ogm_score!r}")
        if self.ogm_apply not in ("grad", "lr"):
            raise DataError(f"ogm_apply must be 'grad' or 'lr', got {self.ogm_apply!r}")
        if not self.ogm_alpha >= 0:
            raise DataError(f"ogm_alpha must be >= 0, got {self.ogm_alpha}")
        if self.warmup_loss not in ("unimodal", "joint"):
            raise DataError(f"warmup_loss must be 'unimodal' or 'joint', got {self.warmup_loss!r}")
        if self.warmup_epochs < 0:
            raise DataError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")

    def to_dict(self) -> dict:
        return asdict(self)


def auto_recipe(dataset: MultimodalDataset, modality_balance: str = "none") -> str:
    """What ``recipe="auto"`` trains on ``dataset``: ``probe`` when every modality is a float feature vector
    (pretrained featurizers, vector files, the synthetic scenarios), else ``sgd`` (pixels and token ids need
    the network's encoders; training-side modality balancing exists for the network only)."""
    vectors = all(isinstance(v, np.ndarray) and v.ndim == 2 and np.issubdtype(v.dtype, np.floating)
                  for v in dataset.modalities.values())
    return "probe" if vectors and modality_balance == "none" else "sgd"
