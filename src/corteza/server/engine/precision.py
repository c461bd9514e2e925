"""Mixed precision: which one a device gets, and the autocast + GradScaler around a step.

``--precision auto`` follows the hardware people actually get. The free Colab
GPU is a T4 (compute capability 7.5): about 65 TFLOPS in fp16 on its tensor
cores against 8 in fp32, and no native bf16 (``torch.cuda.is_bf16_supported()``
says True there only by emulation, which is slow). So:

=========================  ==========  ==============  ===============
device                     auto        fp16            bf16
=========================  ==========  ==============  ===============
CUDA, capability >= 8.0    bf16        fp16 + scaler   bf16
CUDA, capability 7.x       fp16 +      fp16 + scaler   refused
                           scaler
CUDA, capability < 7.0     fp32        fp16 + scaler   refused
CPU                        fp32        fp16 + scaler   bf16
MPS                        fp32        refused         refused
=========================  ==========  ==============  ===============

``fp32`` is honoured everywhere. :func:`choose_precision` is the table, as a
pure function; :class:`MixedPrecision` applies a choice to a training step.

fp16 needs a ``torch.amp.GradScaler``: the loss is multiplied by a large scale
so small gradients survive fp16, and a step whose gradients overflowed to
inf/NaN is *skipped* (nothing applied, the scale halves). A skipped step is not
divergence: :meth:`MixedPrecision.step` reports it as ``skipped`` and the batch
is still recorded once by the caller. The scaler's state (a few numbers) is
saved in checkpoints, so a resumed fp16 run keeps its scale.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

from corteza.server.engine.device import resolve_device

PrecisionName = Literal["fp32", "fp16", "bf16"]
PRECISION_REQUESTS = ("auto", "fp32", "fp16", "bf16")
NATIVE_BF16 = (8, 0)  # Ampere and newer
TENSOR_CORE_FP16 = (7, 0)  # Volta and Turing


class PrecisionError(ValueError):
    """An explicit precision the device cannot honour; the message is one line."""


@dataclass(frozen=True)
class Precision:
    """The precision a trainer runs in, and why."""

    name: PrecisionName
    why: str  # "auto on a CUDA device of capability 7.5", for the log and /status

    @property
    def scaled(self) -> bool:
        """fp16 steps go through a GradScaler."""
        return self.name == "fp16"

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype of autocast regions; None runs plain fp32."""
        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.name)


def choose_precision(
    device_type: str, capability: tuple[int, int] | None, request: str
) -> Precision:
    """The precision table above: ``(device type, CUDA capability, request) -> Precision``.

    Raises :class:`PrecisionError` for a request the device cannot honour.

    >>> choose_precision("cuda", (7, 5), "auto").name
    'fp16'
    >>> choose_precision("cuda", (8, 0), "auto").name
    'bf16'
    """
    if request not in PRECISION_REQUESTS:
        raise PrecisionError(
            f"--precision {request!r} is not one of {', '.join(PRECISION_REQUESTS)}"
        )
    if request == "fp32":
        return Precision("fp32", "asked for")
    if device_type == "cuda":
        if capability is None:
            raise PrecisionError("a CUDA device needs its compute capability to choose a precision")
        where = f"a CUDA device of capability {capability[0]}.{capability[1]}"
        if request == "auto":
            if capability >= NATIVE_BF16:
                return Precision("bf16", f"auto on {where}")
            if capability >= TENSOR_CORE_FP16:
                return Precision("fp16", f"auto on {where}")
            return Precision("fp32", f"auto on {where} (no fp16 tensor cores)")
        if request == "bf16" and capability < NATIVE_BF16:
            raise PrecisionError(
                f"--precision bf16 needs a GPU of compute capability 8.0 or newer (A100, L4, "
                f"H100); this one has {capability[0]}.{capability[1]}, where bf16 is only "
                "emulated: use --precision fp16 or auto"
            )
        return Precision("fp16" if request == "fp16" else "bf16", f"asked for on {where}")
    if device_type == "cpu":
        if request == "auto":
            return Precision("fp32", "auto on the CPU")
        return Precision("fp16" if request == "fp16" else "bf16", "asked for on the CPU")
    if request == "auto":
        return Precision("fp32", f"auto on {device_type}")
    raise PrecisionError(
        f"--precision {request} is not available on {device_type}: this server runs fp16 and "
        "bf16 on CUDA and the CPU only; use --precision auto or fp32"
    )


def device_capability(device: torch.device) -> tuple[int, int] | None:
    """A CUDA device's compute capability, None elsewhere."""
    if device.type != "cuda":
        return None
    major, minor = torch.cuda.get_device_capability(device)
    return major, minor


def precision_for(device: torch.device, request: str) -> Precision:
    """:func:`choose_precision` for a live device."""
    return choose_precision(device.type, device_capability(device), request)


def precision_refusal(device_setting: str, request: str) -> str | None:
    """The one-line refusal of ``request`` on the device ``device_setting`` names; None
    when it can be honoured, or when the device itself is unusable (the server says so)."""
    try:
        device = resolve_device(device_setting)
    except (ValueError, RuntimeError):
        return None
    try:
        precision_for(device, request)
    except PrecisionError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class StepOutcome:
    """What :meth:`MixedPrecision.step` did."""

    loss: float  # the loss before the step; not finite means nothing was applied
    skipped: bool = False  # the scaler found inf/NaN gradients: nothing applied

    @property
    def applied(self) -> bool:
        return math.isfinite(self.loss) and not self.skipped


