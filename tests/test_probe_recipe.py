"""Recipe 'probe' (backend.models.probe): the ActiveModel surface, its numbers, its settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from backend.data import DataError, MultimodalDataset, UNLABELED
from backend.diagnostics import diagnose
from backend.models.api import ActiveModel
from backend.models.fusion import FusionConfig
from backend.models.probe import fit_logistic, stratified_folds
from backend.models.trainer import TrainConfig, TrainedFusionModel, train_model
from tests.conftest import make_toy_dataset

PROBE = TrainConfig(recipe="probe")


def _labelled(ds: MultimodalDataset, n: int, seed: int = 0) -> np.ndarray:
    idx = np.sort(np.random.default_rng(seed).choice(len(ds), n, replace=False))
    ds.labels[idx] = ds.true_labels[idx]
    return idx


def test_fit_logistic_matches_sklearn() -> None:
    """Each batched problem is sklearn's multinomial L2 logistic regression (penalty on the bias too)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(0, 0.5, 120) > 0).astype(int) + (x[:, 2] > 1)
    w, b, _ = fit_logistic(torch.from_numpy(x), torch.from_numpy(y), 3, torch.ones(2, 120),
                           torch.tensor([0.1, 10.0]), 500)
    x1 = np.concatenate([x, np.ones((120, 1), np.float32)], 1)  # our bias is penalised: a constant column
    for p, c in enumerate((0.1, 10.0)):
        ref = LogisticRegression(C=c, fit_intercept=False, max_iter=5000, tol=1e-10).fit(x1, y)
        np.testing.assert_allclose(w[p].numpy().T, ref.coef_[:, :5], atol=2e-3)
        np.testing.assert_allclose(b[p].numpy(), ref.coef_[:, 5], atol=2e-3)


def test_folds_are_stratified_and_seeded() -> None:
    y = np.repeat([0, 1, 2], [10, 7, 3])
    f = stratified_folds(y, 3, np.random.default_rng(1))
    assert set(f) == {0, 1, 2}
    for c in range(3):
        counts = np.bincount(f[y == c], minlength=3)
        assert counts.max() - counts.min() <= 1
    np.testing.assert_array_equal(f, stratified_folds(y, 3, np.random.default_rng(1)))


def test_probe_model_honours_the_active_model_surface() -> None:
    ds = make_toy_dataset(n=300, n_modalities=3, seed=2)
    idx = _labelled(ds, 60)
    model = train_model(ds, idx, train=PROBE, fusion=FusionConfig(dropout=0.2), seed=0)
    assert isinstance(model, ActiveModel)
    rows = np.arange(len(ds))
    p = model.predict(ds, rows)
    assert p.probs.shape == (300, 3) and torch.allclose(p.probs.sum(1), torch.ones(300), atol=1e-5)
    assert set(p.unimodal_probs) == set(p.embeddings) == {"a", "b", "c"}
    assert p.embeddings["a"].shape == (300, 8) and p.fused_embedding.shape == (300, 8 + 6 + 5)
    # absent modality = the pool mean (0 after standardisation) and it changes nothing it should not
    miss = ~ds.masks["c"]
    assert miss.any() and torch.all(p.embeddings["c"][torch.from_numpy(miss)] == 0)
    dropped = model.predict(ds, rows, drop=["a", "b"])
    assert not torch.allclose(dropped.probs, p.probs)
    torch.testing.assert_close(dropped.unimodal_probs["c"], p.unimodal_probs["c"])
    none = model.predict(ds, rows, drop=["a", "b", "c"]).probs
    torch.testing.assert_close(none, none[:1].expand_as(none))  # no modality: the fused bias alone
    # MC dropout: seeded, and it does vary
    mc = model.predict_mc_dropout(ds, rows[:50], 4, seed=3)
    assert mc.shape == (4, 50, 3) and float(mc.std(0).max()) > 0
    torch.testing.assert_close(mc, model.predict_mc_dropout(ds, rows[:50], 4, seed=3))
    # diagnostics read the per-modality heads
    d = diagnose(model, ds, idx)
    assert set(d.unimodal_acc) == {"a", "b", "c"}
    rec = model.history[0]
    assert rec["recipe"] == "probe" and all(rec[f"C:{m}"] in PROBE.probe_cs for m in ("a", "b", "c", "joint"))


