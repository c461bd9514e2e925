"""A data file's dendrite and coherence targets travel with their rows, on every path."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from corteza.client import Client, make_dataset, save_dataset
from corteza.client.training.fit import fit
from tests.conftest import TINY, LiveServer
from tests.helpers import corteza


def _dendrite_losses(live: LiveServer, run_id: str | None) -> list[float | None]:
    assert run_id is not None
    run = live.state.runs.get(run_id)
    assert run is not None
    return [answer["head_losses"]["dendrite"] for answer in run.answers.values()]


@pytest.mark.parametrize("stream", [True, False])
def test_fit_sends_the_targets(live_server: LiveServer, stream: bool) -> None:
    data = make_dataset(24, input_dim=TINY.input_dim, seed=1)
    targets = np.full((24, TINY.dendrite_dim), 0.5, dtype=np.float32)
    targets[3] = np.nan  # this sample has none
    with Client(live_server.url) as client:
        with_targets = fit(
            client,
            data.X,
            data.y,
            batch_size=8,
            feedback_every=0,
            stream=stream,
            dendrite_target=targets,
        )
        without = fit(client, data.X, data.y, batch_size=8, feedback_every=0, stream=stream)
    assert all(
        isinstance(loss, float) for loss in _dendrite_losses(live_server, with_targets.run_id)
    )
    assert _dendrite_losses(live_server, without.run_id) == [None, None, None]


def test_corteza_train_sends_a_data_files_targets(live_server: LiveServer, tmp_path: Path) -> None:
    data = make_dataset(24, input_dim=TINY.input_dim, seed=1)
    coherence = np.full((24, TINY.coherence_dim), -0.25, dtype=np.float32)
    path = save_dataset(replace(data, coherence_target=coherence), tmp_path / "data.npz")
    result = corteza(
        "train",
        str(path),
        "--server",
        live_server.url,
        "--holdout",
        "0",
        "--batch-size",
        "8",
        "--feedback-every",
        "0",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    run = live_server.state.runs.get(json.loads(result.stdout)["run_id"])
    assert run is not None and len(run.answers) == 3
    assert all(
        isinstance(answer["head_losses"]["coherence"], float) for answer in run.answers.values()
    )
