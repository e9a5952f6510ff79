"""Synthetic multimodal scenarios, each isolating one pitfall of multimodal active learning.

Why a generative model with a known posterior: the benchmark must say *how much* each modality can
tell, not guess it. Every scenario is one instance of the same process, so ground truth is the
Bayes-optimal accuracy of that process, estimated by Monte Carlo on fresh samples with the *true*
posterior (not a learned model; no training noise, only sampling error of about 0.2 %):

- a discrete latent cell ``k ~ prior`` fixes the label ``y = label[k]``;
- each modality ``m`` sees a low-dimensional latent ``z_m = mu_m[k] + a * s + sigma_m * e_m``
  (``s`` shared across modalities, only for ``redundancy``; ``e_m`` its own noise), padded with
  class-free nuisance dimensions and rotated by a random orthogonal matrix into ``dims`` features;
- a share of items may carry a corrupted copy of a modality (heavy extra noise on every dimension);
- presence patterns are drawn given the class: missing completely at random (MCAR) or not at random
  (MNAR, absence correlated with the class).

Named scenarios (``list_scenarios``): ``balanced``, ``difficulty``, ``redundancy``, ``uniqueness``,
``synergy``, ``noisy_modality``, ``missing_{mcar,mnar}_{10,30,50}`` and combinations written
``base+modifier`` (e.g. ``difficulty+missing_mnar_30``, ``synergy+noisy``). Same name, parameters
and seed give the same data, bit for bit.

Multi-label (``multilabel``, :func:`is_multi_label`): the cell fixes a *label set* instead of a class
(some tags decided by modality ``a`` alone, some by ``b`` alone, some only by both). The Bayes-optimal
predictor is then the most probable label set, so ground truth (``informativeness``) is a subset
accuracy, the same quantity the diagnostics measure for the model's heads; the per-class accuracies of
those predictions are in ``params["class_informativeness"]``.

Real datasets (``list_scenarios(real=True)``): ``emoji`` (image + text), ``emoji_tags`` (the same emojis
with label sets, multi-label) and ``mfeat`` (two feature views of handwritten digits) are replayed with
the same simulated oracle, optionally with injected missing modalities (``emoji+missing_mnar_30``). So
is a researcher's own file: a scenario whose base is a file name (``mine.jsonl``,
``export.json+missing_mcar_30``) is the dataset that the ``own_data`` parameter's spec of that name
describes (:mod:`connectors.own_data`). Their informativeness is *estimated* (see
:func:`make_real_scenario`), not ground truth.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import sys
import tempfile
import zlib
from dataclasses import dataclass, field
from itertools import product
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from backend.data import UNLABELED, DataError, MultimodalDataset
from backend.models.fusion import FusionConfig
from backend.models.trainer import TrainConfig, train_model
from benchmark.scores import hits, predicted_labels
from connectors.own_data import is_own_data_name

MODALITY_NAMES = ("a", "b", "c", "d", "e", "f")
DEFAULT_MC_SAMPLES = 40_000
_CHUNK = 4096


# ----------------------------------------------------------------------------------------------
# The generative process
# ----------------------------------------------------------------------------------------------
@dataclass
class ModalityProcess:
    """One modality: latent cell means ``(K, p)``, own noise, and the rotation into ``dim`` features."""

    name: str
    dim: int
    means: np.ndarray
    sigma: float
    rotation: np.ndarray  # (dim, dim) orthogonal: features = [z, nuisance] @ rotation

    @property
    def latent_dim(self) -> int:
        """Dimensions that carry class information (the rest are nuisance)."""
        return int(self.means.shape[1])


@dataclass
class Process:
    """The full generating process of a scenario (see the module docstring)."""

    n_classes: int  # label values: classes, or for multi-label the distinct label sets (rows of label_sets)
    cell_prior: np.ndarray  # (K,)
    cell_label: np.ndarray  # (K,) int: the label value of each cell
    mods: list[ModalityProcess]
    shared: float = 0.0  # std of the shared latent noise s (requires equal latent dims)
    nuisance: float = 1.0  # std of the class-free padding dimensions
    corrupt_rate: np.ndarray | None = None  # (M,) share of items whose copy of m is corrupted
    corrupt_sigma: float = 5.0  # std of the corruption noise added to every dimension
    patterns: np.ndarray | None = None  # (P, M) bool presence patterns
    pattern_probs: np.ndarray | None = None  # (C, P) P(pattern | y)
    label_sets: np.ndarray | None = None  # (C, n_tags) 0/1: each label value's set (multi-label only)

    def __post_init__(self) -> None:
        m = len(self.mods)
        if self.corrupt_rate is None:
            self.corrupt_rate = np.zeros(m)
        if self.patterns is None:
            self.patterns = np.ones((1, m), dtype=bool)
            self.pattern_probs = np.ones((self.n_classes, 1))
        if self.shared > 0 and len({md.latent_dim for md in self.mods}) != 1:
            raise DataError("a shared latent needs every modality to have the same latent dimension")
        for md in self.mods:
            if md.latent_dim > md.dim:
                raise DataError(f"modality '{md.name}' needs at least {md.latent_dim} dimensions, got {md.dim}")

    @property
    def names(self) -> list[str]:
        """Modality names in order."""
        return [md.name for md in self.mods]

    def labels_of(self, values: np.ndarray) -> np.ndarray:
        """Dataset labels of label values: the classes themselves, or their (n, n_tags) label sets."""
        return values if self.label_sets is None else self.label_sets[values]

    def sample(self, n: int, rng: np.random.Generator) -> dict[str, Any]:
        """Draw ``n`` items: features, masks, labels, and the hidden truth (cells, corruption)."""
        k = rng.choice(len(self.cell_prior), size=n, p=self.cell_prior)
        y = self.cell_label[k]
        s = rng.standard_normal((n, self.mods[0].latent_dim)) if self.shared > 0 else None
        feats: dict[str, np.ndarray] = {}
        corrupted = np.zeros((n, len(self.mods)), dtype=bool)
        for j, md in enumerate(self.mods):
            z = md.means[k] + md.sigma * rng.standard_normal((n, md.latent_dim))
            if s is not None:
                z = z + self.shared * s
            nu = self.nuisance * rng.standard_normal((n, md.dim - md.latent_dim))
            lat = np.concatenate([z, nu], axis=1)
            corrupted[:, j] = rng.random(n) < self.corrupt_rate[j]
            noise = self.corrupt_sigma * rng.standard_normal((n, md.dim))
            lat = np.where(corrupted[:, j:j + 1], lat + noise, lat)
            feats[md.name] = (lat @ md.rotation).astype(np.float32)
        # presence pattern given the class
        cum = np.cumsum(self.pattern_probs[y], axis=1)
        u = rng.random(n)[:, None]
        pat = np.minimum((u >= cum).sum(axis=1), len(self.patterns) - 1)
        present = self.patterns[pat]
        masks = {md.name: present[:, j].copy() for j, md in enumerate(self.mods)}
        for j, md in enumerate(self.mods):
            feats[md.name][~present[:, j]] = 0.0
        return {"features": feats, "masks": masks, "y": y.astype(np.int64), "cell": k, "corrupted": corrupted}

    # --- the Bayes-optimal classifier ------------------------------------------------------------
    def bayes_predict(self, features: dict[str, np.ndarray], masks: dict[str, np.ndarray],
                      use: Sequence[str] | None = None) -> np.ndarray:
        """Bayes-optimal labels from the modalities in ``use`` (default all) and their presence.

        The posterior is exact for this process: it sums over latent cells and corruption states and
        includes what the presence pattern itself says about the class (MNAR).
        """
        use_idx = [j for j, md in enumerate(self.mods) if use is None or md.name in use]
        if not use_idx:
            raise DataError(f"use={use!r} names no modality of {self.names}")
        n = len(next(iter(features.values())))
        pres = np.stack([np.asarray(masks[self.mods[j].name], dtype=bool) for j in use_idx], axis=1)
        # P(observed presence of the used modalities | y): marginalise the other modalities' presence
        sub = self.patterns[:, use_idx]
        log_prior_k = np.log(np.maximum(self.cell_prior, 1e-300))
        out = np.empty(n, dtype=np.int64)
        codes = pres @ (1 << np.arange(len(use_idx)))
        for code in np.unique(codes):
            rows = np.flatnonzero(codes == code)
            obs = pres[rows[0]]
            agree = (sub == obs).all(axis=1)
            p_obs_y = self.pattern_probs[:, agree].sum(axis=1)  # (C,)
            present_j = [j for j, o in zip(use_idx, obs) if o]
            for start in range(0, rows.size, _CHUNK):
                r = rows[start:start + _CHUNK]
                ll = self._loglik(features, r, present_j)  # (n_r, K)
                lp = ll + log_prior_k
                per_class = np.full((r.size, self.n_classes), -np.inf)
                for c in range(self.n_classes):
                    sel = self.cell_label == c
                    if sel.any():
                        per_class[:, c] = _logsumexp(lp[:, sel], axis=1)
                per_class = per_class + np.log(np.maximum(p_obs_y, 1e-300))
                out[r] = per_class.argmax(axis=1)
        return out

    def _loglik(self, features: dict[str, np.ndarray], rows: np.ndarray, present_j: list[int]) -> np.ndarray:
        """log p(x_P | k) for the present modalities P, marginalised over corruption, up to a constant."""
        k = len(self.cell_prior)
        if not present_j:
            return np.zeros((rows.size, k))
        lats = []
        for j in present_j:
            md = self.mods[j]
            lat = features[md.name][rows].astype(np.float64) @ md.rotation.T
            lats.append((lat[:, :md.latent_dim], lat[:, md.latent_dim:]))
        corr_j = [i for i, j in enumerate(present_j) if self.corrupt_rate[j] > 0]
        terms = []
        for state in product((0, 1), repeat=len(corr_j)):
            c = np.zeros(len(present_j), dtype=bool)
            c[corr_j] = np.asarray(state, dtype=bool)
            log_pc = sum(math.log(self.corrupt_rate[present_j[i]] if c[i] else 1 - self.corrupt_rate[present_j[i]])
                         for i in corr_j)
            extra = self.corrupt_sigma ** 2
            b2 = np.array([self.mods[j].sigma ** 2 + (extra if c[i] else 0.0) for i, j in enumerate(present_j)])
            ll = np.full((rows.size, k), float(log_pc), dtype=np.float64)
            # class-free nuisance dims: only their variance depends on the corruption state
            for i, j in enumerate(present_j):
                nu = lats[i][1]
                if nu.shape[1]:
                    v = self.nuisance ** 2 + (extra if c[i] else 0.0)
                    ll += (-0.5 * ((nu ** 2).sum(axis=1) / v + nu.shape[1] * math.log(v)))[:, None]
            if self.shared > 0:
                a2 = self.shared ** 2
                denom = 1.0 + a2 * float((1.0 / b2).sum())
                p = self.mods[0].latent_dim
                sq = np.zeros((rows.size, k))
                lin = np.zeros((rows.size, k, p))
                for i, j in enumerate(present_j):
                    r = lats[i][0][:, None, :] - self.mods[j].means[None, :, :]
                    sq += (r ** 2).sum(axis=2) / b2[i]
                    lin += r / b2[i]
                quad = sq - a2 * (lin ** 2).sum(axis=2) / denom
                logdet = p * (float(np.log(b2).sum()) + math.log(denom))
                ll += -0.5 * (quad + logdet)
            else:
                for i, j in enumerate(present_j):
                    md = self.mods[j]
                    z = lats[i][0]
                    d2 = ((z ** 2).sum(axis=1)[:, None] - 2 * z @ md.means.T + (md.means ** 2).sum(axis=1)[None, :])
                    ll += -0.5 * (d2 / b2[i] + md.latent_dim * math.log(b2[i]))
            terms.append(ll)
        return _logsumexp(np.stack(terms, axis=0), axis=0)


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(a - m), axis=axis))


# ----------------------------------------------------------------------------------------------
# Geometry helpers
# ----------------------------------------------------------------------------------------------
def _simplex(n_points: int, rng: np.random.Generator, dim: int | None = None) -> np.ndarray:
    """``n_points`` equidistant means (orthonormal directions, pairwise distance sqrt 2)."""
    dim = dim or max(n_points, 2)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q[:n_points].copy() if n_points > 1 else np.zeros((1, dim))


def _rotation(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))[None, :]


def _bayes_acc_isotropic(means: np.ndarray, prior: np.ndarray, labels: np.ndarray, sigma: float,
                         cells: np.ndarray, noise: np.ndarray) -> float:
    """Bayes accuracy of one isotropic-Gaussian modality with common random numbers (for calibration)."""
    z = means[cells] + sigma * noise
    d2 = (z ** 2).sum(1)[:, None] - 2 * z @ means.T + (means ** 2).sum(1)[None, :]
    lp = -0.5 * d2 / sigma ** 2 + np.log(prior)[None, :]
    n_lab = int(labels.max()) + 1
    per = np.stack([_logsumexp(lp[:, labels == c], axis=1) if (labels == c).any() else np.full(len(z), -np.inf)
                    for c in range(n_lab)], axis=1)
    return float((per.argmax(1) == labels[cells]).mean())


_CALIBRATION_MEMO: dict[bytes, float] = {}


def _canonical(means: np.ndarray) -> np.ndarray:
    """The means in a frame that does not depend on their rotation: R^T from the QR of means^T
    (positive diagonal), rounded so float noise of the rotation cannot change the result."""
    _, r = np.linalg.qr(np.asarray(means, dtype=np.float64).T)
    sign = np.sign(np.diag(r))
    sign[sign == 0] = 1.0
    return np.round((r * sign[:, None]).T, 10) + 0.0  # + 0.0 turns -0.0 into 0.0


def calibrate_sigma(means: np.ndarray, prior: np.ndarray, labels: np.ndarray, target: float, n: int = 20_000) -> float:
    """The noise std at which a modality with these cell means reaches Bayes accuracy ``target``.

    Why: scenarios are specified by how informative each modality is (e.g. 70 % vs 95 %), not by
    an opaque noise level. Bisection on log sigma with common random numbers (monotone, smooth).
    The answer depends only on the geometry of the means up to rotation, the prior, labels and
    target, so it is computed in a canonical frame with its own fixed random stream and memoised:
    every seed of a scenario gets the same noise level, in any process, in any order.
    """
    labels = np.asarray(labels)
    prior = np.asarray(prior, dtype=np.float64)
    n_lab = int(labels.max()) + 1
    best_possible = float(np.bincount(labels, weights=prior, minlength=n_lab).max())
    if not best_possible < target < 1.0:
        raise DataError(f"target accuracy {target} must lie between {best_possible:.3f} (chance) and 1")
    means = _canonical(means)
    key = b"|".join([means.tobytes(), np.round(prior, 12).tobytes(), labels.astype(np.int64).tobytes(),
                     repr((float(target), int(n), means.shape)).encode()])
    hit = _CALIBRATION_MEMO.get(key)
    if hit is not None:
        return hit
    g = np.random.default_rng(zlib.crc32(key))
    cells = g.choice(len(prior), size=n, p=prior)
    noise = g.standard_normal((n, means.shape[1]))
    lo, hi = math.log(1e-3), math.log(1e2)
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        if _bayes_acc_isotropic(means, prior, labels, math.exp(mid), cells, noise) > target:
            lo = mid
        else:
            hi = mid
    sigma = math.exp(0.5 * (lo + hi))
    _CALIBRATION_MEMO[key] = sigma
    return sigma


# ----------------------------------------------------------------------------------------------
# Base structures (what the label is and how each modality sees it)
# ----------------------------------------------------------------------------------------------
@dataclass
class _Structure:
    cell_prior: np.ndarray
    cell_label: np.ndarray
    means: list[np.ndarray]
    sigmas: list[float]
    shared: float = 0.0
    roles: dict[str, str] = field(default_factory=dict)
    class_names: list[str] | None = None  # default class0, class1, ...


def _check_modalities(p: dict, lo: int = 2) -> int:
    m = int(p["n_modalities"])
    if not lo <= m <= len(MODALITY_NAMES):
        raise DataError(f"n_modalities must be in {lo}..{len(MODALITY_NAMES)}, got {m}")
    return m


def _balanced(p: dict, rng: np.random.Generator) -> _Structure:
    c, m = int(p["n_classes"]), _check_modalities(p)
    prior = np.full(c, 1.0 / c)
    labels = np.arange(c)
    means = [_simplex(c, rng) for _ in range(m)]
    sig = [calibrate_sigma(mu, prior, labels, float(p["target"])) for mu in means]
    return _Structure(prior, labels, means, sig, roles={MODALITY_NAMES[j]: "equal" for j in range(m)})


def _difficulty(p: dict, rng: np.random.Generator) -> _Structure:
    c = int(p["n_classes"])
    if int(p["n_modalities"]) != 2:
        raise DataError("difficulty is defined for n_modalities=2 (one easy, one hard modality)")
    g = int(p.get("grid") or c * math.ceil(4 / c))
    if g % c:
        raise DataError(f"grid {g} must be a multiple of n_classes {c} to keep classes balanced")
    ij = np.array(list(product(range(g), range(g))))
    labels = (ij[:, 0] + ij[:, 1]) % c  # diagonal stripes: no linear rule separates them
    k = len(ij)
    prior = np.full(k, 1.0 / k)
    simplex = _simplex(c, rng)
    mean_a = simplex[labels]
    theta = rng.uniform(0, 2 * math.pi)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    mean_b = ((ij - (g - 1) / 2.0) / (g / 2.0)) @ rot.T
    cls_prior = np.full(c, 1.0 / c)
    sig_a = calibrate_sigma(simplex, cls_prior, np.arange(c), float(p["target_easy"]))
    sig_b = calibrate_sigma(mean_b, prior, labels, float(p["target_hard"]))
    return _Structure(prior, labels, [mean_a, mean_b], [sig_a, sig_b], roles={"a": "easy", "b": "hard"})


def _redundancy(p: dict, rng: np.random.Generator) -> _Structure:
    c, m = int(p["n_classes"]), _check_modalities(p)
    rho = float(p["shared_fraction"])
    if not 0.0 < rho < 1.0:
        raise DataError(f"shared_fraction must be in (0, 1), got {rho}")
    prior = np.full(c, 1.0 / c)
    labels = np.arange(c)
    simplex = _simplex(c, rng)
    total = calibrate_sigma(simplex, prior, labels, float(p["target"]))
    # both modalities are views of one noisy latent: each alone is nearly as good as all together
    # a shared latent needs shared latent coordinates: the same means in every modality (each
    # modality's own random rotation into feature space still makes the views look different)
    means = [simplex.copy() for _ in range(m)]
    return _Structure(prior, labels, means, [math.sqrt(1 - rho) * total] * m, shared=math.sqrt(rho) * total,
                      roles={MODALITY_NAMES[j]: "redundant" for j in range(m)})


def _uniqueness(p: dict, rng: np.random.Generator) -> _Structure:
    c = int(p["n_classes"])
    if int(p["n_modalities"]) != 2:
        raise DataError("uniqueness is defined for n_modalities=2")
    ca = next((f for f in range(2, c) if c % f == 0), None)
    if ca is None:
        raise DataError(f"uniqueness splits the label into one factor per modality: n_classes must be composite (e.g. 4, 6), got {c}")
    cb = c // ca
    labels = np.arange(c)
    prior = np.full(c, 1.0 / c)
    sa, sb = _simplex(ca, rng), _simplex(cb, rng)
    t = float(p["target_factor"])
    sig_a = calibrate_sigma(sa, np.full(ca, 1.0 / ca), np.arange(ca), t)
    sig_b = calibrate_sigma(sb, np.full(cb, 1.0 / cb), np.arange(cb), t)
    return _Structure(prior, labels, [sa[labels // cb], sb[labels % cb]], [sig_a, sig_b],
                      roles={"a": f"unique factor of {ca}", "b": f"unique factor of {cb}"})


def _synergy(p: dict, rng: np.random.Generator) -> _Structure:
    c, m = int(p["n_classes"]), _check_modalities(p)
    codes = np.array(list(product(range(c), repeat=m)))
    labels = codes.sum(axis=1) % c  # parity / modular sum across modalities: each alone is at chance
    prior = np.full(len(codes), 1.0 / len(codes))
    simplex = [_simplex(c, rng) for _ in range(m)]
    t = float(p["target_factor"])
    sig = [calibrate_sigma(s, np.full(c, 1.0 / c), np.arange(c), t) for s in simplex]
    return _Structure(prior, labels, [simplex[j][codes[:, j]] for j in range(m)], sig,
                      roles={MODALITY_NAMES[j]: "synergistic" for j in range(m)})


def _multilabel(p: dict, rng: np.random.Generator) -> _Structure:
    """Label sets over ``n_classes`` tags: ``tags_both`` synergistic tags, the rest split between 'a' and 'b'.

    Each modality's latent is a cube: one dimension per bit it carries, at -1/2 or +1/2. Own tags are
    bits of one modality (in the set with probability ``tag_rate``, read by that modality alone with
    Bayes accuracy ``target``); a synergistic tag is the XOR of a fair bit in 'a' and one in 'b', so
    each modality alone is at chance on it. ``rng`` is unused: the geometry is fixed, the rotations
    into feature space differ per seed.
    """
    c = int(p["n_classes"])
    if int(p["n_modalities"]) != 2:
        raise DataError("multilabel is defined for n_modalities=2 (tags of 'a', tags of 'b', tags of both)")
    both = p["tags_both"]
    if isinstance(both, bool) or not isinstance(both, (int, np.integer)) or not 0 <= both <= c:
        raise DataError(f"tags_both must be an integer in 0..n_classes ({c}), got {both!r}")
    rate = float(p["tag_rate"])
    if not 0.0 < rate < 1.0:
        raise DataError(f"tag_rate must be in (0, 1), got {rate}")
    n_a, n_b = -(-(c - both) // 2), (c - both) // 2
    bits = n_a + n_b + 2 * both
    if bits > 12:
        raise DataError(f"multilabel needs 2^{bits} latent cells for {c} tags ({both} synergistic); "
                        "use at most 12 bits (n_classes + tags_both <= 12)")
    codes = np.array(list(product((0, 1), repeat=bits)), dtype=np.int64)
    own, syn_a, syn_b = codes[:, :n_a + n_b], codes[:, n_a + n_b:n_a + n_b + both], codes[:, n_a + n_b + both:]
    bit_rate = np.array([rate] * (n_a + n_b) + [0.5] * (2 * both))
    prior = np.prod(np.where(codes == 1, bit_rate, 1.0 - bit_rate), axis=1)
    labels = np.concatenate([own, syn_a ^ syn_b], axis=1)
    means = [np.concatenate([own[:, :n_a], syn_a], axis=1) - 0.5, np.concatenate([own[:, n_a:], syn_b], axis=1) - 0.5]
    sigma = calibrate_sigma(np.array([[-0.5], [0.5]]), np.array([1.0 - rate, rate]), np.array([0, 1]),
                            float(p["target"]))
    names = [f"tag_a{i}" for i in range(n_a)] + [f"tag_b{i}" for i in range(n_b)] + [f"tag_ab{i}" for i in range(both)]
    syn = ", ".join(names[n_a + n_b:]) or "none"
    roles = {"a": f"decides {', '.join(names[:n_a]) or 'no tag'} alone; with b: {syn}",
             "b": f"decides {', '.join(names[n_a:n_a + n_b]) or 'no tag'} alone; with a: {syn}"}
    return _Structure(prior, labels, means, [sigma, sigma], roles=roles, class_names=names)


_BASES: dict[str, tuple[Callable[[dict, np.random.Generator], _Structure], dict[str, Any], str]] = {
    "balanced": (_balanced, {"target": 0.80},
                 "both modalities equally informative about the same label (redundant in what they carry)"),
    "difficulty": (_difficulty, {"target_easy": 0.70, "target_hard": 0.95, "grid": None},
                   "imbalance trap: 'a' is linear and easy (about 70 %), 'b' a nonlinear checkerboard worth about 95 %"),
    "redundancy": (_redundancy, {"target": 0.85, "shared_fraction": 0.9},
                   "both modalities are views of one shared noisy latent: each alone is almost as good as both"),
    "uniqueness": (_uniqueness, {"target_factor": 0.95},
                   "the label is a pair of factors, one carried only by 'a' and one only by 'b'"),
    "synergy": (_synergy, {"target_factor": 0.95, "n_classes": 2},
                "the label is the modular sum (XOR for 2 classes) of a code in each modality: each alone is at chance"),
    "multilabel": (_multilabel, {"n_classes": 5, "tags_both": 1, "tag_rate": 0.3, "target": 0.9},
                   "multi-label: each item has a set of 5 tags, 2 decided by 'a' alone, 2 by 'b' alone (each about "
                   "90 %), 1 the XOR of both (each alone at chance)"),
}
MULTI_LABEL_BASES = ("multilabel",)


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

_MOD_MISSING = re.compile(r"^missing_(mcar|mnar)_(\d{1,2})$")
_MOD_NOISY = re.compile(r"^noisy(?:_modality)?(?:_(\d{1,2}))?$")


def parse_name(name: str) -> tuple[str, dict[str, Any]]:
    """``'difficulty+missing_mnar_30'`` -> (``'difficulty'``, {missing: mnar, missing_rate: 0.3}).

    Standalone modifiers use the ``balanced`` base: ``missing_mcar_30`` = ``balanced+missing_mcar_30``,
    ``noisy_modality`` = ``balanced+noisy_30``. A real dataset (``emoji``, ``mfeat``) is a base too and
    takes the ``missing_*`` modifiers only: ``mfeat+missing_mnar_30``.
    """
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"scenario name must be a non-empty string, got {name!r}")
    parts = [s.strip() for s in name.split("+")]
    known = parts[0] in _BASES or _is_real_base(parts[0])
    base = parts[0] if known else "balanced"
    mods = parts[1:] if known else parts
    over: dict[str, Any] = {}
    for mod in mods:
        mm, mn = _MOD_MISSING.match(mod), _MOD_NOISY.match(mod)
        if mm:
            over.update(missing=mm.group(1), missing_rate=int(mm.group(2)) / 100.0)
        elif mn and not _is_real_base(base):
            over.update(corrupt_rate=int(mn.group(1) or 30) / 100.0)
        elif mn:
            raise DataError(f"scenario {name!r}: real datasets take only missing_mcar_<pct> / missing_mnar_<pct> "
                            f"modifiers, not {mod!r}")
        else:
            raise DataError(f"unknown scenario part {mod!r} in {name!r}; bases: {', '.join(_BASES)}; "
                            f"real datasets: {', '.join(REAL_DATASETS)}; "
                            "modifiers: missing_mcar_<pct>, missing_mnar_<pct>, noisy[_<pct>]")
    return base, over


def _is_real_base(base: str) -> bool:
    return base in REAL_DATASETS or is_own_data_name(base)


def is_real(name: str) -> bool:
    """True when the scenario ``name`` replays real data (``emoji``, ``mfeat+missing_mnar_30``, ``mine.jsonl``)."""
    return _is_real_base(parse_name(name)[0])


def is_multi_label(name: str) -> bool:
    """True when the scenario ``name`` labels items with sets of classes (``multilabel``, ``emoji_tags``, with
    any modifiers), known from the name alone so a run can refuse unfit strategies before building anything."""
    base = parse_name(name)[0]
    return base in MULTI_LABEL_BASES or bool(REAL_DATASETS.get(base, {}).get("multi_label"))


def presence_strata(labels: np.ndarray) -> np.ndarray:
    """(n,) what class-dependent (MNAR) missingness depends on: the class, or for (n, C) label sets the
    lowest-numbered class of the set (C for the empty set), a fixed rule that needs no frequencies."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        return labels
    return np.where(labels.any(axis=1), labels.argmax(axis=1), labels.shape[1])


