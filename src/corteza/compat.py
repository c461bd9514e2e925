"""``ClienteColab``: the seed's TypeScript client, method for method, over :class:`Client`.

The seed drove its server from TypeScript (``src/colab/cliente_colab.ts``).
This class keeps that client's method names, so the seed README's examples
translate line by line; underneath it is an ordinary
:class:`corteza.client.Client` (torch-free, available as :attr:`client`).

=============================================  =============================================
TypeScript (seed)                              Python (``corteza.compat``)
=============================================  =============================================
``new ClienteColab({serverUrl: url})``         ``ClienteColab(url)`` or
                                               ``ClienteColab({"serverUrl": url})``
``await cliente.conectar()``                   ``cliente.conectar()``
``await cliente.entrenar(datos)``              ``cliente.entrenar(datos)``
``await cliente.enviarFeedback(ajustes, v)``   ``cliente.enviar_feedback(ajustes, v)``
``await cliente.obtenerEstado()``              ``cliente.obtener_estado()``
``await cliente.obtenerMetricas()``            ``cliente.obtener_metricas()``
``await cliente.obtenerInfo()``                ``cliente.obtener_info()``
``await cliente.diagnostico()``                ``cliente.diagnostico()``
=============================================  =============================================

Each method returns the pydantic model of its route, with the seed's field
names (``estado.cuda_available``, ``estado.estadisticas.loss_promedio_global``,
``metricas.tendencia``, ``resultado.outputs.dendrite_adjustments``, ...).

Differences from the seed's client:

- **Errors raise.** The seed's ``conectar()`` caught every error, printed it
  and returned ``false``. Here ``conectar()`` returns ``True`` or raises the
  typed corteza error (:class:`~corteza.client.ConnectError` when the server
  cannot be reached, :class:`~corteza.client.TimeoutException`, ...), and so does
  every other method. Every error is a :class:`~corteza.client.CortezaError`.
- **Logging, not printing.** The seed printed ``✅ Conexión exitosa``; this
  class logs it at INFO on the ``corteza.compat`` logger and prints nothing.
- **Synchronous.** No ``await``: for concurrency use
  :class:`corteza.client.AsyncClient` (``send_feedback``, ``status``, ...).
- **Checked before sending.** Training data is checked with the server's own
  words (``Input dimension mismatch: expected 1600D, got 3D``) and refused
  with :class:`~corteza.client.InvalidDataError` before anything is sent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias, cast, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from corteza.client.client import Client
from corteza.client.config import DEFAULT_RETRIES, DEFAULT_TIMEOUT
from corteza.client.data.datasets import Dataset
from corteza.client.errors import InvalidDataError
from corteza.client.payloads import preflight_batch, refusal
from corteza.wire import (
    BatchError,
    DiagnosticResponse,
    FeedbackResponse,
    InfoResponse,
    MetricsResponse,
    StatusResponse,
    TrainResponse,
    inputs_from_rows,
)

__all__ = ["ClienteColab"]

logger = logging.getLogger(__name__)

#: What :meth:`ClienteColab.entrenar` takes: the seed's samples
#: (``[{"input_data": [...], "anomaly_label": 0}, ...]``), a tuple ``(X, y)``
#: of arrays, or a :class:`~corteza.client.Dataset` (``open_dataset(path)``).
Datos: TypeAlias = Sequence[Mapping[str, Any]] | tuple[ArrayLike, ArrayLike] | Dataset

_CONFIG_KEYS = {"serverUrl", "token"}  # the dict form's keys (the seed's config object)


class ClienteColab:
    """The seed's ``ClienteColab``, in Python.

    >>> with ClienteColab("http://127.0.0.1:8000") as cliente:  # doctest: +SKIP
    ...     cliente.conectar()
    ...     resultado = cliente.entrenar([{"input_data": [0.0] * 1600, "anomaly_label": 0}])
    ...     cliente.enviar_feedback(resultado.outputs.dendrite_adjustments, True)

    ``server_url`` is a URL, or the seed's config object ``{"serverUrl": url}``
    (optionally with ``"token"``). Without one, the server comes from
    ``CORTEZA_URL``, then the seed's ``COLAB_SERVER_URL``, then the one saved
    by ``corteza connect``, like :class:`~corteza.client.Client`. ``timeout``
    is in seconds (the seed's was in milliseconds); ``retries`` applies to the
    read-only calls, never to training.
    """

    def __init__(
        self,
        server_url: str | Mapping[str, Any] | None = None,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        url: str | None
        if isinstance(server_url, Mapping):
            unknown = sorted(set(server_url) - _CONFIG_KEYS)
            if unknown:
                raise ValueError(
                    f"unknown ClienteColab option(s) {', '.join(map(repr, unknown))}: the config "
                    "object takes 'serverUrl' and 'token'; pass timeout=SECONDS as a keyword"
                )
            url = server_url.get("serverUrl")
            token = token if token is not None else server_url.get("token")
        else:
            url = server_url
        self.client = Client(url, token=token, timeout=timeout, retries=retries)

    @property
    def server_url(self) -> str:
        """The server's URL, as resolved (argument, environment, or saved server)."""
        return self.client.url

    def __repr__(self) -> str:
        return f"ClienteColab({self.server_url!r})"

    # ------------------------------------------------------------ lifetime

    def cerrar(self) -> None:
        """Close the connection pool (``with ClienteColab(...)`` does it for you)."""
        self.client.close()

    def __enter__(self) -> ClienteColab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cerrar()

    # ------------------------------------------------------------ the seed's methods

    def conectar(self) -> bool:
        """Check the server (``GET /health``): ``True``, or the typed error raises.

        Unlike the seed, which printed the error and returned ``false``, a
        server that cannot be reached raises :class:`~corteza.client.ConnectError`
        (``Cannot connect to URL: ...``).
        """
        salud = self.client.health()
        if salud.alive:
            logger.info("Conexión exitosa con %s", self.server_url)
        else:
            logger.warning("%s answered /health with alive=false", self.server_url)
        return salud.alive

    @overload
    def entrenar(
        self, datos: Datos, epochs: int = 1, *, tamano_lote: None = None
    ) -> TrainResponse: ...

    @overload
    def entrenar(
        self, datos: Datos, epochs: int = 1, *, tamano_lote: int
    ) -> list[TrainResponse]: ...

    def entrenar(
        self, datos: Datos, epochs: int = 1, *, tamano_lote: int | None = None
    ) -> TrainResponse | list[TrainResponse]:
        """Train on ``datos`` (``POST /train_layer2``).

        ``datos`` is the seed's list of ``{"input_data": [...], "anomaly_label":
        0 | 1}``, a tuple ``(X, y)`` of arrays, or a :class:`~corteza.client.Dataset`.
        ``epochs`` is the number of optimizer steps on each batch.

        Without ``tamano_lote`` the whole of ``datos`` is one batch and one
        :class:`~corteza.wire.TrainResponse` comes back. With ``tamano_lote=N``
        every sample is checked first, then ``datos`` goes in batches of ``N``
        (the last may be smaller), one request each, and the list of responses
        comes back. For epochs over a large dataset, streaming and resuming,
        use :func:`corteza.client.training.fit.fit` instead.
        """
        x, y = self._arrays(datos)
        if tamano_lote is None:
            return self.client.train_batch(x, y, epochs=epochs)
        if isinstance(tamano_lote, bool) or tamano_lote < 1:
            raise ValueError(f"tamano_lote must be a positive integer, got {tamano_lote!r}")
        x, y = preflight_batch(x, y, self.client.input_dim(), epochs)
        total = -(-len(y) // tamano_lote)
        resultados: list[TrainResponse] = []
        for numero, inicio in enumerate(range(0, len(y), tamano_lote), start=1):
            fin = inicio + tamano_lote
            resultado = self.client.train_batch(x[inicio:fin], y[inicio:fin], epochs=epochs)
            logger.info("lote %d/%d: loss %.4f", numero, total, resultado.loss)
            resultados.append(resultado)
        return resultados

    def enviar_feedback(
        self, ajustes: Iterable[float], validacion: bool = True
    ) -> FeedbackResponse:
        """Send dendritic feedback (``POST /feedback_dendritas``), the seed's ``enviarFeedback``."""
        return self.client.send_feedback([float(v) for v in ajustes], validacion)

    def obtener_estado(self) -> StatusResponse:
        """``GET /status``: ``cuda_available``, ``estadisticas.loss_promedio_global``, ..."""
        return self.client.status()

    def obtener_metricas(self) -> MetricsResponse:
        """``GET /metricas``: ``tendencia``, ``anomalias_detectadas``, ..."""
        return self.client.metrics()

    def obtener_info(self) -> InfoResponse:
        """``GET /info``: the model's name, architecture and ``input_dim``."""
        return self.client.info()

    def diagnostico(self) -> DiagnosticResponse:
        """``POST /diagnostico``: a forward pass on a test input, with its shapes."""
        return self.client.diagnose()

    # ------------------------------------------------------------ helpers

    def _arrays(self, datos: Datos) -> tuple[ArrayLike, ArrayLike]:
        """``(inputs, labels)`` from any form ``entrenar`` takes."""
        if isinstance(datos, Dataset):
            return datos.X, datos.y
        if isinstance(datos, (str, bytes, Mapping)) or not isinstance(datos, Sequence):
            raise _malformed(datos)
        if len(datos) > 0 and isinstance(datos[0], Mapping):
            return self._seed_samples(datos)
        if isinstance(datos, tuple) and len(datos) == 2:
            return cast("tuple[ArrayLike, ArrayLike]", datos)
        if len(datos) == 0:
            return self._seed_samples([])  # the server's words for an empty batch
        raise _malformed(datos)

    def _seed_samples(
        self, muestras: Sequence[Any]
    ) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
        """The seed's samples as arrays, checked as the server checks its JSON."""
        rows: list[Any] = []
        labels: list[float] = []
        for i, muestra in enumerate(muestras):
            if not (
                isinstance(muestra, Mapping)
                and "input_data" in muestra
                and "anomaly_label" in muestra
            ):
                raise InvalidDataError(
                    f"sample {i} must be an object with 'input_data' and 'anomaly_label'",
                    error_type="invalid_request",
                    sample=i,
                )
            label = muestra["anomaly_label"]
            if isinstance(label, (str, bytes)) or not isinstance(label, (int, float, np.number)):
                raise InvalidDataError(
                    f"Invalid anomaly_label: sample {i} has {label!r}, expected 0 or 1",
                    error_type="invalid_label",
                    sample=i,
                )
            row = muestra["input_data"]
            rows.append(row.tolist() if isinstance(row, np.ndarray) else row)
            labels.append(float(label))
        try:
            inputs = inputs_from_rows(rows, input_dim=self.client.input_dim())
        except BatchError as exc:
            raise refusal(exc) from exc
        return inputs, np.asarray(labels, dtype=np.float64)


def _malformed(datos: object) -> InvalidDataError:
    return InvalidDataError(
        f"entrenar() takes a list of {{'input_data': [...], 'anomaly_label': 0 | 1}}, a tuple "
        f"(X, y) or a Dataset, got {type(datos).__name__}",
        error_type="invalid_request",
    )
