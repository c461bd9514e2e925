"""ONNX export of the current weights: one graph for ``inputs`` ``[B, T, D]``, B and T dynamic.

The model treats ``[B, D]`` as ``T = 1`` (``x.unsqueeze(1)``), so one graph of
rank 3 serves both shapes: a caller feeds ``[B, D]`` as ``[B, 1, D]``. Its
outputs are ``anomaly_probability`` ``[B]``, ``dendrites`` ``[B, 16]`` and
``coherence`` ``[B, 64]``, in eval mode, in float32.

The exporter is ``torch.onnx.export(..., dynamo=True)`` (it needs ``onnx`` and
``onnxscript``: the ``onnx`` extra); it turns the LSTM into a loop over a
symbolic time axis. Only the snapshot (a CPU copy of the weights) is taken
on the training worker's thread, between two jobs, so no step can tear it.
The export itself runs in a child process (:data:`CHILD`), because in torch
2.13 it leaves state behind in the process that runs it (measured):

- a second export in one process fixes T to the traced length: the LSTM
  decomposition the exporter patches in is shadowed by the dispatcher's cache
  of ``aten.lstm.input`` filled during the first one;
- tracing beside a training step in another thread fails (``KeyError:
  'custom'`` in ``torch.fx.traceback``), so an in-process export would have
  to stop training for its whole length (~20 s for the default model);
- it peaks at 1.6 GB for the default model; the child returns that memory.

An export is kept and served again while step and weights stay the same.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch
from starlette.concurrency import run_in_threadpool
from torch import Tensor, nn

from corteza._version import __version__
from corteza.model import CortezaCognitiva, ModelConfig, anomaly_probability
from corteza.server.engine.trainer import Trainer
from corteza.server.engine.worker import TrainingWorker
from corteza.wire import PROTOCOL_VERSION
from corteza.wire.predictions import OUTPUT_NAMES

logger = logging.getLogger(__name__)

INPUT_NAME = "inputs"
CONFIG_KEY = "corteza.model_config"
MISSING_EXPORTER = "ONNX export needs the onnx extra: pip install 'corteza[onnx]'"
EXPORT_TIMEOUT_S = 1800.0
CHILD = "import sys; from corteza.server.engine.export import write_onnx; write_onnx(*sys.argv[1:])"
# Tracing shape (batch, time): not 1, which torch.export would specialise as a constant.
TRACE_BATCH, TRACE_TIME = 2, 3


class ExportUnavailableError(RuntimeError):
    """``onnx`` or ``onnxscript`` cannot be imported on this server."""


class ExportFailedError(RuntimeError):
    """The exporter failed; its output is in the server log."""


def require_exporter() -> None:
    """Raise :class:`ExportUnavailableError` unless the exporter's packages are installed.

    Only looked up: they are imported by the child process that exports.
    """
    if any(importlib.util.find_spec(name) is None for name in ("onnx", "onnxscript")):
        raise ExportUnavailableError(MISSING_EXPORTER)


@dataclass(frozen=True)
class Snapshot:
    """A CPU float32 copy of the weights at one step, with the config that shapes them."""

    config: ModelConfig
    step: int
    weights: dict[str, Tensor]

    def fingerprint(self) -> str:
        """sha256 over every tensor's name, dtype, shape and bytes."""
        digest = hashlib.sha256()
        for name in sorted(self.weights):
            tensor = self.weights[name]
            digest.update(f"{name}:{tensor.dtype}:{list(tensor.shape)};".encode())
            digest.update(tensor.numpy().data)
        return digest.hexdigest()

    def metadata(self, fingerprint: str) -> dict[str, str]:
        """What the ONNX file records in its ``metadata_props``."""
        return {
            "corteza.version": __version__,
            "corteza.protocol": PROTOCOL_VERSION,
            "corteza.step": str(self.step),
            CONFIG_KEY: json.dumps(self.config.to_dict()),
            "corteza.weights_sha256": fingerprint,
            "corteza.inputs": "inputs float32 [B, T, D]; feed [B, D] as [B, 1, D]",
        }


def take_snapshot(trainer: Trainer) -> Snapshot:
    """Copy the weights to the CPU; on the worker's thread, between two jobs."""
    weights = {
        name: value.detach().to("cpu", torch.float32, copy=True).contiguous()
        for name, value in trainer.model.state_dict().items()
    }
    return Snapshot(trainer.config, trainer.step, weights)