def list_scenarios(real: bool = False) -> dict[str, str]:
    """Named scenarios (combinations are built with '+', see :func:`parse_name`) -> description.

    Synthetic only by default (suites enumerate these); ``real=True`` adds the real datasets and
    their missing-modality variants, which need the dataset files (and, for ``featurizers="pretrained"``,
    the packaged encoders).
    """
    out = {k: v[2] for k, v in _BASES.items()}
    out["noisy_modality"] = "each modality is corrupted (heavy noise) on 30 % of the items, independently"
    for kind, what in (("mcar", "completely at random"), ("mnar", "depending on the class (not at random)")):
        for pct in (10, 30, 50):
            out[f"missing_{kind}_{pct}"] = f"balanced, each modality absent for {pct} % of items, {what}"
    out["difficulty+missing_mnar_30"] = "the imbalance trap with class-dependent missing modalities"
    out["difficulty+noisy"] = "the imbalance trap with 30 % corrupted copies per modality"
    out["synergy+missing_mcar_30"] = "XOR across modalities with 30 % of each modality missing"
    out["multilabel+missing_mnar_30"] = "multi-label tags with 30 % of each modality missing, depending on the tags"
    if real:
        for ds, spec in REAL_DATASETS.items():
            out[ds] = f"real: {spec['description']}"
            gone = f"real: {ds} with each modality removed from 30 % of items"
            out[f"{ds}+missing_mcar_30"] = f"{gone} at random"
            out[f"{ds}+missing_mnar_30"] = f"{gone}, depending on the class"
    return out


