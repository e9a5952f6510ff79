"""Multi-label (label sets) in the engine: data, heuristics against slow references, both recipes,
persistence, diagnostics. The strategy contract on multi-label models is in test_strategy_contract.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from backend import heuristics
from backend.data import UNLABELED, DataError, MultimodalDataset, Pool, label_strata
from backend.diagnostics import modality_shapley, unimodal_accuracy
from backend.kernels import FactoredEmbedding
from backend.models.fusion import FusionConfig
from backend.models.trainer import TrainConfig, TrainedFusionModel, train_model
from tests.conftest import make_toy_multilabel_dataset


def _vectors(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"a": rng.normal(size=(n, 3)).astype(np.float32), "b": rng.normal(size=(n, 2)).astype(np.float32)}


def test_label_sets_are_validated_and_an_empty_set_is_a_label() -> None:
    labels = np.array([[1, 0, 1], [0, 0, 0], [UNLABELED] * 3, [0, 1, 0]])
    ds = MultimodalDataset(_vectors(4), labels, ["x", "y", "z"], ids=["p", "q", "r", "s"])
    assert ds.multi_label and ds.labeled_mask().tolist() == [True, True, False, True]
    assert Pool.from_dataset(ds).labeled.tolist() == [0, 1, 3]
    assert ds.subset([3, 0]).labels.tolist() == [[0, 1, 0], [1, 0, 1]]
    with pytest.raises(DataError, match=r"item 'q'.*\[0, 2, 0\] must be all 0/1"):
        MultimodalDataset(_vectors(2), np.array([[1, 0, 0], [0, 2, 0]]), ["x", "y", "z"], ids=["p", "q"])
    with pytest.raises(DataError, match=r"item 'p'.*\[-1, 1, -1\]"):
        MultimodalDataset(_vectors(2), np.array([[-1, 1, -1], [0, 0, 1]]), ["x", "y", "z"], ids=["p", "q"])
    with pytest.raises(DataError, match="labels has 2 columns, the dataset has 3 classes"):
        MultimodalDataset(_vectors(2), np.zeros((2, 2)), ["x", "y", "z"])
    with pytest.raises(DataError, match=r"true_labels has shape \(2,\), expected \(2, 3\)"):
        MultimodalDataset(_vectors(2), np.zeros((2, 3)), ["x", "y", "z"], true_labels=np.zeros(2))


def test_strata_are_the_rarest_class_of_each_set() -> None:
    y = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 0, 1], [1, 1, 0]])
    # class frequencies 4, 2, 1: the rarest class of each set, -1 for the empty set
    assert label_strata(y).tolist() == [1, 0, -1, 2, 1]
    assert label_strata(np.array([2, 0, 1])).tolist() == [2, 0, 1]


def _reference(probs: np.ndarray) -> dict[str, np.ndarray]:
    """Slow per-item, per-class loops."""
    out = {k: [] for k in ("lc", "margin", "entropy")}
    for row in probs:
        conf, gaps, hs = 1.0, [], []
        for p in row:
            conf *= max(p, 1 - p)
            gaps.append(abs(2 * p - 1))
            hs.append(-sum(q * math.log(max(q, 1e-12)) for q in (p, 1 - p)))
        out["lc"].append(1 - conf)
        out["margin"].append(-min(gaps))
        out["entropy"].append(sum(hs) / len(hs))
    return {k: np.array(v) for k, v in out.items()}


def test_multilabel_heuristics_match_slow_references() -> None:
    rng = np.random.default_rng(3)
    probs = np.concatenate([rng.random((40, 5)), np.array([[0.0, 1.0, 0.5, 0.2, 0.9]])])
    ref = _reference(probs)
    t = torch.as_tensor(probs, dtype=torch.float64)
    np.testing.assert_allclose(heuristics.multilabel_least_confidence(t).numpy(), ref["lc"], atol=1e-10)
    np.testing.assert_allclose(heuristics.multilabel_margin(t).numpy(), ref["margin"], atol=1e-12)
    np.testing.assert_allclose(heuristics.multilabel_entropy(t).numpy(), ref["entropy"], atol=1e-10)
    assert heuristics.multilabel_margin(t)[-1] == 0.0  # a class at exactly 1/2: the most uncertain possible
    mc = torch.as_tensor(rng.random((6, 40, 5)))
    mean_h = np.array([_reference(mc[:, i].numpy())["entropy"].mean() for i in range(40)])
    ref_bald = _reference(mc.mean(0).numpy())["entropy"] - mean_h
    np.testing.assert_allclose(heuristics.multilabel_bald(mc).numpy(), np.maximum(ref_bald, 0), atol=1e-10)
    same = mc[:1].expand(4, -1, -1)
    assert torch.allclose(heuristics.multilabel_bald(same), torch.zeros(40, dtype=mc.dtype))


def test_badge_multilabel_gradient_is_sigmoid_minus_hallucinated_set() -> None:
    p = torch.tensor([[0.9, 0.2, 0.5], [0.4, 0.6, 0.1]])
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    emb = FactoredEmbedding.badge_multilabel(p, [z])
    assert torch.allclose(emb.a, torch.tensor([[-0.1, 0.2, -0.5], [0.4, -0.4, 0.1]]))
    assert torch.allclose(emb.sq_norms, (emb.a ** 2).sum(1) * (z ** 2).sum(1))


def _quality(model, ds, idx) -> tuple[float, float]:
    """(per-class accuracy, micro F1) of the fused sigmoids at 1/2 against the true sets."""
    p = model.predict(ds, idx).probs.cpu().numpy()
    y = ds.true_labels[idx]
    yhat = (p >= 0.5).astype(int)
    tp = int((yhat & y).sum())
    f1 = 2 * tp / max(int(yhat.sum() + y.sum()), 1)
    return float((yhat == y).mean()), f1


@pytest.mark.parametrize("recipe", ["sgd", "probe"])
def test_both_recipes_learn_label_sets_with_sigmoid_outputs(recipe: str, tmp_path) -> None:
    ds = make_toy_multilabel_dataset(n=400, seed=1)
    rng = np.random.default_rng(1)
    labeled = rng.choice(len(ds), 120, replace=False)
    ds.labels[labeled] = ds.true_labels[labeled]
    model = train_model(ds, labeled, fusion=FusionConfig(hidden=32, embed_dim=16),
                        train=TrainConfig(epochs=60, patience=10, batch_size=32, recipe=recipe), seed=0)
    assert model.multi_label
    rest = Pool.from_labeled(len(ds), labeled).unlabeled
    pred = model.predict(ds, rest)
    assert not torch.allclose(pred.probs.sum(1), torch.ones(len(rest)))  # independent sigmoids, not a softmax
    assert bool(((pred.probs >= 0) & (pred.probs <= 1)).all())
    per_class, f1 = _quality(model, ds, rest)
    majority = float(np.maximum(ds.true_labels[rest].mean(0), 1 - ds.true_labels[rest].mean(0)).mean())
    assert per_class > majority + 0.15 and f1 > 0.6, (per_class, majority, f1)
    for k in ds.modality_names:  # every head learned its modality's view of the sets
        head = (pred.unimodal_probs[k].cpu().numpy() >= 0.5) == ds.true_labels[rest]
        present = ds.masks[k][rest]
        assert head[present].mean() > majority + 0.05, (k, head[present].mean(), majority)
    model.save(tmp_path / "m.pt")
    again = TrainedFusionModel.load(tmp_path / "m.pt")
    assert again.multi_label
    assert torch.allclose(again.predict(ds, rest).probs, pred.probs, atol=1e-6)
    mc = model.predict_mc_dropout(ds, rest[:20], 3, seed=0)
    assert mc.shape == (3, 20, ds.n_classes) and bool(((mc >= 0) & (mc <= 1)).all())


def test_training_refuses_an_unlabelled_row_in_the_labelled_set() -> None:
    ds = make_toy_multilabel_dataset(n=50)
    ds.labels[:10] = ds.true_labels[:10]
    with pytest.raises(DataError, match="item '10' is in the labelled set but has no label"):
        train_model(ds, np.arange(11), train=TrainConfig(epochs=2))


def test_diagnostics_explain_the_predicted_set(problem_multilabel) -> None:
    model, ds, pool = problem_multilabel
    idx = pool.unlabeled[:30]
    phi = modality_shapley(model, ds, idx)
    full = model.predict(ds, idx).probs.double()
    none = model.predict(ds, idx, drop=ds.modality_names).probs.double()
    t = (full >= 0.5).double()

    def v(p: torch.Tensor) -> torch.Tensor:
        return (t * p + (1 - t) * (1 - p)).mean(1)

    # efficiency: the contributions add up to v(all) - v(empty) for the predicted set
    assert torch.allclose(phi.sum(1), v(full) - v(none), atol=1e-6)
    phi_label = modality_shapley(model, ds, idx, target="label")  # the oracle's true sets
    assert phi_label.shape == (30, 2)
    acc = unimodal_accuracy(model, ds, idx)
    exact = ((full >= 0.5).cpu().numpy() == ds.true_labels[idx].astype(bool)).all(1).mean()
    assert acc["fused"] == pytest.approx(exact)
    with pytest.raises(DataError, match=r"target label sets must be 0/1 of shape \(30, 4\)"):
        modality_shapley(model, ds, idx, target=np.zeros(30))