def test_probe_is_deterministic_and_survives_save_and_load(tmp_path) -> None:
    ds = make_toy_dataset(n=200, n_modalities=2, seed=4)
    idx = _labelled(ds, 40)
    a = train_model(ds, idx, train=PROBE, seed=7)
    b = train_model(ds, idx, train=PROBE, seed=7)
    rows = np.arange(len(ds))
    torch.testing.assert_close(a.predict(ds, rows).probs, b.predict(ds, rows).probs, rtol=0, atol=0)
    a.save(tmp_path / "m.pt")
    c = TrainedFusionModel.load(tmp_path / "m.pt")
    pa, pc = a.predict(ds, rows), c.predict(ds, rows)
    torch.testing.assert_close(pa.probs, pc.probs)
    torch.testing.assert_close(pa.fused_embedding, pc.fused_embedding)


def test_probe_reaches_the_concatenated_probe_and_beats_each_modality() -> None:
    """Two noisy informative modalities, 60 labels: the fused probe is at least sklearn's probe on the
    concatenation (-2 points) and above either modality alone."""
    ds = make_toy_dataset(n=1200, n_modalities=2, n_classes=4, missing_rate=0.0, seed=5)
    noise = np.random.default_rng(9)
    for k in ds.modality_names:
        ds.modalities[k] = (ds.modalities[k] + noise.normal(0, 2.5, ds.modalities[k].shape)).astype(np.float32)
    idx = _labelled(ds, 60)
    test = np.setdiff1d(np.arange(len(ds)), idx)
    model = train_model(ds, idx, train=PROBE, seed=0)
    acc = float((model.predict(ds, test).probs.argmax(1).numpy() == ds.true_labels[test]).mean())
    x = np.concatenate([ds.modalities[k] for k in ds.modality_names], 1)
    x = (x - x.mean(0)) / x.std(0)
    ref = LogisticRegression(C=0.5, max_iter=2000).fit(x[idx], ds.true_labels[idx])
    ref_acc = float((ref.predict(x[test]) == ds.true_labels[test]).mean())
    best_alone = max(float((model.predict(ds, test, drop=[o]).probs.argmax(1).numpy() == ds.true_labels[test]).mean())
                     for o in ds.modality_names)
    assert acc >= ref_acc - 0.02, (acc, ref_acc)
    assert acc >= best_alone, (acc, best_alone)


def test_probe_trains_when_a_labelled_item_lacks_a_modality_or_a_class_is_unseen() -> None:
    ds = make_toy_dataset(n=100, n_modalities=2, n_classes=3, missing_rate=0.5, seed=6)
    seen = np.flatnonzero(ds.true_labels != 2)[:8]  # class 2 never labelled, few items
    ds.labels[seen] = ds.true_labels[seen]
    model = train_model(ds, seen, train=PROBE, seed=0)
    p = model.predict(ds, np.arange(len(ds))).probs
    assert torch.isfinite(p).all()
    assert (p.argmax(1) != 2).float().mean() > 0.9


@pytest.mark.parametrize("bad, field", [({"recipe": "lbfgs"}, "recipe"), ({"probe_cs": []}, "probe_cs"),
                                        ({"probe_cs": [0.1, -1]}, "probe_cs"), ({"probe_folds": 1}, "probe_folds"),
                                        ({"probe_max_iter": 0}, "probe_max_iter"),
                                        ({"recipe": "probe", "modality_balance": "ogm_ge"}, "modality_balance")])
def test_bad_settings_name_the_field(bad: dict, field: str) -> None:
    with pytest.raises(DataError, match=field):
        TrainConfig(**bad)


def test_probe_refuses_raw_inputs_with_a_clear_error() -> None:
    tokens = np.random.default_rng(0).integers(1, 20, (30, 6)).astype(np.int64)
    vec = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    y = np.arange(30) % 2
    ds = MultimodalDataset({"text": tokens, "v": vec}, y.copy(), ["x", "y"], true_labels=y)
    with pytest.raises(DataError, match="text"):
        train_model(ds, np.arange(30), train=PROBE)
    assert UNLABELED < 0


