"""The synthetic bases (``balanced``, ``difficulty``, ``redundancy``, ``uniqueness``, ``synergy``,
``multilabel``): what the label is and how each modality sees it, as latent cells and their means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import product
from typing import Any, Callable

import numpy as np

from backend.data import DataError
from benchmark.scenarios.process import MODALITY_NAMES, _simplex, calibrate_sigma


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
