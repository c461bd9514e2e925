"""``--compile``: the same losses as eager, a bounded number of compilations, and a
failure that falls back to eager with one warning line."""

from __future__ import annotations

import copy
import dataclasses
import logging
import shutil
from collections.abc import Callable
from typing import Any

import pytest
import torch

from corteza.model import CortezaCognitiva, ModelConfig, corteza_loss
from corteza.server.engine.compilation import CompiledForward

# No dropout: eager and compiled draw different masks from the RNG.
TINY = dataclasses.replace(ModelConfig.tiny(), dropout=0.0)


def _batch(seed: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(size, TINY.input_dim, generator=generator)
    return x, (torch.rand(size, generator=generator) > 0.5).float()


def _losses(forward: Callable[[torch.Tensor], Any], model: torch.nn.Module) -> list[float]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for seed, size in enumerate((4, 6, 9)):  # three sizes: no recompilation for the new ones
        x, y = _batch(seed, size)
        optimizer.zero_grad(set_to_none=True)
        loss = corteza_loss(forward(x), y).total
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def _broken_backend(graph: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
    raise RuntimeError("no compiler on this machine")


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    torch._dynamo.reset()


def test_a_compile_failure_falls_back_to_eager_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    torch.manual_seed(0)
    model = CortezaCognitiva(TINY)
    reference = copy.deepcopy(model)
    forward = CompiledForward(model, backend=_broken_backend)
    compiled_at_first = forward.compiled
    assert compiled_at_first is True
    with caplog.at_level(logging.WARNING, logger="corteza.server.engine.compilation"):
        losses = _losses(forward, model)
    assert losses == _losses(reference, reference)
    assert forward.compiled is False
    assert [r.getMessage() for r in caplog.records] == [
        "torch.compile failed, training continues in eager mode: BackendCompilerFailed: "
        "backend='_broken_backend' raised: RuntimeError: no compiler on this machine"
    ]


def test_an_error_of_the_model_itself_is_raised_and_compilation_kept() -> None:
    forward = CompiledForward(CortezaCognitiva(TINY), backend=_broken_backend)
    with pytest.raises(
        ValueError, match=r"^expected input \(B, 32\) or \(B, T, 32\), got \(2, 5\)$"
    ):
        forward(torch.zeros(2, 5))
    assert forward.compiled is True


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError) as refused:
        CompiledForward(CortezaCognitiva(TINY), mode="fastest")
    assert str(refused.value) == (
        "compile mode 'fastest' is not one of default, reduce-overhead, max-autotune, "
        "max-autotune-no-cudagraphs"
    )


# Dynamo's tracing reads .grad of non-leaf tensors, which warns; pytest would make it an error.
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None,
    reason="torch.compile's CPU backend needs a C compiler, and this machine has none",
)
def test_compiled_training_matches_eager_and_compiles_once() -> None:
    torch.manual_seed(0)
    model = CortezaCognitiva(TINY)
    reference = copy.deepcopy(model)
    forward = CompiledForward(model)
    compiled = _losses(forward, model)
    assert forward.compiled is True, forward.failure
    frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    more = _losses(forward, model)  # three more batches, sizes already seen or not
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == frames
    assert len(more) == 3
    assert compiled == pytest.approx(_losses(reference, reference), rel=1e-4, abs=1e-5)
