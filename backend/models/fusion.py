"""Early, intermediate and late fusion classifiers with per-modality auxiliary heads.

Every architecture returns the fused logits *and* one auxiliary logit vector per modality, so
diagnostics can measure what each modality has learned and strategies can compare the heads.
Missing modalities are handled explicitly, never by silent zeros:

- early / intermediate: an absent modality's vector is replaced by a *learned absent embedding*;
- late: the fused logits are the mean of the present modalities' logits (renormalised over the
  present ones); an item with no modality at all gets uniform logits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

from backend.models.modality_encoders import FeatureSpec, build_modality_encoder

FusionKind = Literal["early", "intermediate", "late"]


@dataclass(frozen=True)
class FusionConfig:
    """Architecture settings. ``embed_dim`` is each modality's representation size."""

    kind: FusionKind = "intermediate"
    hidden: int = 64
    embed_dim: int = 32
    dropout: float = 0.2

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FusionOutput:
    logits: torch.Tensor  # (B, C) fused
    aux_logits: dict[str, torch.Tensor]  # name -> (B, C)
    embeddings: dict[str, torch.Tensor]  # name -> (B, d_k), absent embedding where missing
    fused_embedding: torch.Tensor  # (B, h)


class FusionModel(nn.Module):
    """One classifier over named modalities; see the module docstring for the three ``kind`` s."""

    def __init__(self, specs: dict[str, FeatureSpec], n_classes: int, config: FusionConfig) -> None:
        super().__init__()
        if config.kind not in ("early", "intermediate", "late"):
            raise ValueError(f"unknown fusion kind {config.kind!r}; use early, intermediate or late")
        self.names = list(specs)
        self.specs = specs
        self.config = config
        self.n_classes = n_classes
        h, e, p = config.hidden, config.embed_dim, config.dropout
        self.encoders = nn.ModuleDict()
        dims: dict[str, int] = {}
        for name, spec in specs.items():
            if config.kind == "early" and spec.kind == "vector":
                self.encoders[name] = nn.Flatten()  # early fusion concatenates raw feature vectors
                dims[name] = spec.shape[0]
            else:  # images/tokens need an encoder even in early fusion: raw pixels/ids don't concatenate
                self.encoders[name] = build_modality_encoder(spec, h, e, p)
                dims[name] = e
        self.absent = nn.ParameterDict({k: nn.Parameter(torch.zeros(d)) for k, d in dims.items()})
        self.aux_heads = nn.ModuleDict({k: nn.Linear(d, n_classes) for k, d in dims.items()})
        total = sum(dims.values())
        if config.kind == "late":
            self.trunk = None
            self.fused_dim = total
        else:
            self.trunk = nn.Sequential(nn.Dropout(p), nn.Linear(total, h), nn.ReLU(), nn.Dropout(p))
            self.head = nn.Linear(h, n_classes)
            self.fused_dim = h

    def forward(self, inputs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> FusionOutput:
        embeddings: dict[str, torch.Tensor] = {}
        for name in self.names:
            z = self.encoders[name](inputs[name])
            m = masks[name].unsqueeze(1)
            embeddings[name] = torch.where(m, z, self.absent[name].to(z.dtype).expand_as(z))
        return self.fuse(embeddings, masks)

    def fuse(self, embeddings: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> FusionOutput:
        """Heads and fusion on given modality embeddings (absent ones already replaced).

        Split from :meth:`forward` so training-side balancing can ask what the fused head predicts
        from one modality alone without re-running the encoders.
        """
        aux = {k: self.aux_heads[k](z) for k, z in embeddings.items()}
        concat = torch.cat([embeddings[k] for k in self.names], dim=1)
        if self.config.kind == "late":
            present = torch.stack([masks[k] for k in self.names], dim=1).to(concat.dtype)  # (B, M)
            stacked = torch.stack([aux[k] for k in self.names], dim=1)  # (B, M, C)
            weights = present / present.sum(dim=1, keepdim=True).clamp_min(1.0)
            logits = (stacked * weights.unsqueeze(2)).sum(dim=1)
            return FusionOutput(logits, aux, embeddings, concat)
        fused = self.trunk(concat)
        return FusionOutput(self.head(fused), aux, embeddings, fused)
