"""Modality-aware query strategies (first versions).

The seed paper finds that multimodal models lean on one modality and that existing strategies do not
fix this. These strategies use what a multimodal model exposes beyond fused probabilities (each
modality's own head, presence masks, the measured reliance on each modality) to spend labels where
they teach the neglected modality or where uncertainty is reducible.

All three share one measurement: dataset-level reliance shares from exact modality Shapley values
(:func:`backend.diagnostics.modality_shapley`) on the labelled set, or on a seeded sample of the
unlabelled pool when nothing is labelled; the *weak* modality is the least-relied one (ties: first in
``model.modality_names``) and the *imbalance* is ``max share - min share`` in [0, 1].
Uncertainties are normalised to [0, 1]: entropy / log C, or 1 - (p_(1) - p_(2)) for margin.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch

from backend.data import MultimodalDataset, Pool, QueryError
from backend.diagnostics import contribution_shares, imbalance, modality_shapley
from backend.heuristics import entropy, margin_uncertainty, multilabel_entropy
from backend.kernels import FactoredEmbedding, kmeanspp_seeding, knn_mean_distance
from backend.models.api import ActiveModel
from backend.strategies.base import QueryResult, QueryStrategy, ScoringStrategy, is_multi_label
from backend.strategies.registry import register

Uncertainty = Literal["entropy", "margin"]


def normalized_uncertainty(probs: torch.Tensor, kind: Uncertainty = "entropy", multi_label: bool = False) -> torch.Tensor:
    """(n,) uncertainty in [0, 1] so fused and unimodal uncertainties can be mixed on one scale.

    entropy: H(p) / log C; margin: 1 - (p_(1) - p_(2)). For per-class sigmoids (``multi_label``):
    the mean binary entropy / log 2, and 1 - min_c |2 p_c - 1|.
    """
    if kind == "margin":
        return margin_uncertainty(probs, multi_label)
    if kind != "entropy":
        raise QueryError(f"uncertainty must be 'entropy' or 'margin', got {kind!r}")
    if multi_label:
        return multilabel_entropy(probs) / math.log(2.0)
    c = probs.shape[1]
    return entropy(probs) / math.log(c) if c > 1 else torch.zeros(probs.shape[0], device=probs.device)


def reliance_shares(
    model: ActiveModel, dataset: MultimodalDataset, pool: Pool, *, sample: int = 512, seed: int = 0
) -> np.ndarray:
    """(M,) dataset-level Shapley reliance shares, in ``model.modality_names`` order.

    Measured on the labelled set (what the model was trained on) or, when it is empty, on the
    unlabelled pool; at most ``sample`` items, drawn with ``np.random.default_rng(seed)``.
    """
    if sample <= 0:
        raise QueryError(f"sample must be positive, got {sample}")
    base = pool.labeled if pool.labeled.size else pool.unlabeled
    if base.size > sample:
        base = np.sort(np.random.default_rng(seed).choice(base, sample, replace=False))
    phi = modality_shapley(model, dataset, base)
    return contribution_shares(phi)


def _weak(shares: np.ndarray) -> int:
    """Index of the least-relied modality (first one on ties)."""
    return int(np.argmin(shares))


def _check_uncertainty(kind: str) -> None:
    if kind not in ("entropy", "margin"):
        raise QueryError(f"uncertainty must be 'entropy' or 'margin', got {kind!r}")


@register
class UnderreliedUncertainty(ScoringStrategy):
    """Uncertainty of the under-relied modality's own head, mixed in as far as the model is imbalanced.

    Idea: when the model neglects modality ``w`` (the least-relied one), items on which ``w``'s own
    head is uncertain are where labels teach ``w`` most; when the model is balanced, this reduces to
    plain fused uncertainty.

        w_mix    = clip(gain * (max_k share_k - min_k share_k), 0, 1)
        score_i  = (1 - w_mix) * U_fused(i) + w_mix * U_weak(i) * present_weak(i)

    U = normalised entropy (default) or margin uncertainty; ``present_weak`` zeroes the weak head's
    uncertainty where the item lacks that modality (that head only sees the absent embedding there).
    With M > 2 modalities the least-relied one is used. Multi-label: U of the per-class sigmoids
    (:func:`normalized_uncertainty`), shares from the Shapley values of the predicted label set.
    """

    name = "underrelied_uncertainty"
    description = "fused uncertainty mixed with the least-relied modality's head uncertainty, weighted by imbalance"
    family = "multimodal"
    origin = "ours"
    multi_label = True

    def __init__(self, uncertainty: Uncertainty = "entropy", sample: int = 512, gain: float = 1.0) -> None:
        _check_uncertainty(uncertainty)
        if sample <= 0:
            raise QueryError(f"sample must be positive, got {sample}")
        if gain < 0:
            raise QueryError(f"gain must be non-negative, got {gain}")
        self.uncertainty = uncertainty
        self.sample = sample
        self.gain = gain
        self.info: dict[str, Any] = {}

    @staticmethod
    def mix_weight(shares: np.ndarray, gain: float = 1.0) -> float:
        """w_mix = clip(gain * (max share - min share), 0, 1): 0 for a balanced model."""
        return float(np.clip(gain * imbalance(np.asarray(shares)), 0.0, 1.0))

    def score(self, model: ActiveModel, dataset: MultimodalDataset, pool: Pool, *, seed: int) -> np.ndarray:
        names = list(model.modality_names)
        shares = reliance_shares(model, dataset, pool, sample=self.sample, seed=seed)
        k = _weak(shares)
        w = self.mix_weight(shares, self.gain)
        pred = model.predict(dataset, pool.unlabeled)
        multi = is_multi_label(model)
        u_fused = normalized_uncertainty(pred.probs, self.uncertainty, multi)
        present = pred.masks[names[k]].to(u_fused.dtype)
        u_weak = normalized_uncertainty(pred.unimodal_probs[names[k]], self.uncertainty, multi) * present
        self.info = {"shares": dict(zip(names, shares.tolist())), "weak": names[k], "weight": w}
        return ((1.0 - w) * u_fused + w * u_weak).double().cpu().numpy()


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """(n,) Jensen-Shannon divergence (nats, in [0, log 2]) between rows of p and q."""
    m = 0.5 * (p + q)
    eps = 1e-12

    def kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * (torch.log(a.clamp_min(eps)) - torch.log(b.clamp_min(eps)))).sum(dim=1)

    return (0.5 * kl(p, m) + 0.5 * kl(q, m)).clamp_min(0.0)


def binary_js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """(n,) mean over classes of the Jensen-Shannon divergence between Bernoulli(p_c) and Bernoulli(q_c)."""
    n, c = p.shape
    pp = torch.stack([p, 1 - p], dim=2).reshape(n * c, 2)
    qq = torch.stack([q, 1 - q], dim=2).reshape(n * c, 2)
    return js_divergence(pp, qq).view(n, c).mean(dim=1)


@register
class HeadDisagreement(ScoringStrategy):
    """Disagreement between each modality's own head and the fused prediction.

    Idea: where a unimodal head disagrees with the fused prediction the modalities tell different
    stories (the fused model may be overriding a neglected modality, or one modality is misleading):
    the label resolves a conflict that pure fused uncertainty does not see (a confident fused
    prediction can still contradict a head).

        D_i     = sum_k present_ik * JS(p_k(i), p_fused(i)) / (log 2 * max(1, sum_k present_ik))
        score_i = D_i + tie * H(p_fused(i)) / log C

    JS in nats divided by log 2 lies in [0, 1]; absent modalities are skipped (their head only sees
    the absent embedding); ``tie`` (default 1e-3) breaks ties among agreeing items by fused entropy.
    Multi-label: JS is the mean over classes of the per-class Bernoulli JS, H the mean binary entropy.
    """

    name = "head_disagreement"
    description = "mean Jensen-Shannon divergence between present unimodal heads and the fused prediction"
    family = "multimodal"
    origin = "ours"
    multi_label = True

    def __init__(self, tie: float = 1e-3) -> None:
        if tie < 0:
            raise QueryError(f"tie must be non-negative, got {tie}")
        self.tie = tie

    def score(self, model: ActiveModel, dataset: MultimodalDataset, pool: Pool, *, seed: int) -> np.ndarray:
        pred = model.predict(dataset, pool.unlabeled)
        fused = pred.probs
        multi = is_multi_label(model)
        js = binary_js_divergence if multi else js_divergence
        total = torch.zeros(fused.shape[0], dtype=torch.float64, device=fused.device)
        count = torch.zeros_like(total)
        for k in model.modality_names:
            present = pred.masks[k].to(torch.float64)
            total += present * js(pred.unimodal_probs[k], fused).double()
            count += present
        d = total / (math.log(2.0) * count.clamp_min(1.0))
        return (d + self.tie * normalized_uncertainty(fused, "entropy", multi).double()).cpu().numpy()


def missing_excess(u: np.ndarray, presence: np.ndarray, yhat: np.ndarray, shrink: float = 5.0) -> np.ndarray:
    """(n,) estimated uncertainty that is explained by missing modalities (0 for complete items).

    For the group g = (presence pattern, predicted class) of item i:
        raw_g  = mean_{j in g} U_j - mean_{j complete, yhat_j = yhat_i} U_j
        raw_p  = mean_{j with pattern p} U_j - mean_{j complete} U_j        (pattern-level fallback)
        excess = max(0, (n_g * raw_g + shrink * raw_p) / (n_g + shrink))
    i.e. per-class estimates shrunk towards the pattern-level one. When no complete item exists the
    fraction of modalities present is used instead: excess_i = U_i * (1 - present_i / M).
    """
    n, m = presence.shape
    out = np.zeros(n, dtype=np.float64)
    if n == 0:
        return out
    complete = presence.all(axis=1)
    if not complete.any():
        return u * (1.0 - presence.sum(axis=1) / m)
    ref_all = float(u[complete].mean())
    codes = presence.astype(np.int64) @ (1 << np.arange(m, dtype=np.int64))
    for code in np.unique(codes):
        in_p = codes == code
        if complete[in_p].all():
            continue  # complete items explain nothing by absence
        raw_p = float(u[in_p].mean()) - ref_all
        for c in np.unique(yhat[in_p]):
            g = in_p & (yhat == c)
            ref_c = complete & (yhat == c)
            ref = float(u[ref_c].mean()) if ref_c.any() else ref_all
            n_g = float(g.sum())
            raw_g = float(u[g].mean()) - ref
            out[g] = max(0.0, (n_g * raw_g + shrink * raw_p) / (n_g + shrink))
    return out


@register
class MissingAware(QueryStrategy):
    """Fused margin with the missing-modality part discounted, plus a quota for the weak modality.

    Idea: (1) an item lacking a modality looks uncertain partly because information is absent, and a
    label does not make that part go away; discount it. (2) Labels that teach the neglected modality
    come from items that *have* it and on which its own head is unsure.

        U_adj(i) = U_margin_fused(i) - excess(i)                      (see :func:`missing_excess`)
        q        = clip(max share - min share, q_min, q_max)          (imbalance, bounded)
        n_weak   = min(round(q * n), #unlabelled items having the weak modality)
        batch    = the n_weak items *having* the weak modality with the lowest weak-head margin,
                   then the n - n_weak remaining items with the highest U_adj.

    The two lists are interleaved by relative rank, so any prefix of the batch keeps roughly the
    quota. ``scores``: selected items rank first in batch order (values in (1, 2]), the rest by U_adj.
    """

    name = "missing_aware"
    description = "missing-discounted fused margin plus an imbalance-sized quota of weak-modality low-margin items"
    family = "multimodal"
    origin = "ours"

    def __init__(self, q_min: float = 0.0, q_max: float = 0.5, sample: int = 512, shrink: float = 5.0) -> None:
        if not 0.0 <= q_min <= q_max <= 1.0:
            raise QueryError(f"need 0 <= q_min <= q_max <= 1, got q_min={q_min}, q_max={q_max}")
        if sample <= 0:
            raise QueryError(f"sample must be positive, got {sample}")
        if shrink < 0:
            raise QueryError(f"shrink must be non-negative, got {shrink}")
        self.q_min, self.q_max, self.sample, self.shrink = q_min, q_max, sample, shrink
        self.info: dict[str, Any] = {}

    def select(self, model: ActiveModel, dataset: MultimodalDataset, pool: Pool, n: int, *, seed: int) -> QueryResult:
        names = list(model.modality_names)
        unl = pool.unlabeled
        shares = reliance_shares(model, dataset, pool, sample=self.sample, seed=seed)
        k = _weak(shares)
        q = float(np.clip(imbalance(shares), self.q_min, self.q_max))
        pred = model.predict(dataset, unl)
        u = normalized_uncertainty(pred.probs, "margin").double().cpu().numpy()
        presence = np.stack([pred.masks[name].cpu().numpy() for name in names], axis=1)
        yhat = pred.probs.argmax(1).cpu().numpy()
        u_adj = u - missing_excess(u, presence, yhat, self.shrink)
        has_weak = presence[:, k]
        u_weak = normalized_uncertainty(pred.unimodal_probs[names[k]], "margin").double().cpu().numpy()

        n_weak = min(int(round(q * n)), int(has_weak.sum()))
        cand = np.flatnonzero(has_weak)
        weak_pos = cand[np.lexsort((unl[cand], -u_weak[cand]))][:n_weak]  # lowest weak margin, then index
        rest = np.ones(unl.size, dtype=bool)
        rest[weak_pos] = False
        cand = np.flatnonzero(rest)
        fused_pos = cand[np.lexsort((unl[cand], -u_adj[cand]))][: n - n_weak]

        # interleave by relative rank (r + 0.5) / len(list); weak list first on exact ties
        keys = np.concatenate([(np.arange(weak_pos.size) + 0.5) / max(weak_pos.size, 1),
                               (np.arange(fused_pos.size) + 0.5) / max(fused_pos.size, 1)])
        src = np.concatenate([np.zeros(weak_pos.size), np.ones(fused_pos.size)])
        pos = np.concatenate([weak_pos, fused_pos])
        order = pos[np.lexsort((src, keys))]

        scores = u_adj.copy()
        scores[order] = 2.0 - np.arange(order.size) / max(order.size, 1)
        self.info = {"shares": dict(zip(names, shares.tolist())), "weak": names[k], "quota": q, "n_weak": int(n_weak),
                     "weak_indices": unl[weak_pos].tolist()}
        return QueryResult(unl[order], scores, unl)


def modality_outliers(pred_embeddings: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], names: list[str], *,
                      k: int = 10, z: float = 3.0) -> np.ndarray:
    """(n, M) bool: item i's copy of modality m is an outlier in m's embedding space.

    Why: a corrupted or out-of-distribution view makes an item look uncertain, but a label cannot
    teach the model to read noise (the "collective outliers" that sink uncertainty sampling in VQA,
    Karamcheti et al. 2021). Per modality, over the items that have it:

        d_i = mean distance to the k nearest other items in m's embedding (chunked, exact)
        z_i = (log d_i - median log d) / (1.4826 * MAD(log d))          (robust z-score)
        outlier_im = z_i > z

    Absent copies are never outliers (their embedding is the learned absent vector).
    """
    n = next(iter(masks.values())).shape[0]
    out = np.zeros((n, len(names)), dtype=bool)
    for j, name in enumerate(names):
        present = masks[name].cpu().numpy().astype(bool)
        pos = np.flatnonzero(present)
        if pos.size <= max(k, 2) + 1:
            continue
        e = pred_embeddings[name][torch.as_tensor(pos, device=pred_embeddings[name].device)].float()
        d = knn_mean_distance(e, k).double().cpu().numpy()
        ld = np.log(np.maximum(d, 1e-12))
        med = float(np.median(ld))
        mad = float(np.median(np.abs(ld - med))) * 1.4826
        if mad <= 1e-12:
            continue
        out[pos[(ld - med) / mad > z], j] = True
    return out


def within_group_rank(u: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """(n,) percentile of ``u`` inside each item's group, in (0, 1] (1 = the group's most uncertain).

    Ranking the pool by it and taking the top n gives every group about its pool share of the batch,
    each filled with that group's most uncertain items.
    """
    r = np.empty(u.size, dtype=np.float64)
    for g in np.unique(groups):
        pos = np.flatnonzero(groups == g)
        order = pos[np.argsort(u[pos], kind="stable")]
        r[order] = (np.arange(1, pos.size + 1)) / pos.size
    return r


def presence_and_outliers(pred: Any, names: list[str], *, outlier_z: float | None,
                          k: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, M) bool presence and (n, M) bool outlying copies (:func:`modality_outliers`; none if ``outlier_z`` is None)."""
    presence = np.stack([pred.masks[m].cpu().numpy().astype(bool) for m in names], axis=1)
    if outlier_z is None:
        return presence, np.zeros_like(presence)
    n = presence.shape[0]
    return presence, modality_outliers(pred.embeddings, pred.masks, names, k=min(k, max(1, n - 2)), z=outlier_z)


