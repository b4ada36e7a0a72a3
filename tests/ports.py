"""A TCP port for a server a test starts as its own process (`itdr serve`, a redis-server, a metrics endpoint)."""

from __future__ import annotations

import random
import socket
from pathlib import Path


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def unused_port() -> int:
    """A free port below the kernel's ephemeral range.

    A port from bind(("127.0.0.1", 0)) is ephemeral: between our check and the server's own bind, the kernel can
    hand it to any outgoing connection of the parallel test workers (CI saw `itdr serve` fail with "address
    already in use"). Ports below the range are only ever taken by an explicit bind.
    """
    high = min(_ephemeral_start(), 65536) - 1
    low = max(1024, high - 12000)
    chooser = random.SystemRandom()
    for _ in range(500):
        port = chooser.randint(low, high)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port between {low} and {high}")
