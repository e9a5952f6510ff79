"""The generative process behind every synthetic scenario: latent cells, per-modality Gaussian views,
corrupted copies, presence patterns, and its exact (Bayes-optimal) posterior.

Why here: ground truth (what each modality can tell) comes from this process, never from a learned model.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from itertools import product
from typing import Any, Sequence

import numpy as np

from backend.data import DataError


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
