"""The losses the sgd recipe trains on: fused plus auxiliary cross-entropies, their parts, and the
unimodal warm-up loss (binary cross-entropies for label sets).

Why a module of its own: the training loop and the modality-balancing methods both compute them, and
tests check them directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def classification_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean per-item loss: cross-entropy for class indices y (n,); for label sets y (n, C) float, the
    binary cross-entropy of each class's sigmoid summed over classes (the label set's negative
    log-likelihood when the classes are independent given the item)."""
    if y.ndim == 2:
        return F.binary_cross_entropy_with_logits(logits.float(), y, reduction="sum") / max(len(y), 1)
    return F.cross_entropy(logits.float(), y)


def _hits(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(n,) bool: predicted class = label, or for label sets the exact set (every sigmoid on its side of 1/2)."""
    if y.ndim == 2:
        return ((logits > 0) == (y > 0.5)).all(dim=1)
    return logits.argmax(1) == y


def _loss(out, y: torch.Tensor, masks: dict[str, torch.Tensor], aux_weight: float, names: list[str]) -> torch.Tensor:
    """Fused CE + aux_weight * mean over modalities of each head's CE on items that have the modality
    (binary cross-entropies for label sets, see :func:`classification_loss`)."""
    loss = classification_loss(out.logits, y)
    if aux_weight > 0:
        aux = []
        for k in names:
            m = masks[k]
            if bool(m.any()):
                aux.append(classification_loss(out.aux_logits[k][m], y[m]))
        if aux:
            loss = loss + aux_weight * torch.stack(aux).mean()
    return loss


def _loss_terms(out, y: torch.Tensor, masks: dict[str, torch.Tensor], aux_weight: float,
                names: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``_loss``'s parts: the fused CE and, per modality present in the batch, its head's CE on items
    having it (none when ``aux_weight`` is 0); ``_loss`` = fused + aux_weight * mean(aux)."""
    fused = classification_loss(out.logits, y)
    aux: dict[str, torch.Tensor] = {}
    if aux_weight > 0:
        for k in names:
            m = masks[k]
            if bool(m.any()):
                aux[k] = classification_loss(out.aux_logits[k][m], y[m])
    return fused, aux


def _unimodal_loss(out, y: torch.Tensor, masks: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    """Warm-up loss: mean over modalities of each auxiliary head's CE on items that have the modality.

    Only encoders, absent embeddings and auxiliary heads get gradients, and each modality's encoder
    only from its own head, so this is every modality trained alone, side by side.
    """
    aux = [classification_loss(out.aux_logits[k][masks[k]], y[masks[k]]) for k in names if bool(masks[k].any())]
    return torch.stack(aux).mean() if aux else out.logits.sum() * 0.0
