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
"""

from __future__ import annotations

import copy
import io
import math
import os
import tempfile
import weakref
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from backend.data import DataError, MultimodalDataset, is_labeled, label_strata
from backend.device import pick_device
from backend.models.api import Predictions
from backend.models.fusion import FusionConfig, FusionModel
from backend.models.modality_encoders import FeatureSpec
from backend.models.probe import ProbeFusion, train_probe

PREDICT_BATCH = 8192
BALANCE_MODES = ("none", "ogm_ge", "warmup", "mmpareto")
RECIPES = ("auto", "sgd", "probe")


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe; identical for every strategy within a benchmark scenario."""

    epochs: int = 200
    lr: float = 3e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    patience: int = 15
    val_fraction: float = 0.2
    min_val: int = 10  # below this many validation items, train a fixed number of epochs instead
    aux_weight: float = 1.0
    warm_start: bool = False
    device: str | None = None
    amp: bool = True
    # training-side modality balancing (see modality_confidence / ogm_coefficients / train_model)
    modality_balance: str = "none"  # "none" | "ogm_ge" | "warmup" | "mmpareto"
    ogm_alpha: float = 0.5  # k_m = 1 - tanh(alpha * (rho_m - 1)) for the dominant modality
    ogm_noise: bool = True  # OGM-GE's generalisation enhancement: + N(0, std(grad)) on encoder gradients
    ogm_score: str = "contribution"  # "contribution": fused head from m alone; "head": m's auxiliary head
    ogm_apply: str = "grad"  # "grad": scale encoder gradients (as in the paper); "lr": scale encoder step sizes
    warmup_epochs: int = 10  # "warmup": epochs of unimodal training (encoders + aux heads) before the recipe
    warmup_loss: str = "unimodal"  # "joint": the same epochs on the usual loss (a control: more epochs, no balancing)
    # "sgd": the fusion module trained by AdamW with early stopping (everything above);
    # "probe": backend.models.probe (linear heads and an MLP expert, C / penalty / steps by CV, product of
    # experts; vector features only; epochs/lr/batch_size/patience/val_fraction/aux_weight/modality_balance
    # do not apply); "auto": probe where every modality is a feature vector, else sgd (auto_recipe)
    recipe: str = "sgd"
    probe_cs: tuple[float, ...] = (0.01, 0.04, 0.16, 0.64, 2.5, 10.0)  # candidate C (sklearn's convention)
    probe_folds: int = 3  # cross-validation folds that choose C per modality
    probe_max_iter: int = 200  # L-BFGS iterations per fit
    probe_pull: float = 0.01  # product-of-experts weights: penalty on ||w - 1||^2 + ||b||^2
    probe_joint: bool = True  # one more expert on all modalities side by side (the concatenated probe)
    probe_interaction: int = 64  # hidden width of the MLP expert on all modalities (0: none)
    probe_interaction_rank: int = 64  # principal directions per modality the MLP expert reads
    probe_network: bool = True  # the sgd recipe's fusion network as one more expert (weighted on its val items)

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise DataError(f"recipe must be one of {list(RECIPES)}, got {self.recipe!r}")
        try:
            cs = tuple(float(c) for c in self.probe_cs)
        except (TypeError, ValueError):
            raise DataError(f"probe_cs must be a list of positive numbers, got {self.probe_cs!r}") from None
        if not cs or not all(c > 0 and math.isfinite(c) for c in cs):
            raise DataError(f"probe_cs must be a non-empty list of positive numbers, got {self.probe_cs!r}")
        object.__setattr__(self, "probe_cs", cs)
        if self.probe_folds < 2:
            raise DataError(f"probe_folds must be >= 2, got {self.probe_folds}")
        if self.probe_max_iter < 1:
            raise DataError(f"probe_max_iter must be >= 1, got {self.probe_max_iter}")
        if self.probe_interaction < 0 or self.probe_interaction_rank < 1:
            raise DataError(f"probe_interaction must be >= 0 and probe_interaction_rank >= 1, got "
                            f"{self.probe_interaction} and {self.probe_interaction_rank}")
        if not self.probe_pull >= 0:
            raise DataError(f"probe_pull must be >= 0, got {self.probe_pull}")
        if self.recipe == "probe" and self.modality_balance != "none":
            raise DataError(f"modality_balance {self.modality_balance!r} applies to recipe 'sgd' only "
                            "(the probe trains every modality's head on its own)")
        if self.modality_balance not in BALANCE_MODES:
            raise DataError(f"modality_balance must be one of {list(BALANCE_MODES)}, got {self.modality_balance!r}")
        if self.ogm_score not in ("contribution", "head"):
            raise DataError(f"ogm_score must be 'contribution' or 'head', got {self.ogm_score!r}")
        if self.ogm_apply not in ("grad", "lr"):
            raise DataError(f"ogm_apply must be 'grad' or 'lr', got {self.ogm_apply!r}")
        if not self.ogm_alpha >= 0:
            raise DataError(f"ogm_alpha must be >= 0, got {self.ogm_alpha}")
        if self.warmup_loss not in ("unimodal", "joint"):
            raise DataError(f"warmup_loss must be 'unimodal' or 'joint', got {self.warmup_loss!r}")
        if self.warmup_epochs < 0:
            raise DataError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")

    def to_dict(self) -> dict:
        return asdict(self)


