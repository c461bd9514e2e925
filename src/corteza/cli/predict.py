"""``corteza predict DATA``: the model's outputs per sample, without training.

With ``--model FILE.onnx`` the file is scored here with onnxruntime: no
server, and torch is never imported.
"""

from __future__ import annotations

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
)
from corteza.client import Client, InvalidDataError, OnnxModel, Predictions, open_dataset
from corteza.client.config import resolve_url
from corteza.client.data.metrics import roc_auc

CHUNK = 1024  # samples per request (or per local run)


def predict(
    data: Path = typer.Argument(..., help="Data file (.json, .npz, .npy, .csv); labels optional."),
    out: Path | None = typer.Option(None, help="Write anomaly_prob, dendrites, coherence here."),
    model: Path | None = typer.Option(
        None, "--model", help="Score with this ONNX export here (onnxruntime), not a server."
    ),
    server: str | None = ServerOption,
    token: str | None = TokenOption,
    as_json: bool = JsonOption,
    debug: bool = DebugOption,
) -> None:
    """Score DATA with the server's model (eval mode; weights and statistics untouched)."""
    with clear_errors(debug):
        dataset = open_dataset(data)
        chunks = [dataset.X[i : i + CHUNK] for i in range(0, len(dataset), CHUNK)]
        if model is not None:
            if server is not None:
                raise InvalidDataError(
                    "--model scores here, without a server: drop --server",
                    error_type="invalid_request",
                )
            local = OnnxModel(model)
            parts = [local.predict(chunk) for chunk in chunks]
        else:
            with Client(resolve_url(server), token=token) as client:
                parts = [client.predict(chunk) for chunk in chunks]
        probs = np.concatenate([p.anomaly_prob for p in parts])
        if out is not None:
            _save(out, probs, parts)
    labels = dataset.y
    auc = roc_auc(labels, probs) if 0 < labels.sum() < len(labels) else None
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


def _save(out: Path, probs: NDArray[np.float32], parts: list[Predictions]) -> None:
    np.savez(
        out,
        anomaly_prob=probs,
        dendrites=np.concatenate([p.dendrites for p in parts]),
        coherence=np.concatenate([p.coherence for p in parts]),
    )