SCALER_KEYS = {
    "scale": float,
    "growth_factor": float,
    "backoff_factor": float,
    "growth_interval": int,
    "_growth_tracker": int,
}


def check_scaler_state(state: Mapping[str, Any]) -> None:
    """Raise ValueError unless ``state`` is a GradScaler state a checkpoint may restore.

    An empty mapping (saved by a run without a scaler) is accepted: nothing to restore.
    """
    if not isinstance(state, Mapping):
        raise ValueError(f"scaler state must be an object, got {type(state).__name__}")
    if not state:
        return
    if set(state) != set(SCALER_KEYS):
        raise ValueError(f"scaler state must hold {sorted(SCALER_KEYS)}, got {sorted(state)}")
    for key, kind in SCALER_KEYS.items():
        value = state[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"scaler.{key} must be a number, got {value!r:.40}")
        if not math.isfinite(value) or value < 0 or (kind is int and value != int(value)):
            raise ValueError(f"scaler.{key} must be a finite non-negative {kind.__name__}")
    if state["scale"] <= 0:
        raise ValueError(f"scaler.scale must be positive, got {state['scale']!r}")


class MixedPrecision:
    """Autocast and, for fp16, a GradScaler around one optimizer's steps.

    >>> mp = MixedPrecision(Precision("fp32", "asked for"), torch.device("cpu"))
    >>> model = torch.nn.Linear(2, 1)
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> with mp.autocast():
    ...     loss = model(torch.ones(1, 2)).pow(2).mean()
    >>> mp.step(loss, optimizer, list(model.parameters())).applied
    True
    """

    def __init__(self, precision: Precision, device: torch.device) -> None:
        self.precision = precision
        self.device = device
        # Disabled (a no-op) unless fp16; on the CPU it needs torch >= 2.3.
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision.scaled)

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """The autocast region of a forward pass (nothing in fp32)."""
        dtype = self.precision.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        if self.device.type == "cpu":
            return _cpu_autocast(dtype)
        return torch.autocast(self.device.type, dtype=dtype)

    def step(
        self,
        loss: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        parameters: Iterable[torch.nn.Parameter],
        max_grad_norm: float | None = None,
        *,
        weight: float = 1.0,
    ) -> StepOutcome:
        """Backward of ``weight * loss``, clip, optimizer step.

        The one host synchronisation reads the loss (under fp16 together with the
        gradient norm). A loss that is not finite applies nothing and leaves the
        scale alone (the caller reports divergence); under fp16, gradients that
        overflowed apply nothing, halve the scale and come back as ``skipped``.
        The gradients are left zeroed whenever nothing was applied.
        """
        params = [p for p in parameters if p.requires_grad]
        if not self.precision.scaled:
            value = float(loss.detach())
            if not math.isfinite(value):
                optimizer.zero_grad(set_to_none=True)
                return StepOutcome(value)
            (weight * loss).backward()  # type: ignore[no-untyped-call]
            limit = math.inf if max_grad_norm is None else max_grad_norm
            norm = torch.nn.utils.clip_grad_norm_(params, limit)
            if not math.isfinite(float(norm)):
                # Non-finite gradients from a finite loss: apply nothing, as for a NaN loss.
                optimizer.zero_grad(set_to_none=True)
                return StepOutcome(math.nan)
            optimizer.step()
            return StepOutcome(value)
        self.scaler.scale(weight * loss).backward()  # type: ignore[no-untyped-call]
        self.scaler.unscale_(optimizer)
        limit = math.inf if max_grad_norm is None else max_grad_norm
        norm = torch.nn.utils.clip_grad_norm_(params, limit)
        value, norm_value = torch.stack([loss.detach().float(), norm.float()]).tolist()
        if not math.isfinite(value):
            optimizer.zero_grad(set_to_none=True)
            # Forget this step's inf checks without touching the scale.
            self.scaler.update(new_scale=self.scaler.get_scale())
            return StepOutcome(value)
        if not math.isfinite(norm_value):
            # The scaler would skip this step too; skipping it here keeps the two in
            # agreement even if the norm alone overflowed.
            optimizer.zero_grad(set_to_none=True)
            self.scaler.update()  # the scale backs off
            return StepOutcome(value, skipped=True)
        self.scaler.step(optimizer)
        self.scaler.update()
        return StepOutcome(value)

    @property
    def scale(self) -> float | None:
        """The loss scale under fp16 (a host sync), None otherwise."""
        return self.scaler.get_scale() if self.precision.scaled else None

    def state_dict(self) -> dict[str, Any]:
        """The scaler's state as plain JSON values; empty unless fp16."""
        if not self.precision.scaled:
            return {}
        return {k: SCALER_KEYS[k](v) for k, v in self.scaler.state_dict().items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a scaler state (checked by :func:`check_scaler_state` first).

        An empty state (saved without fp16), or any state when this run is not
        fp16, leaves the scaler as it is.
        """
        check_scaler_state(state)
        if state and self.precision.scaled:
            self.scaler.load_state_dict(dict(state))


@contextlib.contextmanager
def _cpu_autocast(dtype: torch.dtype) -> Iterator[None]:
    """CPU autocast with oneDNN off: its LSTM has no fp16/bf16 kernel on CPUs without
    AVX-512 BF16/AMX ("could not create a primitive descriptor"), PyTorch's own has."""
    enabled = bool(torch.backends.mkldnn.enabled)
    torch.backends.mkldnn.enabled = False  # type: ignore[assignment]
    try:
        with torch.autocast("cpu", dtype=dtype):
            yield
    finally:
        torch.backends.mkldnn.enabled = enabled  # type: ignore[assignment]
