"""A virtual host's crash kernel: Debian's fence_kdump_send, from the host's own address.

Every virtual host shares 127.0.0.1 with the others, and fence_kdump_send cannot
choose its source address, so each host's kdump messages leave through a relay of
its own, as through the host's own network interface: fence_kdump_send sends to
the relay on 127.0.0.1, the relay sends each datagram unchanged from the host's
address (``127.0.0.N``, see :func:`host_address`) to the kdump listener.  The
listener therefore tells the hosts apart exactly as it would in a datacenter: by
source address.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
from pathlib import Path

SENDER = Path("/usr/libexec/fence-agents/fence_kdump_send")  # Debian's fence-agents


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 nobody uses right now: the lab operator's kdump listener."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def host_address(index: int) -> str:
    """The loopback address a virtual host's kdump messages come from (index from 0)."""
    if not 0 <= index < 240:
        raise ValueError(f"virtual host index {index} out of range 0..239")
    return f"127.0.0.{index + 10}"


class KdumpSender:
    """``fence_kdump_send`` running for one host until :meth:`stop`."""

    def __init__(
        self, source: str, target: tuple[str, int], interval: int = 1, log: Path | None = None
    ) -> None:
        if not SENDER.exists():
            raise RuntimeError(f"{SENDER} not found: install Debian's fence-agents")
        self.source = source
        self.target = target
        self.relayed = 0
        self._in = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._in.bind(("127.0.0.1", 0))
        self._in.settimeout(0.2)  # so the relay sees stop() (close() does not wake recv)
        self._stopped = threading.Event()
        self._out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._out.bind((source, 0))
        self._thread = threading.Thread(target=self._relay, name=f"kdump-{source}", daemon=True)
        self._thread.start()
        out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                [
                    str(SENDER),
                    f"--ipport={self._in.getsockname()[1]}",
                    f"--interval={interval}",
                    "--count=0",  # until the host reboots, as in the kdump initrd
                    "127.0.0.1",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            if log is not None and not isinstance(out, int):
                out.close()

    def _relay(self) -> None:
        while not self._stopped.is_set():
            try:
                data = self._in.recv(512)
            except TimeoutError:
                continue
            except OSError:
                return
            with contextlib.suppress(OSError):
                self._out.sendto(data, self.target)
                self.relayed += 1

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._stopped.set()
        self._thread.join(timeout=2)
        self._in.close()
        self._out.close()
