"""``corteza.compat.ClienteColab``: the seed README's TypeScript examples, line by line.

Each use case of the seed README (train local data, monitor, dendritic
feedback) runs against a real server on loopback serving a tiny model
(input width ``TINY.input_dim`` = 32).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from corteza.client import (
    ConnectError,
    InvalidDataError,
    free_port,
    make_dataset,
    open_dataset,
    save_dataset,
)
from corteza.compat import ClienteColab
from tests.conftest import TINY, LiveServer


def muestras(n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """The seed's training samples: ``[{"input_data": [...], "anomaly_label": 0 | 1}]``."""
    rng = np.random.default_rng(seed)
    return [
        {"input_data": rng.uniform(-1, 1, TINY.input_dim).tolist(), "anomaly_label": i % 2}
        for i in range(n)
    ]


@pytest.fixture
def cliente(live_server: LiveServer) -> Iterator[ClienteColab]:
    with ClienteColab({"serverUrl": live_server.url}, retries=0) as c:
        yield c


# ------------------------------------------------------------ the seed README's use cases


def test_caso_1_entrenar_dataset_local_con_gpu_remota(
    live_server: LiveServer, tmp_path: Path
) -> None:
    # const cliente = new ClienteColab({ serverUrl: 'https://tu-url.ngrok.io' });
    # const datos = cargarMiDataset();
    # const resultado = await cliente.entrenar(datos);
    path = tmp_path / "dataset.json"
    save_dataset(make_dataset(6, input_dim=TINY.input_dim, seed=1), path)
    with ClienteColab({"serverUrl": live_server.url}) as cliente:
        assert cliente.server_url == live_server.url
        assert cliente.conectar() is True
        datos = json.loads(path.read_text())
        resultado = cliente.entrenar(datos)

        assert resultado.status == "trained"
        assert resultado.batch_size == 6
        assert math.isfinite(resultado.loss)
        assert 0.0 <= resultado.outputs.anomaly_prob <= 1.0
        assert len(resultado.outputs.dendrite_adjustments) == 16
        assert len(resultado.outputs.coherence_state) == 64
        assert cliente.obtener_estado().estadisticas.total_muestras == 6


def test_entrenar_takes_arrays_and_datasets_too(cliente: ClienteColab, tmp_path: Path) -> None:
    X = np.random.default_rng(2).normal(size=(4, TINY.input_dim)).astype(np.float32)
    y = np.array([0, 1, 0, 1])
    assert cliente.entrenar((X, y), epochs=2).step == 2

    path = tmp_path / "data.npz"
    save_dataset(make_dataset(5, input_dim=TINY.input_dim), path)
    assert cliente.entrenar(open_dataset(path)).batch_size == 5
    assert cliente.obtener_estado().estadisticas.total_batches == 2


def test_tamano_lote_splits_the_data_into_batches(cliente: ClienteColab) -> None:
    resultados = cliente.entrenar(muestras(10), tamano_lote=4)
    assert [r.batch_size for r in resultados] == [4, 4, 2]
    estadisticas = cliente.obtener_estado().estadisticas
    assert (estadisticas.total_batches, estadisticas.total_muestras) == (3, 10)
    with pytest.raises(ValueError, match="tamano_lote must be a positive integer, got 0"):
        cliente.entrenar(muestras(2), tamano_lote=0)


def test_tamano_lote_checks_every_sample_before_the_first_batch(cliente: ClienteColab) -> None:
    datos = muestras(10)
    datos[7]["anomaly_label"] = 2
    with pytest.raises(InvalidDataError) as info:
        cliente.entrenar(datos, tamano_lote=4)
    assert str(info.value) == "Invalid anomaly_label: sample 7 has 2, expected 0 or 1"
    assert info.value.sample == 7
    assert cliente.obtener_estado().estadisticas.total_batches == 0


def test_caso_2_monitoreo_en_tiempo_real(cliente: ClienteColab) -> None:
    # const estado = await cliente.obtenerEstado();
    # console.log('GPU:', estado.cuda_available);
    # console.log('Loss actual:', estado.estadisticas.loss_promedio_global);
    assert cliente.obtener_metricas().tendencia == "sin_datos"
    losses = [cliente.entrenar(muestras(4, seed=i)).loss for i in range(3)]

    estado = cliente.obtener_estado()
    assert estado.status == "online"
    assert estado.cuda_available is torch.cuda.is_available()
    assert estado.estadisticas.loss_promedio_global == pytest.approx(sum(losses) / 3)

    metricas = cliente.obtener_metricas()
    assert metricas.tendencia in {"mejorando", "empeorando", "estable"}
    assert metricas.ultimos_20_losses == pytest.approx(losses)


