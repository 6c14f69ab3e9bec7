"""Free TCP ports on the loopback interface, for the services a test or a measurement starts
(metrics endpoints, the admin API)."""

from __future__ import annotations

import socket

_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free now and never handed out before in this process: the kernel may offer a
    port again as soon as its probe closes, and two services of one stack, started together,
    must not get the same one (the second would die binding it)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
