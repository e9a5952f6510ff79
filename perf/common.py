"""Shared pieces of the performance harness: seeded inputs, a cached-predictions model, memory probes,
and plain NumPy references for the agreement checks.

Why a separate module: the harness runs every method in a fresh subprocess (so each one's peak memory is
its own), and the CI agreement test reuses the same inputs and references without the peers installed.
Nothing here imports a peer library.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from backend.data import UNLABELED, MultimodalDataset, Pool
from backend.models.api import Predictions

__all__ = [
    "BenchInputs",
    "make_inputs",
    "CachedPredictionsModel",
    "cached_problem",
    "reset_peak_rss",
    "rss_bytes",
    "peak_rss_bytes",
    "time_call",
    "kcenter_reference",
    "topb_reference",
    "margin_reference",
    "entropy_reference",
    "badge_objective",
]


# --------------------------------------------------------------------------------------------------
# inputs


@dataclass
class BenchInputs:
    """Cached model outputs for N items: ``z`` (N, d) float32 embeddings, ``probs`` (N, C) float32
    class probabilities, ``labeled`` (L,) sorted int64 indices of the initial labelled set."""

    z: np.ndarray
    probs: np.ndarray
    labeled: np.ndarray

    @property
    def n(self) -> int:
        return self.z.shape[0]

    @property
    def unlabeled(self) -> np.ndarray:
        """Sorted int64 indices of every item not in ``labeled``."""
        return np.setdiff1d(np.arange(self.n, dtype=np.int64), self.labeled, assume_unique=True)

    def save(self, folder: str | os.PathLike) -> None:
        """Write the three arrays as .npy files (every subprocess then loads identical inputs)."""
        os.makedirs(folder, exist_ok=True)
        np.save(os.path.join(folder, "z.npy"), self.z)
        np.save(os.path.join(folder, "probs.npy"), self.probs)
        np.save(os.path.join(folder, "labeled.npy"), self.labeled)

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "BenchInputs":
        """Read inputs written by :meth:`save` fully into memory (no memory map: timings see RAM)."""
        return cls(np.load(os.path.join(folder, "z.npy")), np.load(os.path.join(folder, "probs.npy")),
                   np.load(os.path.join(folder, "labeled.npy")))


def make_inputs(n: int, d: int = 512, n_classes: int = 10, n_labeled: int = 1000, seed: int = 0,
                chunk: int = 65536) -> BenchInputs:
    """Seeded stand-ins for a model's cached outputs: a Gaussian mixture of ``n_classes`` clusters in
    ``d`` dimensions and softmax probabilities of varying confidence, generated in float32 chunks
    (no float64 N x d transient, so 1M x 512 stays at 2 GB)."""
    if n < 2 or d < 1 or n_classes < 2:
        raise ValueError(f"need n >= 2, d >= 1, n_classes >= 2; got n={n}, d={d}, n_classes={n_classes}")
    if not 0 <= n_labeled < n:
        raise ValueError(f"n_labeled must be in 0..{n - 1}, got {n_labeled}")
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_classes, d), dtype=np.float32)
    y = rng.integers(0, n_classes, n)
    difficulty = rng.random(n, dtype=np.float32)  # 0 = confident, 1 = near uniform
    z = np.empty((n, d), dtype=np.float32)
    probs = np.empty((n, n_classes), dtype=np.float32)
    scale = np.float32(4.0 / d)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        block = rng.standard_normal((e - s, d), dtype=np.float32)
        block += 0.6 * centers[y[s:e]]
        z[s:e] = block
        logits = (block @ centers.T) * (scale * (1.0 - difficulty[s:e]))[:, None]
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        probs[s:e] = logits
    labeled = np.sort(rng.choice(n, n_labeled, replace=False)).astype(np.int64)
    return BenchInputs(z, probs, labeled)


# --------------------------------------------------------------------------------------------------
# a model that serves cached outputs


class CachedPredictionsModel:
    """An :class:`backend.models.api.ActiveModel` that serves precomputed probabilities and fused
    embeddings, so a strategy's own cost (not a network's forward pass) is what gets timed.

    ``predict`` indexes the stored tensors (a gather, as the real model's output would be a fresh
    tensor too); per-modality outputs are not served (the classic and diversity strategies don't read them).
    With ``fused_embedding=None`` only probabilities are cached (an (n, 0) embedding is served), so the
    uncertainty strategies are timed without gathering an embedding they never read.
    """

    def __init__(self, probs: torch.Tensor, fused_embedding: torch.Tensor | None) -> None:
        if fused_embedding is None:
            fused_embedding = probs.new_empty((probs.shape[0], 0))
        if probs.ndim != 2 or fused_embedding.ndim != 2 or probs.shape[0] != fused_embedding.shape[0]:
            raise ValueError(f"probs {tuple(probs.shape)} and fused_embedding {tuple(fused_embedding.shape)} "
                             "must be (N, C) and (N, h) with the same N")
        self.probs = probs
        self.fused = fused_embedding
        self.n_classes = probs.shape[1]
        self.modality_names = ["a", "b"]
        self.device = probs.device

    def predict(self, dataset: MultimodalDataset, indices: Sequence[int] | np.ndarray, *,
                drop: Sequence[str] = ()) -> Predictions:
        """The cached fused outputs of ``indices`` (``drop`` is not supported: no per-modality cache)."""
        if drop:
            raise ValueError("CachedPredictionsModel holds fused outputs only; drop= is not supported")
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64), device=self.device)
        return Predictions(self.probs[idx], {}, {}, self.fused[idx], {})

    def predict_mc_dropout(self, dataset: MultimodalDataset, indices: Sequence[int] | np.ndarray,
                           n_samples: int, seed: int) -> torch.Tensor:
        """Not available from a cache of deterministic outputs."""
        raise NotImplementedError("CachedPredictionsModel has no dropout samples")


def cached_problem(inputs: BenchInputs, *, embeddings: bool = True) -> tuple[CachedPredictionsModel, MultimodalDataset, Pool]:
    """(model, dataset, pool) for running a registered strategy on cached inputs.

    The dataset carries two placeholder (N, 1) modalities: the cached model never reads features.
    ``embeddings=False`` serves probabilities only (for margin/entropy).
    """
    n, c = inputs.probs.shape
    model = CachedPredictionsModel(torch.from_numpy(inputs.probs), torch.from_numpy(inputs.z) if embeddings else None)
    labels = np.full(n, UNLABELED, dtype=np.int64)
    labels[inputs.labeled] = inputs.probs[inputs.labeled].argmax(axis=1)
    placeholder = np.zeros((n, 1), dtype=np.float32)
    ds = MultimodalDataset({"a": placeholder, "b": placeholder}, labels, [f"c{k}" for k in range(c)],
                           ids=np.arange(n).astype(str).astype(object))
    return model, ds, Pool.from_labeled(n, inputs.labeled)


# --------------------------------------------------------------------------------------------------
# memory and time


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS high-water mark (Linux ``clear_refs`` 5). False where unsupported,
    in which case :func:`peak_rss_bytes` falls back to the lifetime ``ru_maxrss``."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_bytes() -> int:
    """Current resident set size in bytes."""
    kb = _status_kb("VmRSS")
    if kb is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return kb * 1024


def peak_rss_bytes() -> int:
    """Peak resident set size since the last :func:`reset_peak_rss` (or process start), in bytes."""
    kb = _status_kb("VmHWM")
    if kb is None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb * 1024


def time_call(fn: Callable[[], object], repeats: int = 3, budget_s: float = 2.0) -> tuple[list[float], object, list[float]]:
    """Run ``fn`` once, then again (up to ``repeats`` runs) while the runs so far took under ``budget_s``.

    Returns (wall times in seconds, the first run's result, process CPU times in seconds, all threads).
    Slow peers run once; fast kernels get repeats so the reported minimum is not a cold-start artefact.
    CPU time is reported beside wall time because it is far less sensitive to other processes
    competing for the cores (a shared 2-core box).
    """
    times: list[float] = []
    cpu: list[float] = []
    result = None
    for r in range(max(1, int(repeats))):
        c0 = time.process_time()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        if r == 0:
            result = out
        if sum(times) >= budget_s:
            break
    return times, result, cpu


# --------------------------------------------------------------------------------------------------
# plain references (float64 NumPy) for the agreement checks


def kcenter_reference(x: np.ndarray, initial: Sequence[int] | np.ndarray, k: int, *, exact: bool = False,
                      chunk: int = 256) -> np.ndarray:
    """Plain incremental greedy k-center in float64 NumPy, ties to the lowest index.

    ``exact=True`` computes every ``||x_i - x_c||^2`` from explicit differences (small N only: an
    independent check of the kernels' ``||a||^2 - 2ab + ||b||^2`` form); otherwise the usual expansion
    with precomputed float64 norms (the "plain incremental k-center in NumPy" speed anchor).
    """
    x = np.asarray(x, dtype=np.float64)
    init = np.asarray(initial, dtype=np.int64)
    xn = (x * x).sum(axis=1)

    def sqdist(rows: np.ndarray) -> np.ndarray:
        c = x[rows]
        if exact:
            return ((x[:, None, :] - c[None, :, :]) ** 2).sum(axis=2)
        return np.maximum(xn[:, None] - 2.0 * (x @ c.T) + xn[rows][None, :], 0.0)

    mind = np.full(x.shape[0], np.inf)
    for s in range(0, init.size, chunk):
        mind = np.minimum(mind, sqdist(init[s:s + chunk]).min(axis=1))
    mind[init] = -1.0
    picks = np.empty(int(k), dtype=np.int64)
    for t in range(int(k)):
        j = int(np.argmax(mind))
        picks[t] = j
        mind = np.minimum(mind, sqdist(np.array([j]))[:, 0])
        mind[j] = -1.0
    return picks


def margin_reference(probs: np.ndarray) -> np.ndarray:
    """(N,) float64 ``-(p_(1) - p_(2))``: higher = smaller margin = query sooner."""
    p = np.sort(np.asarray(probs, dtype=np.float64), axis=1)
    return -(p[:, -1] - p[:, -2])


def entropy_reference(probs: np.ndarray) -> np.ndarray:
    """(N,) float64 Shannon entropy in nats (0 log 0 = 0)."""
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)


def topb_reference(scores: np.ndarray, candidates: np.ndarray, b: int) -> np.ndarray:
    """The ``b`` candidates with the highest score, ties to the lowest index (the project's convention)."""
    order = np.lexsort((candidates, -np.asarray(scores, dtype=np.float64)))
    return np.asarray(candidates)[order[:b]]


def badge_objective(probs: np.ndarray, z: np.ndarray, candidates: np.ndarray, picks: np.ndarray) -> float:
    """k-means++'s objective for a BADGE batch: sum over candidates of the squared distance (gradient
    embedding space) to the nearest pick. Lower = the batch covers the pool better. Factored (never
    the N x C*d matrix), so it is cheap at any N; float64 up to N*d = 64M, float32 beyond."""
    from backend.kernels import FactoredEmbedding

    cand = np.asarray(candidates, dtype=np.int64)
    pos = np.searchsorted(cand, np.asarray(picks, dtype=np.int64))
    if not np.array_equal(cand[np.clip(pos, 0, cand.size - 1)], picks):
        raise ValueError("BADGE picks must be candidates")
    dtype = np.float64 if cand.size * z.shape[1] <= 64 * 2**20 else np.float32  # float64 up to 512 MB
    emb = FactoredEmbedding.badge(torch.from_numpy(probs[cand].astype(dtype)), [torch.from_numpy(z[cand].astype(dtype))])
    return float(emb.min_sqdist_to_rows(torch.from_numpy(pos)).sum())
