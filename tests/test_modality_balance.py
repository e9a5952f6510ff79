"""Training-side modality balancing (OGM-GE, unimodal warm-up, MMPareto): backend.models.balancing, driven by
backend.models.trainer."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from backend.data import DataError, MultimodalDataset, UNLABELED
from backend.models.fusion import FusionConfig, FusionModel
from backend.models.trainer import (BALANCE_MODES, TrainConfig, _loss, _loss_terms, _modulate, _optimizer,
                                    _pareto_backward, dataset_specs, modality_confidence, ogm_coefficients,
                                    pareto_combine, train_model)
from tests.conftest import make_toy_dataset

SMALL = FusionConfig(kind="intermediate", hidden=16, embed_dim=8, dropout=0.0)


def _ref_coefficients(scores, alpha):
    """Slow reference: the formula written out per modality."""
    names = list(scores)
    out = {}
    for k in names:
        others = [scores[j] for j in names if j != k and scores[j] is not None]
        if scores[k] is None or not others:
            out[k] = 1.0
            continue
        rho = scores[k] / (sum(others) / len(others))
        out[k] = 1.0 - math.tanh(alpha * (rho - 1.0)) if rho > 1.0 else 1.0
    return out


def _dominant_dataset(n=200, seed=0, missing_rate=0.0) -> MultimodalDataset:
    """'a' separates the classes cleanly, 'b' is pure noise: 'a' dominates any trained model."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    a = (np.eye(3)[y] * 4 + rng.normal(0, 0.5, (n, 3))).astype(np.float32)
    b = rng.normal(0, 1, (n, 4)).astype(np.float32)
    masks = {"b": rng.random(n) >= missing_rate}
    ds = MultimodalDataset({"a": a, "b": b}, np.full(n, UNLABELED), ["x", "y", "z"], masks, true_labels=y)
    ds.labels[:] = y
    return ds


def test_coefficients_match_slow_reference():
    rng = np.random.default_rng(0)
    for trial in range(300):
        m = int(rng.integers(2, 5))
        scores = {f"m{j}": float(rng.uniform(0.01, 1.0)) for j in range(m)}
        if trial % 3 == 0:
            scores["m0"] = None
        alpha = float(rng.uniform(0.0, 2.0))
        got, want = ogm_coefficients(scores, alpha), _ref_coefficients(scores, alpha)
        assert got.keys() == want.keys()
        for k in got:
            assert got[k] == pytest.approx(want[k], abs=1e-12)
            assert 0.0 <= got[k] <= 1.0
    # two modalities: the paper's rule; the weaker one is never slowed down
    c = ogm_coefficients({"a": 0.9, "b": 0.3}, 0.5)
    assert c["a"] == pytest.approx(1 - math.tanh(0.5 * (3.0 - 1.0))) and c["b"] == 1.0
    assert ogm_coefficients({"a": 0.5, "b": 0.5}, 0.5) == {"a": 1.0, "b": 1.0}


def test_confidence_masks_absent_items_and_matches_reference():
    g = torch.Generator().manual_seed(0)
    logits = {"a": torch.randn(12, 3, generator=g), "b": torch.randn(12, 3, generator=g)}
    y = torch.randint(0, 3, (12,), generator=g)
    masks = {"a": torch.ones(12, dtype=torch.bool), "b": torch.arange(12) % 3 == 0}
    got = modality_confidence(logits, y, masks)
    for k in ("a", "b"):
        p = torch.softmax(logits[k], 1)
        vals = [float(p[i, y[i]]) for i in range(12) if masks[k][i]]
        assert got[k] == pytest.approx(sum(vals) / len(vals), abs=1e-6)
    # changing an absent item's logits changes nothing
    logits2 = {"a": logits["a"], "b": logits["b"].clone()}
    logits2["b"][1] += 100.0
    assert modality_confidence(logits2, y, masks)["b"] == got["b"]
    # a modality absent from the whole batch has no score and is never modulated
    none = modality_confidence(logits, y, {"a": masks["a"], "b": torch.zeros(12, dtype=torch.bool)})
    assert none["b"] is None
    assert ogm_coefficients(none, 1.0) == {"a": 1.0, "b": 1.0}


