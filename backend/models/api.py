"""What query strategies and diagnostics may ask of a trained model (and nothing more).

Keeping this surface small lets every strategy work with any fusion architecture: the fused class
probabilities, each modality's own head, each modality's embedding, and the same answers with a
chosen subset of modalities treated as absent (the masking that Shapley diagnostics need).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from backend.data import MultimodalDataset


@dataclass
class Predictions:
    """Model outputs for ``n`` items, all float32 tensors on the model's device.

    probs: (n, C) fused class probabilities.
    unimodal_probs: name -> (n, C) probabilities of that modality's auxiliary head.
    embeddings: name -> (n, d_k) that modality's representation z_k (the learned absent embedding
        where the item lacks the modality).
    fused_embedding: (n, h) the representation the fused head reads (penultimate layer).
    masks: name -> (n,) bool presence, as used for this prediction.
    """

    probs: torch.Tensor
    unimodal_probs: dict[str, torch.Tensor]
    embeddings: dict[str, torch.Tensor]
    fused_embedding: torch.Tensor
    masks: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return self.probs.shape[0]


@runtime_checkable
class ActiveModel(Protocol):
    """A trained multimodal classifier as seen by strategies, diagnostics, benchmark and server."""

    n_classes: int
    modality_names: list[str]
    device: torch.device

    def predict(
        self,
        dataset: MultimodalDataset,
        indices: Sequence[int] | np.ndarray,
        *,
        drop: Sequence[str] = (),
    ) -> Predictions:
        """Predict items ``indices`` of ``dataset``; modalities in ``drop`` are treated as absent."""
        ...

    def predict_mc_dropout(
        self, dataset: MultimodalDataset, indices: Sequence[int] | np.ndarray, n_samples: int, seed: int
    ) -> torch.Tensor:
        """(n_samples, n, C) fused probabilities with dropout active (for BALD); seeded."""
        ...
