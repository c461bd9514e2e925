"""Hostile bytes against the routes that decode them: batches and uploaded checkpoints.

tests/wire/test_binary.py fuzzes ``decode_batch`` in-process; here the same kinds of bodies
go through the real routes (``POST /train_layer2`` and the stream), and broken checkpoints
through the validator behind the commit route (``Checkpointer.adopt``) and over HTTP. Only
the project's clean refusals may come out, and a refusal never changes the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from corteza.server.checkpoints.validate import CheckpointError
from corteza.wire import BATCH_CONTENT_TYPE, PROTOCOL_VERSION, ErrorType, encode_batch
from tests.conftest import FIGURES, TINY, LiveServer
from tests.helpers import assert_same_model, samples, snapshot_model
from tests.security.conftest import AUTH
from tests.security.strategies import (
    edited_tensors,
    hostile_safetensors,
    json_mutations,
    mutated,
)
from tests.security.uploads import push, with_manifest

CASES: Counter[str] = Counter()
ERROR_TYPES = {e.value for e in ErrorType}
FUZZ = settings(
    deadline=None,
    database=None,
    derandomize=True,  # the same cases on every run
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

D = TINY.input_dim
_X = np.random.default_rng(0).normal(size=(4, D)).astype(np.float32)
_LABELS = [0, 1, 0, 1]
BATCH_SEEDS = [
    encode_batch(_X, _LABELS),
    encode_batch(_X, _LABELS, dtype="f16", epochs=2, run_id="fuzz", seq=0, batch_id="b"),
    encode_batch(
        _X.reshape(4, 1, D),
        _LABELS,
        dtype="bf16",
        dendrite_target=np.zeros((4, 16)),
        coherence_target=np.zeros((4, 64)),
    ),
]
BATCH_NAMES = ["inputs", "anomaly_label", "dendrite_target", "coherence_target"]
BODIES = (
    st.sampled_from(BATCH_SEEDS).flatmap(mutated)
    | st.binary(max_size=512)
    | hostile_safetensors(BATCH_NAMES)
)


@contextlib.contextmanager
def judged(kind: str) -> Iterator[None]:
    """Count a case of ``kind`` for the figures (a case that escapes the checks fails its test)."""
    CASES[kind] += 1
    yield


@pytest.fixture(scope="module", autouse=True)
def _fuzz_figure(request: pytest.FixtureRequest) -> Iterator[None]:
    """After this module's tests, whichever ran in whatever order, the figures hold their cases."""
    yield
    if CASES:
        request.config.stash.setdefault(FIGURES, []).append(
            f"fuzz: decoder_cases={CASES['decoder']} checkpoint_cases={CASES['checkpoint']}"
        )


def assert_refusal(response: httpx.Response, statuses: tuple[int, ...]) -> dict[str, Any]:
    assert response.status_code in statuses, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "error"
    assert body["error"]
    assert body["error_type"] in ERROR_TYPES
    return body


def assert_still_serving(http: httpx.Client) -> None:
    """The routes that read the statistics answer, and a batch trains or is refused cleanly.

    An accepted checkpoint holds no NaN or Inf, but may hold values huge enough to overflow:
    the batch is then refused with training_diverged, the step not applied.
    """
    for path in ("/status", "/metricas", "/info"):
        assert http.get(path).status_code == 200, path
    trained = http.post("/train_layer2", json={"samples": samples(2, D, seed=9)})
    if trained.status_code != 200:
        assert assert_refusal(trained, (422,))["error_type"] == "training_diverged"


# ---------------------------------------------------------------- batches over HTTP


@settings(FUZZ, max_examples=80)
@given(BODIES)
def test_hostile_batches_get_a_clean_refusal(
    secured_server: LiveServer, secured_http: httpx.Client, body: bytes
) -> None:
    before = snapshot_model(secured_server.state)
    with judged("decoder"):
        response = secured_http.post(
            "/train_layer2", content=body, headers={"Content-Type": BATCH_CONTENT_TYPE}
        )
        if response.status_code != 200:
            assert_refusal(response, (400, 409, 422))
            assert_same_model(before, snapshot_model(secured_server.state))


@settings(FUZZ, max_examples=25)
@given(BODIES)
def test_hostile_stream_frames_end_the_stream_cleanly(
    secured_server: LiveServer, frame: bytes
) -> None:
    url = secured_server.url.replace("http://", "ws://") + "/v1/train/stream"
    before = snapshot_model(secured_server.state)
    with judged("decoder"), connect(url, additional_headers=AUTH) as ws:
        ws.send(json.dumps({"type": "hello", "protocol": PROTOCOL_VERSION, "run_id": None}))
        assert json.loads(ws.recv(timeout=30))["type"] == "welcome"
        ws.send(frame)
        reply = json.loads(ws.recv(timeout=30))
        if reply["type"] != "ack":
            assert reply["type"] == "error"
            assert reply["error"]
            assert reply["error_type"] in ERROR_TYPES
            assert_same_model(before, snapshot_model(secured_server.state))