def test_modulate_scales_only_the_dominant_encoder_gradients():
    ds = _dominant_dataset(60)
    specs = dataset_specs(ds)
    torch.manual_seed(0)
    module = FusionModel(specs, 3, SMALL)
    x = {k: torch.from_numpy(v) for k, v in ds.modalities.items()}
    m = {k: torch.from_numpy(v) for k, v in ds.masks.items()}
    torch.nn.functional.cross_entropy(module(x, m).logits, torch.as_tensor(ds.labels)).backward()
    before = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    cfg = TrainConfig(modality_balance="ogm_ge", ogm_noise=False)
    _modulate(module, _optimizer(module, cfg), {"a": 0.25, "b": 1.0}, cfg)
    for n, p in module.named_parameters():
        if n not in before:
            continue
        want = before[n] * 0.25 if n.startswith("encoders.a.") else before[n]
        assert torch.allclose(p.grad, want), n
    # with the generalisation-enhancement noise, gradients change, reproducibly under a seed
    cfg_ge = replace(cfg, ogm_noise=True)
    grads = []
    for _ in range(2):
        for n, p in module.named_parameters():
            if n in before:
                p.grad = before[n].clone()
        torch.manual_seed(5)
        _modulate(module, _optimizer(module, cfg_ge), {"a": 0.25, "b": 1.0}, cfg_ge)
        grads.append({n: p.grad.clone() for n, p in module.named_parameters() if n in before})
    enc_b = [n for n in before if n.startswith("encoders.b.") and before[n].numel() > 1][0]
    assert not torch.allclose(grads[0][enc_b], before[enc_b])
    assert all(torch.equal(grads[0][n], grads[1][n]) for n in before)
    assert torch.equal(grads[0]["head.weight"], before["head.weight"])  # the fusion head is never modulated


def test_dominant_encoder_takes_a_smaller_step_in_training():
    """End to end: one AdamW step from a trained model in which 'a' dominates; with OGM on step sizes
    a's encoder moves by exactly k_a times the plain step, every other parameter exactly the same."""
    ds = _dominant_dataset(200)
    idx = np.arange(200)
    base = TrainConfig(epochs=15, batch_size=32, val_fraction=0.0, lr=3e-3, warm_start=True)
    start = train_model(ds, idx, fusion=SMALL, train=replace(base, warm_start=False), seed=0)
    one = replace(base, epochs=1, batch_size=200)
    plain = train_model(ds, idx, fusion=SMALL, train=one, seed=1, init=start)
    ogm = train_model(ds, idx, fusion=SMALL, seed=1, init=start,
                      train=replace(one, modality_balance="ogm_ge", ogm_apply="lr", ogm_noise=False, ogm_alpha=1.0))
    k = ogm.history[0]
    assert k["ogm_coeff:a"] < 0.9 and k["ogm_coeff:b"] == 1.0, k
    s0 = start.module.state_dict()
    for n, v0 in s0.items():
        d_plain = plain.module.state_dict()[n] - v0
        d_ogm = ogm.module.state_dict()[n] - v0
        want = d_plain * k["ogm_coeff:a"] if n.startswith("encoders.a.") else d_plain
        assert torch.allclose(d_ogm, want, atol=1e-6, rtol=1e-4), n
    assert (ogm.module.state_dict()["encoders.a.net.0.weight"] - s0["encoders.a.net.0.weight"]).abs().sum() > 0


