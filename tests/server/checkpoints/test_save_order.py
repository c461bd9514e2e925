"""Restart order is save order: a pushed older checkpoint (a rollback) is the newest."""

from __future__ import annotations

from pathlib import Path

from corteza.client import Client
from corteza.server import Settings
from corteza.server.checkpoints.store import list_checkpoints, save_checkpoint
from tests.conftest import TINY, start_server, stop_server
from tests.helpers import assert_same_model, samples, snapshot_model
from tests.server.checkpoints.test_store import fresh, save


def test_the_last_save_is_the_newest_whatever_its_step(tmp_path: Path) -> None:
    later = save(tmp_path, step=100)
    rollback = save(tmp_path, step=50)
    assert list_checkpoints(tmp_path) == [rollback, later]


def test_pruning_removes_the_oldest_saves_not_the_lowest_steps(tmp_path: Path) -> None:
    high = save(tmp_path, step=100, keep=2)
    low = save(tmp_path, step=50, keep=2)
    next_one = save(tmp_path, step=51, keep=2)
    assert list_checkpoints(tmp_path) == [next_one, low]
    assert not high.exists()


def test_checkpoints_named_before_save_numbers_count_as_older(tmp_path: Path) -> None:
    old = save(tmp_path, step=900)
    old_name = tmp_path / "ckpt-000000000900-1700000000000"
    old.rename(old_name)
    new = save(tmp_path, step=5)
    assert list_checkpoints(tmp_path) == [new, old_name]


def _train(url: str, seqs: range) -> None:
    import httpx

    with httpx.Client(base_url=url, timeout=60) as http:
        for seq in seqs:
            body = {"samples": samples(4, TINY.input_dim, seed=seq), "run_id": "r", "seq": seq}
            assert http.post("/train_layer2", json=body).status_code == 200


def test_a_restart_resumes_the_pushed_checkpoint(tmp_path: Path) -> None:
    settings = Settings(model=TINY, seed=0, checkpoint_dir=tmp_path / "ckpt", checkpoint_every=100)
    live = start_server(settings)
    try:
        _train(live.url, range(3))
        with Client(live.url) as client:
            with live.http() as http:
                assert http.post("/v1/checkpoint").status_code == 200
            pulled = client.pull(tmp_path / "pulled")
            expected = snapshot_model(live.state)
            _train(live.url, range(3, 6))
            with live.http() as http:
                assert http.post("/v1/checkpoint").status_code == 200  # step 6, saved earlier
            assert client.push(pulled)["runs"] == {"r": 3}  # the rollback, at step 3
    finally:
        stop_server(live)
    again = start_server(settings)
    try:
        assert again.state.trainer.step == 3
        assert again.state.runs.open("r").next_seq == 3
        assert_same_model(expected, snapshot_model(again.state))
    finally:
        stop_server(again)


def test_pruning_asks_before_removing_each_checkpoint(tmp_path: Path) -> None:
    asked: list[str] = []
    first = save(tmp_path, step=1, keep=1)
    second = save(tmp_path, step=2, keep=1)  # prunes the first: nobody protects it
    assert not first.exists()
    model, optimizer = fresh()

    def protect(path: Path) -> bool:
        asked.append(path.name)
        return True  # a download of it is in progress

    third = save_checkpoint(
        tmp_path, model=model, optimizer=optimizer, state={}, step=3, keep=1, protect=protect
    )
    assert asked == [second.name]
    assert list_checkpoints(tmp_path) == [third, second]
