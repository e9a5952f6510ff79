"""Training a fusion model on the labelled pool, and the trained model strategies query.

Why these choices:
- validation-based early stopping on a seeded split of the labelled items keeps the recipe honest
  when the labelled set grows from tens to thousands of items;
- retrain-from-scratch (default) or warm-start per round is a setting, so benchmarks can compare both;
- the loss is fused cross-entropy plus the mean of the auxiliary heads' cross-entropies (each only
  over items that have that modality), as in BMMAL, so every modality's own head is always trained;
- optional training-side modality balancing (``TrainConfig.modality_balance``): OGM-GE gradient
  modulation, a unimodal warm-up, or MMPareto gradient-conflict resolution, so a query strategy is
  never the only lever against a model that leans on one modality; default ``"none"`` leaves the
  recipe exactly as before;
- MMPareto (Wei & Hu, ICML 2024) on modality m's encoder parameters theta_m: g_mm = dL_fused/dtheta_m,
  g_u = dL_u(m)/dtheta_m with L_u(m) = aux_weight * CE_m / K (m's share of the usual auxiliary term,
  K = modalities present in the batch), so g_mm + g_u is the plain gradient; if g_mm . g_u >= 0 the
  plain gradient is kept (equal weights, magnitude kept), else d = a g_mm + (1 - a) g_u with the
  min-norm a = clip((g_u - g_mm) . g_u / ||g_mm - g_u||^2, 0, 1), rescaled to ||g_mm + g_u||;
- everything runs in a forked RNG seeded by ``seed``: a seed reproduces a CPU run exactly;
- CUDA is used when present, with bfloat16 autocast there; CPU otherwise;
- ``TrainConfig.recipe="probe"`` swaps all of the above for :mod:`backend.models.probe` (standardised
  frozen features, per-modality L2 logistic heads fitted by full-batch L-BFGS with C chosen by
  cross-validation, product-of-experts fusion): on pretrained features it is what a linear probe
  reaches, which the SGD recipe is not (issue 17).

The pieces live in their own modules, and every name is re-exported here: the settings in
:mod:`backend.models.config`, the trained model in :mod:`backend.models.trained`, the losses in
:mod:`backend.models.losses`, OGM-GE and MMPareto in :mod:`backend.models.balancing`; this module keeps
the training loop.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

import numpy as np
import torch

from backend.data import DataError, MultimodalDataset, is_labeled, label_strata
from backend.device import pick_device
from backend.models.balancing import (_flat_grads, _modality_logits, _modulate, _pareto_backward,  # noqa: F401
                                      modality_confidence, ogm_coefficients, pareto_combine)
from backend.models.config import BALANCE_MODES, RECIPES, TrainConfig, auto_recipe  # noqa: F401
from backend.models.fusion import FusionConfig, FusionModel
from backend.models.losses import _hits, _loss, _loss_terms, _unimodal_loss, classification_loss  # noqa: F401
from backend.models.probe import train_probe
from backend.models.trained import (PREDICT_BATCH, TrainedFusionModel, _DeviceFeatures, _dense_cover,  # noqa: F401
                                    _probe_module, _select, build_module, dataset_specs)


def _train_probe(dataset: MultimodalDataset, idx: np.ndarray, y_np: np.ndarray, fusion: FusionConfig,
                 train: TrainConfig, seed: int) -> TrainedFusionModel:
    """``train_model`` for ``recipe="probe"`` (see :mod:`backend.models.probe`); deterministic, no RNG but the folds."""
    device = pick_device(train.device)
    specs = dataset_specs(dataset)
    module = _probe_module(specs, dataset.n_classes, fusion, train, dataset.multi_label)
    model = TrainedFusionModel(module, specs, fusion, dataset.class_names, device, [], train,
                               multi_label=dataset.multi_label)
    feats = model._device_features(dataset)
    y = torch.as_tensor(y_np, device=device)
    idx_t = torch.as_tensor(idx, device=device)
    held_out = {}
    if module.network is not None:
        val = validation_split(y_np, train, seed)[1]
        if len(val):  # else nothing can say what the network is worth: it keeps weight 0 (and is not trained)
            net = train_model(dataset, idx, fusion=fusion, train=replace(train, recipe="sgd"), seed=seed)
            module.network.load_state_dict(net.module.state_dict())
            module.network.eval()
            with torch.no_grad():
                terms = module._expert(module.network(*feats.batch(idx_t)).logits.float())
            rows = torch.zeros(len(idx), dtype=torch.bool, device=device)
            rows[torch.as_tensor(val, device=device)] = True
            held_out["network"] = (terms, rows)
    record = train_probe(module, feats.inputs, feats.masks, idx_t,
                         y.float() if dataset.multi_label else y, cs=train.probe_cs, folds=train.probe_folds,
                         max_iter=train.probe_max_iter, pull=train.probe_pull, seed=seed, held_out=held_out)
    module.eval()
    model.history.append(record)
    model.meta.update({"best_epoch": 0, "epochs_run": 1, "n_train": int(len(idx)), "n_val": 0, "seed": seed})
    return model


def validation_split(labels: np.ndarray, train: TrainConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (train, validation) positions of the labelled items that the sgd recipe uses for ``seed``."""
    return _split(labels, train.val_fraction, train.min_val, np.random.default_rng(seed))


