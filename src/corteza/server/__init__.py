"""The training server: FastAPI app, training worker, statistics."""

from corteza.server.app import create_app
from corteza.server.launch.background import BackgroundServer, ServerStartError, serve_in_background
from corteza.server.launch.tunnel import TunnelError
from corteza.server.settings import Settings

__all__ = [
    "BackgroundServer",
    "ServerStartError",
    "Settings",
    "TunnelError",
    "create_app",
    "serve_in_background",
]
