"""Uncertainty heuristics as pure functions on probability tensors (in the spirit of baal).

Every function maps class probabilities to a per-item *priority*: higher = more uncertain = query
sooner, so strategies can rank with one convention. They never touch global state, keep the input's
device and floating dtype, and clamp before every log so a probability of exactly 0 gives a finite
result (0 * log 0 := 0).

Shapes: ``probs`` is (n, C) with rows summing to 1; ``mc_probs`` is (T, n, C): T stochastic forward
passes (MC dropout) of the same n items. Every function returns an (n,) tensor.

The ``multilabel_*`` forms take per-class probabilities of a multi-label model (each entry the
sigmoid ``p(class c in the item's set)``, rows need not sum to 1), treating the classes as
independent given the item, as the model does.
"""

from __future__ import annotations

import torch

__all__ = ["least_confidence", "margin", "margin_uncertainty", "entropy", "bald", "multilabel_least_confidence",
           "multilabel_margin", "multilabel_entropy", "multilabel_bald", "EPS"]

EPS: float = 1e-12
"""Lower clamp for probabilities inside logs (finite entropy at p = 0)."""


def _check_probs(probs: torch.Tensor, name: str = "probs", ndim: int = 2) -> torch.Tensor:
    if not isinstance(probs, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(probs).__name__}")
    if probs.ndim != ndim:
        want = "(n, C)" if ndim == 2 else "(T, n, C)"
        raise ValueError(f"{name} must have shape {want}, got {tuple(probs.shape)}")
    if probs.shape[-1] < 1:
        raise ValueError(f"{name} needs at least one class, got shape {tuple(probs.shape)}")
    return probs if probs.is_floating_point() else probs.float()


def _entropy_lastdim(p: torch.Tensor) -> torch.Tensor:
    """-sum p log p over the last axis, with log clamped (0 log 0 = 0)."""
    return -(p * torch.log(p.clamp_min(EPS))).sum(dim=-1)


def least_confidence(probs: torch.Tensor) -> torch.Tensor:
    """(n,) ``1 - max_c p_c``: items whose top class is least certain come first."""
    probs = _check_probs(probs)
    return 1.0 - probs.max(dim=-1).values


def margin(probs: torch.Tensor) -> torch.Tensor:
    """(n,) ``-(p_(1) - p_(2))``, the negated gap between the two largest probabilities.

    Negated so that the smallest margin (the most confusable item) gets the highest priority.
    With a single class the margin is defined as 1 (priority -1): nothing to confuse.
    """
    probs = _check_probs(probs)
    if probs.shape[-1] == 1:
        return -torch.ones(probs.shape[0], dtype=probs.dtype, device=probs.device)
    top2 = probs.topk(2, dim=-1).values
    return -(top2[:, 0] - top2[:, 1])


def margin_uncertainty(probs: torch.Tensor, multi_label: bool = False) -> torch.Tensor:
    """(n,) ``1 - (p_(1) - p_(2))`` in [0, 1]: the margin as an uncertainty (1 = a tie, 0 = certain), the one
    margin every caller uses (``margin_uncertainty = 1 + margin``). ``multi_label``: ``1 - min_c |2 p_c - 1|``
    of per-class sigmoids (:func:`multilabel_margin`). A single class gives 0."""
    return 1.0 + (multilabel_margin(probs) if multi_label else margin(probs))


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """(n,) predictive (Shannon, nats) entropy ``-sum_c p_c log p_c``."""
    probs = _check_probs(probs)
    return _entropy_lastdim(probs)


def bald(mc_probs: torch.Tensor) -> torch.Tensor:
    """(n,) BALD mutual information between label and weights (Houlsby et al. 2011; Gal et al. 2017).

    ``I(y; w) = H(mean_t p_t) - mean_t H(p_t)`` over the T MC-dropout samples: high when the samples
    disagree with each other, zero when they all agree (however uncertain each one is). Clamped at 0
    to remove float round-off (the quantity is non-negative by Jensen's inequality).
    """
    mc_probs = _check_probs(mc_probs, "mc_probs", ndim=3)
    if mc_probs.shape[0] < 1:
        raise ValueError("mc_probs needs at least one MC sample (T >= 1)")
    mean_p = mc_probs.mean(dim=0)
    expected_h = _entropy_lastdim(mc_probs).mean(dim=0)
    return (_entropy_lastdim(mean_p) - expected_h).clamp_min(0.0)


def _binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Elementwise ``-p log p - (1 - p) log(1 - p)`` (nats), logs clamped."""
    return -(p * torch.log(p.clamp_min(EPS)) + (1 - p) * torch.log((1 - p).clamp_min(EPS)))


def multilabel_least_confidence(probs: torch.Tensor) -> torch.Tensor:
    """(n,) ``1 - prod_c max(p_c, 1 - p_c)``: one minus the probability of the most likely label set."""
    probs = _check_probs(probs)
    top = torch.maximum(probs, 1 - probs)
    return 1.0 - torch.exp(torch.log(top.clamp_min(EPS)).sum(dim=-1))


def multilabel_margin(probs: torch.Tensor) -> torch.Tensor:
    """(n,) ``-min_c |2 p_c - 1|``: the margin to 1/2 of the least certain class, negated.

    ``|2p - 1|`` is the gap between "in the set" and "not in it" for one class, the binary analogue of
    the top-two margin; the item's priority is set by its most confusable class.
    """
    probs = _check_probs(probs)
    return -(2 * probs - 1).abs().min(dim=-1).values


def multilabel_entropy(probs: torch.Tensor) -> torch.Tensor:
    """(n,) mean binary entropy over classes (the label set's entropy under independence, divided by C)."""
    probs = _check_probs(probs)
    return _binary_entropy(probs).mean(dim=-1)


def multilabel_bald(mc_probs: torch.Tensor) -> torch.Tensor:
    """(n,) mean over classes of the per-class BALD ``H_b(mean_t p_tc) - mean_t H_b(p_tc)`` (clamped at 0)."""
    mc_probs = _check_probs(mc_probs, "mc_probs", ndim=3)
    if mc_probs.shape[0] < 1:
        raise ValueError("mc_probs needs at least one MC sample (T >= 1)")
    per_class = _binary_entropy(mc_probs.mean(dim=0)) - _binary_entropy(mc_probs).mean(dim=0)
    return per_class.clamp_min(0.0).mean(dim=-1)
