"""The JSON answer to a trained batch, built once and stored for replays."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from corteza.server.engine.trainer import TrainResult


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def train_answer(
    result: TrainResult, run_id: str | None, seq: int | None, batch_id: str
) -> dict[str, Any]:
    """The seed's ``/train_layer2`` fields plus ours, as plain JSON values."""
    capa2, capa3, capa4 = result.capa_means
    return {
        "status": "skipped" if result.skipped_steps == result.epochs else "trained",
        "loss": result.loss,
        "batch_size": result.batch_size,
        "outputs": {
            "anomaly_prob": float(result.probabilities.mean()),
            "dendrite_adjustments": result.dendrites,
            "coherence_state": result.coherence,
        },
        "capa_info": {
            "capa2_activations": capa2,
            "capa3_activations": capa3,
            "capa4_activations": capa4,
        },
        "timestamp": now_iso(),
        "step": result.step,
        "epochs": result.epochs,
        "losses": result.losses,
        "duration_seconds": result.seconds,
        "run_id": run_id,
        "seq": seq,
        "replayed": False,
        "batch_id": batch_id,
        "head_losses": result.head_losses,
        "skipped_steps": result.skipped_steps,
    }
