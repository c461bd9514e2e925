"""The GPU engine pieces on a real GPU: the precision policy, staging, the fp16 scaler,
compilation and out-of-memory (``tests/server/engine/test_cuda.py`` has the server on CUDA).

Marked ``cuda`` and skipped without a CUDA device; ``benchmarks/device_check.sh`` runs them.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from corteza.model import CortezaCognitiva, ModelConfig, corteza_loss
from corteza.server.engine.compilation import CompiledForward
from corteza.server.engine.memory import MemoryMeter
from corteza.server.engine.precision import (
    MixedPrecision,
    PrecisionError,
    choose_precision,
    device_capability,
    precision_for,
)
from corteza.server.engine.staging import Staging
from tests.conftest import needs_cuda

pytestmark = [pytest.mark.cuda, needs_cuda]

TINY = dataclasses.replace(ModelConfig.tiny(), dropout=0.0)


@pytest.fixture
def cuda() -> torch.device:
    return torch.device("cuda")


def test_auto_on_this_gpu_follows_the_table(cuda: torch.device) -> None:
    capability = device_capability(cuda)
    assert capability is not None
    expected = "bf16" if capability >= (8, 0) else "fp16" if capability >= (7, 0) else "fp32"
    assert precision_for(cuda, "auto").name == expected
    if capability < (8, 0):
        with pytest.raises(PrecisionError):
            precision_for(cuda, "bf16")


def test_staged_arrays_arrive_whole_and_the_buffers_are_reused(cuda: torch.device) -> None:
    staging = Staging(cuda)
    rng = np.random.default_rng(0)
    big = rng.normal(size=(512, 64)).astype(np.float32)
    labels = (rng.random(512) > 0.5).astype(np.float32)
    x, y, nothing = staging.stage([big, labels, None]).tensors()
    assert x is not None and y is not None and nothing is None
    assert x.device.type == "cuda"
    assert torch.equal(x.cpu(), torch.from_numpy(big))
    assert torch.equal(y.cpu(), torch.from_numpy(labels))
    pinned = staging.pinned_bytes
    for size in (7, 300, 512, 1):  # smaller batches: the same buffers
        source = rng.normal(size=(size, 64)).astype(np.float32)
        staged = staging.stage([source])
        expected = source.copy()
        source[:] = np.nan  # the caller's array changes once staged: the copy does not
        (tensor,) = staged.tensors()
        assert tensor is not None
        assert torch.equal(tensor.cpu(), torch.from_numpy(expected))
    assert staging.pinned_bytes == pinned
    staging.stage([rng.normal(size=(4096, 64)).astype(np.float32)])
    assert staging.pinned_bytes > pinned  # grown, once, for a larger batch


def _model_and_optimizer(cuda: torch.device) -> tuple[CortezaCognitiva, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = CortezaCognitiva(TINY).to(cuda)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)


def _step(model: CortezaCognitiva, optimizer: torch.optim.Optimizer, mp: MixedPrecision) -> bool:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(16, TINY.input_dim, generator=generator).to(model_device(model))
    y = (torch.rand(16, generator=generator) > 0.5).float().to(model_device(model))
    optimizer.zero_grad(set_to_none=True)
    with mp.autocast():
        loss = corteza_loss(model(x), y).total
    return mp.step(loss, optimizer, model.parameters(), max_grad_norm=1.0).skipped


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def test_fp16_with_a_too_large_scale_skips_then_trains(cuda: torch.device) -> None:
    model, optimizer = _model_and_optimizer(cuda)
    mp = MixedPrecision(choose_precision("cuda", (7, 5), "fp16"), cuda)
    mp.load_state_dict(
        {
            "scale": 1e38,
            "growth_factor": 2.0,
            "backoff_factor": 2.0**-110,
            "growth_interval": 2000,
            "_growth_tracker": 0,
        }
    )
    before = copy.deepcopy(model.state_dict())
    assert _step(model, optimizer, mp) is True
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert _step(model, optimizer, mp) is False
    assert any(not torch.equal(t, before[n]) for n, t in model.state_dict().items())


@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
def test_compiled_forward_on_the_gpu_matches_eager(cuda: torch.device) -> None:
    torch._dynamo.reset()
    model, _ = _model_and_optimizer(cuda)
    forward = CompiledForward(model)
    x = torch.randn(8, TINY.input_dim, device=cuda)
    compiled = forward(x).anomaly_logits
    assert forward.compiled is True, forward.failure
    torch.testing.assert_close(compiled, model(x).anomaly_logits, rtol=1e-3, atol=1e-4)


def test_the_meter_measures_a_batch_and_suggests_a_size_after_a_real_oom(
    cuda: torch.device,
) -> None:
    model, optimizer = _model_and_optimizer(cuda)
    meter = MemoryMeter(cuda)
    meter.batch_started()
    x = torch.randn(64, 8, TINY.input_dim, device=cuda)
    corteza_loss(model(x), torch.zeros(64, device=cuda)).total.backward()  # type: ignore[no-untyped-call]
    meter.batch_done(64, 8)
    assert meter.peak_bytes > 0
    assert meter.bytes_per_step is not None and meter.bytes_per_step > 0
    free, _ = torch.cuda.mem_get_info(cuda)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        torch.empty(free * 2, dtype=torch.uint8, device=cuda)
    optimizer.zero_grad(set_to_none=True)
    error = meter.out_of_memory(10**9, 8)
    assert 1 <= error.fits < 10**9
    assert "nothing was applied" in str(error)
