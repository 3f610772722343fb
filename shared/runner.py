"""``python -m services.<name>``: serve one service with uvicorn on its port (loopback by default)."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from shared.settings import get_settings


def serve(api: FastAPI, service: str, server_class: type[uvicorn.Server] = uvicorn.Server) -> None:
    settings = get_settings()
    config = uvicorn.Config(
        api,
        host=settings.host,
        port=settings.port(service),
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    server_class(config).run()