# ---------------------------------------------------------------- uploaded checkpoints


class Files(dict[str, bytes]):
    """A checkpoint's files by name, shown by their sizes (hypothesis prints what it draws)."""

    def __repr__(self) -> str:
        return f"Files({ {name: f'<{len(data)} bytes>' for name, data in self.items()} })"


@pytest.fixture(scope="module")
def pristine(
    secured_server: LiveServer, secured_http: httpx.Client, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A copy of a real checkpoint of the served model, after two batches of a run."""
    for seq in range(2):
        body = {"samples": samples(4, D, seed=seq), "run_id": "fuzz-ckpt", "seq": seq}
        assert secured_http.post("/train_layer2", json=body).status_code == 200
    assert secured_http.post("/v1/checkpoint").status_code == 200
    saved = secured_server.state.checkpointer.last_path
    assert saved is not None
    copy: Path = tmp_path_factory.mktemp("pristine") / saved.name
    shutil.copytree(saved, copy)
    return copy


@pytest.fixture(scope="module")
def broken(pristine: Path) -> st.SearchStrategy[Files]:
    """One strategy per module: hypothesis replays need the very same one."""
    return broken_checkpoints(Files({f.name: f.read_bytes() for f in sorted(pristine.iterdir())}))


def adopt(live: LiveServer, folder: Path) -> None:
    """What ``POST /v1/checkpoint/uploads/{id}/commit`` does, on the worker's thread."""
    asyncio.run(live.state.worker.run(lambda: live.state.checkpointer.adopt(folder)))


def _documents(files: dict[str, bytes]) -> dict[str, Any]:
    return {name: json.loads(data) for name, data in files.items() if name.endswith(".json")}


@st.composite
def broken_checkpoints(draw: st.DrawFn, files: Files) -> Files:
    """One file of ``files`` replaced by something hostile; most often the manifest agrees."""
    name = draw(st.sampled_from(sorted(files)))
    if name.endswith(".json"):
        options = json_mutations(_documents(files)[name])
    else:
        options = (
            edited_tensors(files[name])
            | mutated(files[name])
            | hostile_safetensors(["rng.cpu", "state.0.exp_avg"])
        )
    broken = Files({**files, name: draw(options | st.binary(max_size=128))})
    if name != "MANIFEST.json" and draw(st.integers(0, 3)):
        broken = Files(with_manifest(broken))
    if draw(st.integers(0, 7)) == 0:  # and sometimes a file goes missing
        del broken[draw(st.sampled_from(sorted(broken)))]
    return broken


def _resumable(live: LiveServer) -> dict[str, Any]:
    """What a refused checkpoint must leave as it was, besides the weights."""
    saved: dict[str, Any] = live.state.checkpointer.state()
    saved["stats"].pop("elapsed_seconds")
    return saved


@settings(FUZZ, max_examples=150)
@given(st.data())
def test_broken_checkpoints_are_refused_before_anything_changes(
    secured_server: LiveServer,
    secured_http: httpx.Client,
    pristine: Path,
    broken: st.SearchStrategy[Files],
    data: st.DataObject,
) -> None:
    """Through ``Checkpointer.adopt``, the function behind the commit route."""
    files = data.draw(broken)
    folder = Path(tempfile.mkdtemp(prefix="corteza-fuzz-"))
    try:
        for name, content in files.items():
            (folder / name).write_bytes(content)
        before, resumable = snapshot_model(secured_server.state), _resumable(secured_server)
        with judged("checkpoint"):
            try:
                adopt(secured_server, folder)
            except CheckpointError as exc:
                assert str(exc)
                assert_same_model(before, snapshot_model(secured_server.state))
                assert _resumable(secured_server) == resumable
            else:
                assert_still_serving(secured_http)
                adopt(secured_server, pristine)  # the next case starts from the same model
    finally:
        shutil.rmtree(folder)


@settings(FUZZ, max_examples=30)
@given(st.data())
def test_broken_checkpoints_are_refused_over_http(
    secured_server: LiveServer,
    secured_http: httpx.Client,
    pristine: Path,
    broken: st.SearchStrategy[Files],
    data: st.DataObject,
) -> None:
    files = data.draw(broken)
    before = snapshot_model(secured_server.state)
    with judged("checkpoint"):
        response = push(secured_http, files)
        if response.status_code == 200:
            assert response.json()["status"] == "loaded"
            assert_still_serving(secured_http)
            adopt(secured_server, pristine)
        else:
            body = assert_refusal(response, (422,))
            assert body["error_type"] == "invalid_checkpoint"
            assert body["error"].startswith("Refused checkpoint: ")
            assert_same_model(before, snapshot_model(secured_server.state))
