"""``--compile``: the training forward pass through ``torch.compile``, or eager on failure.

Opt-in until the benchmark (``benchmarks/bench_gpu.py``) says it pays: compiling
the default model takes minutes on a small machine, and the first batch waits for it.

Batch sizes vary from request to request, so the model is compiled with
``dynamic=True`` (shapes marked dynamic) rather than bucketed: one graph serves
every batch size from 2 up, and every sequence length. PyTorch specialises a size
of 1, so a batch of one sample compiles once more; ``(B, D)`` and ``(B, T, D)``
inputs are separate graphs too. That bounds the compilations at four, whatever
sizes the clients send. Bucketing would have meant padding batches and masking
the padded samples out of the loss.

Only the training forward pass is compiled; prediction, diagnosis and feedback
run the same weights eagerly (``model.eval()`` would otherwise recompile).

A failure to compile (no C compiler, an unsupported operator, a backend error)
falls back to eager with one warning line, and training goes on. An error the
eager model raises too is the caller's and is raised as it is.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import torch

from corteza.model import CortezaCognitiva, CortezaOutput

logger = logging.getLogger(__name__)

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

Backend = str | Callable[..., Any]


class CompiledForward:
    """Calls ``model`` through ``torch.compile``; eager after a compile failure.

    >>> from corteza.model import ModelConfig
    >>> forward = CompiledForward(CortezaCognitiva(ModelConfig.tiny()), enabled=False)
    >>> forward.compiled
    False
    """

    def __init__(
        self,
        model: CortezaCognitiva,
        *,
        enabled: bool = True,
        mode: str = "default",
        backend: Backend = "inductor",
    ) -> None:
        if mode not in COMPILE_MODES:
            raise ValueError(f"compile mode {mode!r} is not one of {', '.join(COMPILE_MODES)}")
        self.model = model
        self.mode = mode
        self.failure: str | None = None  # why compilation was given up, once it was
        self._compiled: Callable[[torch.Tensor], CortezaOutput] | None = None
        if enabled:
            options: dict[str, Any] = {"dynamic": True, "backend": backend}
            if backend == "inductor":
                options["mode"] = mode
            with warnings.catch_warnings():
                # Importing Inductor trips torch's own deprecation of torch.jit.script_method.
                warnings.filterwarnings("ignore", "`torch.jit.script_method`", DeprecationWarning)
                self._compiled = torch.compile(model, **options)

    @property
    def compiled(self) -> bool:
        """Calls go through the compiled model (until a failure)."""
        return self._compiled is not None

    def __call__(self, inputs: torch.Tensor) -> CortezaOutput:
        if self._compiled is None:
            return self.model(inputs)  # type: ignore[no-any-return]
        try:
            return self._compiled(inputs)
        except torch.cuda.OutOfMemoryError:
            raise  # memory, not the compiler: the caller's to report
        except Exception as exc:
            output = self.model(inputs)  # raises the caller's own error when eager fails too
            self._give_up(exc)
            return output  # type: ignore[no-any-return]

    def _give_up(self, exc: Exception) -> None:
        self.failure = describe_failure(exc)
        self._compiled = None
        logger.warning("torch.compile failed, training continues in eager mode: %s", self.failure)


def describe_failure(exc: BaseException) -> str:
    """The exception in one line: dynamo's advice to set verbose flags is left out."""
    lines = []
    for line in str(exc).splitlines():
        if line.startswith(("Set TORCHDYNAMO_VERBOSE", "You can suppress", "For even more")):
            break
        if line.strip():
            lines.append(line.strip())
    return f"{type(exc).__name__}: {' '.join(lines)}"[:300]
