"""Run an ONNX export of the model here, with onnxruntime on the CPU: no server, no torch.

The export (``corteza pull --format onnx``, :meth:`Client.export_onnx`) takes
``inputs`` ``[B, T, D]``; ``[B, D]`` is fed as ``T = 1``, which is what the
model itself does with it. Inputs are checked with the server's own words
(``Input dimension mismatch: expected 1600D, got 3D``).

>>> model = OnnxModel("corteza-step120.onnx")  # doctest: +SKIP
>>> model.predict(np.zeros((4, model.input_dim))).anomaly_prob.shape  # doctest: +SKIP
(4,)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from corteza.client.client import Predictions
from corteza.client.errors import InvalidDataError
from corteza.client.payloads import preflight_inputs
from corteza.wire.predictions import OUTPUT_NAMES

MISSING_RUNTIME = "Running an ONNX model here needs onnxruntime: pip install 'corteza[local]'"
INPUT_NAME = "inputs"
CHUNK = 256  # samples per run, as the server predicts


def _runtime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise InvalidDataError(MISSING_RUNTIME, error_type="missing_dependency") from exc
    return onnxruntime


class OnnxModel:
    """An exported model, loaded into an onnxruntime session (CPU provider).

    Raises :class:`~corteza.client.InvalidDataError` when onnxruntime is not
    installed, or when ``path`` is not an ONNX export of this model.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        runtime = _runtime()
        if not self.path.is_file():
            raise InvalidDataError(f"No ONNX model at {self.path}", error_type="invalid_model")
        options = runtime.SessionOptions()
        options.log_severity_level = 3  # errors only: the CLI prints one line
        try:
            self._session = runtime.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime's errors derive from Exception only
            raise InvalidDataError(
                f"{self.path} is not a valid ONNX model: {str(exc).strip()[:200]}",
                error_type="invalid_model",
            ) from exc
        self.input_dim = self._check_signature()
        self.metadata: dict[str, str] = dict(self._session.get_modelmeta().custom_metadata_map)

    def _check_signature(self) -> int:
        inputs = self._session.get_inputs()
        outputs = [o.name for o in self._session.get_outputs()]
        shape = inputs[0].shape if len(inputs) == 1 else []
        if (
            len(inputs) != 1
            or inputs[0].name != INPUT_NAME
            or len(shape) != 3
            or not isinstance(shape[2], int)
            or outputs != list(OUTPUT_NAMES)
        ):
            found = ", ".join(f"{i.name} {i.shape}" for i in inputs)
            raise InvalidDataError(
                f"{self.path} is not a corteza ONNX export: expected input {INPUT_NAME} "
                f"[B, T, D] and outputs {', '.join(OUTPUT_NAMES)}; found {found} -> "
                f"{', '.join(outputs)}",
                error_type="invalid_model",
            )
        return int(shape[2])

    @property
    def step(self) -> int | None:
        """The training step the weights come from, as the export recorded it."""
        value = self.metadata.get("corteza.step")
        return int(value) if value is not None and value.isdigit() else None

    @property
    def config(self) -> dict[str, Any]:
        """The model config the export recorded (widths, heads), or {}."""
        text = self.metadata.get("corteza.model_config")
        return dict(json.loads(text)) if text else {}

    def predict(self, inputs: ArrayLike, *, chunk: int = CHUNK) -> Predictions:
        """Outputs per sample for ``inputs`` ``[B, D]`` or ``[B, T, D]``, in eval mode."""
        x = preflight_inputs(inputs, self.input_dim)
        if x.ndim == 2:
            x = x[:, None, :]  # (B, D) -> (B, 1, D), as the model does
        parts: list[list[NDArray[np.float32]]] = [
            self._session.run(list(OUTPUT_NAMES), {INPUT_NAME: x[start : start + chunk]})
            for start in range(0, x.shape[0], chunk)
        ]
        probability, dendrites, coherence = (
            np.concatenate([part[i] for part in parts]).astype(np.float32, copy=False)
            for i in range(3)
        )
        return Predictions(probability, dendrites, coherence)
