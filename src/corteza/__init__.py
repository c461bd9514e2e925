"""corteza: train the Corteza cognitive model on a remote GPU from your own machine.

>>> from corteza import Client
>>> client = Client("http://127.0.0.1:8000")  # doctest: +SKIP

The root stays light: ``Client`` and ``CortezaError`` are imported on first
use (PEP 562), so ``import corteza.server`` or ``import corteza.wire`` (a
server, its ONNX export child, a torch-free tool) never loads httpx or
websockets.
"""

import importlib as _importlib
import typing as _typing

from corteza._version import __version__

if _typing.TYPE_CHECKING:
    from corteza.client import Client, CortezaError

__all__ = ["Client", "CortezaError", "__version__"]

_LAZY = {"Client": "corteza.client", "CortezaError": "corteza.client"}


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'corteza' has no attribute {name!r}")
    value = getattr(_importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
