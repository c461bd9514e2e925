"""Hostile material for the fuzz tests: JSON garbage, broken safetensors files, mutations."""

from __future__ import annotations

import copy
import json
import struct
from typing import Any

import torch
from hypothesis import strategies as st
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

# Anything JSON can hold, nested a little; integers beyond 64 bits on purpose.
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)

# Sizes that overflow 32, 53, 63 and 64 bits, the ones that break careless size arithmetic.
HUGE = st.sampled_from([2**31, 2**32 + 1, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**30])
_DTYPES = ["F32", "F16", "BF16", "F64", "I64", "I32", "U8", "BOOL", "F8_E4M3", "f32", "X"]


def raw_safetensors(header: Any, buffer: bytes = b"", *, length: int | None = None) -> bytes:
    """A safetensors file written by hand, so that it can be broken on purpose."""
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + buffer


def hostile_safetensors(names: list[str]) -> st.SearchStrategy[bytes]:
    """Headers with huge shapes and offsets, unknown dtypes, garbage metadata, lying lengths."""
    entry = (
        st.fixed_dictionaries(
            {
                "dtype": st.sampled_from(_DTYPES) | JSON,
                "shape": st.lists(st.integers(0, 64) | HUGE, max_size=4) | JSON,
                "data_offsets": st.lists(st.integers(0, 512) | HUGE, min_size=2, max_size=2) | JSON,
            }
        )
        | JSON
    )
    metadata = st.dictionaries(st.text(max_size=6), st.text(max_size=6) | JSON, max_size=3) | JSON
    header = st.builds(
        lambda tensors, meta: {"__metadata__": meta, **tensors},
        st.dictionaries(st.sampled_from(names) | st.text(max_size=6), entry, max_size=4),
        metadata,
    )
    length = st.none() | st.integers(0, 2**64 - 1)
    return st.builds(
        lambda h, buffer, n: raw_safetensors(h, buffer, length=n),
        header,
        st.binary(max_size=256),
        length,
    )


def mutated(seed: bytes) -> st.SearchStrategy[bytes]:
    """``seed`` with a few bytes overwritten and its tail cut off."""

    def apply(flips: list[tuple[int, int]], cut: int) -> bytes:
        data = bytearray(seed)
        for position, value in flips:
            data[position % len(data)] = value
        return bytes(data[: len(data) - cut % (len(data) + 1)])

    return st.builds(
        apply,
        st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)), max_size=8),
        st.integers(0, 2**20) | st.just(0),
    )


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    children: list[tuple[Any, ...]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            children += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            children += _paths(value, (*prefix, index))
    return [prefix, *children]


def _replaced(document: Any, path: tuple[Any, ...], value: Any, delete: bool) -> Any:
    if not path:
        return value
    result = copy.deepcopy(document)
    parent = result
    for step in path[:-1]:
        parent = parent[step]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return result


def json_mutations(document: Any) -> st.SearchStrategy[bytes]:
    """``document`` with one node replaced by garbage or deleted, or not JSON at all."""
    paths = _paths(document)
    edited = st.builds(
        lambda path, value, delete: json.dumps(_replaced(document, path, value, delete)).encode(),
        st.sampled_from(paths),
        JSON | HUGE | st.integers(-(2**70), -1),
        st.booleans(),
    )
    return edited | st.binary(max_size=64) | st.text(max_size=64).map(str.encode)


_RETYPES = [
    torch.float16,
    torch.bfloat16,
    torch.float64,
    torch.int64,
    torch.int32,
    torch.uint8,
    torch.bool,
]
_FILLS = [float("nan"), float("inf"), -float("inf"), 3e38]


def _reshaped(tensor: torch.Tensor, how: int) -> torch.Tensor:
    shapes = [
        (tensor.numel(),),
        (1, *tensor.shape),
        (),
        (*tensor.shape[:-1], tensor.shape[-1] + 1) if tensor.dim() else (2,),
        tuple(reversed(tensor.shape)),
    ]
    return torch.zeros(shapes[how % len(shapes)], dtype=tensor.dtype)


def edited_tensors(seed: bytes) -> st.SearchStrategy[bytes]:
    """The safetensors file ``seed``, well formed, with one tensor dropped, added, retyped,
    reshaped or filled with NaN, Inf or huge values."""
    tensors = load_tensors(seed)
    names = sorted(tensors)

    def edit(name: str, action: str, how: int, extra: str) -> bytes:
        edited = dict(tensors)
        original = edited.pop(name)
        if action == "retype":
            edited[name] = original.to(_RETYPES[how % len(_RETYPES)])
        elif action == "reshape":
            edited[name] = _reshaped(original, how)
        elif action == "fill" and original.is_floating_point():
            edited[name] = torch.full_like(original, _FILLS[how % len(_FILLS)])
        elif action == "add":
            edited[name] = original
            edited[extra or f"{name}.extra"] = torch.zeros(how % 5)
        return save_tensors(edited)

    return st.builds(
        edit,
        st.sampled_from(names),
        st.sampled_from(["drop", "retype", "reshape", "fill", "add"]),
        st.integers(0, 31),
        st.sampled_from(names) | st.text(max_size=6),
    )
