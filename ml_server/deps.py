"""FastAPI dependencies of the routers: the shared state, the settings, the model store, the auth scheme."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPBasic

from ml_server.model_store import ModelStore
from ml_server.settings import Settings
from ml_server.state import BackendState


async def get_state(request: Request) -> BackendState:
    """The app's :class:`BackendState` (made by ``create_app``)."""
    return request.app.state.backend


async def app_settings(request: Request) -> Settings:
    """The app's settings (not the environment's: tests build apps with their own)."""
    return request.app.state.backend.settings


async def get_store(request: Request) -> ModelStore:
    return request.app.state.backend.store


State = Annotated[BackendState, Depends(get_state)]
AppSettings = Annotated[Settings, Depends(app_settings)]
Store = Annotated[ModelStore, Depends(get_store)]


def auth_dependencies(settings: Settings) -> list[Any]:
    """The routes' auth dependency when basic auth is on: it puts the scheme in the OpenAPI schema, while
    :class:`ml_server.gate.RequestGate` checks the credentials (every path but ``/health``). Without auth
    there is none, so a stray Authorization header is ignored (not a 401)."""
    return [Depends(HTTPBasic(auto_error=False))] if settings.auth_enabled else []
