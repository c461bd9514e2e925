"""The model's widths: :class:`ModelConfig` and its presets, at home in :mod:`corteza.wire`.

They live on the wire side (torch-free) because the CLI and the client read
them without torch, and they travel: beside every checkpoint, in the ONNX
metadata, in ``GET /v1/model`` and the stream's greeting.
"""

from corteza.wire.model_config import PRESETS, ModelConfig

__all__ = ["PRESETS", "ModelConfig"]