# ------------------------------------------------------------------ the MLP expert (probe_interaction)
def _xor_dataset(n: int = 900, seed: int = 0) -> MultimodalDataset:
    """The class is the XOR of one bit in each modality: each modality alone is at chance."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2, (n, 2))
    y = (bits[:, 0] ^ bits[:, 1]).astype(np.int64)
    mods = {k: (rng.normal(0, 0.4, (n, 4)) + np.eye(4)[0] * (2 * bits[:, j:j + 1] - 1)).astype(np.float32)
            for j, k in enumerate(("a", "b"))}
    return MultimodalDataset(mods, np.full(n, UNLABELED), ["even", "odd"], true_labels=y)


def test_the_mlp_expert_learns_an_interaction_the_linear_heads_cannot() -> None:
    ds = _xor_dataset()
    idx = _labelled(ds, 300)
    test = np.setdiff1d(np.arange(len(ds)), idx)

    def acc(train: TrainConfig) -> tuple[float, TrainedFusionModel]:
        model = train_model(ds, idx, train=train, seed=0)
        return float((model.predict(ds, test).probs.argmax(1).numpy() == ds.true_labels[test]).mean()), model

    linear, _ = acc(TrainConfig(recipe="probe", probe_interaction=0, probe_network=False))
    mixed, model = acc(TrainConfig(recipe="probe", probe_network=False))
    default, _ = acc(PROBE)
    assert linear < 0.65 and mixed > 0.9 and default > 0.9, (linear, mixed, default)
    rec = model.history[-1]
    assert rec["expert_weight:interaction"] > 0.5 and rec["steps:interaction"] in (25, 50, 100, 200, 400)


def test_the_mlp_expert_is_left_out_below_its_minimum_of_labelled_items() -> None:
    ds = make_toy_dataset(n=300, n_modalities=2, seed=3)
    idx = _labelled(ds, 30)
    rec = train_model(ds, idx, train=PROBE, seed=0).history[-1]
    assert rec["expert_weight:interaction"] == 0.0 and "30 labelled items < 50" in rec["skipped:interaction"]


def test_batched_mlps_are_independent_problems() -> None:
    """Problem p of a batch is what training it alone gives (same seeded start, its own rows and penalty)."""
    from backend.models.probe import fit_mlps

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(80, 6)).astype(np.float32))
    y = torch.from_numpy((rng.random(80) < 0.5).astype(np.int64))
    w = torch.from_numpy((rng.random((3, 80)) < 0.7).astype(np.float32))
    pen = torch.tensor([1e-3, 1e-2, 1e-1])
    together = fit_mlps(x, y, 2, w, pen, 8, 30, 0.01, seed=4)
    for p in range(3):
        alone = fit_mlps(x, y, 2, w[p:p + 1], pen[p:p + 1], 8, 30, 0.01, seed=4)
        for a, b in zip(together, alone):
            torch.testing.assert_close(a[p], b[0], rtol=1e-4, atol=1e-5)


def test_a_probe_saved_before_the_mlp_expert_existed_still_loads() -> None:
    ds = make_toy_dataset(n=200, n_modalities=2, seed=4)
    idx = _labelled(ds, 60)
    old = train_model(ds, idx, train=TrainConfig(recipe="probe", probe_interaction=0), seed=0)
    state = old.state()
    del state["train_config"]["probe_interaction"], state["train_config"]["probe_interaction_rank"]
    again = TrainedFusionModel.from_state(state, "cpu")
    torch.testing.assert_close(again.predict(ds, np.arange(200)).probs, old.predict(ds, np.arange(200)).probs)


def test_auto_recipe_is_the_probe_on_feature_vectors_and_the_network_otherwise() -> None:
    from backend.models.trainer import auto_recipe

    vec = make_toy_dataset(n=60, n_modalities=2, seed=5)
    tokens = MultimodalDataset({"text": np.ones((60, 4), np.int64), "v": np.zeros((60, 3), np.float32)},
                               np.full(60, UNLABELED), ["x", "y"])
    assert auto_recipe(vec) == "probe" and auto_recipe(tokens) == "sgd"
    assert auto_recipe(vec, modality_balance="warmup") == "sgd"  # balancing is the network's
    idx = _labelled(vec, 40)
    model = train_model(vec, idx, train=TrainConfig(recipe="auto"), seed=0)
    assert model.train_config.recipe == "probe" and model.history[-1]["recipe"] == "probe"


def test_the_network_expert_is_weighted_on_its_own_validation_items_only() -> None:
    from backend.models.trainer import validation_split

    ds = make_toy_dataset(n=400, n_modalities=2, seed=7)
    idx = _labelled(ds, 120)
    model = train_model(ds, idx, train=PROBE, seed=3)
    rec = model.history[-1]
    held = validation_split(ds.labels[idx], PROBE, 3)[1]
    assert rec["held_out:network"] == len(held) > 0 and rec["expert_weight:network"] >= 0
    # the network inside is the sgd recipe's model for the same labels and seed
    sgd = train_model(ds, idx, train=TrainConfig(recipe="sgd"), seed=3)
    for k, v in sgd.module.state_dict().items():
        torch.testing.assert_close(model.module.network.state_dict()[k], v)
    few = _labelled(make_toy_dataset(n=200, n_modalities=2, seed=8), 30)
    small = make_toy_dataset(n=200, n_modalities=2, seed=8)
    small.labels[few] = small.true_labels[few]
    rec = train_model(small, few, train=PROBE, seed=0).history[-1]
    assert "held_out:network" not in rec and rec["expert_weight:network"] == 0.0
