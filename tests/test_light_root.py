"""Importing the server or the wire package loads nothing it does not need.

The root package re-exports the client lazily (PEP 562), so a server process
(and its ONNX export child) never loads httpx, httpx-sse or websockets, and
``corteza.wire`` (read by both sides) loads neither torch nor FastAPI. Each
import runs in a fresh interpreter: this test process has loaded everything.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CLIENT_LIBRARIES = ["httpx", "httpx_sse", "websockets"]
SERVER_LIBRARIES = ["torch", "fastapi"]


def _loaded(statement: str, watched: list[str]) -> list[str]:
    """The modules of ``watched`` in ``sys.modules`` after ``statement`` in a fresh interpreter."""
    report = f"print(json.dumps([m for m in {watched!r} if m in sys.modules]))"
    loaded: list[str] = json.loads(_python(f"{statement}; import json, sys; {report}"))
    return loaded


def _python(code: str) -> str:
    """What ``python -c code`` prints, in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize(
    ("statement", "watched"),
    [
        ("import corteza.server", CLIENT_LIBRARIES),
        ("import corteza.server.engine.export", CLIENT_LIBRARIES),
        ("import corteza.wire", CLIENT_LIBRARIES + SERVER_LIBRARIES),
        ("import corteza.wire.model_config", CLIENT_LIBRARIES + SERVER_LIBRARIES),
        ("import corteza", CLIENT_LIBRARIES + SERVER_LIBRARIES),
    ],
)
def test_an_import_loads_none_of_the_watched_libraries(statement: str, watched: list[str]) -> None:
    assert _loaded(statement, watched) == []


def test_the_lazy_root_still_gives_the_client() -> None:
    code = (
        "import sys; from corteza import Client, CortezaError; import corteza; "
        "print(Client.__module__, CortezaError.__module__, 'httpx' in sys.modules, "
        "sorted(corteza.__all__) == sorted(set(dir(corteza)) & set(corteza.__all__)))"
    )
    assert _python(code).split() == [
        "corteza.client.client",
        "corteza.client.errors",
        "True",
        "True",
    ]


def test_an_unknown_root_name_is_an_attribute_error() -> None:
    import corteza

    with pytest.raises(AttributeError, match="module 'corteza' has no attribute 'Nope'"):
        corteza.Nope  # noqa: B018
