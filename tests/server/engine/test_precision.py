"""The precision policy as a table, and the fp16 GradScaler path on the CPU."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from corteza.model import CortezaCognitiva, ModelConfig, corteza_loss
from corteza.server.engine.precision import (
    MixedPrecision,
    Precision,
    PrecisionError,
    check_scaler_state,
    choose_precision,
)

CPU = torch.device("cpu")
TINY = ModelConfig.tiny()


@pytest.mark.parametrize(
    ("device", "capability", "request_", "expected", "scaled"),
    [
        ("cuda", (7, 5), "auto", "fp16", True),  # T4, the free Colab GPU
        ("cuda", (7, 0), "auto", "fp16", True),  # V100
        ("cuda", (8, 0), "auto", "bf16", False),  # A100
        ("cuda", (8, 9), "auto", "bf16", False),  # L4
        ("cuda", (9, 0), "auto", "bf16", False),  # H100
        ("cuda", (6, 0), "auto", "fp32", False),  # P100: no fp16 tensor cores
        ("cpu", None, "auto", "fp32", False),
        ("mps", None, "auto", "fp32", False),
        ("cuda", (7, 5), "fp32", "fp32", False),
        ("cuda", (9, 0), "fp32", "fp32", False),
        ("cpu", None, "fp32", "fp32", False),
        ("mps", None, "fp32", "fp32", False),
        ("cuda", (7, 5), "fp16", "fp16", True),
        ("cuda", (8, 0), "fp16", "fp16", True),
        ("cuda", (6, 1), "fp16", "fp16", True),
        ("cpu", None, "fp16", "fp16", True),
        ("cuda", (8, 0), "bf16", "bf16", False),
        ("cuda", (9, 0), "bf16", "bf16", False),
        ("cpu", None, "bf16", "bf16", False),
    ],
)
def test_the_precision_table(
    device: str, capability: tuple[int, int] | None, request_: str, expected: str, scaled: bool
) -> None:
    precision = choose_precision(device, capability, request_)
    assert precision.name == expected
    assert precision.scaled is scaled
    assert (
        precision.autocast_dtype
        == {
            "fp32": None,
            "fp16": torch.float16,
            "bf16": torch.bfloat16,
        }[expected]
    )


def test_auto_says_why() -> None:
    assert choose_precision("cuda", (7, 5), "auto").why == "auto on a CUDA device of capability 7.5"
    assert choose_precision("cpu", None, "auto").why == "auto on the CPU"


def test_bf16_on_a_t4_is_refused_in_one_line() -> None:
    with pytest.raises(PrecisionError) as refused:
        choose_precision("cuda", (7, 5), "bf16")
    assert str(refused.value) == (
        "--precision bf16 needs a GPU of compute capability 8.0 or newer (A100, L4, H100); "
        "this one has 7.5, where bf16 is only emulated: use --precision fp16 or auto"
    )


@pytest.mark.parametrize(
    ("device", "capability", "request_", "message"),
    [
        (
            "cuda",
            (6, 1),
            "bf16",
            "--precision bf16 needs a GPU of compute capability 8.0 or newer (A100, L4, H100); "
            "this one has 6.1, where bf16 is only emulated: use --precision fp16 or auto",
        ),
        (
            "mps",
            None,
            "fp16",
            "--precision fp16 is not available on mps: this server runs fp16 and bf16 on CUDA "
            "and the CPU only; use --precision auto or fp32",
        ),
        (
            "mps",
            None,
            "bf16",
            "--precision bf16 is not available on mps: this server runs fp16 and bf16 on CUDA "
            "and the CPU only; use --precision auto or fp32",
        ),
        ("cpu", None, "fp8", "--precision 'fp8' is not one of auto, fp32, fp16, bf16"),
    ],
)
def test_what_a_device_cannot_honour_is_refused(
    device: str, capability: tuple[int, int] | None, request_: str, message: str
) -> None:
    with pytest.raises(PrecisionError) as refused:
        choose_precision(device, capability, request_)
    assert str(refused.value) == message
    assert "\n" not in message


def _batch(seed: int, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(size, TINY.input_dim, generator=generator)
    y = (torch.rand(size, generator=generator) > 0.5).float()
    return x, y


def _train_step(
    model: CortezaCognitiva, optimizer: torch.optim.Optimizer, mp: MixedPrecision, seed: int
) -> tuple[float, bool, bool]:
    x, y = _batch(seed)
    optimizer.zero_grad(set_to_none=True)
    with mp.autocast():
        loss = corteza_loss(model(x), y).total
    outcome = mp.step(loss, optimizer, model.parameters(), max_grad_norm=1.0)
    return outcome.loss, outcome.skipped, outcome.applied


def _fresh(precision: str) -> tuple[CortezaCognitiva, torch.optim.Optimizer, MixedPrecision]:
    torch.manual_seed(0)
    model = CortezaCognitiva(TINY)
    model.eval()  # no dropout: the same batch gives the same loss
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return model, optimizer, MixedPrecision(choose_precision("cpu", None, precision), CPU)


# A scale so large that the scaled loss overflows the backward pass, and a backoff that
# brings it to a workable size after one skipped step: a too-large scale, as on a GPU.
HUGE_SCALE = {
    "scale": 1e38,
    "growth_factor": 2.0,
    "backoff_factor": 2.0**-110,
    "growth_interval": 2000,
    "_growth_tracker": 0,
}


def test_an_overflowing_fp16_step_is_skipped_not_applied() -> None:
    model, optimizer, mp = _fresh("fp16")
    mp.load_state_dict(HUGE_SCALE)
    before = copy.deepcopy(model.state_dict())
    loss, skipped, applied = _train_step(model, optimizer, mp, seed=1)
    assert skipped is True
    assert applied is False
    assert loss == pytest.approx(loss) and abs(loss) < 10  # a finite loss: not divergence
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert optimizer.state_dict()["state"] == {}  # AdamW never stepped
    assert all(p.grad is None for p in model.parameters())
    assert mp.scale == pytest.approx(1e38 * 2.0**-110)  # backed off once
    # The next step, at the smaller scale, trains.
    _, skipped, applied = _train_step(model, optimizer, mp, seed=2)
    assert (skipped, applied) == (False, True)
    assert any(not torch.equal(tensor, before[name]) for name, tensor in model.state_dict().items())


def test_the_scaler_state_survives_a_json_round_trip() -> None:
    _, _, mp = _fresh("fp16")
    mp.load_state_dict(HUGE_SCALE)
    model, optimizer, _ = _fresh("fp16")
    _train_step(model, optimizer, mp, seed=1)  # skipped: the scale backed off
    saved = json.loads(json.dumps(mp.state_dict()))
    assert saved["scale"] == pytest.approx(1e38 * 2.0**-110)
    _, _, resumed = _fresh("fp16")
    resumed.load_state_dict(saved)
    assert resumed.state_dict() == saved


def test_fp16_on_the_cpu_trains_like_fp32() -> None:
    model16, opt16, mp16 = _fresh("fp16")
    model32, opt32, mp32 = _fresh("fp32")
    for seed in range(3):
        loss16, skipped, _ = _train_step(model16, opt16, mp16, seed)
        loss32, _, _ = _train_step(model32, opt32, mp32, seed)
        assert skipped is False
        assert loss16 == pytest.approx(loss32, rel=2e-2)


def test_bf16_autocast_on_the_cpu_takes_steps() -> None:
    model, optimizer, mp = _fresh("bf16")
    assert mp.state_dict() == {}
    _, skipped, applied = _train_step(model, optimizer, mp, seed=0)
    assert (skipped, applied) == (False, True)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_non_finite_loss_applies_nothing_and_keeps_the_scale(precision: str) -> None:
    model, optimizer, mp = _fresh(precision)
    before = copy.deepcopy(model.state_dict())
    scale = mp.scale
    x, _ = _batch(0)
    with mp.autocast():
        loss = model(x).anomaly_logits.sum() * float("inf")
    outcome = mp.step(loss, optimizer, model.parameters(), max_grad_norm=1.0)
    assert outcome.applied is False
    assert outcome.skipped is False
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert mp.scale == scale
    _, skipped, applied = _train_step(model, optimizer, mp, seed=1)  # the scaler is usable
    assert (skipped, applied) == (False, True)


def test_a_run_without_fp16_ignores_a_saved_scale() -> None:
    mp = MixedPrecision(Precision("fp32", "asked for"), CPU)
    mp.load_state_dict(HUGE_SCALE)
    assert mp.state_dict() == {}
    assert mp.scale is None


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"scale": 1.0}, "scaler state must hold"),
        ({**HUGE_SCALE, "scale": float("inf")}, "scaler.scale must be a finite non-negative"),
        ({**HUGE_SCALE, "scale": 0.0}, "scaler.scale must be positive, got 0.0"),
        ({**HUGE_SCALE, "_growth_tracker": 1.5}, "scaler._growth_tracker must be a finite"),
        ({**HUGE_SCALE, "growth_interval": "2000"}, "scaler.growth_interval must be a number"),
        ({**HUGE_SCALE, "backoff_factor": True}, "scaler.backoff_factor must be a number"),
    ],
)
def test_a_malformed_scaler_state_is_refused(state: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(".", r"\.")):
        check_scaler_state(state)
    mp = MixedPrecision(Precision("fp16", "asked for"), CPU)
    with pytest.raises(ValueError):
        mp.load_state_dict(state)
    assert mp.scale == 2.0**16  # untouched


class _InfGradient(torch.autograd.Function):
    """Stand-in for an overflowing backward: the identity forward, an inf gradient back."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        return torch.full_like(grad, float("inf"))


@pytest.mark.parametrize("max_grad_norm", [1.0, None])
def test_fp32_non_finite_gradients_of_a_finite_loss_apply_nothing(
    max_grad_norm: float | None,
) -> None:
    model, optimizer, mp = _fresh("fp32")
    before = copy.deepcopy(model.state_dict())
    x, _ = _batch(0)
    logits = model(x).anomaly_logits
    loss = _InfGradient.apply(logits).mean()  # type: ignore[no-untyped-call]
    assert torch.isfinite(loss)
    outcome = mp.step(loss, optimizer, model.parameters(), max_grad_norm=max_grad_norm)
    assert outcome.applied is False  # reported as divergence, as a NaN loss is
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert all(p.grad is None for p in model.parameters())
    assert optimizer.state_dict()["state"] == {}
