"""The network: shapes, parameter counts, a batch of one, determinism."""

from __future__ import annotations

import pytest
import torch

from corteza.model import (
    CortezaCognitiva,
    ModelConfig,
    anomaly_probability,
    corteza_loss,
    count_parameters,
)

TINY = ModelConfig.tiny()


@pytest.fixture(scope="module")
def default_model() -> CortezaCognitiva:
    torch.manual_seed(0)
    return CortezaCognitiva(ModelConfig())


@pytest.mark.slow
def test_default_model_has_the_seeds_parameter_count(default_model: CortezaCognitiva) -> None:
    assert count_parameters(default_model) == 73_766_290
    assert count_parameters(default_model, trainable_only=True) == 73_766_290


@pytest.mark.slow
def test_default_model_components_match_the_seeds(default_model: CortezaCognitiva) -> None:
    capa2 = default_model.capa2
    assert count_parameters(capa2.lstm) == 14_958_592
    assert count_parameters(capa2.transformer) == 33_620_096
    assert count_parameters(capa2.gmu) == 5_841_601
    assert count_parameters(capa2.gmu.gate) == 4_201_601
    assert count_parameters(capa2.gmu.lstm_proj) == 1_640_000
    assert count_parameters(default_model.capa3) == 16_829_440
    assert count_parameters(default_model.capa3.mlp) == 16_009_728
    assert count_parameters(default_model.capa3.skip) == 819_712
    assert count_parameters(default_model.capa4) == 2_101_760
    assert count_parameters(default_model.capa4.attention) == 1_050_624
    assert count_parameters(default_model.capa4.norm) == 1_024
    assert count_parameters(default_model.capa4.ffn) == 1_050_112
    assert count_parameters(default_model.capa5) == 414_801


@pytest.mark.slow
def test_default_model_shapes_for_flat_input(default_model: CortezaCognitiva) -> None:
    with torch.no_grad():
        out = default_model(torch.randn(2, 1600))
    assert out.anomaly_logits.shape == (2, 1)
    assert out.dendrites.shape == (2, 16)
    assert out.coherence.shape == (2, 64)


@pytest.mark.parametrize("shape", [(3, 32), (3, 1, 32), (3, 7, 32)])
def test_tiny_model_accepts_flat_and_sequence_input(shape: tuple[int, ...]) -> None:
    model = CortezaCognitiva(TINY)
    out = model(torch.randn(*shape))
    assert out.anomaly_logits.shape == (3, 1)
    assert out.dendrites.shape == (3, 16)
    assert out.coherence.shape == (3, 64)
    assert out.dendrites.abs().max() <= 1.0
    assert out.coherence.abs().max() <= 1.0
    assert anomaly_probability(out).shape == (3,)


def test_capa4_attends_over_time() -> None:
    """Changing an earlier time step changes the output: the sequence is not ignored."""
    torch.manual_seed(0)
    model = CortezaCognitiva(TINY).eval()
    x = torch.randn(1, 4, 32)
    changed = x.clone()
    changed[0, 0] += 5.0
    with torch.no_grad():
        a, b = model(x), model(changed)
    assert not torch.allclose(a.anomaly_logits, b.anomaly_logits)


def test_wrong_width_is_refused_with_shapes() -> None:
    model = CortezaCognitiva(TINY)
    with pytest.raises(ValueError, match=r"expected input \(B, 32\) or \(B, T, 32\), got \(2, 3\)"):
        model(torch.randn(2, 3))


def test_a_batch_of_one_trains() -> None:
    torch.manual_seed(0)
    model = CortezaCognitiva(TINY)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    out = model(torch.randn(1, 32))
    loss = corteza_loss(out, torch.ones(1)).total
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def _train_three_steps(seed: int) -> tuple[list[float], list[torch.Tensor]]:
    torch.manual_seed(seed)
    model = CortezaCognitiva(TINY)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = torch.randn(8, 32, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0.0, 1.0] * 4)
    losses = []
    for _ in range(3):
        optimizer.zero_grad()
        loss = corteza_loss(model(data), labels).total
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, [p.detach().clone() for p in model.parameters()]


def test_training_is_deterministic_under_a_seed() -> None:
    losses_a, params_a = _train_three_steps(seed=7)
    losses_b, params_b = _train_three_steps(seed=7)
    losses_c, _ = _train_three_steps(seed=8)
    assert losses_a == losses_b
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b, strict=True))
    assert losses_a != losses_c


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"input_dim": 30, "transformer_heads": 8},
            r"transformer_heads \(8\) must divide input_dim",
        ),
        (
            {"mlp_out": 10, "attention_heads": 4},
            r"attention_heads \(4\) must divide mlp_out \(10\)",
        ),
        ({"lstm_hidden": 0}, "lstm_hidden must be a positive integer, got 0"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
    ],
)
def test_config_refuses_impossible_widths(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelConfig(**kwargs)  # type: ignore[arg-type]


def test_config_round_trips_through_a_dict() -> None:
    assert ModelConfig.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(ValueError, match="unknown model config fields: bogus"):
        ModelConfig.from_dict({**TINY.to_dict(), "bogus": 1})