def _split(labels: np.ndarray, val_fraction: float, min_val: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of positions 0..n-1 into train/val; empty val when too few items
    (label sets are stratified by :func:`backend.data.label_strata`)."""
    n = len(labels)
    n_val = int(round(n * val_fraction))
    if val_fraction <= 0 or n_val < min_val or n - n_val < 2:
        return np.arange(n), np.arange(0)
    labels = label_strata(labels)
    val = []
    for c in np.unique(labels):
        pos = np.flatnonzero(labels == c)
        rng.shuffle(pos)
        k = int(round(len(pos) * val_fraction))
        if len(pos) > 1:
            val.extend(pos[:k].tolist())
    val_arr = np.sort(np.asarray(val, dtype=np.int64))
    return np.setdiff1d(np.arange(n), val_arr), val_arr


def train_model(dataset: MultimodalDataset, labeled_indices: Sequence[int] | np.ndarray, *,
                fusion: FusionConfig | None = None, train: TrainConfig | None = None, seed: int = 0,
                init: TrainedFusionModel | None = None) -> TrainedFusionModel:
    """Train a fusion model on ``dataset.labels[labeled_indices]``.

    ``train.recipe="auto"`` becomes :func:`auto_recipe`'s choice (the model records the recipe it got).
    ``train.recipe="probe"``: see :mod:`backend.models.probe` (``init`` and ``warm_start`` do not apply:
    every fit restarts from its seeded start). Otherwise (``"sgd"``): with ``train.warm_start`` and
    ``init`` given, training continues from ``init``'s weights;
    otherwise the model is re-initialised from ``seed``. Early stopping restores the weights of
    the epoch with the lowest validation loss.

    ``train.modality_balance`` (the same for every query strategy that a comparison runs):

    - ``"none"``: the plain recipe.
    - ``"ogm_ge"``: per batch, after the backward pass, s_m = mean over items having m of
      softmax(l_m)[y] (l_m: ``ogm_score``), rho_m = s_m / mean_{j != m} s_j,
      k_m = 1 - tanh(ogm_alpha * (rho_m - 1)) if rho_m > 1 else 1; modality m's encoder gradients
      become k_m * g (+ N(0, std(g)) with ``ogm_noise``), or with ``ogm_apply="lr"`` its step size
      becomes k_m * lr. The epoch means of k_m are in ``history`` as ``ogm_coeff:<m>``.
    - ``"warmup"``: ``warmup_epochs`` epochs of each modality's encoder + auxiliary head trained on
      its own head's loss alone (no fused loss, no early stopping), then the plain recipe. With
      ``warmup_loss="joint"`` those epochs use the usual loss instead: the control that separates
      "trained each modality alone first" from "trained longer before early stopping".
    - ``"mmpareto"`` (Wei & Hu, ICML 2024): per batch and per modality m present in it, with theta_m
      m's encoder parameters as one flat vector, g_mm = dL_fused/dtheta_m and g_u = dL_u/dtheta_m,
      where L_fused is the fused CE and L_u = aux_weight * CE_m / K (CE_m: m's auxiliary head on items
      having m; K: modalities present in the batch), i.e. m's share of ``_loss``'s auxiliary term, so
      g_mm + g_u is exactly the plain gradient. Then (:func:`pareto_combine`)

          g_mm . g_u >= 0 (cos >= 0, no conflict):  alpha = (1/2, 1/2)
          otherwise (conflict):  alpha_1 = clip((g_u - g_mm) . g_u / ||g_mm - g_u||^2, 0, 1),
                                 alpha_2 = 1 - alpha_1                      (min-norm, MGDA)
          d = alpha_1 g_mm + alpha_2 g_u,   g = d * ||g_mm + g_u|| / ||d||  (plain sum if ||d|| ~ 0)

      With equal weights g is exactly g_mm + g_u, so only conflicting steps change anything (the
      plain gradient is kept then). Every other parameter (absent embeddings, trunk, fused head,
      auxiliary heads) and a modality absent from the batch (or with ``aux_weight`` 0, or without
      encoder parameters) keep the plain gradient. The epoch share of batches in which m's gradients
      conflicted (absent batches count as no conflict) is in ``history`` as ``pareto_conflict:<m>``.
    """
    fusion = fusion or FusionConfig()
    train = train or TrainConfig()
    idx = np.asarray(labeled_indices, dtype=np.int64)
    if idx.size == 0:
        raise DataError("cannot train on an empty labelled set")
    y_np = dataset.labels[idx]
    if not is_labeled(y_np).all():
        bad = dataset.ids[idx[~is_labeled(y_np)][0]]
        raise DataError(f"item {bad!r} is in the labelled set but has no label")
    if train.recipe == "auto":
        train = replace(train, recipe=auto_recipe(dataset, train.modality_balance))
    if train.recipe == "probe":
        return _train_probe(dataset, idx, y_np, fusion, train, seed)
    device = pick_device(train.device)
    specs = dataset_specs(dataset)
    tr_pos, va_pos = validation_split(y_np, train, seed)

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        module = FusionModel(specs, dataset.n_classes, fusion)
        if train.warm_start and init is not None:
            module.load_state_dict(init.module.state_dict())
        model = TrainedFusionModel(module, specs, fusion, dataset.class_names, device, [], train,
                                   multi_label=dataset.multi_label)
        module.to(device)
        feats = model._device_features(dataset)
        y = torch.as_tensor(y_np, device=device)
        if dataset.multi_label:
            y = y.float()
        idx_t = torch.as_tensor(idx, device=device)
        tr_t = torch.as_tensor(tr_pos, device=device)
        va_t = torch.as_tensor(va_pos, device=device)
        opt = _optimizer(module, train)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        n_warm = train.warmup_epochs if train.modality_balance == "warmup" else 0
        best_loss, best_state, best_epoch, bad_epochs = math.inf, None, 0, 0
        for epoch in range(n_warm + train.epochs):
            warm = epoch < n_warm
            module.train()
            perm = tr_t[torch.randperm(len(tr_t), generator=gen).to(device)]
            total, count = 0.0, 0
            coeff_sum = {k: 0.0 for k in model.modality_names}
            conflict_sum = {k: 0.0 for k in model.modality_names}
            n_steps = n_pareto = 0
            for start in range(0, len(perm), train.batch_size):
                pos = perm[start:start + train.batch_size]
                x, m = feats.batch(idx_t[pos])
                if train.modality_balance == "mmpareto":
                    with model._autocast():
                        out = module(x, m)
                        fused, aux = _loss_terms(out, y[pos], m, train.aux_weight, model.modality_names)
                    opt.zero_grad(set_to_none=True)
                    loss, conflicts = _pareto_backward(module, fused, aux, train.aux_weight)
                    for k, c in conflicts.items():
                        conflict_sum[k] += float(c)
                    n_pareto += 1
                else:
                    with model._autocast():
                        out = module(x, m)
                        if warm and train.warmup_loss == "unimodal":
                            loss = _unimodal_loss(out, y[pos], m, model.modality_names)
                        else:
                            loss = _loss(out, y[pos], m, train.aux_weight, model.modality_names)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                if train.modality_balance == "ogm_ge":
                    with model._autocast():
                        logits = _modality_logits(module, out, m, train.ogm_score)
                    coeffs = ogm_coefficients(modality_confidence(logits, y[pos], m), train.ogm_alpha)
                    _modulate(module, opt, coeffs, train)
                    for k, c in coeffs.items():
                        coeff_sum[k] += c
                    n_steps += 1
                opt.step()
                total += float(loss.detach()) * len(pos)
                count += len(pos)
            record: dict[str, float] = {"epoch": epoch, "train_loss": total / max(count, 1)}
            if warm:
                record["warmup_epoch"] = 1.0
            if n_steps:
                record.update({f"ogm_coeff:{k}": v / n_steps for k, v in coeff_sum.items()})
            if n_pareto:
                record.update({f"pareto_conflict:{k}": v / n_pareto for k, v in conflict_sum.items()})
            if len(va_t) and not warm:
                module.eval()
                with torch.no_grad():
                    x, m = feats.batch(idx_t[va_t])
                    with model._autocast():
                        out = module(x, m)
                    vl = float(classification_loss(out.logits, y[va_t]))
                    record["val_loss"] = vl
                    record["val_acc"] = float(_hits(out.logits, y[va_t]).float().mean())
                if vl < best_loss - 1e-6:
                    best_loss, best_epoch, bad_epochs = vl, epoch, 0
                    best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
                else:
                    bad_epochs += 1
            model.history.append(record)
            if len(va_t) and bad_epochs >= train.patience:
                break
        if best_state is not None:
            module.load_state_dict(best_state)
        model.meta.update({"best_epoch": best_epoch, "epochs_run": len(model.history), "n_train": int(len(tr_pos)),
                           "n_val": int(len(va_pos)), "seed": seed})
    module.eval()
    return model


def _optimizer(module: FusionModel, train: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; with OGM on step sizes, one parameter group per modality encoder (named) plus the rest."""
    if not (train.modality_balance == "ogm_ge" and train.ogm_apply == "lr"):
        return torch.optim.AdamW(module.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    groups, seen = [], set()
    for k in module.names:
        params = list(module.encoders[k].parameters())
        seen.update(id(p) for p in params)
        if params:
            groups.append({"params": params, "modality": k})
    groups.append({"params": [p for p in module.parameters() if id(p) not in seen], "modality": None})
    return torch.optim.AdamW(groups, lr=train.lr, weight_decay=train.weight_decay)
