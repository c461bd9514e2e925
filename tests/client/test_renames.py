"""Old names kept for one release: they still work, and say what to use instead."""

from __future__ import annotations

import builtins
import importlib
import socket

import pytest

from corteza.client import Client, TimeoutException, TransportError


@pytest.mark.parametrize("module", ["corteza.client", "corteza.client.errors"])
def test_timeout_error_is_a_deprecated_alias(module: str) -> None:
    package = importlib.import_module(module)
    with pytest.warns(DeprecationWarning) as caught:
        old = package.TimeoutError
    assert old is TimeoutException
    assert str(caught[0].message) == (
        f"{module}.TimeoutError is deprecated (it shadows the builtin): use TimeoutException"
    )
    assert TimeoutException is not builtins.TimeoutError
    assert issubclass(TimeoutException, TransportError)
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        package.Nope  # noqa: B018


def test_a_server_that_does_not_answer_raises_timeout_exception() -> None:
    with socket.socket() as listener:  # accepts the connection, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with Client(url, timeout=0.2, retries=0) as client, pytest.raises(TimeoutException) as info:
            client.health()
    assert str(info.value) == f"{url}/health did not answer in time"