def _check_reducible(outlier_z: float | None, k: int, quota: Any, q_max: float, sample: int) -> None:
    """The parameter checks shared by ``reducible_margin`` and ``ReducibleBadge``."""
    if outlier_z is not None and outlier_z <= 0:
        raise QueryError(f"outlier_z must be positive or None, got {outlier_z}")
    if k < 1:
        raise QueryError(f"k must be >= 1, got {k}")
    if quota != "auto" and not (isinstance(quota, (int, float)) and 0.0 <= quota <= 1.0):
        raise QueryError(f"quota must be 'auto' or in [0, 1], got {quota!r}")
    if not 0.0 <= q_max <= 1.0:
        raise QueryError(f"q_max must be in [0, 1], got {q_max}")
    if sample <= 0:
        raise QueryError(f"sample must be positive, got {sample}")


def weak_quota_picks(model: ActiveModel, dataset: MultimodalDataset, pool: Pool, pred: Any, presence: np.ndarray,
                     bad: np.ndarray, n: int, *, quota: float | Literal["auto"], q_max: float, sample: int,
                     seed: int) -> tuple[np.ndarray, float, str | None]:
    """Positions (into ``pool.unlabeled``) of the weak-modality quota, the share q and the weak modality.

        q = min(q_max, (max_k share_k - min_k share_k) / 2)   (quota="auto"; Shapley reliance shares)
        picks = round(q n) items *having* the least-relied modality w and not ``bad``, with the most
                uncertain w head (1 - margin of p_w; ties by dataset index)

    Why: the neglected modality learns from items that have it and that its own head finds hard.
    """
    if not (quota == "auto" or quota > 0):
        return np.zeros(0, dtype=np.int64), 0.0, None
    names = list(model.modality_names)
    unl = pool.unlabeled
    shares = reliance_shares(model, dataset, pool, sample=sample, seed=seed)
    q = min(q_max, imbalance(shares) / 2.0) if quota == "auto" else float(quota)
    if q <= 0:
        return np.zeros(0, dtype=np.int64), q, None
    w = _weak(shares)
    u_weak = normalized_uncertainty(pred.unimodal_probs[names[w]], "margin").double().cpu().numpy()
    cand = np.flatnonzero(presence[:, w] & ~bad)
    n_weak = min(int(round(q * n)), cand.size)
    return cand[np.lexsort((unl[cand], -u_weak[cand]))][:n_weak], q, names[w]


