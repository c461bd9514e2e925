"""Shared state built in the lifespan, reached through ``Depends`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from corteza.server.settings import Settings
from corteza.server.state import ServerState


def get_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.corteza
    return state


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


StateDep = Annotated[ServerState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