def auto_recipe(dataset: MultimodalDataset, modality_balance: str = "none") -> str:
    """What ``recipe="auto"`` trains on ``dataset``: ``probe`` when every modality is a float feature vector
    (pretrained featurizers, vector files, the synthetic scenarios), else ``sgd`` (pixels and token ids need
    the network's encoders; training-side modality balancing exists for the network only)."""
    vectors = all(isinstance(v, np.ndarray) and v.ndim == 2 and np.issubdtype(v.dtype, np.floating)
                  for v in dataset.modalities.values())
    return "probe" if vectors and modality_balance == "none" else "sgd"


def dataset_specs(dataset: MultimodalDataset) -> dict[str, FeatureSpec]:
    """Feature specs of a featurized dataset, in modality order."""
    if not dataset.is_featurized():
        raw = [k for k, v in dataset.modalities.items() if not isinstance(v, np.ndarray)]
        raise DataError(f"modalities {raw} hold raw inputs; featurize the dataset first (backend.encoders)")
    vocab = dataset.meta.get("vocab_size", {})
    return {k: FeatureSpec.infer(k, v, vocab.get(k)) for k, v in dataset.modalities.items()}


class _DeviceFeatures:
    """Feature tensors of one dataset on one device, built once and reused across calls."""

    def __init__(self, dataset: MultimodalDataset, specs: dict[str, FeatureSpec], device: torch.device) -> None:
        self.inputs: dict[str, torch.Tensor] = {}
        for k, spec in specs.items():
            arr = dataset.modalities[k]
            t = torch.from_numpy(np.ascontiguousarray(arr))
            t = t.long() if spec.kind == "tokens" else t.float()
            self.inputs[k] = t.to(device)
        self.masks = {k: torch.from_numpy(dataset.masks[k]).to(device) for k in specs}

    def batch(self, idx: torch.Tensor | slice, drop: Sequence[str] = ()) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Rows ``idx``: an index tensor (gathered copies) or a slice (views, no copy)."""
        x = {k: v[idx] for k, v in self.inputs.items()}
        m = {k: (torch.zeros_like(v[idx]) if k in drop else v[idx]) for k, v in self.masks.items()}
        return x, m


def _dense_cover(indices: np.ndarray, n_rows: int) -> tuple[int, int] | None:
    """``(lo, hi)`` when sorted ``indices`` fill at least 90 % of ``range(lo, hi)``, else None.

    Then the forward pass runs over contiguous slices of that range (views of the cached features)
    and the few extra rows' outputs are dropped: gathering small outputs (C + embeddings per item)
    costs far less than gathering every input feature (the whole point for a pool of 1M items, which
    is the dataset minus a few labelled holes)."""
    if len(indices) < PREDICT_BATCH:
        return None
    lo, hi = int(indices[0]), int(indices[-1]) + 1
    if lo < 0 or hi > n_rows or len(indices) < 0.9 * (hi - lo) or not bool(np.all(indices[1:] > indices[:-1])):
        return None
    return lo, hi


class TrainedFusionModel:
    """A trained :class:`FusionModel` plus what is needed to predict, save and reload it.

    Implements :class:`backend.models.api.ActiveModel`.
    """

    def __init__(self, module: FusionModel, specs: dict[str, FeatureSpec], fusion: FusionConfig,
                 class_names: list[str], device: torch.device, history: list[dict] | None = None,
                 train_config: TrainConfig | None = None, meta: dict | None = None,
                 multi_label: bool = False) -> None:
        self.module = module.to(device).eval()
        self.specs = specs
        self.fusion = fusion
        self.class_names = list(class_names)
        self.n_classes = len(class_names)
        self.multi_label = bool(multi_label)  # sigmoid per class (label sets) instead of softmax
        self.modality_names = list(specs)
        self.device = device
        self.history = history or []
        self.train_config = train_config
        self.meta = meta or {}
        self._features: tuple[Any, _DeviceFeatures] | None = None

    # --- feature tensors -------------------------------------------------------------------
    def _device_features(self, dataset: MultimodalDataset) -> _DeviceFeatures:
        if self._features is not None and self._features[0]() is dataset:
            return self._features[1]
        if list(dataset.modalities) != self.modality_names:
            raise DataError(f"dataset modalities {list(dataset.modalities)} differ from the model's {self.modality_names}")
        specs = dataset_specs(dataset)
        for k, spec in specs.items():
            if spec.kind != self.specs[k].kind or spec.shape != self.specs[k].shape:
                raise DataError(f"modality '{k}': features {spec.shape} ({spec.kind}) do not match the model's {self.specs[k].shape}")
        feats = _DeviceFeatures(dataset, self.specs, self.device)
        self._features = (weakref.ref(dataset), feats)
        return feats

    # --- ActiveModel -----------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, dataset: MultimodalDataset, indices: Sequence[int] | np.ndarray, *, drop: Sequence[str] = ()) -> Predictions:
        """Fused and per-modality predictions for ``indices``; modalities in ``drop`` act as absent."""
        unknown = set(drop) - set(self.modality_names)
        if unknown:
            raise DataError(f"cannot drop unknown modalities {sorted(unknown)}")
        feats = self._device_features(dataset)
        idx_np = np.asarray(indices, dtype=np.int64)
        self.module.eval()
        cover = _dense_cover(idx_np, len(dataset))
        if cover is None:  # scattered rows: gather their features batch by batch
            idx_all = torch.as_tensor(idx_np, device=self.device)
            batches: list[torch.Tensor | slice] = [idx_all[s:s + PREDICT_BATCH]
                                                   for s in range(0, max(len(idx_all), 1), PREDICT_BATCH)]
            n_out = len(idx_np)
        else:  # nearly every row of a range: contiguous views, outputs selected at the end
            lo, hi = cover
            batches = [slice(s, min(s + PREDICT_BATCH, hi)) for s in range(lo, hi, PREDICT_BATCH)]
            n_out = hi - lo
        buf: Predictions | None = None
        start = 0
        for rows in batches:
            x, m = feats.batch(rows, drop)
            with self._autocast():
                out = self.module(x, m)
            if buf is None:
                buf = self._empty_predictions(n_out, out, m)
            self._write(buf, start, out, m)
            start += len(out.logits)
        assert buf is not None
        if cover is not None and n_out != len(idx_np):
            buf = _select(buf, torch.as_tensor(idx_np - cover[0], device=self.device))
        return buf

    def _empty_predictions(self, n: int, out: Any, m: dict[str, torch.Tensor]) -> Predictions:
        """Output tensors for ``n`` items, filled batch by batch (no list of parts, no concatenation)."""
        def like(t: torch.Tensor) -> torch.Tensor:
            return torch.empty((n, *t.shape[1:]), dtype=torch.float32, device=self.device)

        return Predictions(like(out.logits), {k: like(out.aux_logits[k]) for k in self.modality_names},
                           {k: like(out.embeddings[k]) for k in self.modality_names}, like(out.fused_embedding),
                           {k: torch.empty(n, dtype=m[k].dtype, device=self.device) for k in self.modality_names})

    def _write(self, buf: Predictions, start: int, out: Any, m: dict[str, torch.Tensor]) -> None:
        end = start + len(out.logits)
        buf.probs[start:end] = self._probs(out.logits)
        buf.fused_embedding[start:end] = out.fused_embedding
        for k in self.modality_names:
            buf.unimodal_probs[k][start:end] = self._probs(out.aux_logits[k])
            buf.embeddings[k][start:end] = out.embeddings[k]
            buf.masks[k][start:end] = m[k]

    @torch.no_grad()
    def predict_mc_dropout(self, dataset: MultimodalDataset, indices: Sequence[int] | np.ndarray, n_samples: int, seed: int) -> torch.Tensor:
        """(n_samples, n, C) fused probabilities with dropout layers active; seeded."""
        feats = self._device_features(dataset)
        idx_all = torch.as_tensor(np.asarray(indices, dtype=np.int64), device=self.device)
        out = torch.empty(n_samples, len(idx_all), self.n_classes, device=self.device)
        self.module.eval()
        for mod in self.module.modules():
            if isinstance(mod, nn.Dropout):
                mod.train()
        try:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(seed)
                for t in range(n_samples):
                    for start in range(0, len(idx_all), PREDICT_BATCH):
                        idx = idx_all[start:start + PREDICT_BATCH]
                        x, m = feats.batch(idx)
                        with self._autocast():
                            logits = self.module(x, m).logits
                        out[t, start:start + len(idx)] = self._probs(logits)
        finally:
            self.module.eval()
        return out

    def _probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities: softmax over classes, or per-class sigmoids for a multi-label model."""
        return torch.sigmoid(logits.float()) if self.multi_label else F.softmax(logits.float(), dim=1)

    def _autocast(self):
        if self.device.type == "cuda" and (self.train_config is None or self.train_config.amp):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    # --- persistence -----------------------------------------------------------------------
    def state(self) -> dict:
        """Everything needed to rebuild the model, as plain types and tensors (safe to load)."""
        return {
            "format": 1,
            "specs": {k: s.to_dict() for k, s in self.specs.items()},
            "fusion": self.fusion.to_dict(),
            "class_names": self.class_names,
            "state_dict": {k: v.detach().cpu() for k, v in self.module.state_dict().items()},
            "history": self.history,
            "train_config": None if self.train_config is None else self.train_config.to_dict(),
            "meta": self.meta,
            "multi_label": self.multi_label,
        }

    def save(self, path: str | Path) -> None:
        """Write atomically: a reader never sees a partial file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        torch.save(self.state(), buf)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(buf.getvalue())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def from_state(cls, state: dict, device: str | torch.device | None = None) -> "TrainedFusionModel":
        dev = pick_device(str(device)) if device is not None else pick_device()
        specs = {k: FeatureSpec.from_dict(v) for k, v in state["specs"].items()}
        fusion = FusionConfig(**state["fusion"])
        # a model saved before the MLP expert existed has none
        tc = (TrainConfig(**{"probe_interaction": 0, "probe_network": False, **state["train_config"]})
              if state.get("train_config") else None)
        module = build_module(specs, len(state["class_names"]), fusion, tc, bool(state.get("multi_label", False)))
        module.load_state_dict(state["state_dict"])
        return cls(module, specs, fusion, state["class_names"], dev, state.get("history"), tc, state.get("meta"),
                   bool(state.get("multi_label", False)))

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None) -> "TrainedFusionModel":
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
        return cls.from_state(state, device)

    def copy(self) -> "TrainedFusionModel":
        return TrainedFusionModel(copy.deepcopy(self.module), self.specs, self.fusion, self.class_names, self.device,
                                  list(self.history), self.train_config, dict(self.meta), self.multi_label)


def build_module(specs: dict[str, FeatureSpec], n_classes: int, fusion: FusionConfig,
                 train: TrainConfig | None, multi_label: bool = False) -> nn.Module:
    """The untrained module of a recipe: :class:`FusionModel` (sgd) or :class:`ProbeFusion` (probe)."""
    if train is not None and train.recipe == "probe":
        return _probe_module(specs, n_classes, fusion, train, multi_label)
    return FusionModel(specs, n_classes, fusion)


def _probe_module(specs: dict[str, FeatureSpec], n_classes: int, fusion: FusionConfig, train: TrainConfig,
                  multi_label: bool) -> ProbeFusion:
    return ProbeFusion(specs, n_classes, fusion, joint=train.probe_joint, multi_label=multi_label,
                       interaction=train.probe_interaction, interaction_rank=train.probe_interaction_rank,
                       network=train.probe_network, folds=train.probe_folds)


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


def classification_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean per-item loss: cross-entropy for class indices y (n,); for label sets y (n, C) float, the
    binary cross-entropy of each class's sigmoid summed over classes (the label set's negative
    log-likelihood when the classes are independent given the item)."""
    if y.ndim == 2:
        return F.binary_cross_entropy_with_logits(logits.float(), y, reduction="sum") / max(len(y), 1)
    return F.cross_entropy(logits.float(), y)


