"""``corteza pull --format onnx`` and ``corteza predict --model``, as real subprocesses.

One module-scoped server, one export (10-30 s of tracing on 2 CPUs).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from corteza.client import Client, make_dataset, save_dataset
from corteza.server import Settings
from tests.conftest import TINY, LiveServer, start_server, stop_server
from tests.helpers import corteza

# Runs the CLI in this process, then records whether torch was ever imported.
CLI_WITHOUT_TORCH = """
import json, sys
from corteza.cli import main
marker, sys.argv = sys.argv[1], ["corteza", *sys.argv[2:]]
try:
    main()
finally:
    with open(marker, "w") as out:
        json.dump({"torch": "torch" in sys.modules}, out)
"""


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    server = start_server(Settings(model=TINY, seed=0, lr=1e-3))
    try:
        with Client(server.url) as client:
            data = make_dataset(64, input_dim=TINY.input_dim, seed=2)
            client.train_batch(data.X, data.y, epochs=3)
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def pulled(live: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pulled")
    result = corteza("pull", str(folder), "--format", "onnx", "--server", live.url, "--json")
    assert result.returncode == 0, result.stderr
    path = Path(json.loads(result.stdout)["onnx"])
    assert path == folder / "corteza-step3.onnx"
    assert [p.name for p in folder.iterdir()] == ["corteza-step3.onnx"]  # nothing half-written
    return path


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "data.npz"
    save_dataset(make_dataset(300, input_dim=TINY.input_dim, seed=1), path)
    return path


def test_pull_writes_the_file_where_it_is_asked(
    live: LiveServer, pulled: Path, tmp_path: Path
) -> None:
    target = tmp_path / "models" / "mine.onnx"
    result = corteza("pull", str(target), "--format", "onnx", "--server", live.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"Pulled {target}"
    assert target.read_bytes() == pulled.read_bytes()  # the same weights: the export is reused


def test_local_predictions_match_the_servers_without_torch(
    live: LiveServer, pulled: Path, data_file: Path, tmp_path: Path
) -> None:
    served = corteza(
        "predict", str(data_file), "--server", live.url, "--out", str(tmp_path / "served.npz")
    )
    assert served.returncode == 0, served.stderr
    marker = tmp_path / "modules.json"
    local = subprocess.run(
        [
            sys.executable,
            "-c",
            CLI_WITHOUT_TORCH,
            str(marker),
            "predict",
            str(data_file),
            "--model",
            str(pulled),
            "--out",
            str(tmp_path / "local.npz"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert local.returncode == 0, local.stderr
    assert json.loads(marker.read_text()) == {"torch": False}
    # The same summary line, but for the file it wrote.
    assert local.stdout.replace("local.npz", "served.npz") == served.stdout
    with np.load(tmp_path / "served.npz") as want, np.load(tmp_path / "local.npz") as got:
        for name in ("anomaly_prob", "dendrites", "coherence"):
            assert got[name].shape == want[name].shape
            assert float(np.abs(got[name] - want[name]).max()) <= 1e-4


def test_sequences_score_the_same_way(live: LiveServer, pulled: Path, tmp_path: Path) -> None:
    data = tmp_path / "sequences.npz"
    x = np.random.default_rng(3).normal(size=(20, 6, TINY.input_dim)).astype(np.float32)
    np.savez(data, X=x, y=np.arange(20) % 2)
    runs = {}
    for how in (("--server", live.url), ("--model", str(pulled))):
        result = corteza("predict", str(data), *how, "--json")
        assert result.returncode == 0, result.stderr
        runs[how[0]] = json.loads(result.stdout)
    assert runs["--model"]["samples"] == runs["--server"]["samples"] == 20
    assert abs(runs["--model"]["mean_anomaly_prob"] - runs["--server"]["mean_anomaly_prob"]) <= 1e-4


def test_a_wrong_width_gets_the_servers_words(
    live: LiveServer, pulled: Path, tmp_path: Path
) -> None:
    data = tmp_path / "narrow.npz"
    np.savez(data, X=np.zeros((10, 5), np.float32), y=np.arange(10) % 2)
    local = corteza("predict", str(data), "--model", str(pulled))
    served = corteza("predict", str(data), "--server", live.url)
    assert local.returncode == served.returncode == 2
    assert local.stderr.strip() == "error: Input dimension mismatch: expected 32D, got 5D"
    assert local.stderr == served.stderr


def test_without_onnxruntime_it_says_what_to_install(pulled: Path, data_file: Path) -> None:
    """onnxruntime is installed here; the child process marks it absent in ``sys.modules``."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.modules['onnxruntime'] = None; from corteza.cli import main; main()",
            "predict",
            str(data_file),
            "--model",
            str(pulled),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: Running an ONNX model here needs onnxruntime: pip install 'corteza[local]'"
    )


def test_model_and_server_together_are_refused(pulled: Path, data_file: Path) -> None:
    result = corteza("predict", str(data_file), "--model", str(pulled), "--server", "http://x")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --model scores here, without a server: drop --server"
