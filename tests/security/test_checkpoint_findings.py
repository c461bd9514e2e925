"""Uploaded checkpoints that once got a 500 or a half-loaded model, now refused whole.

Each one was found by the fuzz tests of test_fuzz_decoder.py: before the fix the commit
answered 500 (a TypeError, KeyError or RuntimeError after the weights had been replaced),
accepted a state that made ``/status`` or every later batch fail with 500, or accepted
weights holding NaN that turned every later answer into NaN.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from safetensors.torch import load, save

from tests.conftest import LiveServer
from tests.helpers import assert_same_model, snapshot_model
from tests.security.uploads import push, saved_checkpoint, with_manifest

Files = dict[str, bytes]
MALFORMED = "Refused checkpoint: state.json has a malformed state section: "
LAYOUT = (
    "Refused checkpoint: optimizer state does not fit: the per-parameter state differs "
    "between parameters or from this optimizer's (keys, dtypes or shapes)"
)


def _state(edit: Callable[[dict[str, Any]], None]) -> Callable[[Files], Files]:
    def apply(files: Files) -> Files:
        document = json.loads(files["state.json"])
        edit(document)
        return {**files, "state.json": json.dumps(document).encode()}

    return apply


def _tensors(name: str, edit: Callable[[dict[str, Any]], None]) -> Callable[[Files], Files]:
    def apply(files: Files) -> Files:
        tensors = load(files[name])
        edit(tensors)
        return {**files, name: save(tensors)}

    return apply


CASES = {
    "a step that is not a number": (
        _state(lambda d: d["state"].update(step="x")),
        f"{MALFORMED}step must be a non-negative integer, got 'x'",
    ),
    "a stored answer that is not an object": (
        _state(lambda d: d["state"]["runs"][0].update(answers=[[0, 5]])),
        f"{MALFORMED}run 'findings': stored answers must be objects",
    ),
    "optimizer parameters that are not indices": (
        _state(lambda d: d["optimizer"]["param_groups"][0]["params"].__setitem__(1, {"a": 1})),
        "Refused checkpoint: optimizer state does not fit: its parameter groups hold other "
        "parameter indices than this optimizer's",
    ),
    "a learning rate that is not a number": (
        _state(lambda d: d["optimizer"]["param_groups"][0].update(lr="x")),
        "Refused checkpoint: optimizer state does not fit: param_groups[0].lr is 'x', "
        "not like 0.001",
    ),
    "a parameter's moment missing": (
        _tensors("optimizer.safetensors", lambda t: t.pop("state.3.exp_avg")),
        LAYOUT,
    ),
    "a moment of the wrong shape": (
        _tensors(
            "optimizer.safetensors",
            lambda t: t.update({"state.3.exp_avg": t["state.3.step"].clone()}),
        ),
        LAYOUT,
    ),
    "a weight holding NaN": (
        _tensors(
            "model.safetensors",
            lambda t: t["capa5.anomaly.0.weight"].view(-1)[:1].fill_(float("nan")),
        ),
        "Refused checkpoint: model.safetensors holds NaN or Inf in capa5.anomaly.0.weight",
    ),
    "a moment holding Inf": (
        _tensors("optimizer.safetensors", lambda t: t["state.3.exp_avg"].fill_(float("inf"))),
        "Refused checkpoint: optimizer.safetensors holds NaN or Inf in state.3.exp_avg",
    ),
    "an RNG state of the wrong size": (
        _tensors("rng.safetensors", lambda t: t.update({"rng.cpu": t["rng.cpu"][:1].clone()})),
        "Refused checkpoint: rng.safetensors holds an unusable cpu RNG state: Expected a "
        "CPUGeneratorImplState of size 5056 but found the input RNG state size to be 1",
    ),
}


@pytest.fixture(scope="module")
def checkpoint(secured_http: httpx.Client) -> Files:
    return saved_checkpoint(secured_http, "findings")


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_checkpoint_that_would_break_the_server_is_refused_whole(
    secured_server: LiveServer, secured_http: httpx.Client, checkpoint: Files, case: str
) -> None:
    edit, message = CASES[case]
    before = snapshot_model(secured_server.state)
    response = push(secured_http, with_manifest(edit(checkpoint)))
    assert response.status_code == 422
    body = response.json()
    assert body["error_type"] == "invalid_checkpoint"
    assert body["error"] == message
    assert_same_model(before, snapshot_model(secured_server.state))
    assert secured_http.get("/status").status_code == 200


def test_a_checkpoint_with_a_statistic_of_the_wrong_kind_loads_with_fresh_statistics(
    secured_server: LiveServer, secured_http: httpx.Client, checkpoint: Files
) -> None:
    """Statistics are never worth losing training over: only they start afresh."""
    edit = _state(lambda d: d["state"]["stats"].update(total_samples=None))
    response = push(secured_http, with_manifest(edit(checkpoint)))
    assert response.status_code == 200, response.text
    assert response.json()["runs"] == {"findings": 1}
    assert secured_server.state.stats.total_samples == 0
    assert secured_http.get("/status").status_code == 200
