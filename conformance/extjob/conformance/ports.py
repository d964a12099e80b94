"""A loopback TCP port that a fake server can listen on again after an outage.

A port the kernel picks for ``bind(port=0)`` comes from the ephemeral range,
which it also hands out as the source port of outgoing connections. While the
fake server is away, a worker reconnecting to it may be given that very port
as its own source (Linux then connects the socket to itself), or another
process's connection may take it; listening again then fails with EADDRINUSE
and a conformance verdict, or a wrapper's test, fails for no fault of the
worker. The kernel gives a port below the ephemeral range to nobody, so one is
chosen there, at random, so that runs side by side seldom try the same one.
"""

from __future__ import annotations

import contextlib
import random
import socket

_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"


def _ephemeral_low() -> int:
    # 32768 is Linux's default; other systems (49152 on the BSDs and macOS) start higher.
    with contextlib.suppress(OSError, ValueError), open(_RANGE) as f:
        return int(f.read().split()[0])
    return 32768


def relistenable_port(host: str = "127.0.0.1") -> int:
    """A free TCP port on ``host`` outside the ephemeral range (or any free one, if none is)."""
    low = _ephemeral_low()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if low > 2048:
        for _ in range(64):
            port = random.randrange(max(1024, low // 2), low)
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