def _seed_sequence(name: str, seed: int) -> np.random.SeedSequence:
    """Streams derived from (scenario name, seed) only: stable across processes and machines."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.SeedSequence([int(seed), zlib.crc32(name.encode("utf-8"))])


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


def make_scenario(name: str, seed: int = 0, *, fusion: FusionConfig | None = None, train: TrainConfig | None = None,
                  **params: Any) -> Scenario:
    """Build the named scenario (see :func:`list_scenarios`) for ``seed``.

    ``params`` override :data:`DEFAULT_PARAMS` and the base's own knobs (e.g. ``target_easy``).
    A real dataset's name dispatches to :func:`make_real_scenario`. Parameters that only real datasets
    take (:data:`REAL_PARAMS`) are ignored here, so one run can mix synthetic and real scenarios.
    """
    base, over = parse_name(name)
    if _is_real_base(base):
        return make_real_scenario(name, seed, fusion=fusion, train=train, **params)
    params = {k: v for k, v in params.items() if k not in REAL_PARAMS}
    builder, base_defaults, description = _BASES[base]
    unknown = set(params) - set(DEFAULT_PARAMS) - set(base_defaults)
    if unknown:
        raise DataError(f"unknown scenario parameters {sorted(unknown)}; known: "
                        f"{sorted(set(DEFAULT_PARAMS) | set(base_defaults) | set(REAL_PARAMS))}")
    p: dict[str, Any] = {**DEFAULT_PARAMS, **base_defaults, **over, **params}
    for key in ("n_items", "n_test", "n_val", "n_classes", "mc_samples"):
        if not isinstance(p[key], (int, np.integer)) or p[key] < (2 if key == "n_classes" else 1):
            raise DataError(f"{key} must be a positive integer (n_classes >= 2), got {p[key]!r}")
    if float(p["noise"]) <= 0:
        raise DataError(f"noise must be positive, got {p['noise']}")
    m = int(p["n_modalities"])
    names = list(MODALITY_NAMES[:m])
    dims = p["dims"]
    dims = [int(dims)] * m if isinstance(dims, (int, np.integer)) else [int(d) for d in dims]
    if len(dims) != m:
        raise DataError(f"dims has {len(dims)} entries for {m} modalities")
    c = int(p["n_classes"])

    ss = _seed_sequence(name, seed)
    g_geo, g_pool, g_val, g_test, g_mc = (np.random.default_rng(s) for s in ss.spawn(5))
    st = builder(p, g_geo)
    # label values: the classes, or (multi-label) the distinct label sets, each cell mapped to its value
    sets, value = None, st.cell_label
    if st.cell_label.ndim == 2:
        sets, value = np.unique(st.cell_label, axis=0, return_inverse=True)
        value = value.reshape(-1)
    n_values = c if sets is None else len(sets)
    noise = float(p["noise"])
    mods = [ModalityProcess(names[j], dims[j], st.means[j], st.sigmas[j] * noise, _rotation(dims[j], g_geo))
            for j in range(m)]
    crate = float(p["corrupt_rate"] or 0.0)
    if not 0.0 <= crate < 1.0:
        raise DataError(f"corrupt_rate must be in [0, 1), got {crate}")
    cmods = p.get("corrupt_modalities") or names
    if set(cmods) - set(names):
        raise DataError(f"corrupt_modalities {sorted(set(cmods) - set(names))} are not modalities ({names})")
    if sets is None:
        patterns, pattern_probs = _presence(p, names, c)
    else:  # MNAR on label sets: the rate follows the set's presence stratum (see presence_strata)
        patterns, pattern_probs = _presence(p, names, c + 1)
        pattern_probs = pattern_probs[presence_strata(sets)]
    proc = Process(n_values, st.cell_prior, value, mods, shared=st.shared * noise,
                   corrupt_rate=np.array([crate if k in cmods else 0.0 for k in names]),
                   corrupt_sigma=float(p["corrupt_sigma"]), patterns=patterns, pattern_probs=pattern_probs,
                   label_sets=sets)

    class_names = st.class_names or [f"class{i}" for i in range(c)]

    def build(n: int, rng: np.random.Generator, labelled: bool, prefix: str) -> tuple[MultimodalDataset, dict]:
        s = proc.sample(n, rng)
        truth = proc.labels_of(s["y"])
        labels = truth.copy() if labelled else np.full(truth.shape, UNLABELED, dtype=np.int64)
        ds = MultimodalDataset(s["features"], labels, class_names, s["masks"],
                               ids=np.array([f"{prefix}{i}" for i in range(n)], dtype=object),
                               true_labels=truth, meta={"scenario": name, "seed": int(seed)})
        return ds, s

    pool, s_pool = build(int(p["n_items"]), g_pool, False, "p")
    val, _ = build(int(p["n_val"]), g_val, True, "v")
    test, _ = build(int(p["n_test"]), g_test, True, "t")

    mc = proc.sample(int(p["mc_samples"]), g_mc)
    info: dict[str, float] = {}
    info_present: dict[str, float] = {}
    per_class: dict[str, list[float]] = {}  # multi-label: accuracy of each tag in the Bayes-optimal sets
    for k in [*names, "all"]:
        pred = proc.bayes_predict(mc["features"], mc["masks"], use=None if k == "all" else [k])
        hit = pred == mc["y"]  # one label value = one whole label set: subset accuracy for multi-label
        info[k] = float(hit.mean())
        if k != "all":
            info_present[k] = float(hit[mc["masks"][k]].mean()) if mc["masks"][k].any() else float("nan")
        if sets is not None:
            per_class[k] = [float(v) for v in (sets[pred] == sets[mc["y"]]).mean(axis=0)]
    value_prior = np.bincount(value, weights=st.cell_prior, minlength=n_values)
    chance = float(value_prior.max())  # the most probable class (multi-label: label set) for every item
    info["chance"] = chance

    f_def, t_def = default_recipe(base, c)
    params_out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()}
    params_out["base"] = base
    params_out["seed"] = int(seed)
    params_out["sigmas"] = [float(md.sigma) for md in mods]
    params_out["shared_sigma"] = float(proc.shared)
    params_out["mc_stderr"] = float(math.sqrt(0.25 / int(p["mc_samples"])))
    if sets is not None:
        params_out["class_informativeness"] = {k: dict(zip(class_names, v)) for k, v in per_class.items()}
        params_out["class_rate"] = dict(zip(class_names, np.round(value_prior @ sets, 6).tolist()))
    desc = description
    if over.get("missing"):
        desc += f"; each of {p.get('missing_modalities') or names} absent for {int(round(100 * p['missing_rate']))} % " \
                f"of items ({'completely at random' if p['missing'] == 'mcar' else 'depending on the class'})"
    if crate > 0:
        desc += f"; {int(round(100 * crate))} % of items carry a corrupted copy of each of {cmods}"
    return Scenario(name=name, params=params_out, pool=pool, val=val, test=test, informativeness=info,
                    informativeness_present=info_present, chance=chance, fusion=fusion or f_def, train=train or t_def,
                    description=desc, roles=st.roles,
                    truth={"cell": s_pool["cell"], "corrupted": s_pool["corrupted"]}, process=proc)


# ----------------------------------------------------------------------------------------------
# Real datasets, replayed with the simulated oracle
# ----------------------------------------------------------------------------------------------
REAL_DATASETS: dict[str, dict[str, Any]] = {
    "emoji": {
        "description": "1,906 emojis: image (Google 64-px PNG) + text (name and short names), 9 categories; "
                       "which modality is stronger depends on the featurizers and the labelled budget",
        "val_size": 200, "test_size": 400,
        "roles": {"image": "emoji picture", "text": "emoji name and short names"},
    },
    "emoji_tags": {
        "description": "the 1,906 emojis with label sets: the words of their category and subcategory names "
                       "that tag at least 30 emojis (32 tags, 1.93 per emoji, none empty; multi-label)",
        "val_size": 200, "test_size": 400, "multi_label": True,
        "roles": {"image": "emoji picture", "text": "emoji name and short names"},
    },
    "mfeat": {
        "description": "UCI Multiple Features: 2,000 handwritten digits, 10 classes, two feature views "
                       "(default fou, about 0.81 alone, + kar, about 0.95 alone: an imbalance case)",
        "val_size": 200, "test_size": 500,
        "roles": {},
    },
}

# parameters only real datasets take (synthetic scenarios ignore them, so one run can mix both)
REAL_PARAMS: dict[str, Any] = {
    # image/text data (emoji, own files): "pretrained" (efficientnet_lite0 + minilm) or "simple" (image_pixels +
    # text_tokens: fast, no weights, but a worse picture: emoji's best full-pool accuracy 0.59 against 0.83)
    "featurizers": "pretrained",
    "views": ("fou", "kar"),  # mfeat: 2..6 of fou fac kar pix zer mor
    "label": "category",  # emoji: "category" (9 classes) or "subcategory" (98)
    "val_size": None,  # None: the dataset's default (REAL_DATASETS)
    "test_size": None,
    "own_data": None,  # own files: {file name: spec from connectors.own_data.describe_own_data}
}
OWN_VAL_FRACTION, OWN_TEST_FRACTION = 0.1, 0.2  # own data without a split column: stratified shares
# synthetic parameters real datasets honour; every other synthetic parameter does not apply to them
_REAL_SHARED = ("n_items", "missing", "missing_rate", "missing_modalities", "mnar_strength")
FEATURIZER_PRESETS = ("simple", "pretrained")


def real_cache_dir() -> Path:
    """Root of the real-data caches: ``$MMAL_CACHE_DIR`` if set, else ``~/.cache/mmal``.

    Features live in ``<root>/features`` (the :class:`~backend.encoders.FeatureCache`), informativeness
    estimates in ``<root>/real-informativeness``: a second run (or another worker) encodes and trains nothing.
    """
    env = os.environ.get("MMAL_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "mmal"


@lru_cache(maxsize=6)
def _load_real(dataset: str, featurizers: str, views: tuple[str, ...], label: str, cache_dir: str) -> MultimodalDataset:
    """The featurized dataset, memoised per process (read-only: callers take subsets, never mutate it)."""
    from connectors.datasets import load_featurized

    params: dict[str, Any] = {"views": views} if dataset == "mfeat" else {"label": label} if dataset == "emoji" else {}
    return load_featurized(dataset, featurizers=featurizers, cache_dir=cache_dir, progress=sys.stderr.isatty(),
                           **params)


@lru_cache(maxsize=6)
def _load_own(spec_json: str, featurizers: str, cache_dir: str) -> MultimodalDataset:
    """An own data file featurized through the content-addressed cache, memoised per process (read-only)."""
    from connectors.datasets import load_featurized
    from connectors.own_data import load_own_data

    raw = load_own_data(json.loads(spec_json))
    return load_featurized(raw, featurizers=featurizers, cache_dir=cache_dir, progress=sys.stderr.isatty())


def _own_spec(base: str, own: Any) -> dict[str, Any]:
    spec = (own or {}).get(base) if isinstance(own, dict) else None
    if spec is None:
        raise DataError(f"scenario {base!r} names a data file, but the own_data parameter describes "
                        f"{sorted(own or {})}; pass the file with `mmal benchmark run --dataset PATH`")
    return spec


def _split_by_column(full: MultimodalDataset,
                     seed: int) -> tuple[MultimodalDataset, MultimodalDataset, MultimodalDataset]:
    """(pool, val, test) from the file's split column; no ``val`` rows: a stratified tenth of ``train``."""
    split_of = full.meta["split_of"]
    which = np.array([split_of[str(i)] for i in full.ids])
    parts = {k: full.subset(np.flatnonzero(which == k)) for k in ("train", "val", "test")}
    for k in ("train", "test"):
        if not len(parts[k]):
            raise DataError(f"{full.meta.get('source', 'own data')}: the split column has no '{k}' rows")
    pool, val, test = parts["train"], parts["val"], parts["test"]
    if not len(val):
        from connectors.datasets import split_dataset

        pool, val, _ = split_dataset(pool, n_val=max(1, round(OWN_VAL_FRACTION * len(pool))), n_test=0, seed=seed)
    pool.labels[:] = UNLABELED
    val.labels = val.true_labels.copy()
    test.labels = test.true_labels.copy()
    return pool, val, test


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Fixed torch threads: an estimate must not depend on which process (or machine) computed it."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _sub_seed(*parts: Any) -> int:
    """A 31-bit seed from a stable hash of ``parts``."""
    return int.from_bytes(hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).digest()[:4], "little") & 0x7FFFFFFF


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