@register
class ReducibleMargin(QueryStrategy):
    """Fused margin restricted to *reducible* uncertainty: stratified by presence pattern, outliers last.

    Idea: plain uncertainty sampling in multimodal pools chases items whose uncertainty a label
    cannot remove: items lacking a modality (their missing information stays missing) and items
    whose copy of a modality is corrupted (noise cannot be learned). Both are visible without labels:
    the presence mask, and an outlying embedding in that modality (:func:`modality_outliers`).

        u_i   = 1 - (p_(1) - p_(2))                           fused margin uncertainty
        g_i   = presence pattern of i (which modalities it has)
        r_i   = percentile of u_i among unlabelled items with pattern g_i  (:func:`within_group_rank`)
        o_i   = 1 if any present modality of i is an outlier, else 0
        key_i = r_i - 2 o_i           (stratify=True; key_i = u_i - 2 o_i otherwise)

    Then a quota share ``q`` of the batch goes first to the non-outlier items *having* the
    least-relied modality ``w`` with the most uncertain ``w`` head (1 - margin of p_w), so the
    neglected modality gets labels that teach it (the weak-modality quota of ``missing_aware``):

        q = min(q_max, (max_k share_k - min_k share_k) / 2)    (quota="auto"; shares: Shapley reliance)

    so a balanced model (synergy, redundancy, balanced) spends almost nothing on it, and a model
    leaning 0.75/0.25 on one modality spends q_max = 0.25. With complete data, no outliers and
    ``quota=0`` this is exactly margin sampling. ``scores``: the key (higher = query sooner); quota
    picks get key + 4.
    """

    name = "reducible_margin"
    description = "fused margin stratified by presence pattern, with outlying (corrupted) modality copies last"
    family = "multimodal"
    origin = "ours"

    def __init__(self, stratify: bool = True, outlier_z: float | None = 3.0, k: int = 10,
                 quota: float | Literal["auto"] = "auto", q_max: float = 0.25, sample: int = 512,
                 outliers: Literal["last", "absent"] = "last") -> None:
        if outliers not in ("last", "absent"):
            raise QueryError(f"outliers must be 'last' or 'absent', got {outliers!r}")
        _check_reducible(outlier_z, k, quota, q_max, sample)
        self.outliers = outliers
        self.q_max = q_max
        self.stratify, self.outlier_z, self.k, self.quota, self.sample = stratify, outlier_z, k, quota, sample
        self.info: dict[str, Any] = {}

    def select(self, model: ActiveModel, dataset: MultimodalDataset, pool: Pool, n: int, *, seed: int) -> QueryResult:
        names = list(model.modality_names)
        unl = pool.unlabeled
        pred = model.predict(dataset, unl)
        u = normalized_uncertainty(pred.probs, "margin").double().cpu().numpy()
        presence, outl = presence_and_outliers(pred, names, outlier_z=self.outlier_z, k=self.k)
        if self.outliers == "absent":  # an outlying copy counts as a missing one: its own stratum
            eff = presence & ~outl
            bad = ~eff.any(axis=1)  # only items with no usable modality at all go last
        else:
            eff = presence
            bad = outl.any(axis=1)
        groups = eff.astype(np.int64) @ (1 << np.arange(len(names), dtype=np.int64))
        key = (within_group_rank(u, groups) if self.stratify else u) - 2.0 * bad
        chosen = np.zeros(unl.size, dtype=bool)
        pick, q, weak_name = weak_quota_picks(model, dataset, pool, pred, presence, bad, n, quota=self.quota,
                                              q_max=self.q_max, sample=self.sample, seed=seed)
        key[pick] += 4.0
        chosen[pick] = True
        order = np.lexsort((unl, -key))[:n]
        self.info = {"n_outliers": int(bad.sum()), "outlier_rate": outl.mean(axis=0).tolist(), "weak": weak_name,
                     "quota": q, "n_quota": int(chosen.sum())}
        return QueryResult(unl[order], key, unl)


