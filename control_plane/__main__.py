"""`python -m control_plane`: serve the management API with uvicorn on API_HOST:API_PORT (uvloop)."""

from __future__ import annotations

import uvicorn

from shared.config import load_settings
from shared.logging_setup import configure_logging

from .app import create_app


def main() -> None:
    settings = load_settings()
    configure_logging(settings.LOG_LEVEL, "control_plane")
    if not settings.ADMIN_TOKEN:
        import logging

        logging.getLogger(__name__).warning("ADMIN_TOKEN is empty: only API tokens can authenticate")
    uvicorn.run(
        create_app(settings),
        host=settings.API_HOST,
        port=settings.API_PORT,
        loop="uvloop",
        log_config=None,  # keep shared.logging_setup's one-line format
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