@pytest.mark.parametrize("train", [
    TrainConfig(epochs=12, patience=4, batch_size=32, modality_balance="ogm_ge"),
    TrainConfig(epochs=12, patience=4, batch_size=32, modality_balance="ogm_ge", ogm_score="head", ogm_apply="lr"),
    TrainConfig(epochs=12, patience=4, batch_size=32, modality_balance="warmup", warmup_epochs=3),
    TrainConfig(epochs=12, patience=4, batch_size=32, modality_balance="mmpareto"),
])
def test_seeded_run_is_reproducible_and_handles_missing_modalities(train):
    ds = make_toy_dataset(n=240, missing_rate=0.5)
    idx = np.random.default_rng(0).choice(len(ds), 120, replace=False)
    ds.labels[idx] = ds.true_labels[idx]
    m1 = train_model(ds, idx, fusion=SMALL, train=train, seed=4)
    m2 = train_model(ds, idx, fusion=SMALL, train=train, seed=4)
    for (k1, v1), (k2, v2) in zip(m1.module.state_dict().items(), m2.module.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    assert m1.history == m2.history
    m3 = train_model(ds, idx, fusion=SMALL, train=train, seed=5)
    assert not torch.equal(m1.module.head.weight, m3.module.head.weight)
    for rec in m1.history:
        assert all(math.isfinite(v) for v in rec.values())
        if train.modality_balance == "ogm_ge":
            assert 0.0 < rec["ogm_coeff:a"] <= 1.0 and 0.0 < rec["ogm_coeff:b"] <= 1.0
        has_pareto = {k for k in rec if k.startswith("pareto_conflict:")}
        if train.modality_balance == "mmpareto":
            assert has_pareto == {"pareto_conflict:a", "pareto_conflict:b"}
            assert all(0.0 <= rec[k] <= 1.0 for k in has_pareto)
        else:
            assert not has_pareto
    if train.modality_balance == "mmpareto":  # the conflict branch is exercised on this problem
        assert sum(r["pareto_conflict:a"] + r["pareto_conflict:b"] for r in m1.history) > 0
    acc = (m1.predict(ds, np.arange(len(ds))).probs.argmax(1).numpy() == ds.true_labels).mean()
    assert acc > 0.6


def test_warmup_trains_only_encoders_and_heads_first():
    ds = _dominant_dataset(120, missing_rate=0.3)
    idx = np.arange(120)
    train = TrainConfig(epochs=0, batch_size=32, val_fraction=0.0, modality_balance="warmup", warmup_epochs=4)
    model = train_model(ds, idx, fusion=SMALL, train=train, seed=2)
    with torch.random.fork_rng():
        torch.manual_seed(2)
        init = FusionModel(dataset_specs(ds), 3, SMALL).state_dict()
    after = model.module.state_dict()
    assert len(model.history) == 4 and all(r["warmup_epoch"] == 1.0 for r in model.history)
    for n in init:
        moved = not torch.equal(init[n], after[n])
        if n.startswith(("trunk.", "head.")):
            assert not moved, n  # the fused part gets no gradient during warm-up
        elif n.startswith(("encoders.", "aux_heads.")):
            assert moved, n
    # then the recipe as usual: warm-up epochs come first, then `epochs` fused epochs
    full = train_model(ds, idx, fusion=SMALL, train=replace(train, epochs=5), seed=2)
    assert len(full.history) == 9 and "warmup_epoch" not in full.history[-1]
    # the control: the same epochs on the joint loss move the fused part too
    joint = train_model(ds, idx, fusion=SMALL, train=replace(train, warmup_loss="joint"), seed=2)
    assert not torch.equal(joint.module.state_dict()["head.weight"], init["head.weight"])


def test_default_is_off_and_bad_settings_are_named():
    assert TrainConfig().modality_balance == "none"
    with pytest.raises(DataError, match="modality_balance"):
        TrainConfig(modality_balance="ogm")
    with pytest.raises(DataError, match="ogm_score"):
        TrainConfig(ogm_score="shapley")
    with pytest.raises(DataError, match="ogm_apply"):
        TrainConfig(ogm_apply="both")
    with pytest.raises(DataError, match="warmup_loss"):
        TrainConfig(warmup_loss="fused")
    with pytest.raises(DataError, match="warmup_epochs"):
        TrainConfig(warmup_epochs=-1)
    assert "mmpareto" in BALANCE_MODES and TrainConfig(modality_balance="mmpareto").modality_balance == "mmpareto"
    with pytest.raises(DataError, match="modality_balance"):
        TrainConfig(modality_balance="pareto")


def test_benchmark_train_overrides_reach_the_trainer():
    from benchmark.protocol import apply_recipe

    _, tr = apply_recipe(SMALL, TrainConfig(), {"train": {"modality_balance": "ogm_ge", "ogm_alpha": 0.8}})
    assert tr.modality_balance == "ogm_ge" and tr.ogm_alpha == 0.8
    with pytest.raises(DataError):
        apply_recipe(SMALL, TrainConfig(), {"train": {"modality_balance": "bogus"}})


def test_balance_study_modes_are_valid_train_overrides():
    from benchmark.protocol import apply_recipe
    from studies.balance import BASE_TRAIN, MODES

    assert MODES["mmpareto"] == {"modality_balance": "mmpareto"}
    for mode, overrides in MODES.items():
        _, tr = apply_recipe(SMALL, TrainConfig(), {"train": {**BASE_TRAIN, **overrides}})
        assert tr.modality_balance == overrides.get("modality_balance", "none"), mode


# --- MMPareto --------------------------------------------------------------------------------------

def _ref_pareto(g_mm, g_u):
    """Slow reference: the paper's rule written out on float64 arrays, cosine and all."""
    a, b = np.asarray(g_mm, dtype=np.float64), np.asarray(g_u, dtype=np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    cos = float(a @ b) / (na * nb) if na > 0 and nb > 0 else 0.0
    if cos >= 0:
        alpha = 0.5
    else:
        alpha = float(np.clip(((b - a) @ b) / np.linalg.norm(a - b) ** 2, 0.0, 1.0))
    d = alpha * a + (1 - alpha) * b
    s = a + b
    if np.linalg.norm(d) <= 1e-9 * (na + nb):
        return s, alpha, bool(cos < 0)
    return d * np.linalg.norm(s) / np.linalg.norm(d), alpha, bool(cos < 0)


@pytest.mark.parametrize("g_mm, g_u, conflict, alpha, want", [
    ([1.0, 0.0, 0.0], [0.0, 2.0, 0.0], False, 0.5, [1.0, 2.0, 0.0]),  # orthogonal: cos = 0, no conflict
    ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], False, 0.5, [2.0, 4.0, 6.0]),  # identical
    ([0.0, 0.0], [1.0, 2.0], False, 0.5, [1.0, 2.0]),  # a zero gradient never conflicts
    ([1.0, 0.0], [-1.0, 1.0], True, 0.6, [0.4 / math.sqrt(0.2) * 0.5, 0.4 / math.sqrt(0.2)]),  # obtuse
    ([1.0, -1.0], [-1.0, 1.0], True, 0.5, [0.0, 0.0]),  # opposite, equal norms: d = 0 -> the sum (0)
    ([2.0, 0.0], [-1.0, 0.0], True, 1 / 3, [1.0, 0.0]),  # opposite, unequal: d = 0 -> the sum
])
def test_pareto_combine_cases(g_mm, g_u, conflict, alpha, want):
    g, a, c = pareto_combine(torch.tensor(g_mm), torch.tensor(g_u))
    assert c is conflict and a == pytest.approx(alpha, abs=1e-12)
    assert g.dtype == torch.float32
    assert np.allclose(g.numpy(), want, atol=1e-6)
    ref, ref_alpha, ref_c = _ref_pareto(g_mm, g_u)
    assert ref_c is conflict and ref_alpha == pytest.approx(alpha) and np.allclose(ref, want, atol=1e-6)


