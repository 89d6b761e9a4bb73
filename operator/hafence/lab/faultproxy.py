"""A TCP fault proxy in front of the API server: resets, stalls or rejects on cue.

Built on the lab's cuttable forwarder (``netcut.Forwarder``), pointed at the real API
server; a process given :meth:`kubeconfig` reaches the API server only through it.
Faults, each until :meth:`restore` or for ``seconds`` with :meth:`inject`:

- ``reset``: every open connection is torn down with RST and new ones are reset as
  they are accepted (connection reset by peer);
- ``reject``: open connections are closed cleanly and new ones are accepted and closed
  at once, before a byte (the client reads end-of-file: "remote end closed
  connection without response");
- ``stall``: nothing is lost, nothing is delivered: bytes are held both ways, on open
  and new connections, until the fault ends (a read timeout if it lasts long enough).

``injected`` counts the faults by kind, for reports.  Threads, like the forwarder.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import Counter
from typing import Literal

from hafence.lab.netcut import Forwarder

Fault = Literal["reset", "reject", "stall"]
FAULTS: tuple[Fault, ...] = ("reset", "reject", "stall")


class FaultProxy(Forwarder):
    def __init__(self, target_host: str, target_port: int, name: str = "faultproxy") -> None:
        super().__init__(target_host, target_port, name)
        self.fault: Fault | None = None
        self.injected: Counter[str] = Counter()
        self._timer: threading.Timer | None = None

    def inject(self, fault: Fault, seconds: float | None = None) -> None:
        """Start ``fault`` now; with ``seconds`` it ends by itself after that long."""
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {', '.join(FAULTS)}, got {fault!r}")
        self.restore()
        self.fault = fault
        self.injected[fault] += 1
        if fault == "stall":
            self.stall()
        else:
            self.cut()
        if seconds is not None:
            self._timer = threading.Timer(seconds, self.restore)
            self._timer.daemon = True
            self._timer.start()

    def restore(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self.fault = None
        super().restore()

    def cut(self) -> None:
        if self.fault != "reject":
            super().cut()
            return
        with self._lock:
            self._cut = True
            conns, self._conns = self._conns, set()
        for s in conns:
            _close(s)

    def _refuse(self, client: socket.socket) -> None:
        if self.fault == "reject":
            _close(client)
        else:
            super()._refuse(client)

    def close(self) -> None:
        self.restore()
        super().close()


def _close(sock: socket.socket) -> None:
    """A clean close (FIN): the peer reads end-of-file, not a reset."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
