"""Each package's public surface is exactly its ``__all__``, in isort order."""

from __future__ import annotations

import importlib
import types

import pytest

PACKAGES = [
    "corteza",
    "corteza.cli",
    "corteza.client",
    "corteza.model",
    "corteza.server",
    "corteza.wire",
]


def _isort_key(name: str) -> tuple[int, str]:
    """CONSTANTS, then Classes, then functions (ruff's RUF022 order)."""
    if name.isupper():
        return 0, name
    return (1 if name[0].isupper() else 2), name


@pytest.mark.parametrize("name", PACKAGES)
def test_all_lists_exactly_the_public_names(name: str) -> None:
    module = importlib.import_module(name)
    for attr in module.__all__:
        getattr(module, attr)  # a lazy re-export (PEP 562) lands in vars() once read
    public = {
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == {attr for attr in module.__all__ if not attr.startswith("_")}
    assert module.__all__ == sorted(module.__all__, key=_isort_key)
