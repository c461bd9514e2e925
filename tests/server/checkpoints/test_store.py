"""Checkpoints: a bitwise round trip, atomic writes, corrupted ones skipped, no code on disk."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import re
import struct
from pathlib import Path

import pytest
import torch

import corteza.server.checkpoints.files as files_module
import corteza.server.checkpoints.store as checkpoint_module
from corteza.model import CortezaCognitiva, ModelConfig, corteza_loss
from corteza.server.checkpoints.store import (
    ResumeReport,
    list_checkpoints,
    load_latest,
    save_checkpoint,
    verify_checkpoint,
)
from corteza.server.checkpoints.validate import CheckpointError, validate_model_tensors

TINY = ModelConfig.tiny()
STATE = {"config": TINY.to_dict(), "run_id": "run-1", "next_seq": 7, "stats": {"loss": [0.5]}}


def train_step(model: CortezaCognitiva, optimizer: torch.optim.Optimizer) -> None:
    model.train()  # dropout draws from the RNG, so a resumed run must restore it
    x = torch.randn(4, model.config.input_dim)
    labels = torch.tensor([0.0, 1.0, 0.0, 1.0])
    optimizer.zero_grad()
    corteza_loss(model(x), labels).total.backward()
    optimizer.step()


def trained(
    seed: int = 0, config: ModelConfig = TINY
) -> tuple[CortezaCognitiva, torch.optim.AdamW]:
    torch.manual_seed(seed)
    model = CortezaCognitiva(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(2):
        train_step(model, optimizer)
    return model, optimizer


def fresh(seed: int = 1) -> tuple[CortezaCognitiva, torch.optim.AdamW]:
    torch.manual_seed(seed)
    model = CortezaCognitiva(TINY)
    return model, torch.optim.AdamW(model.parameters(), lr=0.5)


def save(root: Path, step: int, keep: int = 3, seed: int = 0) -> Path:
    model, optimizer = trained(seed)
    return save_checkpoint(
        root, model=model, optimizer=optimizer, state=STATE, step=step, keep=keep
    )


def rewrite_manifest(path: Path) -> None:
    """Make the manifest agree with the files again, as if they had been written that way."""
    manifest = json.loads((path / "MANIFEST.json").read_text())
    for name in manifest["files"]:
        data = (path / name).read_bytes()
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (path / "MANIFEST.json").write_text(json.dumps(manifest))


def test_a_checkpoint_is_a_named_directory_of_safetensors_and_json(tmp_path: Path) -> None:
    path = save(tmp_path, step=7)
    assert path.parent == tmp_path
    assert path.name.startswith("ckpt-000000000007-")
    _, _, ms, number = path.name.split("-")
    assert int(ms) > 1_600_000_000_000  # unix ms
    assert number == "000000001"  # the first save into this folder
    assert sorted(p.name for p in path.iterdir()) == [
        "MANIFEST.json",
        "model.safetensors",
        "optimizer.safetensors",
        "rng.safetensors",
        "state.json",
    ]
    manifest = json.loads((path / "MANIFEST.json").read_text())
    assert manifest["format"] == 1
    assert set(manifest["files"]) == {
        "model.safetensors",
        "optimizer.safetensors",
        "rng.safetensors",
        "state.json",
    }
    for name, entry in manifest["files"].items():
        data = (path / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    document = json.loads((path / "state.json").read_text())
    assert document["state"] == STATE
    assert document["step"] == 7
    assert document["optimizer"]["type"] == "AdamW"
    verify_checkpoint(path)


def test_round_trip_restores_weights_optimizer_state_and_rng(tmp_path: Path) -> None:
    model, optimizer = trained()
    path = save_checkpoint(tmp_path, model=model, optimizer=optimizer, state=STATE, step=2)
    expected_rand = torch.rand(5)
    other_model, other_optimizer = fresh()
    torch.rand(100)  # move the RNG on

    report = load_latest(tmp_path, model=other_model, optimizer=other_optimizer)

    assert report.loaded is not None
    assert (report.loaded.path, report.loaded.step, report.loaded.state) == (path, 2, STATE)
    assert report.skipped == []
    assert torch.equal(torch.rand(5), expected_rand)
    restored = other_model.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(restored[name], tensor), name
    want, got = optimizer.state_dict(), other_optimizer.state_dict()
    assert got["param_groups"] == want["param_groups"]
    assert got["state"].keys() == want["state"].keys()
    for index, entries in want["state"].items():
        assert set(got["state"][index]) == {"step", "exp_avg", "exp_avg_sq"}
        for key, tensor in entries.items():
            assert got["state"][index][key].dtype == tensor.dtype
            assert torch.equal(got["state"][index][key], tensor), (index, key)


def test_a_resumed_run_takes_bitwise_the_same_next_step(tmp_path: Path) -> None:
    model, optimizer = trained()
    save_checkpoint(tmp_path, model=model, optimizer=optimizer, state=STATE, step=2)
    train_step(model, optimizer)
    other_model, other_optimizer = fresh()
    load_latest(tmp_path, model=other_model, optimizer=other_optimizer)
    train_step(other_model, other_optimizer)
    restored = other_model.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(restored[name], tensor), name


def test_keep_prunes_to_the_newest_k(tmp_path: Path) -> None:
    paths = [save(tmp_path, step=step, keep=2) for step in (1, 2, 3, 4, 5)]
    assert list_checkpoints(tmp_path) == [paths[4], paths[3]]
    assert sorted(p.name for p in tmp_path.iterdir()) == [paths[3].name, paths[4].name]


def test_the_new_checkpoint_is_kept_even_behind_a_higher_step(tmp_path: Path) -> None:
    """After resuming from an older checkpoint, the next save must not be pruned away."""
    later = save(tmp_path, step=100)
    new = save(tmp_path, step=50, keep=1)
    assert list_checkpoints(tmp_path) == [new]
    assert not later.exists()


def test_a_truncated_model_file_falls_back_to_the_previous_checkpoint(tmp_path: Path) -> None:
    good = save(tmp_path, step=1)
    bad = save(tmp_path, step=2)
    size = (bad / "model.safetensors").stat().st_size
    with (bad / "model.safetensors").open("r+b") as f:
        f.truncate(1000)
    model, optimizer = fresh()

    report = load_latest(tmp_path, model=model, optimizer=optimizer)

    assert report.loaded is not None
    assert report.loaded.path == good
    reason = f"model.safetensors has 1000 bytes, the manifest says {size}"
    assert report.skipped == [(bad, reason)]
    assert report.describe() == f"resumed from {good.name} (step 1); skipped {bad.name}: {reason}"


def test_a_flipped_byte_falls_back_to_the_previous_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = save(tmp_path, step=1)
    bad = save(tmp_path, step=2)
    data = bytearray((bad / "model.safetensors").read_bytes())
    data[-10] ^= 0x01
    (bad / "model.safetensors").write_bytes(bytes(data))
    model, optimizer = fresh()

    with caplog.at_level(logging.WARNING, logger="corteza.server.checkpoints.store"):
        report = load_latest(tmp_path, model=model, optimizer=optimizer)

    assert report.loaded is not None
    assert report.loaded.path == good
    assert report.skipped == [(bad, "model.safetensors: sha256 does not match the manifest")]
    assert f"skipping checkpoint {bad}: model.safetensors: sha256 does not match" in caplog.text


def test_a_checkpoint_without_its_manifest_is_skipped(tmp_path: Path) -> None:
    good = save(tmp_path, step=1)
    bad = save(tmp_path, step=2)
    (bad / "MANIFEST.json").unlink()  # a crash before the manifest was written
    model, optimizer = fresh()
    report = load_latest(tmp_path, model=model, optimizer=optimizer)
    assert report.loaded is not None
    assert report.loaded.path == good
    assert report.skipped == [(bad, "MANIFEST.json is missing")]


def test_state_json_that_is_not_json_fails_verification(tmp_path: Path) -> None:
    path = save(tmp_path, step=1)
    (path / "state.json").write_text("{not json")
    rewrite_manifest(path)
    with pytest.raises(CheckpointError, match=r"^state\.json is not valid JSON: Expecting"):
        verify_checkpoint(path)


def test_a_missing_file_fails_verification(tmp_path: Path) -> None:
    path = save(tmp_path, step=1)
    (path / "optimizer.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"^optimizer\.safetensors is missing$"):
        verify_checkpoint(path)


def test_a_leftover_temporary_directory_is_ignored_and_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = save(tmp_path, step=1)
    leftover = tmp_path / ".tmp-0b7d8a4e-0000-4000-8000-000000000000"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"half a file")
    model, optimizer = fresh()

    with caplog.at_level(logging.WARNING, logger="corteza.server.checkpoints.store"):
        report = load_latest(tmp_path, model=model, optimizer=optimizer)

    assert report == ResumeReport(report.loaded, [])
    assert report.loaded is not None
    assert report.loaded.path == good
    assert not leftover.exists()
    assert f"removing {leftover}, left over from an interrupted checkpoint write" in caplog.text


def test_save_removes_a_leftover_temporary_directory(tmp_path: Path) -> None:
    leftover = tmp_path / ".tmp-interrupted"
    leftover.mkdir(parents=True)
    path = save(tmp_path, step=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_a_failure_mid_write_leaves_the_previous_checkpoints_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = save(tmp_path, step=1)
    real_save_file = files_module.save_file

    def disk_full(tensors: dict[str, torch.Tensor], filename: str) -> None:
        if filename.endswith("optimizer.safetensors"):
            raise OSError(28, "No space left on device")
        real_save_file(tensors, filename)

    monkeypatch.setattr(files_module, "save_file", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        save(tmp_path, step=2)
    assert [p.name for p in tmp_path.iterdir()] == [good.name]
    verify_checkpoint(good)


def test_no_checkpoint_gives_an_empty_report(tmp_path: Path) -> None:
    model, optimizer = fresh()
    for root in (tmp_path / "absent", tmp_path):
        report = load_latest(root, model=model, optimizer=optimizer)
        assert report == ResumeReport(None, [])
        assert report.describe() == "no checkpoint"


def test_only_bad_checkpoints_give_no_checkpoint_and_their_reasons(tmp_path: Path) -> None:
    bad = save(tmp_path, step=1)
    (bad / "MANIFEST.json").write_text("[")
    model, optimizer = fresh()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_latest(tmp_path, model=model, optimizer=optimizer)
    assert report.loaded is None
    assert [path for path, _ in report.skipped] == [bad]
    assert report.skipped[0][1].startswith("MANIFEST.json is unreadable: Expecting value")
    assert report.describe().startswith(f"no valid checkpoint; skipped {bad.name}: MANIFEST")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_checkpoint_of_another_model_is_skipped_and_changes_nothing(tmp_path: Path) -> None:
    big, big_optimizer = trained(config=ModelConfig.tiny(input_dim=48))
    path = save_checkpoint(tmp_path, model=big, optimizer=big_optimizer, state={}, step=3)
    model, optimizer = fresh()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    report = load_latest(tmp_path, model=model, optimizer=optimizer)

    assert report.loaded is None
    assert report.skipped == [
        (
            path,
            "checkpoint does not fit this model: "
            "shape mismatch: capa2.lstm.weight_ih_l0 is [64, 48], the model has [64, 32]; "
            "shape mismatch: capa2.lstm.weight_ih_l0_reverse is [64, 48], the model has [64, 32]; "
            "shape mismatch: capa2.transformer.layers.0.self_attn.in_proj_weight is [144, 48], "
            "the model has [96, 32]; and 15 more shape mismatches",
        )
    ]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert optimizer.state_dict()["state"] == {}


@pytest.mark.parametrize("part", ["model", "optimizer"])
def test_a_checkpoint_holding_nan_is_skipped_and_changes_nothing(tmp_path: Path, part: str) -> None:
    """Weights or moments with NaN would poison every later answer and step."""
    model, optimizer = trained()
    tensor = (
        model.capa5.anomaly[0].weight
        if part == "model"
        else optimizer.state[model.capa5.anomaly[0].weight]["exp_avg"]
    )
    with torch.no_grad():
        tensor[0, 0] = float("nan")
    path = save_checkpoint(tmp_path, model=model, optimizer=optimizer, state=STATE, step=2)
    target, target_optimizer = fresh()
    before = {k: v.clone() for k, v in target.state_dict().items()}

    report = load_latest(tmp_path, model=target, optimizer=target_optimizer)

    assert report.loaded is None
    assert len(report.skipped) == 1 and report.skipped[0][0] == path
    reason = report.skipped[0][1]
    if part == "model":
        assert reason == "model.safetensors holds NaN or Inf in capa5.anomaly.0.weight"
    else:
        expected = r"optimizer\.safetensors holds NaN or Inf in state\.\d+\.exp_avg"
        assert re.fullmatch(expected, reason), reason
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())
    assert target_optimizer.state_dict()["state"] == {}


def test_a_checkpoint_of_another_optimizer_is_skipped(tmp_path: Path) -> None:
    path = save(tmp_path, step=1)
    model = CortezaCognitiva(TINY)
    report = load_latest(tmp_path, model=model, optimizer=torch.optim.SGD(model.parameters()))
    assert report.skipped == [(path, "optimizer state is for AdamW, this optimizer is SGD")]


def test_validate_names_unexpected_tensors() -> None:
    model = CortezaCognitiva(TINY)
    tensors = dict(model.state_dict())
    tensors["extra.weight"] = torch.zeros(2)
    with pytest.raises(CheckpointError) as info:
        validate_model_tensors(tensors, model)
    assert str(info.value) == "checkpoint does not fit this model: unexpected tensors: extra.weight"


def test_validate_names_missing_tensors() -> None:
    model = CortezaCognitiva(TINY)
    tensors = dict(model.state_dict())
    for name in ("capa5.anomaly.0.weight", "capa5.anomaly.0.bias", "capa4.norm.weight"):
        del tensors[name]
    with pytest.raises(CheckpointError) as info:
        validate_model_tensors(tensors, model)
    assert str(info.value) == (
        "checkpoint does not fit this model: "
        "missing tensors: capa4.norm.weight, capa5.anomaly.0.weight, capa5.anomaly.0.bias"
    )


def test_validate_names_a_wrong_shape_and_dtype() -> None:
    model = CortezaCognitiva(TINY)
    tensors = dict(model.state_dict())
    tensors["capa5.anomaly.0.weight"] = torch.zeros(256, 512)
    tensors["capa5.anomaly.0.bias"] = torch.zeros(16, dtype=torch.float16)
    with pytest.raises(CheckpointError) as info:
        validate_model_tensors(tensors, model)
    assert str(info.value) == (
        "checkpoint does not fit this model: "
        "shape mismatch: capa5.anomaly.0.weight is [256, 512], the model has [16, 16]; "
        "dtype mismatch: capa5.anomaly.0.bias is float16, the model has float32"
    )


def test_validate_lists_a_few_names_then_counts() -> None:
    model = CortezaCognitiva(TINY)
    tensors = {f"extra.{i}": torch.zeros(1) for i in range(5)}
    with pytest.raises(CheckpointError, match=r"unexpected tensors: extra.0, extra.1, extra.2 and"):
        validate_model_tensors(tensors | dict(model.state_dict()), model)
    with pytest.raises(
        CheckpointError, match=r"missing tensors: capa2\.[\w.]+, [\w.]+, [\w.]+ and"
    ):
        validate_model_tensors({}, model)


def test_save_refuses_state_that_is_not_json_before_writing(tmp_path: Path) -> None:
    model, optimizer = trained()
    with pytest.raises(TypeError, match="not JSON serializable"):
        save_checkpoint(
            tmp_path / "absent", model=model, optimizer=optimizer, state={"x": {1, 2}}, step=1
        )
    assert not (tmp_path / "absent").exists()


def _assert_safetensors(data: bytes) -> None:
    """The whole file is an 8-byte length, a JSON header and the tensor bytes it describes."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    assert 8 + length + max(ends, default=0) == len(data)


def test_nothing_on_disk_or_in_the_module_is_a_pickle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save(tmp_path, step=1)
    for file in path.iterdir():
        data = file.read_bytes()
        assert not data.startswith(b"PK")  # torch.save's zip container
        if file.suffix == ".json":
            assert not data.startswith(b"\x80")  # a pickle's protocol opcode
            json.loads(data)
        else:
            _assert_safetensors(data)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a checkpoint must never be unpickled")

    for target, name in ((torch, "load"), (pickle, "load"), (pickle, "loads")):
        monkeypatch.setattr(target, name, refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    model, optimizer = fresh()
    assert load_latest(tmp_path, model=model, optimizer=optimizer).loaded is not None

    for module in (checkpoint_module, files_module):
        source = Path(module.__file__).read_text()
        for word in ("torch.load", "torch.save", "pickle"):
            assert word not in source, module.__name__