def test_caso_3_feedback_dendritico_bidireccional(cliente: ClienteColab) -> None:
    # const resultado = await cliente.entrenar(batch);
    # const ajustes = procesarResultados(resultado);
    # await cliente.enviarFeedback(ajustes, true);
    resultado = cliente.entrenar(muestras(4))
    ajustes = np.asarray(resultado.outputs.dendrite_adjustments) * 0.5
    feedback = cliente.enviar_feedback(ajustes, True)

    assert feedback.status == "feedback_recibido"
    assert feedback.validacion is True
    assert feedback.estadisticas.feedback.recibido == 1
    assert feedback.estadisticas.feedback.exitoso == 1
    assert cliente.enviar_feedback(ajustes, False).estadisticas.feedback.exitoso == 1
    assert cliente.obtener_metricas().feedback_tasa_exito == pytest.approx(0.5)


def test_obtener_info_and_diagnostico(cliente: ClienteColab) -> None:
    assert cliente.obtener_info().input_dim == TINY.input_dim
    diagnostico = cliente.diagnostico()
    assert diagnostico.status == "diagnostico_ok"
    assert diagnostico.outputs_shapes.dendrites[-1] == 16


# ------------------------------------------------------------ where it differs from the seed


def test_conectar_logs_instead_of_printing(
    cliente: ClienteColab, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    with caplog.at_level(logging.INFO, logger="corteza.compat"):
        assert cliente.conectar() is True
    assert f"Conexión exitosa con {cliente.server_url}" in caplog.messages
    assert capsys.readouterr() == ("", "")


def test_conectar_raises_connect_error_when_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with ClienteColab(url, retries=0) as cliente, pytest.raises(ConnectError) as info:
        cliente.conectar()
    assert str(info.value).startswith(f"Cannot connect to {url}: ")


def test_a_wrong_width_is_refused_before_sending(cliente: ClienteColab) -> None:
    with pytest.raises(InvalidDataError) as info:
        cliente.entrenar([{"input_data": [0.1, 0.2, 0.3], "anomaly_label": 0}])
    assert str(info.value) == "Input dimension mismatch: expected 32D, got 3D"
    assert info.value.error_type == "dimension_mismatch"

    with pytest.raises(InvalidDataError, match=r"^Input dimension mismatch: expected 32D, got 3D$"):
        cliente.entrenar((np.zeros((2, 3)), [0, 1]))
    assert cliente.obtener_estado().estadisticas.total_batches == 0


@pytest.mark.parametrize(
    ("datos", "message"),
    [
        ([], "Empty batch: send at least one sample"),
        ([{"input_data": [0.0] * 32}], "sample 0 must be an object with 'input_data' and"),
        ([{"input_data": [0.0] * 32, "anomaly_label": "1"}], "Invalid anomaly_label: sample 0"),
        (
            [{"input_data": [0.0] * 32, "anomaly_label": 0}, {"input_data": [[0.0] * 32]}],
            "sample 1 must be an object",
        ),
        (
            [
                {"input_data": [0.0] * 32, "anomaly_label": 0},
                {"input_data": [[0.0] * 32], "anomaly_label": 1},
            ],
            "Ragged batch: sample 1 has 1 time step, sample 0 has a flat row",
        ),
        ("not data", "entrenar() takes a list of"),
        ([[0.0] * 32], "entrenar() takes a list of"),
    ],
)
def test_malformed_data_is_refused_with_a_clear_message(
    cliente: ClienteColab, datos: Any, message: str
) -> None:
    with pytest.raises(InvalidDataError) as info:
        cliente.entrenar(datos)
    assert str(info.value).startswith(message)


# ------------------------------------------------------------ construction


def test_the_seeds_config_object_and_keywords(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ClienteColab({"serverUrl": live_server.url + "/", "token": "t0k"}) as cliente:
        assert cliente.server_url == live_server.url
        assert cliente.client._headers["Authorization"] == "Bearer t0k"
        assert cliente.obtener_info().input_dim == TINY.input_dim
    assert repr(cliente) == f"ClienteColab({live_server.url!r})"
    with pytest.raises(ValueError, match=r"unknown ClienteColab option\(s\) 'timeout'"):
        ClienteColab({"serverUrl": live_server.url, "timeout": 30000})

    monkeypatch.setenv("COLAB_SERVER_URL", "https://example.ngrok.io/")
    assert ClienteColab().server_url == "https://example.ngrok.io"
    assert ClienteColab({}).server_url == "https://example.ngrok.io"
    monkeypatch.setenv("CORTEZA_URL", "http://10.0.0.2:8000")
    assert ClienteColab().server_url == "http://10.0.0.2:8000"


def test_cerrar_and_the_context_manager_close_the_connection(live_server: LiveServer) -> None:
    with ClienteColab(live_server.url) as cliente:
        assert cliente.conectar()
    assert cliente.client._http.is_closed
    otro = ClienteColab(live_server.url)
    otro.cerrar()
    assert otro.client._http.is_closed