def _hits(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(n,) bool: predicted class = label, or for label sets the exact set (every sigmoid on its side of 1/2)."""
    if y.ndim == 2:
        return ((logits > 0) == (y > 0.5)).all(dim=1)
    return logits.argmax(1) == y


def _loss(out, y: torch.Tensor, masks: dict[str, torch.Tensor], aux_weight: float, names: list[str]) -> torch.Tensor:
    """Fused CE + aux_weight * mean over modalities of each head's CE on items that have the modality
    (binary cross-entropies for label sets, see :func:`classification_loss`)."""
    loss = classification_loss(out.logits, y)
    if aux_weight > 0:
        aux = []
        for k in names:
            m = masks[k]
            if bool(m.any()):
                aux.append(classification_loss(out.aux_logits[k][m], y[m]))
        if aux:
            loss = loss + aux_weight * torch.stack(aux).mean()
    return loss


def _loss_terms(out, y: torch.Tensor, masks: dict[str, torch.Tensor], aux_weight: float,
                names: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``_loss``'s parts: the fused CE and, per modality present in the batch, its head's CE on items
    having it (none when ``aux_weight`` is 0); ``_loss`` = fused + aux_weight * mean(aux)."""
    fused = classification_loss(out.logits, y)
    aux: dict[str, torch.Tensor] = {}
    if aux_weight > 0:
        for k in names:
            m = masks[k]
            if bool(m.any()):
                aux[k] = classification_loss(out.aux_logits[k][m], y[m])
    return fused, aux


def _unimodal_loss(out, y: torch.Tensor, masks: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    """Warm-up loss: mean over modalities of each auxiliary head's CE on items that have the modality.

    Only encoders, absent embeddings and auxiliary heads get gradients, and each modality's encoder
    only from its own head, so this is every modality trained alone, side by side.
    """
    aux = [classification_loss(out.aux_logits[k][masks[k]], y[masks[k]]) for k in names if bool(masks[k].any())]
    return torch.stack(aux).mean() if aux else out.logits.sum() * 0.0


# --- OGM-GE: on-the-fly gradient modulation with generalisation enhancement (Peng et al., CVPR 2022) ---

def modality_confidence(logits: Mapping[str, torch.Tensor], y: torch.Tensor,
                        masks: Mapping[str, torch.Tensor]) -> dict[str, float | None]:
    """Per-modality confidence s_m of one batch: the mean over items that *have* m of softmax(logits_m)[y].

    The paper sums over the batch; with complete data that gives the same ratios. The mean keeps a
    modality that is absent from part of the batch from looking weak merely for being absent.
    None when no item of the batch has m.
    """
    out: dict[str, float | None] = {}
    for k, lg in logits.items():
        m = masks[k]
        n = int(m.sum())
        if n == 0:
            out[k] = None
            continue
        if y.ndim == 2:  # label sets: mean over classes of the probability of the true side
            p = torch.sigmoid(lg.detach().float())
            p_true = (y * p + (1 - y) * (1 - p)).mean(dim=1)
        else:
            p_true = F.softmax(lg.detach().float(), dim=1).gather(1, y.view(-1, 1)).squeeze(1)
        out[k] = float(p_true[m].sum()) / n
    return out


def ogm_coefficients(scores: Mapping[str, float | None], alpha: float) -> dict[str, float]:
    """OGM coefficients from confidences: rho_m = s_m / mean_{j != m} s_j, and

        k_m = 1 - tanh(alpha * (rho_m - 1))   if rho_m > 1   (m dominates: slow its encoder down)
        k_m = 1                               otherwise.

    With two modalities this is the paper's rule. Modalities without a score (absent from the batch)
    get k = 1 and are left out of the others' mean; with fewer than two scored modalities nothing is
    modulated.
    """
    out = {k: 1.0 for k in scores}
    scored = {k: float(v) for k, v in scores.items() if v is not None}
    if len(scored) < 2:
        return out
    for k, s in scored.items():
        ref = sum(v for j, v in scored.items() if j != k) / (len(scored) - 1)
        rho = s / ref if ref > 0 else (math.inf if s > 0 else 1.0)
        if rho > 1.0:
            out[k] = 1.0 - math.tanh(alpha * (rho - 1.0))
    return out


@torch.no_grad()
def _modality_logits(module: FusionModel, out, masks: dict[str, torch.Tensor], score: str) -> dict[str, torch.Tensor]:
    """Logits that say how well modality m alone drives the prediction, for s_m.

    "head": m's auxiliary head. "contribution": the *fused* head with every other modality set absent
    (the analogue of the paper's W_m z_m for a nonlinear fusion trunk), on this batch's embeddings,
    with dropout off so no random numbers are drawn.
    """
    if score == "head":
        return dict(out.aux_logits)
    was_training = module.training
    module.eval()
    try:
        res = {}
        for k in module.names:
            emb = {j: (z if j == k else module.absent[j].to(z.dtype).expand_as(z)) for j, z in out.embeddings.items()}
            msk = {j: (v if j == k else torch.zeros_like(v)) for j, v in masks.items()}
            res[k] = module.fuse(emb, msk).logits
        return res
    finally:
        module.train(was_training)


# --- MMPareto: Pareto gradient integration of multimodal and unimodal losses (Wei & Hu, ICML 2024) ---

def pareto_combine(g_mm: torch.Tensor, g_u: torch.Tensor) -> tuple[torch.Tensor, float, bool]:
    """MMPareto's final gradient from the multimodal and unimodal gradients of one encoder (flat vectors).

    Returns ``(g, alpha_1, conflict)``:

        no conflict (g_mm . g_u >= 0, i.e. cos >= 0; a zero vector never conflicts):
            alpha = (1/2, 1/2), and g = d ||g_mm + g_u|| / ||d|| is then exactly g_mm + g_u
        conflict:
            alpha_1 = clip((g_u - g_mm) . g_u / ||g_mm - g_u||^2, 0, 1), alpha_2 = 1 - alpha_1
            (the min-norm point of the segment [g_u, g_mm], as in MGDA for two tasks),
            d = alpha_1 g_mm + alpha_2 g_u,  g = d ||g_mm + g_u|| / ||d||

    Keeping the plain sum's magnitude is the paper's choice: the min-norm direction alone would shrink
    the step exactly when the two losses disagree. When ||d|| is ~0 (anti-parallel gradients) the
    direction is undefined and the plain sum is returned. Scalars are computed in float64 so the
    result does not depend on the device's summation order beyond rounding; g has g_mm's dtype.
    """
    a, b = g_mm.detach().double(), g_u.detach().double()
    total = a + b
    dot = float(a @ b)
    if not dot < 0.0:  # also covers a zero vector (and NaN, which then propagates in the sum)
        return total.to(g_mm.dtype), 0.5, False
    diff2 = float((a - b) @ (a - b))  # > 0: a negative dot product needs two distinct non-zero vectors
    alpha = min(max(float((b - a) @ b) / diff2, 0.0), 1.0)
    d = alpha * a + (1.0 - alpha) * b
    dn = float(d.norm())
    if dn <= 1e-12 * (float(a.norm()) + float(b.norm())):
        return total.to(g_mm.dtype), alpha, True
    return (d * (float(total.norm()) / dn)).to(g_mm.dtype), alpha, True


def _flat_grads(grads: Sequence[torch.Tensor | None], params: Sequence[torch.Tensor]) -> torch.Tensor:
    """One flat vector of ``grads`` (None, for a parameter a loss does not reach, as zeros)."""
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)])


