"""Every field the seed's TypeScript client reads is present, with the seed's JSON type.

The expected shapes come from responses captured from the seed's own server
(tests/contract/*.json, copied from the project's seed material).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import samples

CONTRACT = Path(__file__).parents[2] / "contract"


def _load(route: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CONTRACT / f"{route}.json").read_text())
    return data


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _expand(seed: Any) -> Any:
    """Captured long float lists are abbreviated as {"__list_of_floats__": N, ...}."""
    if isinstance(seed, dict) and "__list_of_floats__" in seed:
        return [0.0] * seed["__list_of_floats__"]
    if isinstance(seed, dict):
        return {k: _expand(v) for k, v in seed.items()}
    return seed


def assert_compatible(seed: Any, ours: Any, path: str = "$") -> None:
    """``ours`` has every key of ``seed`` with the same JSON type (extra keys allowed)."""
    assert _json_type(ours) == _json_type(seed), f"{path}: {ours!r} is not like {seed!r}"
    if isinstance(seed, dict):
        for key, value in seed.items():
            assert key in ours, f"{path}.{key} is missing"
            assert_compatible(value, ours[key], f"{path}.{key}")
    elif isinstance(seed, list) and seed and all(_json_type(v) == "number" for v in seed):
        assert all(_json_type(v) == "number" for v in ours), f"{path}: not all numbers"


# The seed's flat "capas" sub-objects describe its fixed architecture; ours
# reports the configured one (same keys), so only its top level is compared.
ROUTES = [
    "health",
    "status",
    "info",
    "metricas",
    "diagnostico",
    "feedback_dendritas",
    "train_layer2",
]


@pytest.mark.parametrize("route", ROUTES)
def test_response_keeps_the_seed_contract(route: str, http: httpx.Client) -> None:
    captured = _load(route)
    request = _expand(captured["request"])
    if route == "train_layer2":
        request = {"samples": samples(4, 32), "epochs": 1}  # the tiny model is 32 wide
    http.post("/train_layer2", json={"samples": samples(4, 32)})  # stats to report
    response = http.request(captured["method"], f"/{route}", json=request)
    assert response.status_code == captured["status"]
    seed_body = _expand(captured["response"])
    assert_compatible(seed_body, response.json())


def test_train_outputs_have_the_seeds_lengths(http: httpx.Client) -> None:
    body = http.post("/train_layer2", json={"samples": samples(4, 32)}).json()
    seed = _expand(_load("train_layer2")["response"])
    assert len(body["outputs"]["dendrite_adjustments"]) == len(
        seed["outputs"]["dendrite_adjustments"]
    )
    assert len(body["outputs"]["coherence_state"]) == len(seed["outputs"]["coherence_state"])