def _data_digest(*datasets: MultimodalDataset) -> str:
    h = hashlib.sha256()
    for ds in datasets:
        h.update("\x00".join(map(str, ds.ids.tolist())).encode())
        h.update(ds.true_labels.tobytes())
        for k in ds.modality_names:
            h.update(k.encode())
            h.update(np.packbits(ds.masks[k]).tobytes())
    return h.hexdigest()


def estimate_informativeness(name: str, seed: int, pool: MultimodalDataset, test: MultimodalDataset,
                             fusion: FusionConfig, train: TrainConfig,
                             cache_dir: Path | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """What each modality alone can achieve on real data, estimated (no ground truth exists).

    For each modality m, the scenario's own recipe is trained on the *whole* pool with every other
    modality marked absent (the oracle's answers for every item), then scored on the test split with
    the other modalities dropped. Returns (accuracy on every test item, as the synthetic
    ``informativeness``, including what m's presence says; accuracy on test items having m, the
    representation-gap reference); for label sets both are subset accuracies (:mod:`benchmark.scores`).
    Cached on disk by (data, recipe, seed); computed with one torch thread.
    """
    names = pool.modality_names
    blob = json.dumps({"name": name, "seed": int(seed), "data": _data_digest(pool, test),
                       "featurizers": pool.meta.get("featurizers", {}), "fusion": fusion.to_dict(),
                       "train": train.to_dict(), "torch": __import__("torch").__version__}, sort_keys=True, default=str)
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name.replace("+", "--"))
    root = (cache_dir or real_cache_dir()) / "real-informativeness"
    path = root / f"{safe}__s{seed}__{hashlib.sha256(blob.encode()).hexdigest()[:16]}.json"
    if path.is_file():
        try:
            got = json.loads(path.read_text())
            if set(got["informativeness"]) == set(names):
                return got["informativeness"], got["informativeness_present"]
        except (OSError, ValueError, KeyError):
            pass  # a damaged entry is recomputed
    lab = pool.with_masks({})
    lab.labels[:] = lab.true_labels
    every, tidx = np.arange(len(lab)), np.arange(len(test))
    info: dict[str, float] = {}
    present: dict[str, float] = {}
    with _torch_threads(1):
        for m in names:
            others = [k for k in names if k != m]
            only = lab.with_masks({k: np.zeros(len(lab), dtype=bool) for k in others})
            model = train_model(only, every, fusion=fusion, train=train, seed=_sub_seed("informativeness", name, seed, m))
            pred = predicted_labels(model.predict(test, tidx, drop=others).probs, test.multi_label)
            hit = hits(pred, test.labels)
            info[m] = float(hit.mean())
            has = test.masks[m]
            present[m] = float(hit[has].mean()) if has.any() else float("nan")
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"informativeness": info, "informativeness_present": present, "key": json.loads(blob)}, f, indent=1)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)  # atomic: concurrent workers only ever read complete entries
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return info, present


