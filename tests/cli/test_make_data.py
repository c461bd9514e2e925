"""``corteza make-data``, called as the plain function typer wraps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import typer

from corteza.cli.make_data import make_data
from corteza.client.data.datasets import open_dataset
from corteza.client.data.synthetic import make_dataset


@pytest.mark.parametrize("suffix", [".npz", ".npy", ".csv", ".json"])
def test_writes_the_synthetic_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    path = tmp_path / f"data{suffix}"
    make_data(path, samples=30, recipe="seed", input_dim=12, anomaly_rate=0.3, seed=4)
    expected = make_dataset(30, input_dim=12, recipe="seed", anomaly_rate=0.3, seed=4)
    data = open_dataset(path)
    np.testing.assert_array_equal(data.X, expected.X)
    np.testing.assert_array_equal(data.y, expected.y)
    anomalies = int(expected.y.sum())
    assert capsys.readouterr().out == (
        f"Wrote 30 samples of 12 values (seed recipe, {anomalies} anomalies, seed 4) to {path}\n"
    )


def test_defaults_write_2000_sensor_samples_of_1600_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_data(tmp_path / "data.npz")
    data = open_dataset(tmp_path / "data.npz")
    assert data.X.shape == (2000, 1600)
    assert "(sensor recipe," in capsys.readouterr().out


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("data.txt", {}, "error: Unknown data format '.txt': use .json, .npz, .npy or .csv"),
        (
            "data.npz",
            {"recipe": "noise"},
            "error: unknown recipe 'noise'; choose one of sensor, seed",
        ),
        ("data.npz", {"samples": 0}, "error: n must be at least 1, got 0"),
    ],
)
def test_mistakes_exit_2_with_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    options: dict[str, object],
    message: str,
) -> None:
    with pytest.raises(typer.Exit) as info:
        make_data(tmp_path / name, input_dim=16, **options)  # type: ignore[arg-type]
    assert info.value.exit_code == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == message
    assert captured.out == ""
    assert list(tmp_path.iterdir()) == []
