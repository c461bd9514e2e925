"""Does a checkpoint fit the live model and optimizer? Every check, before anything changes.

A checkpoint comes from this server, an older one, or a user's upload: its
tensors must carry exactly the model's names, shapes and dtypes, and its
optimizer section must rebuild a ``state_dict`` that the live optimizer would
accept *and* could step with (hyperparameters of the right kinds, finite
numbers, per-parameter state laid out like the optimizer's own). Each refusal
is a :class:`CheckpointError` that names what does not fit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
_SHOWN = 3  # problems listed per kind before "and N more"


class CheckpointError(Exception):
    """A checkpoint that cannot be used: incomplete, corrupted, or made for another model."""


def validate_model_tensors(tensors: Mapping[str, torch.Tensor], model: torch.nn.Module) -> None:
    """Raise CheckpointError naming missing, unexpected and mismatched tensors."""
    expected = model.state_dict()
    missing = [name for name in expected if name not in tensors]
    unexpected = sorted(name for name in tensors if name not in expected)
    shapes: list[str] = []
    dtypes: list[str] = []
    for name, want in expected.items():
        got = tensors.get(name)
        if got is None:
            continue
        if got.shape != want.shape:
            shapes.append(f"{name} is {list(got.shape)}, the model has {list(want.shape)}")
        elif got.dtype != want.dtype:
            dtypes.append(f"{name} is {_dtype(got)}, the model has {_dtype(want)}")
    problems: list[str] = []
    for label, names in (("missing tensors", missing), ("unexpected tensors", unexpected)):
        if names:
            more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
            problems.append(f"{label}: {', '.join(names[:_SHOWN])}{more}")
    for label, items in (("shape mismatch", shapes), ("dtype mismatch", dtypes)):
        problems.extend(f"{label}: {item}" for item in items[:_SHOWN])
        if len(items) > _SHOWN:
            problems.append(f"and {len(items) - _SHOWN} more {label}es")
    if problems:
        raise CheckpointError("checkpoint does not fit this model: " + "; ".join(problems))


def check_finite(tensors: Mapping[str, torch.Tensor], file: str) -> None:
    """Raise CheckpointError naming the tensors of ``file`` that hold NaN or Inf: weights or
    optimizer moments like that would turn every later answer and step into NaN."""
    bad = sorted(
        name
        for name, tensor in tensors.items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    )
    if bad:
        more = f" and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
        raise CheckpointError(f"{file} holds NaN or Inf in {', '.join(bad[:_SHOWN])}{more}")


def optimizer_state_dict(
    saved: dict[str, Any], tensors: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Rebuild ``optimizer.state_dict()`` from the flattened tensors and state.json."""
    kind = type(optimizer).__name__
    if saved["type"] != kind:
        raise CheckpointError(f"optimizer state is for {saved['type']}, this optimizer is {kind}")
    live = optimizer.param_groups
    sizes = [len(group["params"]) for group in saved["param_groups"]]
    live_sizes = [len(group["params"]) for group in live]
    if sizes != live_sizes:
        raise CheckpointError(
            f"optimizer state does not fit: parameter groups of sizes {sizes}, "
            f"this optimizer has {live_sizes}"
        )
    # JSON turned tuples (AdamW's betas) into lists; give back the optimizer's own types.
    groups = [
        {
            k: tuple(v) if isinstance(v, list) and isinstance(now.get(k), tuple) else v
            for k, v in group.items()
        }
        for group, now in zip(saved["param_groups"], live, strict=True)
    ]
    live_indices = optimizer.state_dict()["param_groups"]
    if [group["params"] for group in groups] != [group["params"] for group in live_indices]:
        raise CheckpointError(
            "optimizer state does not fit: its parameter groups hold "
            "other parameter indices than this optimizer's"
        )
    for i, (group, now) in enumerate(zip(groups, live, strict=True)):
        for key, value in now.items():
            if key != "params" and not _fits(group.setdefault(key, value), value):
                raise CheckpointError(
                    f"optimizer state does not fit: param_groups[{i}].{key} "
                    f"is {group[key]!r:.40}, not like {value!r:.40}"
                )
    params = [p for group in live for p in group["params"]]
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        prefix, index, key = [*name.split(".", 2), "", ""][:3]
        if prefix != "state" or not index.isdigit() or int(index) >= len(params) or not key:
            raise CheckpointError(f"{OPTIMIZER_FILE} has an unexpected tensor {name}")
        state.setdefault(int(index), {})[key] = tensor
    for index, values in saved["values"].items():
        if not (index.isdigit() and int(index) < len(params)):
            raise CheckpointError(f"{STATE_FILE} has optimizer values of no parameter: {index:.40}")
        state.setdefault(int(index), {}).update(values)
    # The next step would fail on state laid out unlike the optimizer's own, so refuse it now.
    layouts = {_layout(entries, params[index]) for index, entries in state.items() if entries}
    layouts |= {_layout(entries, param) for param, entries in optimizer.state.items() if entries}
    if len(layouts) > 1 or None in layouts:
        raise CheckpointError(
            "optimizer state does not fit: the per-parameter state differs between "
            "parameters or from this optimizer's (keys, dtypes or shapes)"
        )
    return {"state": state, "param_groups": groups}


def _fits(saved: Any, live: Any) -> bool:
    """Whether a saved hyperparameter can stand in for the live one: a finite number for a
    number, a flag (or None) for a flag, a tuple of as many for a tuple (AdamW's betas)."""
    if isinstance(live, bool) or live is None:
        return saved is None or isinstance(saved, bool)
    if isinstance(live, (int, float)):
        number = isinstance(saved, (int, float)) and not isinstance(saved, bool)
        return number and math.isfinite(saved)
    if isinstance(live, tuple):
        return (
            isinstance(saved, tuple)
            and len(saved) == len(live)
            and all(_fits(s, v) for s, v in zip(saved, live, strict=True))
        )
    return True


def _layout(entries: Mapping[str, Any], param: torch.Tensor) -> frozenset[tuple[str, str]] | None:
    """Each key of a parameter's optimizer state with its kind; None for a value no
    optimizer keeps (a non-float tensor, or one neither scalar nor shaped like the parameter).
    """
    kinds: list[tuple[str, str]] = []
    for key, value in entries.items():
        if isinstance(value, torch.Tensor):
            if not value.is_floating_point() or (value.dim() and value.shape != param.shape):
                return None
            kinds.append((key, "scalar" if value.dim() == 0 else "tensor"))
        elif value is None or isinstance(value, (bool, int, float)):
            kinds.append((key, type(value).__name__))
        else:
            return None
    return frozenset(kinds)


def flatten_optimizer_state(
    state: Mapping[int, Mapping[str, Any]],
) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, Any]]]:
    """An optimizer's per-parameter state as ``state.<index>.<key>`` tensors (CPU copies)
    and the other values by index, the inverse of :func:`optimizer_state_dict`."""
    tensors: dict[str, torch.Tensor] = {}
    values: dict[str, dict[str, Any]] = {}
    for index, entries in state.items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{key}"] = value
            else:
                values.setdefault(str(index), {})[key] = value
    return cpu_copies(tensors), values


def cpu_copies(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Fresh contiguous tensors: safetensors refuses views and tensors that share storage.
    return {
        name: t.detach().to("cpu", memory_format=torch.contiguous_format, copy=True)
        for name, t in tensors.items()
    }


def _dtype(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")
