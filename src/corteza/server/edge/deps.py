"""Shared state built in the lifespan, reached through ``Depends`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from corteza.server.settings import Settings
from corteza.server.state import ServerState


def get_state(connection: HTTPConnection) -> ServerState:
    state: ServerState = connection.app.state.corteza
    return state


def get_settings(connection: HTTPConnection) -> Settings:
    settings: Settings = connection.app.state.settings
    return settings


StateDep = Annotated[ServerState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