def _pareto_backward(module: FusionModel, fused: torch.Tensor, aux: Mapping[str, torch.Tensor],
                     aux_weight: float) -> tuple[torch.Tensor, dict[str, bool]]:
    """Backward pass of ``_loss`` with MMPareto on each modality encoder's gradients (see train_model).

    ``fused``/``aux`` come from :func:`_loss_terms`. g_mm comes from one ``autograd.grad`` of the fused
    loss w.r.t. all encoders concerned, g_u from one per modality w.r.t. that encoder only (the graph
    is retained for both); then the usual ``loss.backward()`` fills every gradient and the encoders of
    conflicting modalities get :func:`pareto_combine`'s g instead. Returns the loss and, per modality,
    whether its gradients conflicted.
    """
    loss = fused + aux_weight * torch.stack(list(aux.values())).mean() if aux else fused
    conflicts = {k: False for k in module.names}
    enc = {k: [p for p in module.encoders[k].parameters() if p.requires_grad] for k in aux}
    targets = [k for k in aux if enc[k]]
    new: dict[str, torch.Tensor] = {}
    if targets:
        params = [p for k in targets for p in enc[k]]
        g_mm_all = torch.autograd.grad(fused, params, retain_graph=True, allow_unused=True)
        start = 0
        for k in targets:
            ps = enc[k]
            g_mm = _flat_grads(g_mm_all[start:start + len(ps)], ps)
            start += len(ps)
            l_u = aux_weight / len(aux) * aux[k]
            g_u = _flat_grads(torch.autograd.grad(l_u, ps, retain_graph=True, allow_unused=True), ps)
            g, _, conflicts[k] = pareto_combine(g_mm, g_u)
            if conflicts[k]:
                new[k] = g
    loss.backward()
    with torch.no_grad():
        for k, g in new.items():
            start = 0
            for p in enc[k]:
                part = g[start:start + p.numel()].view_as(p)
                start += p.numel()
                if p.grad is None:
                    p.grad = part.clone()
                else:
                    p.grad.copy_(part)
    return loss, conflicts


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


