"""Free loopback ports for the peers the lab and the tests start.

A port the kernel hands out for ``bind(0)`` comes from the ephemeral range, the same
range every outgoing connection draws its source port from: between closing the probe
socket and the peer binding it, a client connection (the operator's, kubectl's, an
agent's) can take it, and the peer fails with "address already in use".  Ports are
therefore drawn below the ephemeral range, and never twice by one process.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

_FLOOR = 15000
_lock = threading.Lock()
_given: set[int] = set()


def _ephemeral_floor() -> int:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return max(low, _FLOOR + 1000)


def _pick(kinds: tuple[socket.SocketKind, ...]) -> int:
    ceiling = _ephemeral_floor()
    with _lock:
        for _ in range(1000):
            port = random.randrange(_FLOOR, ceiling)
            if port in _given:
                continue
            try:
                for kind in kinds:
                    with socket.socket(socket.AF_INET, kind) as s:
                        s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _given.add(port)
            return port
    raise OSError("no free loopback port below the ephemeral range")


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on, outside the ephemeral range."""
    return _pick((socket.SOCK_STREAM,))


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 nobody is bound to, outside the ephemeral range."""
    return _pick((socket.SOCK_DGRAM,))


def free_tcp_and_udp_port() -> int:
    """One port number free for both TCP and UDP (an IPMI/SNMP device probed both ways)."""
    return _pick((socket.SOCK_STREAM, socket.SOCK_DGRAM))
