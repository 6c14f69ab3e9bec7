"""`python -m jobmanager.admin`: the admin service in the foreground (as `jobmanager admin`)."""

from __future__ import annotations

import sys

import uvicorn

from jobmanager.admin.app import create_app
from jobmanager.admin.config import AdminSettings
from jobmanager.core.logs import configure
from jobmanager.core.runtime import load_settings


def main() -> int:
    settings = load_settings(AdminSettings, "admin")
    configure(settings.log_level, settings.log_format, service="admin")
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host=settings.admin_host,
            port=settings.admin_port,
            log_config=None,
            access_log=False,
            lifespan="on",
        )
    )
    # uvicorn handles SIGTERM / SIGINT: it stops accepting, finishes requests, runs shutdown.
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
