"""``corteza train`` and the one-call commands, as real subprocesses against a real server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY, LiveServer
from tests.helpers import corteza


def test_train_prints_one_json_result(live_server: LiveServer, data_file: Path) -> None:
    result = corteza(
        "train",
        str(data_file),
        "--server",
        live_server.url,
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["samples"] == 192  # 96 of 120, twice
    assert summary["holdout_samples"] == 24
    assert 0.0 <= summary["roc_auc"] <= 1.0
    assert live_server.state.stats.total_samples == 192
    assert live_server.state.stats.feedback_received == summary["batches"] // 5


def test_train_reads_the_server_from_the_environment(
    live_server: LiveServer, data_file: Path
) -> None:
    env = {**_environ(), "COLAB_SERVER_URL": live_server.url}
    result = corteza("train", str(data_file), "--holdout", "0", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["roc_auc"] is None
    assert live_server.state.stats.total_samples == 120


def test_until_loss_stops_early_or_exits_3(live_server: LiveServer, data_file: Path) -> None:
    reached = corteza(
        "train",
        str(data_file),
        "--server",
        live_server.url,
        "--until-loss",
        "50",
        "--batch-size",
        "8",
        "--json",
    )
    assert reached.returncode == 0, reached.stderr
    assert 5 <= json.loads(reached.stdout)["batches"] <= 8  # 5, plus up to 3 in flight
    missed = corteza(
        "train", str(data_file), "--server", live_server.url, "--until-loss", "0.000001", "--json"
    )
    assert missed.returncode == 3
    assert json.loads(missed.stdout)["reached_target"] is False


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        (None, "missing.npz", "error: No such file: {path}"),
        ("hello", "data.txt", "error: Unknown data format '.txt': use .json, .npz, .npy or .csv"),
        (
            "0.1,0.2,1\n0.3,0.4,0\n",
            "data.csv",
            "error: Input dimension mismatch: expected 32D, got 2D ({path})",
        ),
        (
            "0.1,nan,1\n0.3,0.4,0\n",
            "nan.csv",
            "error: Non-finite input: sample 0 contains NaN or Inf",
        ),
        (
            "0.1,0.2,1\n0.3,0.4,2\n",
            "labels.csv",
            "error: Invalid anomaly_label: sample 1 has 2, expected 0 or 1",
        ),
    ],
)
def test_bad_data_is_one_clear_line(
    live_server: LiveServer, tmp_path: Path, content: str | None, name: str, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    result = corteza("train", str(path), "--server", live_server.url)
    assert result.returncode == 2
    assert result.stderr.strip() == message.format(path=path)
    assert live_server.state.stats.total_batches == 0


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = corteza("train", str(tmp_path / "missing.npz"), "--debug")
    assert result.returncode == 1
    assert "Traceback" in result.stderr


def test_an_unreachable_server_is_one_line(data_file: Path) -> None:
    result = corteza("train", str(data_file), "--server", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert result.stderr.startswith("error: Cannot connect to http://127.0.0.1:9: ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_one_call_commands_print_json(live_server: LiveServer) -> None:
    url = live_server.url
    status = json.loads(corteza("status", "--server", url, "--json").stdout)
    assert status["status"] == "online"
    info = json.loads(corteza("info", "--server", url, "--json").stdout)
    assert info["input_dim"] == TINY.input_dim
    metrics = json.loads(corteza("metrics", "--server", url, "--json").stdout)
    assert metrics["tendencia"] == "sin_datos"
    diagnosis = json.loads(corteza("diagnose", "--server", url, "--json").stdout)
    assert diagnosis["outputs_shapes"]["coherence"] == [2, 64]
    values = ",".join(["0.1"] * 16)
    feedback = json.loads(
        corteza("feedback", values, "--invalid", "--server", url, "--json").stdout
    )
    assert feedback["validacion"] is False
    assert live_server.state.stats.feedback_received == 1


def test_feedback_of_the_wrong_length_is_refused(live_server: LiveServer) -> None:
    result = corteza("feedback", "0.1,0.2", "--server", live_server.url)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: ajustes_aplicados must have 16 values, got 2"


def test_status_prints_a_table(live_server: LiveServer) -> None:
    result = corteza("status", "--server", live_server.url)
    assert result.returncode == 0
    assert "estadisticas.total_muestras" in result.stdout


def _environ() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k not in {"CORTEZA_URL", "COLAB_SERVER_URL"}}


def test_bad_float_list_for_feedback() -> None:
    result = corteza("feedback", "a,b")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: adjustments must be comma-separated numbers, got 'a,b'"


def test_a_url_that_is_not_corteza_is_one_line(tmp_path: Path, data_file: Path) -> None:
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    other = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{other.server_address[1]}"
    try:
        result = corteza("train", str(data_file), "--server", url)
    finally:
        other.shutdown()
        other.server_close()
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: {url}/info answered HTTP 404 without corteza's error body; "
        "is this a corteza server?"
    )


def test_predict_scores_a_file_without_training(
    live_server: LiveServer, data_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "preds.npz"
    result = corteza(
        "predict", str(data_file), "--server", live_server.url, "--out", str(out), "--json"
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["samples"] == 120
    assert 0.0 <= summary["roc_auc"] <= 1.0
    with np.load(out) as saved:
        assert saved["anomaly_prob"].shape == (120,)
        assert saved["dendrites"].shape == (120, 16)
        assert saved["coherence"].shape == (120, 64)
    assert live_server.state.stats.total_batches == 0  # nothing trained
