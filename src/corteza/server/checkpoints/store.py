"""Checkpoints on disk: safetensors and JSON only, written atomically, verified by sha256.

A checkpoint is one directory ``<root>/ckpt-<step:012d>-<unix_ms>-<save:09d>/``, where
``save`` numbers the saves into ``<root>`` (one more than the highest there). The save
number, not the step, orders checkpoints: a pushed older checkpoint (a rollback), saved
last, is the newest, the one a restart resumes and the last one pruned. Names without
a save number (written before it existed) count as save 0, ordered by step then time:

- ``model.safetensors``: the model's state_dict.
- ``optimizer.safetensors``: every tensor of the optimizer's per-parameter state, named
  ``state.<param_index>.<key>`` (AdamW: ``step``, ``exp_avg``, ``exp_avg_sq``).
- ``rng.safetensors``: ``rng.cpu`` (``torch.get_rng_state()``, uint8) and, when this process
  uses CUDA, ``rng.cuda.<device>``.
- ``state.json``: ``{"format", "step", "state": <the caller's dict>, "optimizer": {"type",
  "param_groups" (parameters as index lists), "values" (non-tensor per-parameter state)}}``.
- ``MANIFEST.json``: ``{"format": 1, "files": {name: {"sha256", "bytes"}}}``, written last.

Nothing is read back except safetensors and JSON, so a checkpoint carries data, never code.
Whether one fits the live model and optimizer is :mod:`corteza.server.checkpoints.validate`'s call.

Writes go into ``<root>/.tmp-<uuid4>/``; each file and the directory are fsynced, the directory
is renamed to its final name and ``<root>`` is fsynced. A crash leaves either the previous
checkpoints plus a ``.tmp-*`` leftover (removed by the next save or load) or the complete new
checkpoint. One process writes to a root at a time. Pruning spares the checkpoints the
ones the caller's ``protect(path)`` keeps (one being downloaded). Usage::

    save_checkpoint(root, model=model, optimizer=opt, state={"run_id": run_id}, step=step)
    report = load_latest(root, model=model, optimizer=opt)
    logger.info("%s", report.describe())  # "resumed from ckpt-... (step 120); skipped ..."
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from corteza.server.checkpoints.files import digest, fsync_dir, read_tensors, save_tensors
from corteza.server.checkpoints.validate import (
    OPTIMIZER_FILE,
    STATE_FILE,
    CheckpointError,
    check_finite,
    cpu_copies,
    flatten_optimizer_state,
    optimizer_state_dict,
    validate_model_tensors,
)

logger = logging.getLogger(__name__)

FORMAT = 1
MODEL_FILE = "model.safetensors"
RNG_FILE = "rng.safetensors"
MANIFEST_FILE = "MANIFEST.json"
_DATA_FILES = (MODEL_FILE, OPTIMIZER_FILE, RNG_FILE, STATE_FILE)
_CHECKPOINT_NAME = re.compile(r"ckpt-(\d{12,})-(\d+)(?:-(\d{9,}))?")
_TMP_PREFIX = ".tmp-"


StateCheck = Callable[[dict[str, Any]], None]  # raises CheckpointError for a state it refuses


@dataclass(frozen=True)
class LoadedCheckpoint:
    """The checkpoint that was restored into the model, optimizer and RNG."""

    path: Path
    step: int
    state: dict[str, Any]  # the dict given to save_checkpoint


@dataclass(frozen=True)
class ResumeReport:
    """What ``load_latest`` did: the checkpoint it loaded, if any, and those it skipped."""

    loaded: LoadedCheckpoint | None
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (path, reason), newest first

    def describe(self) -> str:
        """``resumed from ckpt-... (step 7); skipped ckpt-...: <reason>`` for the log."""
        if self.loaded is not None:
            head = f"resumed from {self.loaded.path.name} (step {self.loaded.step})"
        else:
            head = "no valid checkpoint" if self.skipped else "no checkpoint"
        if not self.skipped:
            return head
        return head + "; skipped " + "; ".join(f"{p.name}: {why}" for p, why in self.skipped)


def save_checkpoint(
    root: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    step: int,
    keep: int = 3,
    protect: Callable[[Path], bool] | None = None,
) -> Path:
    """Write a checkpoint atomically, keep the newest ``keep``, return it.

    Before removing an older checkpoint, pruning asks ``protect(path)``: True keeps it (a
    download of it is in progress).

    ``state`` must be strict JSON: a TypeError or ValueError (NaN, Inf) is raised before
    anything is written. On any failure (a full disk) the temporary folder is removed and
    the checkpoints already there are left as they were.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    if step < 0:
        raise ValueError(f"step must be non-negative, got {step}")
    optimizer_state = optimizer.state_dict()
    optimizer_tensors, optimizer_values = flatten_optimizer_state(optimizer_state["state"])
    document = {
        "format": FORMAT,
        "step": step,
        "state": state,
        "optimizer": {
            "type": type(optimizer).__name__,
            "param_groups": optimizer_state["param_groups"],
            "values": optimizer_values,
        },
    }
    state_text = json.dumps(document, indent=1, allow_nan=False)
    root.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(root)
    tmp = root / f"{_TMP_PREFIX}{uuid.uuid4()}"
    tmp.mkdir()
    try:
        save_tensors(cpu_copies(model.state_dict()), tmp / MODEL_FILE)
        save_tensors(optimizer_tensors, tmp / OPTIMIZER_FILE)
        save_tensors(_rng_tensors(), tmp / RNG_FILE)
        (tmp / STATE_FILE).write_text(state_text, encoding="utf-8")
        files = {name: digest(tmp / name, sync=True) for name in _DATA_FILES}
        manifest = json.dumps({"format": FORMAT, "files": files}, indent=1)
        (tmp / MANIFEST_FILE).write_text(manifest, encoding="utf-8")
        digest(tmp / MANIFEST_FILE, sync=True)
        fsync_dir(tmp)
        number = 1 + max((_order(p)[0] for p in list_checkpoints(root)), default=0)
        final = root / f"ckpt-{step:012d}-{time.time_ns() // 1_000_000}-{number:09d}"
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(root)
    logger.info("saved checkpoint %s", final)
    _prune(root, keep, final, protect)
    return final