def test_pareto_combine_matches_slow_reference():
    rng = np.random.default_rng(0)
    n_conflict = 0
    for trial in range(300):
        n = int(rng.integers(1, 40))
        a = rng.normal(0, 1, n) * rng.uniform(0.01, 10)
        b = rng.normal(0, 1, n) * rng.uniform(0.01, 10)
        if trial % 4 == 0:  # push towards a conflict
            b = b - 1.5 * (a @ b) / (a @ a) * a if a @ b > 0 else b
        g, alpha, conflict = pareto_combine(torch.from_numpy(a), torch.from_numpy(b))
        want, want_alpha, want_conflict = _ref_pareto(a, b)
        assert conflict == want_conflict and alpha == pytest.approx(want_alpha, abs=1e-12)
        assert np.allclose(g.numpy(), want, rtol=1e-9, atol=1e-12)
        s = a + b
        # magnitude of the plain sum is kept
        assert np.linalg.norm(g.numpy()) == pytest.approx(np.linalg.norm(s), rel=1e-9, abs=1e-12)
        if not conflict:  # equal weights: exactly the plain sum
            assert np.allclose(g.numpy(), s, rtol=1e-12, atol=1e-12)
            continue
        n_conflict += 1
        assert 0.0 < alpha < 1.0  # with a . b < 0 the min-norm point is inside the segment
        d = alpha * a + (1 - alpha) * b
        # min-norm: no weight on the grid does better, and d makes the same angle with both gradients
        grid = np.linspace(0, 1, 201)
        assert np.linalg.norm(d) <= min(np.linalg.norm(t * a + (1 - t) * b) for t in grid) + 1e-12
        assert d @ a == pytest.approx(d @ b, rel=1e-6, abs=1e-9) and d @ a >= -1e-12
    assert n_conflict > 30


def _pareto_reference_grads(module, x, m, y, aux_weight):
    """Plain gradients of ``_loss`` and per-encoder (g_mm, g_u) on a fresh forward of a copy of ``module``."""
    ref = copy.deepcopy(module)
    ref.zero_grad(set_to_none=True)
    out = ref(x, m)
    fused, aux = _loss_terms(out, y, m, aux_weight, ref.names)
    parts = {}
    for k in aux:
        ps = list(ref.encoders[k].parameters())
        flat = lambda gs: torch.cat([g.reshape(-1) for g in gs])  # noqa: E731
        g_mm = flat(torch.autograd.grad(fused, ps, retain_graph=True))
        g_u = flat(torch.autograd.grad(aux_weight / len(aux) * aux[k], ps, retain_graph=True))
        parts[k] = (g_mm, g_u)
    _loss(out, y, m, aux_weight, ref.names).backward()
    return {n: p.grad for n, p in ref.named_parameters()}, parts


