"""``corteza predict DATA``: the model's outputs per sample, without training.

With ``--model FILE.onnx`` the file is scored here with onnxruntime: no
server, and torch is never imported.

``--out`` writes exactly the file it names, checked (and its folder made)
before anything is scored:

- ``.npz``: arrays ``anomaly_prob`` (N,), ``dendrites`` (N, 16), ``coherence`` (N, 64);
- ``.csv``: a header, then one line per sample: ``anomaly_prob``, ``dendrite_0`` ..
  ``dendrite_15``, ``coherence_0`` .. ``coherence_63``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import typer
from numpy.typing import NDArray

from corteza.cli.common import (
    DebugOption,
    JsonOption,
    ServerOption,
    TokenOption,
    clear_errors,
    print_json,
    target,
)
from corteza.client import Client, InvalidDataError, OnnxModel, Predictions
from corteza.client.data.datasets import check_data_path, open_inputs
from corteza.client.data.metrics import roc_auc

CHUNK = 1024  # samples per request (or per local run), unless the server takes fewer
OUT_FORMATS = (".npz", ".csv")


def predict(
    data: Path = typer.Argument(
        ...,
        metavar="DATA",
        help="Data file (.json, .npz, .npy, .csv); labels optional: a .json without "
        "anomaly_label, an .npz without y, or a .csv/.npy exactly as wide as the model's input.",
    ),
    out: Path | None = typer.Option(
        None,
        help="Write the outputs here: .npz (arrays anomaly_prob (N,), dendrites (N, 16), "
        "coherence (N, 64)) or .csv (one line per sample). Its folder is made if missing.",
    ),
    model: Path | None = typer.Option(
        None, "--model", help="Score with this ONNX export here (onnxruntime), not a server."
    ),
    server: str | None = ServerOption,
    token: str | None = TokenOption,
    as_json: bool = JsonOption,
    debug: bool = DebugOption,
) -> None:
    """Score DATA with the server's model (eval mode; weights and statistics untouched)."""
    with clear_errors(debug, as_json=as_json):
        if out is not None:
            _check_out(out)
        if model is not None and server is not None:
            raise InvalidDataError(
                "--model scores here, without a server: drop --server",
                error_type="invalid_request",
            )
        chosen = None if model is not None else target(server)
        check_data_path(data)  # before asking a server for its width
    with clear_errors(debug, as_json=as_json, server=chosen):
        if chosen is None:
            assert model is not None
            local = OnnxModel(model)
            inputs, labels = open_inputs(data, local.input_dim)
            parts = [local.predict(inputs[i : i + CHUNK]) for i in range(0, len(inputs), CHUNK)]
        else:
            with Client(chosen.url, token=token) as client:
                inputs, labels = open_inputs(data, client.input_dim())
                parts = score(client, inputs)
        probs = np.concatenate([p.anomaly_prob for p in parts])
        if out is not None:
            _save(out, probs, parts)
    labelled = labels is not None and 0 < labels.sum() < len(labels)
    auc = roc_auc(labels, probs) if labels is not None and labelled else None
    result = {
        "samples": len(probs),
        "mean_anomaly_prob": float(probs.mean()),
        "predicted_anomalies": int((probs > 0.5).sum()),
        "roc_auc": auc,
        "out": None if out is None else str(out),
    }
    if as_json:
        print_json(result)
    else:
        typer.echo(
            f"{result['samples']} samples: mean anomaly probability "
            f"{result['mean_anomaly_prob']:.3f}, {result['predicted_anomalies']} above 0.5"
            + ("" if auc is None else f", ROC-AUC {auc:.3f} against the file's labels")
            + ("" if out is None else f"; wrote {out}")
        )


def score(client: Client, inputs: NDArray[np.float32]) -> list[Predictions]:
    """The server's predictions for ``inputs``, in requests no larger than it takes."""
    limits = client.info().limits
    step = CHUNK if limits is None else max(1, min(CHUNK, limits.max_batch_samples))
    return [client.predict(inputs[i : i + step]) for i in range(0, len(inputs), step)]


def _check_out(out: Path) -> None:
    """Refuse, before any scoring, an ``--out`` that could not be written."""
    if out.suffix.lower() not in OUT_FORMATS:
        raise InvalidDataError(
            f"--out {out}: predictions are written as .npz or .csv, "
            f"not {out.suffix or 'a file without a suffix'}",
            error_type="invalid_path",
        )
    if out.is_dir():
        raise InvalidDataError(f"--out {out} is a folder: name a file", error_type="invalid_path")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)  # as --plot does
    except OSError as exc:
        raise InvalidDataError(
            f"--out {out}: cannot make its folder: {exc.strerror}", error_type="invalid_path"
        ) from exc
    if not os.access(out.parent, os.W_OK):
        raise InvalidDataError(
            f"--out {out}: cannot write in {out.parent}", error_type="invalid_path"
        )


def _save(out: Path, probs: NDArray[np.float32], parts: list[Predictions]) -> None:
    dendrites = np.concatenate([p.dendrites for p in parts])
    coherence = np.concatenate([p.coherence for p in parts])
    if out.suffix.lower() == ".csv":
        header = ",".join(
            [
                "anomaly_prob",
                *(f"dendrite_{j}" for j in range(dendrites.shape[1])),
                *(f"coherence_{j}" for j in range(coherence.shape[1])),
            ]
        )
        table = np.column_stack([probs, dendrites, coherence])
        np.savetxt(out, table, fmt="%.9g", delimiter=",", header=header, comments="")
        return
    with out.open("wb") as fh:  # a file object: np.savez adds no .npz of its own
        np.savez(fh, anomaly_prob=probs, dendrites=dendrites, coherence=coherence)
