"""Property tests: every kernel against a slow, obviously-correct NumPy float64 reference.

Inputs come from seeded Gaussians (generic position: no ties with probability 1), with shapes and
seeds drawn by hypothesis. Exact-pick comparisons run the kernels in float64; float32 runs are
checked to agree wherever the reference's decision is not a near-tie.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from backend import heuristics
from backend.kernels import (
    DenseEmbedding,
    FactoredEmbedding,
    default_chunk,
    greedy_k_center,
    kmeans,
    kmeanspp_seeding,
    knn_mean_distance,
    min_sqdist,
    pairwise_sqdist_chunks,
)

SETTINGS = settings(max_examples=40, deadline=None)
seeds = st.integers(0, 2**31 - 1)
CHUNKS = [1, 7, None]


# ------------------------------------------------------------------------------------------------
# slow references (float64, direct differences, no tricks)


def ref_sqdist(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    return ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)


def ref_greedy(x: np.ndarray, init: list[int], k: int) -> tuple[list[int], float]:
    """Greedy k-center picks, plus the smallest relative gap between the best and second-best score."""
    n = len(x)
    centers = list(init)
    picks: list[int] = []
    min_gap = np.inf
    for _ in range(k):
        d = ref_sqdist(x, x[centers]).min(1) if centers else np.full(n, np.inf)
        d[centers] = -1.0
        order = np.argsort(-d, kind="stable")
        if np.isfinite(d[order[0]]) and n - len(centers) > 1:
            min_gap = min(min_gap, (d[order[0]] - d[order[1]]) / max(d[order[0]], 1e-12))
        picks.append(int(order[0]))
        centers.append(int(order[0]))
    return picks, min_gap


def ref_kmeanspp(g: np.ndarray, u: np.ndarray, first: str) -> tuple[list[int], float]:
    """D^2 sampling with the given uniforms; also the smallest relative distance of a draw to a bin edge."""
    n, k = len(g), len(u)
    norms = (g ** 2).sum(1)
    j = min(int(np.floor(u[0] * n)), n - 1) if first == "random" else int(np.argmax(norms))
    picks, chosen = [j], np.zeros(n, bool)
    chosen[j] = True
    d2 = ((g - g[j]) ** 2).sum(1)
    d2[j] = 0.0
    min_edge = np.inf
    for t in range(1, k):
        cum = np.cumsum(d2)
        total = cum[-1]
        if total <= 0:
            j = int(np.flatnonzero(~chosen)[0])
        else:
            v = u[t] * total
            min_edge = min(min_edge, np.abs(cum - v).min() / total)
            j = int(np.searchsorted(cum, v, side="right"))
            if j >= n:
                j = int(np.flatnonzero(d2 > 0)[-1])
        picks.append(j)
        chosen[j] = True
        d2 = np.minimum(d2, ((g - g[j]) ** 2).sum(1))
        d2[j] = 0.0
    return picks, min_edge


def uniforms(seed: int, k: int) -> np.ndarray:
    return torch.rand(k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).numpy()


def gauss(seed: int, *shape: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape)


# ------------------------------------------------------------------------------------------------
# distances


@SETTINGS
@given(seed=seeds, n=st.integers(1, 40), m=st.integers(0, 30), d=st.integers(1, 12), chunk=st.sampled_from(CHUNKS))
def test_min_sqdist_matches_reference(seed: int, n: int, m: int, d: int, chunk: int | None) -> None:
    x, c = gauss(seed, n, d), gauss(seed + 1, m, d)
    got = min_sqdist(torch.from_numpy(x), torch.from_numpy(c), chunk_size=chunk).numpy()
    want = ref_sqdist(x, c).min(1) if m else np.full(n, np.inf)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    got32 = min_sqdist(torch.from_numpy(x).float(), torch.from_numpy(c).float(), chunk_size=chunk).numpy()
    np.testing.assert_allclose(got32, want, rtol=1e-4, atol=1e-4)


@SETTINGS
@given(seed=seeds, n=st.integers(1, 30), m=st.integers(1, 30), chunk=st.sampled_from(CHUNKS))
def test_pairwise_chunks_cover_every_center_once(seed: int, n: int, m: int, chunk: int | None) -> None:
    x, c = gauss(seed, n, 5), gauss(seed + 1, m, 5)
    blocks = list(pairwise_sqdist_chunks(torch.from_numpy(x), torch.from_numpy(c), chunk_size=chunk))
    assert [s for s, _ in blocks] == sorted({s for s, _ in blocks})
    full = np.concatenate([b.numpy() for _, b in blocks], axis=1)
    np.testing.assert_allclose(full, ref_sqdist(x, c), rtol=1e-9, atol=1e-9)
    if chunk is not None:
        assert all(b.shape[1] <= chunk for _, b in blocks)


def test_default_chunk_is_about_64mb() -> None:
    assert default_chunk(50_000) * 50_000 * 4 <= 64 * 2**20
    assert default_chunk(50_000) * 50_000 * 4 > 63 * 2**20
    assert default_chunk(10**12) == 1


def test_min_sqdist_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="features"):
        min_sqdist(torch.zeros(3, 2), torch.zeros(4, 5))
    with pytest.raises(ValueError, match="chunk_size"):
        min_sqdist(torch.zeros(3, 2), torch.zeros(4, 2), chunk_size=0)


# ------------------------------------------------------------------------------------------------
# greedy k-center


@SETTINGS
@given(seed=seeds, n=st.integers(2, 40), d=st.integers(1, 8), data=st.data())
def test_greedy_k_center_matches_reference(seed: int, n: int, d: int, data: st.DataObject) -> None:
    x = gauss(seed, n, d)
    init = data.draw(st.lists(st.integers(0, n - 1), max_size=n - 1, unique=True), label="init")
    k = data.draw(st.integers(0, n - len(init)), label="k")
    want, gap = ref_greedy(x, init, k)
    assume(gap > 1e-10)  # generic position: no (near-)ties
    for chunk in CHUNKS:
        got = greedy_k_center(torch.from_numpy(x), torch.tensor(init, dtype=torch.int64), k, chunk_size=chunk)
        assert got.tolist() == want
    if gap > 1e-4:  # float32 agrees away from near-ties
        assert greedy_k_center(torch.from_numpy(x).float(), init, k).tolist() == want


def test_greedy_k_center_ties_and_duplicates() -> None:
    # two exact duplicates of a far point: the lower index first, then the duplicate only at the very end
    x = torch.tensor([[0.0], [5.0], [5.0], [1.0], [2.0]], dtype=torch.float64)
    assert greedy_k_center(x, [0], 4).tolist() == [1, 4, 3, 2]
    # no initial centers: every distance is +inf, first pick is index 0
    assert greedy_k_center(x, [], 2).tolist() == [0, 1]
    with pytest.raises(ValueError, match="exceeds"):
        greedy_k_center(x, [0, 1], 4)
    with pytest.raises(ValueError, match="initial_center_idx"):
        greedy_k_center(x, [7], 1)


# ------------------------------------------------------------------------------------------------
# factored BADGE embeddings


def _blocks(seed: int, n: int, dims: list[int], scaled: bool) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    rng = np.random.default_rng(seed)
    out = []
    for d in dims:
        z = torch.from_numpy(rng.normal(size=(n, d)))
        s = torch.from_numpy(rng.uniform(0.0, 1.5, n)) if scaled else None
        out.append((z, s))
    return out


def explicit_badge(a: np.ndarray, blocks: list[tuple[torch.Tensor, torch.Tensor | None]]) -> np.ndarray:
    parts = []
    for z, s in blocks:
        z = z.numpy()
        s = np.ones(len(z)) if s is None else s.numpy()
        parts.append(np.stack([s[i] * np.outer(a[i], z[i]).ravel() for i in range(len(z))]))
    return np.concatenate(parts, axis=1)


@SETTINGS
@given(seed=seeds, n=st.integers(1, 25), c=st.integers(1, 6), dims=st.lists(st.integers(1, 6), min_size=1, max_size=3),
       scaled=st.booleans())
def test_factored_distances_equal_explicit_outer_products(seed: int, n: int, c: int, dims: list[int], scaled: bool) -> None:
    probs = torch.softmax(torch.from_numpy(gauss(seed, n, c)) * 2, dim=1)
    blocks = _blocks(seed + 1, n, dims, scaled)
    emb = FactoredEmbedding.badge(probs, blocks)
    a = probs.numpy().copy()
    a[np.arange(n), a.argmax(1)] -= 1.0
    g = explicit_badge(a, blocks)
    np.testing.assert_allclose(emb.materialize().numpy(), g, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(emb.sq_norms.numpy(), (g ** 2).sum(1), rtol=1e-9, atol=1e-12)
    rows = torch.arange(n)
    np.testing.assert_allclose(emb.sqdist_to_rows(rows).numpy(), ref_sqdist(g, g), rtol=1e-9, atol=1e-10)
    for chunk in CHUNKS:
        np.testing.assert_allclose(emb.min_sqdist_to_rows(rows[: max(1, n // 2)], chunk).numpy(),
                                   ref_sqdist(g, g[: max(1, n // 2)]).min(1), rtol=1e-9, atol=1e-10)


def test_factored_embedding_validates_blocks() -> None:
    a = torch.zeros(4, 3)
    with pytest.raises(ValueError, match=r"blocks\[0\].z has 5 rows"):
        FactoredEmbedding(a, [torch.zeros(5, 2)])
    with pytest.raises(ValueError, match=r"blocks\[1\] scale"):
        FactoredEmbedding(a, [torch.zeros(4, 2), (torch.zeros(4, 2), torch.ones(3))])
    with pytest.raises(ValueError, match="at least one block"):
        FactoredEmbedding(a, [])


def test_factored_embedding_never_materialises() -> None:
    # explicit N x C*d would be 20000 x 51200 floats (~4 GB); the factored form needs ~40 MB
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(20_000, 100, generator=gen), dim=1)
    z = torch.randn(20_000, 512, generator=gen)
    picks = kmeanspp_seeding(FactoredEmbedding.badge(probs, [z]), 5, gen, first="max_norm")
    assert len(set(picks.tolist())) == 5


# ------------------------------------------------------------------------------------------------
# k-means++ seeding


@SETTINGS
@given(seed=seeds, n=st.integers(1, 30), d=st.integers(1, 6), first=st.sampled_from(["random", "max_norm"]), data=st.data())
def test_kmeanspp_dense_matches_reference_with_same_draws(seed: int, n: int, d: int, first: str, data: st.DataObject) -> None:
    k = data.draw(st.integers(1, n), label="k")
    x = gauss(seed, n, d)
    want, edge = ref_kmeanspp(x, uniforms(seed, k), first)
    assume(edge > 1e-9)
    got = kmeanspp_seeding(torch.from_numpy(x), k, torch.Generator().manual_seed(seed), first=first)
    assert got.tolist() == want
    assert kmeanspp_seeding(torch.from_numpy(x), k, seed, first=first).tolist() == want  # int seed == Generator


@SETTINGS
@given(seed=seeds, n=st.integers(2, 20), c=st.integers(2, 5), dims=st.lists(st.integers(1, 5), min_size=1, max_size=3),
       scaled=st.booleans(), data=st.data())
def test_kmeanspp_factored_matches_explicit_reference(seed: int, n: int, c: int, dims: list[int], scaled: bool,
                                                      data: st.DataObject) -> None:
    k = data.draw(st.integers(1, n), label="k")
    probs = torch.softmax(torch.from_numpy(gauss(seed, n, c)), dim=1)
    blocks = _blocks(seed + 1, n, dims, scaled)
    emb = FactoredEmbedding.badge(probs, blocks)
    g = emb.materialize().numpy()
    want, edge = ref_kmeanspp(g, uniforms(seed, k), "max_norm")
    assume(edge > 1e-9)
    got = kmeanspp_seeding(emb, k, torch.Generator().manual_seed(seed), first="max_norm")
    assert got.tolist() == want
    # and the same picks as the kernel on the explicit matrix (one code path for both)
    assert kmeanspp_seeding(torch.from_numpy(g), k, seed, first="max_norm").tolist() == want


@SETTINGS
@given(seed=seeds, n=st.integers(2, 60), d=st.integers(1, 8), data=st.data())
def test_kmeanspp_float32_picks_have_positive_mass_and_are_unique(seed: int, n: int, d: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(1, n), label="k")
    x = torch.from_numpy(gauss(seed, n, d)).float()
    a = kmeanspp_seeding(x, k, seed)
    b = kmeanspp_seeding(x, k, torch.Generator().manual_seed(seed))
    assert a.tolist() == b.tolist()
    picks = a.tolist()
    assert len(set(picks)) == k
    xs = x.double().numpy()
    for t in range(1, k):  # D^2 > 0 at the time of each pick (generic points)
        assert ref_sqdist(xs[[picks[t]]], xs[picks[:t]]).min() > 0


def test_kmeanspp_with_duplicates_still_returns_distinct_items() -> None:
    x = torch.tensor([[1.0, 0.0]] * 3 + [[0.0, 2.0]] * 2)
    picks = kmeanspp_seeding(x, 5, 3).tolist()
    assert sorted(picks) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="k must be in 1..5"):
        kmeanspp_seeding(x, 6, 0)
    with pytest.raises(ValueError, match="Generator"):
        kmeanspp_seeding(x, 2, None)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# k-means and k-NN density


def ref_lloyd(x: np.ndarray, centers: np.ndarray, iters: int) -> tuple[np.ndarray, np.ndarray]:
    labels = ref_sqdist(x, centers).argmin(1)
    for _ in range(iters):
        new_c = centers.copy()
        for j in range(len(centers)):
            if (labels == j).any():
                new_c[j] = x[labels == j].mean(0)
        centers = new_c
        new_l = ref_sqdist(x, centers).argmin(1)
        if (new_l == labels).all():
            break
        labels = new_l
    return centers, labels


@SETTINGS
@given(seed=seeds, n=st.integers(1, 50), d=st.integers(1, 5), iters=st.integers(0, 15), data=st.data())
def test_kmeans_matches_reference_lloyd(seed: int, n: int, d: int, iters: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(1, min(n, 8)), label="k")
    x = gauss(seed, n, d)
    init = kmeanspp_seeding(torch.from_numpy(x), k, seed).numpy()
    want_c, want_l = ref_lloyd(x, x[init], iters)
    for chunk in CHUNKS:
        c, lab = kmeans(torch.from_numpy(x), k, iters, seed, chunk_size=chunk)
        assert lab.tolist() == want_l.tolist()
        np.testing.assert_allclose(c.numpy(), want_c, rtol=1e-9, atol=1e-9)
    # float32: every label is (up to round-off) a nearest center of the returned centers
    c32, l32 = kmeans(torch.from_numpy(x).float(), k, iters, seed)
    dist = ref_sqdist(x, c32.double().numpy())
    assert np.all(dist[np.arange(n), l32.numpy()] <= dist.min(1) + 1e-4)


@SETTINGS
@given(seed=seeds, n=st.integers(2, 40), d=st.integers(1, 6), squared=st.booleans(), data=st.data())
def test_knn_mean_distance_matches_reference(seed: int, n: int, d: int, squared: bool, data: st.DataObject) -> None:
    k = data.draw(st.integers(1, n - 1), label="k")
    x = gauss(seed, n, d)
    dist = ref_sqdist(x, x)
    np.fill_diagonal(dist, np.inf)
    near = np.sort(dist, axis=1)[:, :k]
    want = (near if squared else np.sqrt(near)).mean(1)
    for chunk in CHUNKS:
        got = knn_mean_distance(torch.from_numpy(x), k, chunk_size=chunk, squared=squared).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-7)


def test_knn_counts_exact_duplicates_as_neighbours() -> None:
    x = torch.tensor([[0.0], [0.0], [3.0]])
    np.testing.assert_allclose(knn_mean_distance(x, 1).numpy(), [0.0, 0.0, 3.0])
    with pytest.raises(ValueError, match="k must be in 1..2"):
        knn_mean_distance(x, 3)


def test_kernels_keep_the_input_device_and_float32() -> None:
    x = torch.randn(20, 4)
    assert min_sqdist(x, x[:3]).dtype == torch.float32
    assert DenseEmbedding(x.half()).dtype == torch.float32
    assert greedy_k_center(x, [0], 3).device == x.device


# ------------------------------------------------------------------------------------------------
# heuristics


def probs_from(seed: int, n: int, c: int, zeros: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(c, 0.5), size=n)
    if zeros and c > 1:
        p[:, 0] = 0.0
        p /= p.sum(1, keepdims=True)
    return p


def np_entropy(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(-1)


@SETTINGS
@given(seed=seeds, n=st.integers(1, 30), c=st.integers(2, 8), zeros=st.booleans())
def test_heuristics_match_numpy_formulas(seed: int, n: int, c: int, zeros: bool) -> None:
    p = probs_from(seed, n, c, zeros)
    t = torch.from_numpy(p)
    srt = np.sort(p, axis=1)
    np.testing.assert_allclose(heuristics.least_confidence(t).numpy(), 1 - p.max(1), atol=1e-12)
    np.testing.assert_allclose(heuristics.margin(t).numpy(), -(srt[:, -1] - srt[:, -2]), atol=1e-12)
    np.testing.assert_allclose(heuristics.margin_uncertainty(t).numpy(), 1 - (srt[:, -1] - srt[:, -2]), atol=1e-12)
    np.testing.assert_allclose(heuristics.entropy(t).numpy(), np_entropy(p), atol=1e-9)
    assert np.isfinite(heuristics.entropy(t).numpy()).all()


@SETTINGS
@given(seed=seeds, t=st.integers(1, 10), n=st.integers(1, 20), c=st.integers(2, 6), zeros=st.booleans())
def test_bald_matches_numpy_mutual_information(seed: int, t: int, n: int, c: int, zeros: bool) -> None:
    mc = np.stack([probs_from(seed + i, n, c, zeros) for i in range(t)])
    want = np_entropy(mc.mean(0)) - np_entropy(mc).mean(0)
    got = heuristics.bald(torch.from_numpy(mc)).numpy()
    np.testing.assert_allclose(got, np.maximum(want, 0.0), atol=1e-9)
    assert (got >= 0).all()
    # all samples agreeing -> zero mutual information, however uncertain each sample is
    same = np.repeat(mc[:1], t, axis=0)
    np.testing.assert_allclose(heuristics.bald(torch.from_numpy(same)).numpy(), 0.0, atol=1e-9)


def test_heuristics_reject_bad_shapes_and_keep_dtype() -> None:
    with pytest.raises(ValueError, match=r"\(n, C\)"):
        heuristics.entropy(torch.zeros(3))
    with pytest.raises(ValueError, match=r"\(T, n, C\)"):
        heuristics.bald(torch.zeros(3, 2))
    assert heuristics.margin(torch.full((2, 3), 1 / 3, dtype=torch.float32)).dtype == torch.float32
    np.testing.assert_allclose(heuristics.margin(torch.ones(2, 1)).numpy(), [-1.0, -1.0])