@pytest.mark.parametrize("aux_weight", [1.0, 0.5])
def test_pareto_backward_changes_only_conflicting_encoder_gradients(aux_weight):
    ds = make_toy_dataset(n=64, missing_rate=0.5)
    specs = dataset_specs(ds)
    x = {k: torch.from_numpy(v) for k, v in ds.modalities.items()}
    m = {k: torch.from_numpy(v) for k, v in ds.masks.items()}
    y = torch.as_tensor(ds.true_labels)
    seen = set()
    for seed in range(4):  # seeds 0-1: no conflict; seed 3: both modalities conflict (checked below)
        torch.manual_seed(seed)
        module = FusionModel(specs, 3, SMALL)
        plain, parts = _pareto_reference_grads(module, x, m, y, aux_weight)
        fused, aux = _loss_terms(module(x, m), y, m, aux_weight, module.names)
        loss, conflicts = _pareto_backward(module, fused, aux, aux_weight)
        want_loss = _loss(module(x, m), y, m, aux_weight, module.names)
        assert float(loss.detach()) == pytest.approx(float(want_loss.detach()), abs=1e-6)
        for n, p in module.named_parameters():
            k = n.split(".")[1] if n.startswith("encoders.") else None
            if k is None:  # absent embeddings, trunk, fused head, auxiliary heads: the plain gradient
                assert torch.allclose(p.grad, plain[n], rtol=1e-6, atol=1e-8), n
        for k, (g_mm, g_u) in parts.items():
            # the split is exact: g_mm + g_u is the plain gradient of the usual loss
            names = [n for n, _ in module.encoders[k].named_parameters(prefix=f"encoders.{k}")]
            flat_plain = torch.cat([plain[n].reshape(-1) for n in names])
            assert torch.allclose(g_mm + g_u, flat_plain, rtol=1e-5, atol=1e-7)
            want, _, want_conflict = pareto_combine(g_mm, g_u)
            got = torch.cat([p.grad.reshape(-1) for p in module.encoders[k].parameters()])
            assert conflicts[k] == want_conflict == bool(float(g_mm @ g_u) < 0)
            assert torch.allclose(got, want if want_conflict else flat_plain, rtol=1e-5, atol=1e-7), (seed, k)
            seen.add(conflicts[k])
    assert seen == {False, True}


def test_pareto_modality_absent_from_the_batch_keeps_its_plain_gradient():
    ds = make_toy_dataset(n=48, missing_rate=0.5)
    specs = dataset_specs(ds)
    x = {k: torch.from_numpy(v) for k, v in ds.modalities.items()}
    m = {"a": torch.ones(48, dtype=torch.bool), "b": torch.zeros(48, dtype=torch.bool)}
    y = torch.as_tensor(ds.true_labels)
    torch.manual_seed(3)
    module = FusionModel(specs, 3, SMALL)
    plain, _ = _pareto_reference_grads(module, x, m, y, 1.0)
    fused, aux = _loss_terms(module(x, m), y, m, 1.0, module.names)
    assert set(aux) == {"a"}
    _, conflicts = _pareto_backward(module, fused, aux, 1.0)
    assert conflicts["b"] is False
    for n, p in module.named_parameters():
        if not n.startswith("encoders.a."):
            same = p.grad is None and plain[n] is None
            assert same or torch.allclose(p.grad, plain[n], rtol=1e-6, atol=1e-8), n


def test_mmpareto_without_unimodal_loss_is_the_plain_recipe():
    """aux_weight 0 leaves no unimodal loss to conflict with: the run is bit-identical to mode "none"."""
    ds = make_toy_dataset(n=160, missing_rate=0.5)
    idx = np.arange(100)
    ds.labels[idx] = ds.true_labels[idx]
    base = TrainConfig(epochs=4, batch_size=32, aux_weight=0.0)
    plain = train_model(ds, idx, fusion=SMALL, train=base, seed=1)
    par = train_model(ds, idx, fusion=SMALL, train=replace(base, modality_balance="mmpareto"), seed=1)
    for (k1, v1), (k2, v2) in zip(plain.module.state_dict().items(), par.module.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2), k1
    assert all(r["pareto_conflict:a"] == 0.0 and r["pareto_conflict:b"] == 0.0 for r in par.history)
    assert [r["train_loss"] for r in plain.history] == [r["train_loss"] for r in par.history]
