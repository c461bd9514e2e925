"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corteza._version import __version__
from corteza.server.edge.connections import ConcurrencyCapMiddleware
from corteza.server.edge.errors import UnexpectedErrorMiddleware, install_error_handlers
from corteza.server.edge.routes import (
    checkpoints,
    dashboard,
    datasets,
    events,
    export,
    jobs,
    model,
    monitoring,
    predict,
    runs,
    stream,
    training,
)
from corteza.server.edge.security import install_security
from corteza.server.observe.events import RunEndMiddleware
from corteza.server.observe.prometheus import HttpMetricsMiddleware
from corteza.server.observe.prometheus import router as metrics_router
from corteza.server.settings import Settings
from corteza.server.state import ServerState
from corteza.wire import PROTOCOL_HEADER, PROTOCOL_VERSION

logger = logging.getLogger(__name__)

DESCRIPTION = """Train the Corteza cognitive model on this machine's accelerator
while the data and the decisions stay on yours. The seed's routes keep their
Spanish names and fields; errors are real HTTP statuses with a body
`{"status": "error", "error": "...", "error_type": "..."}`."""


class ProtocolHeaderMiddleware:
    """Stamps every response with the protocol version (pure ASGI: no body buffering)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((PROTOCOL_HEADER.lower().encode(), PROTOCOL_VERSION.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_header)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the model is built in the lifespan, on the configured device.

    >>> app = create_app(Settings(model=ModelConfig.tiny()))  # doctest: +SKIP
    """
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = ServerState.build(settings)
        app.state.corteza = state
        state.jobs.start()  # jobs a previous process left pending resume now
        logger.info(
            "model ready: %s parameters on %s",
            f"{state.trainer.parameter_count:,}",
            state.trainer.device,
        )
        try:
            yield
        finally:
            await state.jobs.stop()  # batches queued still train; the job resumes next start
            state.close()
            logger.info("server stopped after %d batches", state.stats.total_batches)

    app = FastAPI(
        title="corteza",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url="/redoc",
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(UnexpectedErrorMiddleware)  # sees every failure of the routes
    app.add_middleware(RunEndMiddleware)  # run_finished when a stream closes cleanly
    # Requests and streams in progress, counted behind the token check; /health passes.
    app.add_middleware(ConcurrencyCapMiddleware, limit=settings.max_connections)
    install_security(app, settings)  # Host/Origin, CORS, token, body limits (outer to inner)
    app.add_middleware(HttpMetricsMiddleware)  # counts the refusals of security too
    app.add_middleware(ProtocolHeaderMiddleware)  # outermost: stamps the 500s too
    for router in (
        training.router,
        monitoring.router,
        model.router,
        predict.router,
        export.router,
        stream.router,
        checkpoints.router,
        datasets.router,
        runs.router,
        jobs.router,
        dashboard.router,
        events.router,
        metrics_router,
    ):
        app.include_router(router)
    return app
