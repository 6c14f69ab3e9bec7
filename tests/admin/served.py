"""The admin app served by a real uvicorn (what a client on the network gets: chunked bodies,
connections closed early), for the tests that need more than httpx's ASGI transport."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import uvicorn


class Server:
    """uvicorn serving `app` from a background thread, on a free local port."""

    def __init__(self, app: Any) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="on", loop="asyncio"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )

    async def __aenter__(self) -> Server:
        self.thread.start()
        async with asyncio.timeout(15):
            while not self.server.started:
                assert self.thread.is_alive(), "the admin server stopped while starting"
                await asyncio.sleep(0.05)
        return self

    async def __aexit__(self, *_: object) -> None:
        self.server.should_exit = True
        await asyncio.to_thread(self.thread.join, 15)
        self.socket.close()
        assert not self.thread.is_alive(), "the admin server did not stop"