@torch.no_grad()
def _modulate(module: FusionModel, opt: torch.optim.Optimizer, coeffs: Mapping[str, float], train: TrainConfig) -> None:
    """Apply k_m to modality m's encoder and, with ``ogm_noise``, add N(0, std(g)) to its gradients.

    ``ogm_apply="grad"`` multiplies the gradients (the paper, which uses SGD); Adam divides by a
    running gradient scale, so it largely undoes a slowly varying k_m. ``"lr"`` scales the encoder's
    step size instead: the SGD-equivalent effect under AdamW. The noise std is that of the unscaled
    gradient, as in the paper's code; it is drawn from the trainer's seeded RNG.
    """
    for k, c in coeffs.items():
        for p in module.encoders[k].parameters():
            g = p.grad
            if g is None:
                continue
            std = float(g.std()) if (train.ogm_noise and g.numel() > 1) else 0.0
            if train.ogm_apply == "grad" and c != 1.0:
                g.mul_(c)
            if train.ogm_noise:
                g.add_(torch.randn_like(g) * (std + 1e-8))
    if train.ogm_apply == "lr":
        for group in opt.param_groups:
            mod = group.get("modality")
            group["lr"] = train.lr * (coeffs.get(mod, 1.0) if mod is not None else 1.0)


def _select(p: Predictions, rows: torch.Tensor) -> Predictions:
    """The rows ``rows`` of every output of ``p``."""
    return Predictions(p.probs[rows], {k: v[rows] for k, v in p.unimodal_probs.items()},
                       {k: v[rows] for k, v in p.embeddings.items()}, p.fused_embedding[rows],
                       {k: v[rows] for k, v in p.masks.items()})