class _Outputs(nn.Module):
    """What the ONNX graph computes: the three outputs of :class:`CortezaCognitiva`."""

    def __init__(self, model: CortezaCognitiva) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.model(inputs)  # inputs (B, T, D)
        return anomaly_probability(out), out.dendrites, out.coherence  # (B,), (B, 16), (B, 64)


def write_onnx(weights_path: str | Path, out: str | Path) -> None:
    """Export the weights (and metadata) saved at ``weights_path`` to ``out``.

    Runs in the child process. The model is rebuilt on the meta device and
    given the saved tensors, so nothing is initialised only to be thrown away.
    """
    with safetensors.safe_open(str(weights_path), framework="pt") as file:
        props: dict[str, str] = file.metadata()
    weights = safetensors.torch.load_file(str(weights_path))
    config = ModelConfig.from_dict(json.loads(props[CONFIG_KEY]))
    with torch.device("meta"):
        model = CortezaCognitiva(config)
    model.load_state_dict(weights, assign=True)
    example = torch.zeros(TRACE_BATCH, TRACE_TIME, config.input_dim)
    dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("time")}
    # The exporter warns about its own internals (deprecations, LSTM weight lists).
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            _Outputs(model).eval(),
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes={INPUT_NAME: dims},
            external_data=False,
            verbose=False,
        )
    assert program is not None  # the dynamo exporter always returns its program
    program.model.metadata_props.update(props)
    program.save(out, external_data=False)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ExportedModel:
    """One ONNX file of this server's weights."""

    path: Path
    step: int
    fingerprint: str  # of the weights
    sha256: str  # of the file
    size: int

    @property
    def filename(self) -> str:
        return f"corteza-step{self.step}.onnx"


def _export_in_child(snapshot: Snapshot, fingerprint: str, path: Path) -> None:
    """Save the snapshot beside ``path`` and let a child process export it there."""
    weights = path.with_suffix(".safetensors")
    partial = path.with_name(path.name + ".part")
    try:
        safetensors.torch.save_file(snapshot.weights, str(weights), snapshot.metadata(fingerprint))
        command = [sys.executable, "-c", CHILD, str(weights), str(partial)]
        try:
            child = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=EXPORT_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as exc:
            raise ExportFailedError(f"the ONNX export ran past {EXPORT_TIMEOUT_S:.0f} s") from exc
        if child.returncode != 0:
            logger.error("ONNX export failed (exit %d): %s", child.returncode, child.stderr[-4000:])
            raise ExportFailedError(f"the ONNX exporter exited with {child.returncode}")
        os.replace(partial, path)
    finally:
        weights.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)


class OnnxExports:
    """The server's latest ONNX export, reused while step and weights stay the same.

    Exports happen one at a time; a request that arrives during one waits for
    it and gets the same file when nothing trained in between.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._latest: ExportedModel | None = None
        self._lock = asyncio.Lock()

    async def latest(self, worker: TrainingWorker) -> ExportedModel:
        """The export of the current weights, made now unless the last one still holds them."""
        require_exporter()
        async with self._lock:
            snapshot = await worker.run(lambda: take_snapshot(worker.trainer))
            fingerprint = await run_in_threadpool(snapshot.fingerprint)
            latest = self._latest
            if (
                latest is not None
                and latest.step == snapshot.step
                and latest.fingerprint == fingerprint
            ):
                return latest
            path = self.directory / f"step{snapshot.step}-{fingerprint[:16]}.onnx"
            started = time.perf_counter()
            await run_in_threadpool(_export_in_child, snapshot, fingerprint, path)
            seconds = time.perf_counter() - started
            file_sha = await run_in_threadpool(sha256_file, path)
            size = path.stat().st_size
            exported = ExportedModel(path, snapshot.step, fingerprint, file_sha, size)
            logger.info(
                "exported ONNX of step %d in %.1f s (%.1f MB)",
                exported.step,
                seconds,
                exported.size / 1e6,
            )
            self._latest = exported
            if latest is not None and latest.path != path:
                # A download in progress keeps reading its open handle.
                latest.path.unlink(missing_ok=True)
            return exported

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