class ReducibleBadge(QueryStrategy):
    """BADGE restricted to reducible uncertainty: outlying (corrupted) modality copies last.

    Idea: ``reducible_margin`` showed that skipping corrupted copies is what wins on noisy pools, and
    its margin base is what loses elsewhere to diversity-seeking baselines (BADGE, core-set). So keep
    BADGE's k-means++ on hallucinated gradients for everything it does well and take from the
    modality-aware side only the two ideas that are visible without labels:

        o_i   = 1 if any present modality of i is an outlier (:func:`modality_outliers`, robust z > z)
        C     = {i unlabelled : o_i = 0}                 candidates; the rest only fill a short batch
        q     = quota share for the least-relied modality w (``quota``: 0, a share, or "auto" =
                min(q_max, imbalance / 2) as in ``reducible_margin``)
        batch = round(q n) items of C having w with the most uncertain w head (1 - margin of p_w),
                then k-means++ D^2 seeding on g_i = (p_i - onehot(argmax p_i)) (x) z_i over the rest
                of C (the first pick the largest norm, as BADGE), then outliers by fused margin.

    With no outliers and ``quota=0`` this is exactly BADGE (same picks, same seed). ``scores``: gradient
    norms minus 2 for outliers (a sensible order beyond the batch).

    Not in the registry: on the development seeds it beat neither ``reducible_margin`` nor the best
    baseline by a reliable margin (docs/modality_aware.md); ``studies/variants.py`` runs its variants.
    """

    name = "reducible_badge"
    description = "BADGE over non-outlying items, with corrupted modality copies last (and an optional weak quota)"
    family = "multimodal"
    origin = "ours"

    def __init__(self, outlier_z: float | None = 3.0, k: int = 10, quota: float | Literal["auto"] = 0.0,
                 q_max: float = 0.25, sample: int = 512) -> None:
        _check_reducible(outlier_z, k, quota, q_max, sample)
        self.outlier_z, self.k, self.quota, self.q_max, self.sample = outlier_z, k, quota, q_max, sample
        self.info: dict[str, Any] = {}

    def select(self, model: ActiveModel, dataset: MultimodalDataset, pool: Pool, n: int, *, seed: int) -> QueryResult:
        names = list(model.modality_names)
        unl = pool.unlabeled
        pred = model.predict(dataset, unl)
        presence, outl = presence_and_outliers(pred, names, outlier_z=self.outlier_z, k=self.k)
        bad = outl.any(axis=1)
        emb = FactoredEmbedding.badge(pred.probs, [pred.fused_embedding])
        norms = np.sqrt(emb.sq_norms.detach().double().cpu().numpy())

        quota_pick, q, weak_name = weak_quota_picks(model, dataset, pool, pred, presence, bad, n, quota=self.quota,
                                                    q_max=self.q_max, sample=self.sample, seed=seed)
        picked: list[np.ndarray] = [quota_pick]
        taken = np.zeros(unl.size, dtype=bool)
        taken[quota_pick] = True
        rest = np.flatnonzero(~bad & ~taken)
        n_div = min(n - int(taken.sum()), rest.size)
        if n_div > 0:
            rows = torch.as_tensor(rest, device=emb.a.device)
            sub = FactoredEmbedding(emb.a[rows], [emb.z[rows]])  # the same rows of the pool's embedding
            gen = torch.Generator().manual_seed(int(seed))
            picks = kmeanspp_seeding(sub, n_div, gen, first="max_norm").cpu().numpy().astype(np.int64)
            picked.append(rest[picks])
            taken[rest[picks]] = True
        n_fill = n - int(taken.sum())
        if n_fill > 0:  # a short batch: the outliers, most uncertain first
            u = normalized_uncertainty(pred.probs, "margin").double().cpu().numpy()
            left = np.flatnonzero(~taken)
            picked.append(left[np.lexsort((unl[left], -u[left]))][:n_fill])
        order = np.concatenate(picked)
        self.info = {"n_outliers": int(bad.sum()), "weak": weak_name, "quota": q, "n_quota": int(quota_pick.size)}
        return QueryResult(unl[order], norms - 2.0 * bad, unl)
