"""The access log: one line per request, in the services' log format (`JOBMANAGER_LOG_FORMAT`).

Each line says the method, the path (percent-encoded, so it cannot break a line), the status,
the duration, the caller (the key's name, `anonymous` or `unknown key`) and the client's
address; with the JSON format each is a field of its own. Refused calls are there as much as
served ones: that is what the log is for. Health checks and scrapes that succeed are logged at
DEBUG, so that a probe every few seconds does not drown the rest.
"""

from __future__ import annotations

import logging
import re
import time
from urllib.parse import quote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobmanager.admin.auth import ANONYMOUS, CALLER, Principal

log = logging.getLogger("jobmanager.admin.access")
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
MAX_PATH = 500
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class AccessLog:
    """Pure ASGI middleware writing the access log (outermost, so it sees every answer)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the server answers when the app fails before it responds

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            _write(scope, status, time.perf_counter() - start)


def _write(scope: Scope, status: int, seconds: float) -> None:
    path = quote(scope["path"], safe="/:@!$&'()*+,;=-._~")[:MAX_PATH]
    level = logging.DEBUG if path in PROBES and status < 400 else logging.INFO
    if not log.isEnabledFor(level):
        return
    caller = scope.get(CALLER)
    actor = _CONTROL.sub("?", caller.name if isinstance(caller, Principal) else ANONYMOUS.name)
    client = scope.get("client")
    address = client[0] if client else "-"
    duration_ms = round(seconds * 1000, 1)
    method = scope["method"]
    log.log(
        level,
        "%s %s %d %.1f ms %s %s",
        method,
        path,
        status,
        duration_ms,
        actor,
        address,
        extra={
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": duration_ms,
            "actor": actor,
            "client": address,
        },
    )