def _order(path: Path) -> tuple[int, int, int]:
    """(save number, step, unix ms) of a checkpoint name; save 0 for names without one."""
    match = _CHECKPOINT_NAME.fullmatch(path.name)
    assert match is not None
    return int(match[3] or 0), int(match[1]), int(match[2])


def is_checkpoint_name(name: str) -> bool:
    """Whether ``name`` is what :func:`save_checkpoint` names a checkpoint folder."""
    return _CHECKPOINT_NAME.fullmatch(name) is not None


def list_checkpoints(root: Path) -> list[Path]:
    """The ``ckpt-*`` directories under ``root``, newest first (in save order)."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _CHECKPOINT_NAME.fullmatch(p.name) and p.is_dir()]
    return sorted(found, key=_order, reverse=True)


def verify_checkpoint(path: Path) -> None:
    """Raise CheckpointError unless every file matches the manifest and state.json parses."""
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise CheckpointError(f"{MANIFEST_FILE} is missing")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{MANIFEST_FILE} is unreadable: {exc}") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise CheckpointError(f"{MANIFEST_FILE} is unreadable: no files listed")
    if manifest.get("format") != FORMAT:
        raise CheckpointError(
            f"{MANIFEST_FILE} has format {manifest.get('format')!r}, this version reads {FORMAT}"
        )
    files: dict[str, Any] = manifest["files"]
    unlisted = [name for name in _DATA_FILES if name not in files]
    if unlisted:
        raise CheckpointError(f"{MANIFEST_FILE} does not list {', '.join(unlisted)}")
    for name, entry in files.items():
        if Path(name).name != name or name.startswith(".") or not isinstance(entry, dict):
            raise CheckpointError(f"{MANIFEST_FILE} is unreadable: bad entry {name!r}")
        if not (path / name).is_file():
            raise CheckpointError(f"{name} is missing")
        size = (path / name).stat().st_size
        if size != entry.get("bytes"):
            raise CheckpointError(
                f"{name} has {size} bytes, the manifest says {entry.get('bytes')}"
            )
        if digest(path / name)["sha256"] != entry.get("sha256"):
            raise CheckpointError(f"{name}: sha256 does not match the manifest")
    try:
        json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CheckpointError(f"{STATE_FILE} is not valid JSON: {exc}") from exc


def load_latest(
    root: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    check_state: StateCheck | None = None,
) -> ResumeReport:
    """Restore the newest checkpoint that verifies and fits; report the ones skipped.

    A skipped checkpoint changes nothing: the model, optimizer and RNG are touched only once
    every check on a checkpoint has passed, ``check_state`` (on the caller's dict) included.
    """
    if root.is_dir():
        _remove_leftovers(root)
    skipped: list[tuple[Path, str]] = []
    for path in list_checkpoints(root):
        try:
            loaded = _load(path, model, optimizer, check_state)
        except CheckpointError as exc:
            logger.warning("skipping checkpoint %s: %s", path, exc)
            skipped.append((path, str(exc)))
            continue
        logger.info("resumed from checkpoint %s", path)
        return ResumeReport(loaded, skipped)
    return ResumeReport(None, skipped)


def load_checkpoint(
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    check_state: StateCheck | None = None,
) -> LoadedCheckpoint:
    """Verify one checkpoint and restore it; nothing changes unless every check passes."""
    return _load(path, model, optimizer, check_state)


def _load(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    check_state: StateCheck | None,
) -> LoadedCheckpoint:
    verify_checkpoint(path)
    document = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    if not (
        isinstance(document, dict)
        and document.get("format") == FORMAT
        and isinstance(document.get("step"), int)
        and isinstance(document.get("state"), dict)
        and isinstance(document.get("optimizer"), dict)
    ):
        raise CheckpointError(f"{STATE_FILE} is not a format-{FORMAT} checkpoint state")
    if check_state is not None:
        check_state(document["state"])
    model_tensors = read_tensors(path / MODEL_FILE)
    validate_model_tensors(model_tensors, model)
    check_finite(model_tensors, MODEL_FILE)
    try:
        optimizer_tensors = read_tensors(path / OPTIMIZER_FILE)
        check_finite(optimizer_tensors, OPTIMIZER_FILE)
        optimizer_state = optimizer_state_dict(document["optimizer"], optimizer_tensors, optimizer)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{STATE_FILE} has a malformed optimizer section: {exc}") from exc
    rng = read_tensors(path / RNG_FILE)
    names = ["rng.cpu", *(f"rng.cuda.{i}" for i in range(len(rng) - 1))]
    if set(names) != set(rng) or any(rng[name].dtype != torch.uint8 for name in names):
        raise CheckpointError(f"{RNG_FILE} does not hold rng.cpu (and rng.cuda.<i>) as uint8")
    cpu_rng, *cuda_rng = (rng[name] for name in names)
    restore_cuda = torch.cuda.is_available() and torch.cuda.device_count() == len(cuda_rng)
    used = [("cpu", cpu_rng), *((f"cuda:{i}", t) for i, t in enumerate(cuda_rng) if restore_cuda)]
    for device, rng_state in used:
        try:  # on a throwaway generator: the same checks as the real one, without effect
            torch.Generator(device=device).set_state(rng_state)
        except RuntimeError as exc:
            raise CheckpointError(
                f"{RNG_FILE} holds an unusable {device} RNG state: {exc}"
            ) from exc
    # Every check has passed. The optimizer goes first: should it still refuse, the model
    # is untouched (loading a model whose names, shapes and dtypes match cannot fail).
    try:
        optimizer.load_state_dict(optimizer_state)
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"optimizer state does not fit: {exc}") from exc
    model.load_state_dict(model_tensors, strict=True)
    torch.set_rng_state(cpu_rng)
    if cuda_rng and restore_cuda:
        torch.cuda.set_rng_state_all(cuda_rng)
    elif cuda_rng:
        logger.warning("not restoring the CUDA RNG: saved for %d device(s)", len(cuda_rng))
    return LoadedCheckpoint(path, document["step"], document["state"])


def _rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"rng.cpu": torch.get_rng_state()}
    # Only when CUDA is already in use: asking for its RNG would otherwise initialise it.
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        for i, rng_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = rng_state
    return cpu_copies(tensors)


def _remove_leftovers(root: Path) -> None:
    for entry in root.iterdir():
        if entry.name.startswith(_TMP_PREFIX):
            logger.warning("removing %s, left over from an interrupted checkpoint write", entry)
            try:
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            except OSError:
                logger.warning("could not remove %s", entry, exc_info=True)


def _prune(
    root: Path, keep: int, newest: Path, protect: Callable[[Path], bool] | None = None
) -> None:
    complete = [p for p in list_checkpoints(root) if p != newest and (p / MANIFEST_FILE).is_file()]
    kept = {newest, *complete[: keep - 1]}
    for path in list_checkpoints(root):
        if path in kept or (protect is not None and protect(path)):
            continue
        # Renamed first, so a crash mid-delete leaves a .tmp-* leftover, not a half checkpoint.
        doomed = root / f"{_TMP_PREFIX}{uuid.uuid4()}"
        try:
            os.rename(path, doomed)
            shutil.rmtree(doomed)
        except OSError:
            logger.warning("could not remove old checkpoint %s", path, exc_info=True)
        else:
            logger.info("removed old checkpoint %s", path)
