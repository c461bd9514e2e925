"""Routes about the model itself: ``GET /info`` and ``POST /diagnostico``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from corteza._version import __version__
from corteza.model import ModelConfig
from corteza.server.edge.deps import StateDep
from corteza.server.edge.routes.monitoring import distributed_field
from corteza.server.engine.device import device_label
from corteza.wire import PROTOCOL_VERSION, DiagnosticResponse, InfoResponse

router = APIRouter(tags=["model"])

MODEL_TITLE = "Corteza Cognitiva"


def layers(cfg: ModelConfig) -> dict[str, Any]:
    """The seed's ``capas`` description, from the actual configuration."""
    return {
        "capa_2a": {
            "tipo": "Bi-LSTM",
            "hidden_dim": cfg.lstm_hidden,
            "num_layers": cfg.lstm_layers,
            "output_dim": 2 * cfg.lstm_hidden,
        },
        "capa_2b": {
            "tipo": "Transformer Encoder",
            "nhead": cfg.transformer_heads,
            "num_layers": cfg.transformer_layers,
            "dim_feedforward": cfg.transformer_ff,
        },
        "gmu": {"tipo": "Gated Multimodal Unit", "fusion": "LSTM+Transformer"},
        "capa_3": {
            "tipo": "MLP Residual",
            "hidden": list(cfg.mlp_hidden),
            "output_dim": cfg.mlp_out,
            "norm": "LayerNorm",
        },
        "capa_4": {
            "tipo": "Self-Attention Multi-head",
            "num_heads": cfg.attention_heads,
            "output_dim": cfg.mlp_out,
            "over": "time axis",
        },
        "capa_5": {
            "tipo": "3 Decision Heads",
            "heads": {
                "anomaly": {"output_dim": 1, "activation": "Sigmoid"},
                "dendrites": {"output_dim": cfg.dendrite_dim, "activation": "Tanh"},
                "coherence": {"output_dim": cfg.coherence_dim, "activation": "Tanh"},
            },
        },
    }


@router.get("/info", response_model=InfoResponse, summary="Model architecture")
async def info(state: StateDep) -> InfoResponse:
    cfg = state.trainer.config
    return InfoResponse.model_validate(
        {
            "nombre": f"{MODEL_TITLE} (corteza {__version__})",
            "version": __version__,
            "arquitectura": {
                "capas": layers(cfg),
                "parametros_totales": state.trainer.parameter_count,
                "parametros_entrenables": state.trainer.trainable_count,
            },
            "flujo": {
                "entrada": f"{cfg.input_dim}D, or a sequence of {cfg.input_dim}D steps",
                "procesamiento": "Capas 2→3→4→5 secuencial",
                "salida": {
                    "anomaly": "1D probabilidad",
                    "dendrites": f"{cfg.dendrite_dim}D feedback",
                    "coherence": f"{cfg.coherence_dim}D meta-cognición",
                },
            },
            "input_dim": cfg.input_dim,
            "model_config": cfg.to_dict(),
            "protocol": PROTOCOL_VERSION,
            "limits": {
                "max_batch_samples": state.settings.max_batch_samples,
                "max_seq_len": state.settings.max_seq_len,
            },
            **distributed_field(state),
        }
    )


@router.post("/diagnostico", response_model=DiagnosticResponse, summary="System self-test")
async def diagnostico(state: StateDep) -> DiagnosticResponse:
    """One forward pass in eval mode on the worker; no effect on training."""
    diagnosis = await state.worker.diagnose()
    device = state.trainer.device
    return DiagnosticResponse.model_validate(
        {
            "test_input_shape": diagnosis.input_shape,
            "outputs_shapes": {
                "anomaly": diagnosis.anomaly_shape,
                "dendrites": diagnosis.dendrite_shape,
                "coherence": diagnosis.coherence_shape,
            },
            "gpu_info": {"cuda": device.type == "cuda", "device": device_label(device)},
        }
    )
