"""A new user's first hour, through the real ``corteza`` app: each mistake one exact line.

Servers are real uvicorns on 127.0.0.1; files are real files. Issue 17's items
are named where they are tested.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from corteza.cli import app
from corteza.client import (
    SavedServer,
    free_port,
    load_saved_server,
    make_dataset,
    save_dataset,
    save_server,
)
from corteza.server import Settings
from tests.conftest import TINY, LiveServer, start_server, stop_server

TOKEN = "right-token-0123456789abcdef"


def corteza(*args: str) -> tuple[int, str, str]:
    """The real app in this process: exit code, stdout, stderr."""
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def guarded() -> Iterator[LiveServer]:
    live = start_server(Settings(model=TINY, seed=0, token=TOKEN))
    try:
        yield live
    finally:
        stop_server(live)


@pytest.fixture
def saving(tmp_path: Path) -> Iterator[LiveServer]:
    live = start_server(Settings(model=TINY, seed=0, checkpoint_dir=tmp_path / "server-ckpt"))
    try:
        yield live
    finally:
        stop_server(live)


# ------------------------------------------------------------------ 10: host:port


def test_a_bare_host_and_port_is_taken_as_http_and_said(
    live_server: LiveServer, data_file: Path
) -> None:
    bare = live_server.url.removeprefix("http://")
    code, out, err = corteza("predict", str(data_file), "--server", bare, "--json")
    assert code == 0, err
    assert err == f"note: --server {bare} has no scheme: assuming {live_server.url}\n"
    assert json.loads(out)["samples"] == 120


def test_another_scheme_exits_2_at_once(data_file: Path) -> None:
    code, out, err = corteza("status", "--server", "ftp://example.com:21")
    assert (code, out) == (2, "")
    assert err == (
        "error: --server: A server URL starts with http:// or https://, got "
        "'ftp://example.com:21'\n"
    )


# ------------------------------------------------------------------ 12: nothing configured


def test_status_with_nothing_configured_says_how_to_get_a_server() -> None:
    code, out, err = corteza("status")
    assert (code, out) == (1, "")
    assert err == (
        "error: No server configured: run `corteza serve`, or `corteza connect URL` "
        "(nothing answers at http://127.0.0.1:8000)\n"
    )


def test_a_saved_server_that_is_down_is_named_as_saved(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    path = save_server(url)
    code, _, err = corteza("status")
    assert code == 1
    assert err.startswith(f"error: Cannot connect to {url}: ")
    assert err.endswith(f" (the URL is saved by `corteza connect` in {path})\n")


# ------------------------------------------------------------------ 16: --json errors


def test_json_errors_are_json_on_stdout() -> None:
    code, out, err = corteza("status", "--json")
    assert (code, err) == (1, "")
    assert json.loads(out) == {
        "error": "No server configured: run `corteza serve`, or `corteza connect URL` "
        "(nothing answers at http://127.0.0.1:8000)",
        "error_type": "unreachable",
        "exit_code": 1,
    }


def test_json_errors_of_bad_input_exit_2(tmp_path: Path) -> None:
    code, out, _ = corteza("predict", str(tmp_path / "missing.npz"), "--json")
    assert code == 2
    assert json.loads(out) == {
        "error": f"No such file: {tmp_path / 'missing.npz'}",
        "error_type": "file_not_found",
        "exit_code": 2,
    }


# ------------------------------------------------------------------ 8: connect


def test_connect_refuses_a_wrong_token_and_saves_nothing(guarded: LiveServer) -> None:
    code, out, err = corteza("connect", guarded.url, "--token", "wrong")
    assert (code, out) == (2, "")
    assert err == (
        "error: Wrong token: the Authorization header does not hold this server's token "
        "(pass --token TOKEN or run `corteza connect URL --token TOKEN`); not saved "
        "(--no-check saves without asking the server)\n"
    )
    assert load_saved_server() is None


def test_connect_no_check_saves_a_token_it_did_not_try(guarded: LiveServer) -> None:
    code, out, _ = corteza("connect", guarded.url, "--token", "wrong", "--no-check")
    assert (code, out) == (0, f"Saved {guarded.url} (not checked)\n")
    assert load_saved_server() == SavedServer(guarded.url, "wrong")


def test_connecting_again_without_a_token_keeps_the_saved_one(guarded: LiveServer) -> None:
    assert corteza("connect", guarded.url, "--token", TOKEN)[0] == 0
    code, out, err = corteza("connect", guarded.url.removeprefix("http://"))
    assert code == 0, err
    assert out.startswith(f"Connected to {guarded.url}: corteza ")
    assert err.splitlines()[:2] == [
        f"note: {guarded.url.removeprefix('http://')} has no scheme: assuming {guarded.url}",
        "Keeping the saved token righ...cdef.",
    ]
    assert load_saved_server() == SavedServer(guarded.url, TOKEN)


# ------------------------------------------------------------------ 7: predict --out


@pytest.mark.parametrize("name", ["p.csv", "deeper/still/p.npz"])
def test_predict_writes_exactly_the_file_named(
    live_server: LiveServer, data_file: Path, tmp_path: Path, name: str
) -> None:
    out = tmp_path / "out" / name
    code, stdout, err = corteza(
        "predict", str(data_file), "--server", live_server.url, "--out", str(out)
    )
    assert code == 0, err
    assert stdout.endswith(f"; wrote {out}\n")
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]
    if out.suffix == ".csv":
        lines = out.read_text().splitlines()
        header = lines[0].split(",")
        assert header[:2] == ["anomaly_prob", "dendrite_0"]
        assert header[-1] == "coherence_63"
        assert len(header) == 1 + 16 + 64
        table = np.loadtxt(out, delimiter=",", skiprows=1)
        assert table.shape == (120, 81)
        assert ((table[:, 0] >= 0) & (table[:, 0] <= 1)).all()
    else:
        with np.load(out) as saved:
            assert saved["anomaly_prob"].shape == (120,)
            assert saved["dendrites"].shape == (120, 16)
            assert saved["coherence"].shape == (120, 64)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("p.txt", "predictions are written as .npz or .csv, not .txt"),
        ("p", "predictions are written as .npz or .csv, not a file without a suffix"),
    ],
)
def test_predict_refuses_an_out_it_cannot_write_before_scoring(
    live_server: LiveServer, data_file: Path, tmp_path: Path, name: str, message: str
) -> None:
    out = tmp_path / name
    code, stdout, err = corteza(
        "predict", str(data_file), "--server", live_server.url, "--out", str(out)
    )
    assert (code, stdout) == (2, "")
    assert err == f"error: --out {out}: {message}\n"
    assert not out.exists()


def test_predict_refuses_an_out_under_a_file(
    live_server: LiveServer, data_file: Path, tmp_path: Path
) -> None:
    out = data_file / "p.npz"
    code, _, err = corteza(
        "predict", str(data_file), "--server", live_server.url, "--out", str(out)
    )
    assert code == 2
    assert err == f"error: --out {out}: cannot make its folder: File exists\n"


# ------------------------------------------------------------------ 4: pull


def test_pull_twice_says_up_to_date_and_leaves_no_part(saving: LiveServer, tmp_path: Path) -> None:
    with saving.http() as http:
        name = http.post("/v1/checkpoint").json()["checkpoint"]
    dest = tmp_path / "pulled"
    code, out, err = corteza("pull", str(dest), "--server", saving.url)
    assert (code, out) == (0, f"Pulled {dest / name}\n"), err
    code, out, err = corteza("pull", str(dest), "--server", saving.url)
    assert (code, out) == (0, f"{dest / name} is already up to date (sha256 verified)\n"), err
    assert [p.name for p in dest.iterdir()] == [name]


def test_pull_replaces_a_damaged_copy_whole(saving: LiveServer, tmp_path: Path) -> None:
    with saving.http() as http:
        name = http.post("/v1/checkpoint").json()["checkpoint"]
    dest = tmp_path / "pulled"
    assert corteza("pull", str(dest), "--server", saving.url)[0] == 0
    weights = dest / name / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(b"\0" * len(good))
    code, out, err = corteza("pull", str(dest), "--server", saving.url, "--json")
    assert code == 0, err
    assert json.loads(out) == {"checkpoint": str(dest / name), "up_to_date": False}
    assert weights.read_bytes() == good
    assert [p.name for p in dest.iterdir()] == [name]


def test_train_then_pull_saves_one_first(saving: LiveServer, tmp_path: Path) -> None:
    data = tmp_path / "d.npz"
    save_dataset(make_dataset(40, input_dim=TINY.input_dim, seed=1), data)
    code, _, err = corteza("train", str(data), "--server", saving.url, "--holdout", "0")
    assert code == 0, err
    dest = tmp_path / "pulled"
    code, out, err = corteza("pull", str(dest), "--server", saving.url)
    assert code == 0, err
    step = saving.state.trainer.step
    assert err == f"The server had no checkpoint yet: it saved one at step {step}.\n"
    (folder,) = dest.iterdir()
    assert out == f"Pulled {folder}\n"
    assert (folder / "MANIFEST.json").is_file()


def test_pull_save_pulls_the_current_weights(saving: LiveServer, tmp_path: Path) -> None:
    with saving.http() as http:
        first = http.post("/v1/checkpoint").json()["checkpoint"]
    code, out, err = corteza("pull", str(tmp_path), "--server", saving.url, "--save", "--json")
    assert code == 0, err
    pulled = Path(json.loads(out)["checkpoint"])
    assert pulled.name != first
    assert pulled.name == saving.state.checkpointer.last_path.name


def test_pull_from_a_server_without_checkpoints_says_how(
    live_server: LiveServer, tmp_path: Path
) -> None:
    code, out, err = corteza("pull", str(tmp_path / "p"), "--server", live_server.url)
    assert (code, out) == (2, "")
    assert err == "error: Checkpoints are off: start the server with --checkpoint-dir DIR\n"


def test_push_refuses_an_unfinished_pull(saving: LiveServer, tmp_path: Path) -> None:
    part = tmp_path / "ckpt-000000000001-1.part"
    part.mkdir()
    code, _, err = corteza("push", str(part), "--server", saving.url)
    assert code == 2
    assert err == f"error: {part} is an unfinished pull, not a checkpoint: pull again\n"


# ------------------------------------------------------------------ 16: make-data


def test_make_data_does_not_overwrite_without_force(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    path.write_bytes(b"mine")
    code, out, err = corteza("make-data", str(path), "--samples", "10", "--input-dim", "12")
    assert (code, out) == (2, "")
    assert err == f"error: {path} exists: pass --force to overwrite it\n"
    assert path.read_bytes() == b"mine"
    code, _, _ = corteza("make-data", str(path), "--samples", "10", "--input-dim", "12", "--force")
    assert code == 0
    with np.load(path) as saved:
        assert saved["X"].shape == (10, 12)


# ------------------------------------------------------------------ 1, 9: the server's cap


@pytest.fixture
def capped() -> Iterator[LiveServer]:
    live = start_server(Settings(model=TINY, seed=0, max_batch_samples=64))
    try:
        yield live
    finally:
        stop_server(live)


def test_predict_scores_a_file_larger_than_the_servers_cap(
    capped: LiveServer, data_file: Path
) -> None:
    code, out, err = corteza("predict", str(data_file), "--server", capped.url, "--json")
    assert code == 0, err
    assert json.loads(out)["samples"] == 120  # two requests: 64 and 56


# ------------------------------------------------------------------ 2: unlabelled data


def _unlabelled(tmp_path: Path, suffix: str) -> Path:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, TINY.input_dim)).astype(np.float32)  # last column: a feature
    path = tmp_path / f"new{suffix}"
    if suffix == ".npz":
        np.savez(path, X=x)
    elif suffix == ".npy":
        np.save(path, x)
    elif suffix == ".csv":
        np.savetxt(path, x, delimiter=",", fmt="%.6g")
    else:
        path.write_text(json.dumps([{"input_data": row.tolist()} for row in x]))
    return path


@pytest.mark.parametrize("suffix", [".npz", ".npy", ".csv", ".json"])
def test_predict_scores_data_without_labels(
    live_server: LiveServer, tmp_path: Path, suffix: str
) -> None:
    path = _unlabelled(tmp_path, suffix)
    code, out, err = corteza("predict", str(path), "--server", live_server.url, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert (result["samples"], result["roc_auc"]) == (50, None)


def test_some_labels_but_not_all_is_one_line(live_server: LiveServer, tmp_path: Path) -> None:
    path = tmp_path / "mixed.json"
    row = [0.0] * TINY.input_dim
    path.write_text(json.dumps([{"input_data": row, "anomaly_label": 1}, {"input_data": row}]))
    code, _, err = corteza("predict", str(path), "--server", live_server.url)
    assert code == 2
    assert err == (
        "error: Malformed data: sample 1 has no 'anomaly_label', and others have one: "
        "label all or none\n"
    )


# ------------------------------------------------------------------ 14 and 16: not data


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"\0" * 100_000, "it holds binary data"),
        (b"\xff\xfe\x00\x01" * 10, "it holds binary data"),
        (
            b"1.5\t2.5\t0\n",
            "found tabs: save it with commas, e.g. tr '\\t' ',' < d.csv > fixed.csv",
        ),
        (b"1,5;2,5;0\n", None),
        (
            b"1.5;2.5;0\n",
            "found semicolons: save it with commas, e.g. tr ';' ',' < d.csv > fixed.csv",
        ),
        (b"\xe9t\xe9,1\n", "byte 0 is not UTF-8"),
    ],
)
def test_what_is_not_comma_separated_text_is_one_line(
    tmp_path: Path, content: bytes, why: str | None
) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(content)
    code, _, err = corteza("train", str(path))
    assert code == 2
    assert len(err.splitlines()) == 1
    if why is not None:
        assert err == f"error: Malformed data: {path} is not a comma-separated text file ({why})\n"


def test_a_folder_is_named_as_one(tmp_path: Path) -> None:
    code, _, err = corteza("predict", str(tmp_path))
    assert code == 2
    assert err == f"error: {tmp_path} is a folder: name a data file (.json, .npz, .npy or .csv)\n"


def test_watch_with_nothing_configured_says_how_to_get_a_server() -> None:
    code, out, err = corteza("watch", "--events", "1")
    assert (code, out) == (1, "")
    assert err == (
        "error: No server configured: run `corteza serve`, or `corteza connect URL` "
        "(nothing answers at http://127.0.0.1:8000)\n"
    )