def _chance(truth: np.ndarray, n_classes: int) -> float:
    """Share of the most frequent class (label sets: the most frequent whole set) among ``truth``."""
    if truth.ndim == 2:
        return float(np.unique(truth, axis=0, return_counts=True)[1].max() / len(truth))
    return float(np.bincount(truth, minlength=n_classes).max() / len(truth))


def _positive_int(key: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise DataError(f"{key} must be a positive integer, got {v!r}")
    return int(v)


def make_real_scenario(name: str, seed: int = 0, *, fusion: FusionConfig | None = None,
                       train: TrainConfig | None = None, **params: Any) -> Scenario:
    """A real dataset as a benchmark scenario: ``emoji``, ``emoji_tags`` (label sets), ``mfeat`` or an own file
    (``mine.jsonl``, described by the ``own_data`` parameter), optionally ``+missing_{mcar,mnar}_<pct>``.

    - Features come through the on-disk feature cache (:func:`real_cache_dir`), so only the first
      build encodes anything; ``featurizers`` is ``"simple"`` (default; fast) or ``"pretrained"``.
    - The pool / val / test split is stratified and fixed per (dataset, seed): ``emoji`` and
      ``emoji+missing_mnar_30`` share it, so only the missingness differs. ``val_size`` / ``test_size``
      set the split (defaults in :data:`REAL_DATASETS`; own files: a tenth and a fifth, or the file's
      ``split`` column when it has one, then ``val_size`` / ``test_size`` do not apply), ``n_items``
      (when given) caps the pool with a stratified subsample; the other synthetic parameters (dims, n_test, noise, ...) do not apply and
      are ignored.
    - Missing modalities are injected into every split exactly as in the synthetic scenarios
      (``missing``, ``missing_rate``, ``missing_modalities``, ``mnar_strength``): each item keeps at
      least one modality; under MNAR the rate depends on the class (label sets: :func:`presence_strata`).
    - ``informativeness`` is *estimated* by :func:`estimate_informativeness` (a full-pool unimodal model
      of the same recipe), not ground truth; ``chance`` is the largest class share of the dataset (label
      sets: the share of the most frequent whole set; both are subset accuracies then).
    """
    base, over = parse_name(name)
    if not _is_real_base(base):
        raise DataError(f"'{name}' is not a real dataset; known: {', '.join(REAL_DATASETS)} or a data file")
    ss = _seed_sequence(name, seed)
    synthetic = set(DEFAULT_PARAMS) | {k for _, d, _ in _BASES.values() for k in d}
    unknown = set(params) - set(REAL_PARAMS) - synthetic
    if unknown:
        raise DataError(f"unknown scenario parameters {sorted(unknown)}; real datasets take "
                        f"{sorted(set(REAL_PARAMS) | set(_REAL_SHARED))}")
    own = _own_spec(base, params.get("own_data")) if base not in REAL_DATASETS else None
    spec = REAL_DATASETS[base] if own is None else {
        "description": f"own data {own['path']} ({own['n_items']} items, {len(own['classes'])} classes; "
                       + ", ".join(f"{c}: {k}" for c, k in own["modalities"].items()) + ")",
        "val_size": None, "test_size": None, "roles": {c: f"{k} column '{c}'" for c, k in own["modalities"].items()}}
    p: dict[str, Any] = {**REAL_PARAMS, **{k: DEFAULT_PARAMS[k] for k in _REAL_SHARED if k != "n_items"},
                         **over, **{k: v for k, v in params.items() if k in REAL_PARAMS or k in _REAL_SHARED}}
    if p["featurizers"] not in FEATURIZER_PRESETS:
        raise DataError(f"featurizers must be one of {FEATURIZER_PRESETS}, got {p['featurizers']!r}")
    if isinstance(p["views"], str) or not isinstance(p["views"], (list, tuple)):
        raise DataError(f"views must be a list of mfeat view names, got {p['views']!r}")
    p["views"] = tuple(str(v) for v in p["views"])
    cap = _positive_int("n_items", p["n_items"]) if p.get("n_items") is not None else None

    cache = real_cache_dir()
    if own is None:
        full = _load_real(base, str(p["featurizers"]), p["views"], str(p["label"]), str(cache / "features"))
    else:
        full = _load_own(json.dumps(own), str(p["featurizers"]), str(cache / "features"))
    names = full.modality_names
    c = full.n_classes
    # the split depends on (dataset, seed) only: every variant of the dataset shares it
    split_seed = _sub_seed("split", base, seed)
    from connectors.datasets import split_dataset

    if own is not None and own.get("split") == "column":
        pool, val, test = _split_by_column(full, split_seed)
        val_size, test_size = len(val), len(test)
    else:
        n_full = len(full)
        dv = spec["val_size"] or max(1, round(OWN_VAL_FRACTION * n_full))
        dt = spec["test_size"] or max(1, round(OWN_TEST_FRACTION * n_full))
        val_size = _positive_int("val_size", p["val_size"] if p["val_size"] is not None else dv)
        test_size = _positive_int("test_size", p["test_size"] if p["test_size"] is not None else dt)
        pool, val, test = split_dataset(full, n_val=val_size, n_test=test_size, seed=split_seed)
    if cap is not None and cap < len(pool):
        _, _, pool = split_dataset(pool, n_val=0, n_test=cap, seed=_sub_seed("cap", base, seed))
        pool.labels[:] = UNLABELED
    patterns, pattern_probs = _presence(p, names, c + 1 if full.multi_label else c)
    g_pool, g_val, g_test = (np.random.default_rng(s) for s in ss.spawn(3))
    if len(patterns) > 1:
        pool = _inject_missing(pool, patterns, pattern_probs, g_pool)
        val = _inject_missing(val, patterns, pattern_probs, g_val)
        test = _inject_missing(test, patterns, pattern_probs, g_test)
    for split, ds in (("pool", pool), ("val", val), ("test", test)):
        ds.meta.update({"scenario": name, "seed": int(seed), "split": split})

    f_def, t_def = default_recipe(base, c)
    fusion, train = fusion or f_def, train or t_def
    info, info_present = estimate_informativeness(name, seed, pool, test, fusion, train, cache)
    chance = _chance(full.true_labels, c)
    info = {**info, "chance": chance}

    params_out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()}
    if base != "mfeat":
        params_out.pop("views")
    if base != "emoji":
        params_out.pop("label")
    if base == "mfeat":
        params_out.pop("featurizers")
    params_out.pop("own_data")
    if own is not None:  # which file, and which column became which modality (run.json records it)
        params_out.update(path=own["path"], sha256=own["sha256"], format=own["format"], columns=own["columns"],
                          split="from the file's split column" if own.get("split") == "column" else "stratified")
    params_out.update(base=base, dataset=base, seed=int(seed), val_size=val_size, test_size=test_size,
                      split_seed=split_seed, featurizer_identities=full.meta.get("featurizers", {}),
                      informativeness="estimated: the same recipe trained on the whole pool with only that modality, "
                                      "scored on the test split")
    desc = f"real: {spec['description']}"
    if base == "mfeat":
        desc += f"; views {', '.join(p['views'])}"
    elif full.meta.get("featurizers"):
        used = {k: str(v).split("@")[0] for k, v in (full.meta.get("featurizers") or {}).items()}
        desc += f"; {p['featurizers']} featurizers ({', '.join(f'{k}: {v}' for k, v in used.items())})"
    if len(patterns) > 1:
        which = p.get("missing_modalities") or names
        desc += f"; each of {list(which)} removed from {int(round(100 * p['missing_rate']))} % of items " \
                f"({'completely at random' if p['missing'] == 'mcar' else 'depending on the class'})"
    roles = dict(spec["roles"])
    if base == "mfeat":
        from connectors.datasets.mfeat import VIEWS

        roles = {v: VIEWS[v][1] for v in names}
    return Scenario(name=name, params=params_out, pool=pool, val=val, test=test, informativeness=info,
                    informativeness_present=info_present, chance=chance, fusion=fusion, train=train,
                    description=desc, roles=roles, truth={}, process=None, informativeness_kind="estimated")
