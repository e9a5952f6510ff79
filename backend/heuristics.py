"""Uncertainty heuristics as pure functions on probability tensors (in the spirit of baal).

Every function maps class probabilities to a per-item *priority*: higher = more uncertain = query
sooner, so strategies can rank with one convention. They never touch global state, keep the input's
device and floating dtype, and clamp before every log so a probability of exactly 0 gives a finite
result (0 * log 0 := 0).

Shapes: ``probs`` is (n, C) with rows summing to 1; ``mc_probs`` is (T, n, C): T stochastic forward
passes (MC dropout) of the same n items. Every function returns an (n,) tensor.
"""

from __future__ import annotations

import torch

__all__ = ["least_confidence", "margin", "entropy", "bald", "EPS"]

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
