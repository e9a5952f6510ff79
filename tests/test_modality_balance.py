"""Training-side modality balancing (OGM-GE, unimodal warm-up) in backend.models.trainer."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from backend.data import DataError, MultimodalDataset, UNLABELED
from backend.models.fusion import FusionConfig, FusionModel
from backend.models.trainer import (TrainConfig, _modulate, _optimizer, dataset_specs, modality_confidence,
                                    ogm_coefficients, train_model)
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


def test_benchmark_train_overrides_reach_the_trainer():
    from benchmark.protocol import apply_recipe

    _, tr = apply_recipe(SMALL, TrainConfig(), {"train": {"modality_balance": "ogm_ge", "ogm_alpha": 0.8}})
    assert tr.modality_balance == "ogm_ge" and tr.ogm_alpha == 0.8
    with pytest.raises(DataError):
        apply_recipe(SMALL, TrainConfig(), {"train": {"modality_balance": "bogus"}})
