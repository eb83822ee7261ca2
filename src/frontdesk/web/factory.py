"""Entry point for Uvicorn: builds the app from environment settings."""

from __future__ import annotations

from fastapi import FastAPI

from frontdesk.core.logging import configure_logging
from frontdesk.core.settings import Settings
from frontdesk.web.app import create_app


def app_from_env() -> FastAPI:
    settings = Settings()
    configure_logging(level=settings.log_level, json_lines=settings.json_logs)
    return create_app(settings)
