"""Trainable per-modality encoders, chosen from the shape and dtype of a modality's features.

- ``(d,)`` float vectors (raw features or pretrained embeddings): a two-layer MLP;
- ``(3, H, W)`` float images: a small CNN trained from scratch;
- ``(L,)`` int64 token ids (0 = padding): a bag-of-embeddings (``nn.EmbeddingBag``) text encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from backend.data import DataError


@dataclass(frozen=True)
class FeatureSpec:
    """What a modality's features look like: ``kind`` is vector, image or tokens."""

    kind: str
    shape: tuple[int, ...]
    vocab_size: int = 0

    def to_dict(self) -> dict:
        return {"kind": self.kind, "shape": list(self.shape), "vocab_size": self.vocab_size}

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSpec":
        return cls(d["kind"], tuple(d["shape"]), int(d.get("vocab_size", 0)))

    @classmethod
    def infer(cls, name: str, array, vocab_size: int | None = None) -> "FeatureSpec":
        """Infer from a feature array with N rows (integers of rank 2 are token ids)."""
        shape = tuple(array.shape[1:])
        if array.dtype.kind in "iu":
            if len(shape) != 1:
                raise DataError(f"modality '{name}': integer features must be token ids of shape (N, L), got {array.shape}")
            vocab = int(vocab_size) if vocab_size else int(array.max(initial=0)) + 1
            return cls("tokens", shape, vocab)
        if array.dtype.kind != "f":
            raise DataError(f"modality '{name}': features must be numeric, got dtype {array.dtype}")
        if len(shape) == 1:
            return cls("vector", shape)
        if len(shape) == 3:
            return cls("image", shape)
        raise DataError(f"modality '{name}': unsupported feature shape {shape}; expected (d,), (C,H,W) or token ids")


class MLPEncoder(nn.Module):
    """Feature vectors -> embedding: Linear-ReLU-Dropout-Linear-ReLU."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNNEncoder(nn.Module):
    """Images (3, H, W) -> embedding with three conv blocks and global average pooling."""

    def __init__(self, in_channels: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Dropout(dropout), nn.Linear(64, out_dim), nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BagOfEmbeddingsEncoder(nn.Module):
    """Token ids (L,) with 0 = padding -> mean of learned token embeddings -> embedding."""

    def __init__(self, vocab_size: int, hidden: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(vocab_size, hidden, mode="mean", padding_idx=0)
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, out_dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.bag(x.long()))


def build_modality_encoder(spec: FeatureSpec, hidden: int, out_dim: int, dropout: float) -> nn.Module:
    """The trainable encoder that fits ``spec``."""
    if spec.kind == "vector":
        return MLPEncoder(spec.shape[0], hidden, out_dim, dropout)
    if spec.kind == "image":
        return SmallCNNEncoder(spec.shape[0], out_dim, dropout)
    if spec.kind == "tokens":
        return BagOfEmbeddingsEncoder(spec.vocab_size, hidden, out_dim, dropout)
    raise DataError(f"unknown feature kind {spec.kind!r}")
