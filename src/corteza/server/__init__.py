"""The training server: FastAPI app, training worker, statistics."""

from corteza.server.app import create_app
from corteza.server.settings import Settings

__all__ = ["Settings", "create_app"]
