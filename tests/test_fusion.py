"""Fusion models train and predict with missing modalities; a seed reproduces a CPU run exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.data import DataError, MultimodalDataset, Pool, UNLABELED
from backend.models.fusion import FusionConfig
from backend.models.trainer import TrainConfig, TrainedFusionModel, train_model
from tests.conftest import make_toy_dataset

FAST = TrainConfig(epochs=25, patience=5, batch_size=32)


def _labeled(ds, n=60, seed=0):
    idx = np.random.default_rng(seed).choice(len(ds), n, replace=False)
    ds.labels[idx] = ds.true_labels[idx]
    return idx


@pytest.mark.parametrize("kind", ["early", "intermediate", "late"])
def test_trains_and_predicts_with_missing_modalities(kind):
    ds = make_toy_dataset(n=400, missing_rate=0.3)
    idx = _labeled(ds, 120)
    model = train_model(ds, idx, fusion=FusionConfig(kind=kind), train=FAST, seed=1)
    pred = model.predict(ds, np.arange(len(ds)))
    assert pred.probs.shape == (400, 3)
    assert torch.allclose(pred.probs.sum(1), torch.ones(400), atol=1e-5)
    assert set(pred.unimodal_probs) == {"a", "b"} and set(pred.embeddings) == {"a", "b"}
    assert pred.masks["b"].sum().item() == ds.masks["b"].sum()
    acc = (pred.probs.argmax(1).numpy() == ds.true_labels).mean()
    assert acc > 0.6, f"{kind} fusion should learn the toy task, got {acc:.2f}"
    # items missing 'b' are predicted from 'a' alone: same answer as explicitly dropping 'b'
    missing = np.flatnonzero(~ds.masks["b"])
    dropped = model.predict(ds, missing, drop=["b"])
    assert torch.allclose(dropped.probs, pred.probs[missing], atol=1e-6)


@pytest.mark.parametrize("kind", ["early", "intermediate", "late"])
def test_seed_reproduces_run_exactly_on_cpu(kind):
    ds = make_toy_dataset(n=200)
    idx = _labeled(ds, 50)
    m1 = train_model(ds, idx, fusion=FusionConfig(kind=kind), train=FAST, seed=7)
    m2 = train_model(ds, idx, fusion=FusionConfig(kind=kind), train=FAST, seed=7)
    for (k1, v1), (k2, v2) in zip(m1.module.state_dict().items(), m2.module.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    assert m1.history == m2.history
    m3 = train_model(ds, idx, fusion=FusionConfig(kind=kind), train=FAST, seed=8)
    assert not torch.equal(m1.predict(ds, range(50)).probs, m3.predict(ds, range(50)).probs)


def test_late_fusion_renormalises_over_present_modalities():
    ds = make_toy_dataset(n=100)
    idx = _labeled(ds, 40)
    model = train_model(ds, idx, fusion=FusionConfig(kind="late"), train=FAST, seed=0)
    x = {k: torch.from_numpy(v[:10]) for k, v in ds.modalities.items()}
    m = {"a": torch.ones(10, dtype=torch.bool), "b": torch.zeros(10, dtype=torch.bool)}
    out = model.module(x, m)
    assert torch.allclose(out.logits, out.aux_logits["a"], atol=1e-6)
    none = {"a": torch.zeros(10, dtype=torch.bool), "b": torch.zeros(10, dtype=torch.bool)}
    assert torch.allclose(model.module(x, none).logits, torch.zeros(10, 3))


def test_absent_embedding_is_learned_not_zero_fill():
    ds = make_toy_dataset(n=300, missing_rate=0.5)
    idx = _labeled(ds, 150)
    model = train_model(ds, idx, fusion=FusionConfig(kind="intermediate"), train=FAST, seed=0)
    assert model.module.absent["b"].abs().sum() > 0
    pred = model.predict(ds, np.flatnonzero(~ds.masks["b"])[:5])
    assert torch.allclose(pred.embeddings["b"], model.module.absent["b"].detach().expand(5, -1))


def test_warm_start_continues_from_previous_weights():
    ds = make_toy_dataset(n=200)
    idx = _labeled(ds, 60)
    first = train_model(ds, idx, train=FAST, seed=0)
    warm = TrainConfig(epochs=1, patience=5, batch_size=32, warm_start=True, lr=1e-6, val_fraction=0)
    second = train_model(ds, idx, train=warm, seed=99, init=first)
    diff = max((a - b).abs().max().item() for a, b in zip(first.module.state_dict().values(), second.module.state_dict().values()))
    assert diff < 1e-3  # tiny lr: weights stay where the first model left them
    cold = train_model(ds, idx, train=TrainConfig(epochs=1, val_fraction=0), seed=99, init=first)
    diff_cold = max((a - b).abs().max().item() for a, b in zip(first.module.state_dict().values(), cold.module.state_dict().values()))
    assert diff_cold > 1e-2


def test_save_and_load_roundtrip(tmp_path):
    ds = make_toy_dataset(n=150)
    idx = _labeled(ds, 50)
    model = train_model(ds, idx, train=FAST, seed=3)
    path = tmp_path / "m" / "model.pt"
    model.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temp file left behind
    loaded = TrainedFusionModel.load(path)
    assert torch.equal(model.predict(ds, range(150)).probs, loaded.predict(ds, range(150)).probs)
    assert loaded.class_names == model.class_names and loaded.history == model.history


def test_mc_dropout_is_seeded_and_varies():
    ds = make_toy_dataset(n=100)
    idx = _labeled(ds, 40)
    model = train_model(ds, idx, train=FAST, seed=0)
    a = model.predict_mc_dropout(ds, range(100), 5, seed=1)
    b = model.predict_mc_dropout(ds, range(100), 5, seed=1)
    assert a.shape == (5, 100, 3) and torch.equal(a, b)
    assert (a[0] - a[1]).abs().max() > 0
    # dropout is off again afterwards
    assert torch.equal(model.predict(ds, range(10)).probs, model.predict(ds, range(10)).probs)


def test_image_and_token_modalities_train():
    rng = np.random.default_rng(0)
    n = 120
    y = rng.integers(0, 2, n)
    images = rng.normal(0, 1, (n, 3, 16, 16)).astype(np.float32)
    images[:, 0, :8] += y[:, None, None] * 2.0
    tokens = rng.integers(1, 50, (n, 6)).astype(np.int64)
    tokens[:, 0] = 50 + y
    tokens[:10, 3:] = 0  # padding
    ds = MultimodalDataset({"image": images, "text": tokens}, y, ["x", "y"], {"text": rng.random(n) > 0.2},
                           meta={"vocab_size": {"text": 52}})
    model = train_model(ds, np.arange(n), train=FAST, seed=0)
    pred = model.predict(ds, np.arange(n))
    assert (pred.probs.argmax(1).numpy() == y).mean() > 0.8
    assert model.specs["image"].kind == "image" and model.specs["text"].kind == "tokens"


def test_bad_input_is_named():
    ds = make_toy_dataset(n=50)
    with pytest.raises(DataError, match="no label"):
        train_model(ds, [0, 1], train=FAST)
    with pytest.raises(DataError, match="empty"):
        train_model(ds, [], train=FAST)
    raw = MultimodalDataset({"a": ["x"] * 3, "b": np.zeros((3, 2), np.float32)}, [0, 1, 0], ["p", "q"])
    with pytest.raises(DataError, match="featurize"):
        train_model(raw, [0, 1, 2], train=FAST)


def test_dense_pool_prediction_over_contiguous_views_equals_gathered_rows():
    """A pool that is most of a range (the dataset minus labelled holes) is predicted over contiguous views
    of the cached features and its rows selected afterwards; scattered rows are gathered. Same outputs."""
    from backend.models.trainer import PREDICT_BATCH, _dense_cover

    n = PREDICT_BATCH + 1500
    ds = make_toy_dataset(n=n, missing_rate=0.3)
    idx = _labeled(ds, 60)
    model = train_model(ds, idx, fusion=FusionConfig(kind="intermediate"), train=FAST, seed=3)
    pool = np.setdiff1d(np.arange(n), idx)
    assert _dense_cover(pool, n) == (int(pool[0]), int(pool[-1]) + 1)
    fast = model.predict(ds, pool, drop=["a"])
    shuffled = np.random.default_rng(0).permutation(pool)
    assert _dense_cover(shuffled, n) is None  # not sorted: the gather path
    slow = model.predict(ds, shuffled, drop=["a"])
    order = np.argsort(shuffled)
    assert torch.allclose(fast.probs, slow.probs[order], atol=1e-6)
    assert torch.allclose(fast.fused_embedding, slow.fused_embedding[order], atol=1e-6)
    for k in ("a", "b"):
        assert torch.allclose(fast.unimodal_probs[k], slow.unimodal_probs[k][order], atol=1e-6)
        assert torch.allclose(fast.embeddings[k], slow.embeddings[k][order], atol=1e-6)
        assert torch.equal(fast.masks[k], slow.masks[k][order])
    assert not fast.masks["a"].any() and fast.masks["b"].numpy().tolist() == ds.masks["b"][pool].tolist()
    assert _dense_cover(pool[::2], n) is None  # half of the range: gathering is cheaper
    assert len(model.predict(ds, np.arange(0)).probs) == 0
