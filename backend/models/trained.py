"""The trained model that strategies query: :class:`TrainedFusionModel` (predict, Monte Carlo dropout,
save/load, state) and what it needs to rebuild or feed its module.

Why a module of its own: whatever uses a trained model without training one (the ML server's model
store, reloading a saved model) needs only this, not the training loop.
"""

from __future__ import annotations

import copy
import io
import weakref
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from backend.data import DataError, MultimodalDataset
from backend.device import pick_device
from backend.files import write_atomic
from backend.models.api import Predictions
from backend.models.config import TrainConfig
from backend.models.fusion import FusionConfig, FusionModel
from backend.models.modality_encoders import FeatureSpec
from backend.models.probe import ProbeFusion

PREDICT_BATCH = 8192


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
        buf = io.BytesIO()
        torch.save(self.state(), buf)
        write_atomic(path, buf.getvalue())

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


def _select(p: Predictions, rows: torch.Tensor) -> Predictions:
    """The rows ``rows`` of every output of ``p``."""
    return Predictions(p.probs[rows], {k: v[rows] for k, v in p.unimodal_probs.items()},
                       {k: v[rows] for k, v in p.embeddings.items()}, p.fused_embedding[rows],
                       {k: v[rows] for k, v in p.masks.items()})
