"""mmal: modality-aware active learning for multimodal data."""

__version__ = "0.1.0"
