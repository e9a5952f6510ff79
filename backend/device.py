"""One place that decides where tensors live: CUDA when present, CPU otherwise."""

from __future__ import annotations

import os

import torch


def pick_device(prefer: str | None = None) -> torch.device:
    """``prefer`` (or env ``MMAL_DEVICE``) may force ``cpu``/``cuda``; default: CUDA when available."""
    choice = prefer or os.environ.get("MMAL_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("MMAL_DEVICE asks for CUDA but torch sees no GPU")
    return torch.device(choice)
