"""Simulated BMCs speaking real IPMI 2.0 (RMCP+) over UDP on loopback.

Built on pyghmi's server side (:class:`pyghmi.ipmi.bmc.Bmc`).  A :class:`BmcFarm` runs
several BMCs on different ports in this process, served by one thread.  Each
:class:`SimulatedBmc` has a power state, records every action it receives, calls
``on_power_change(state)`` when its power changes (the lab kills or starts a virtual
host there), and has switches to play failures: ``dead`` (no answer at all) and
``stop_answering_after`` (answer N more chassis-control commands, then go silent —
a BMC that dies mid-operation).  ``sessions_opened`` counts the RMCP+ sessions
clients opened (the drivers' one-session-per-operation promise is checked on it).

pyghmi's client proposes SHA-256 cipher suites first, and pyghmi's BMC would answer
them with a SHA-1 session it then fails to complete; this simulator refuses any
non-SHA1 proposal (RMCP+ status 0x11) so clients fall back to cipher suite 3, as
they do against real BMCs that lack SHA-256.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import pyghmi.ipmi.bmc as pyghmi_bmc
import pyghmi.ipmi.private.serversession as serversession
import pyghmi.ipmi.private.session as ipmisession

from hafence.fencing import pyghmi_io
from hafence.lab.ports import free_udp_port
from hafence.lab.power import PowerCallback, SimulatedPower

log = logging.getLogger(__name__)

_SHA1 = 1  # RMCP+ authentication and integrity algorithm numbers for HMAC-SHA1(-96)
_NO_MATCHING_AUTH = 0x11


class _Session(serversession.ServerSession):  # type: ignore[misc]
    """A server session that refuses non-SHA1 proposals and can play dead."""

    bmc: SimulatedBmc

    def create_open_session_response(self, request: Any) -> Any:
        auth, integrity = request[12], request[20]
        if auth != _SHA1 or integrity != _SHA1:
            self.bmc.refused_proposals += 1
            return bytearray([request[0], _NO_MATCHING_AUTH, 0, 0]) + request[4:8]
        self.bmc.sessions_opened += 1
        return super().create_open_session_response(request)

    def process_pktqueue(self) -> None:
        if self.bmc.dead:
            self.pktqueue.clear()
            return
        super().process_pktqueue()

    def sessionless_data(self, data: Any, sockaddr: Any) -> None:
        # pyghmi routes a new client on a reused source port here; the BMC handles it.
        self.bmc.sessionless_data(data, sockaddr)


class SimulatedBmc(pyghmi_bmc.Bmc, SimulatedPower):  # type: ignore[misc]
    def __init__(
        self,
        name: str,
        port: int,
        users: dict[str, str],
        power: str = "on",
        on_power_change: PowerCallback | None = None,
        power_delay: float = 0.0,
    ) -> None:
        _ensure_anchor()
        pyghmi_bmc.Bmc.__init__(self, users, port=port, address="127.0.0.1")
        _wake_io_thread()  # so the I/O thread's select() includes the new socket
        SimulatedPower.__init__(self, name, power, on_power_change, power_delay)
        self.stop_answering_after: int | None = None
        self.refused_proposals = 0
        self.sessions_opened = 0  # RMCP+ Open Session requests accepted (one per login)

    # -- failure switches -----------------------------------------------------------
    def sessionless_data(self, data: Any, sockaddr: Any) -> None:
        if self.dead:
            return
        data = bytearray(data)
        if (
            len(data) >= 22
            and data[0] == 6
            and data[2:4] == b"\xff\x07"
            and data[4] == 6
            and data[5] == 16
        ):
            _Session(
                self.authdata, self.kg, sockaddr, self.serversocket, data[16:], self.uuid, bmc=self
            )
            return
        super().sessionless_data(data, sockaddr)

    # -- power ----------------------------------------------------------------------
    def _record(self, name: str, new_power: str | None) -> None:
        if self.stop_answering_after is not None:
            self.stop_answering_after -= 1
            if self.stop_answering_after < 0:
                self.dead = True
        self.record(name, new_power)

    def get_power_state(self) -> str:
        return self.power

    def power_off(self) -> None:
        self._record("off", "off")

    def power_on(self) -> None:
        self._record("on", "on")

    def power_cycle(self) -> None:
        self._record("cycle", "on")

    def power_reset(self) -> None:
        self._record("reset", None)

    def power_shutdown(self) -> None:
        self._record("shutdown", "off")

    def pulse_diag(self) -> None:
        self._record("diag", None)

    def is_active(self) -> bool:
        return self.power == "on"

    def close(self) -> None:
        sock = self.serversocket
        handlers = ipmisession.Session.bmc_handlers
        handlers.pop(sock, None)
        for clientaddr, by_port in list(handlers.items()):
            if isinstance(by_port, dict) and getattr(by_port.get(self.port), "bmc", None) is self:
                del by_port[self.port]
                if not by_port:
                    handlers.pop(clientaddr, None)
        if sock in ipmisession.iosockets:
            ipmisession.iosockets.remove(sock)
            # pyghmi's I/O thread may be inside select() on this socket: wake it so
            # it re-reads the socket list before the descriptor goes away.
            _wake_io_thread()
            time.sleep(0.05)
        sock.close()


def _ensure_anchor() -> None:
    """Keep a never-closed loopback socket first in pyghmi's socket list.

    pyghmi wakes its I/O thread by sending a byte to ``iosockets[0]``; if that is a
    BMC socket added after the thread entered select(), or one since closed, the
    wake-up is lost and every BMC in the process goes deaf.  An anchor socket that
    outlives all farms keeps the wake-up working.
    """
    # A real BMC answers at once; without this the simulator's own waits lose
    # wake-ups like the client's do.
    pyghmi_io.install()
    if ipmisession.iosockets:
        return
    if ipmisession.myself is None:
        ipmisession.myself = "127.0.0.1"
    family = socket.AF_INET6 if ":" in ipmisession.myself else socket.AF_INET
    anchor = socket.socket(family, socket.SOCK_DGRAM)
    anchor.bind((ipmisession.myself, 0))
    ipmisession.iosockets.append(anchor)


def _wake_io_thread() -> None:
    with contextlib.suppress(OSError):  # its socket is gone: nothing left to wake
        pyghmi_io.wake_io_thread()


@dataclass
class BmcFarm:
    """Several simulated BMCs in this process; a context manager that stops them all."""

    bmcs: dict[str, SimulatedBmc] = field(default_factory=dict)
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def add(
        self,
        name: str,
        username: str,
        password: str,
        *,
        port: int | None = None,
        power: str = "on",
        on_power_change: PowerCallback | None = None,
        power_delay: float = 0.0,
    ) -> SimulatedBmc:
        bmc = SimulatedBmc(
            name, port or free_udp_port(), {username: password}, power, on_power_change, power_delay
        )
        self.bmcs[name] = bmc
        self._start()
        return bmc

    def __getitem__(self, name: str) -> SimulatedBmc:
        return self.bmcs[name]

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="bmc-farm", daemon=True)
            self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                ipmisession.Session.wait_for_rsp(0.2)
            except Exception:  # one malformed exchange must not stop every BMC
                log.exception("simulated BMC farm: error while serving")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        for bmc in self.bmcs.values():
            bmc.close()
        self.bmcs.clear()

    def __enter__(self) -> BmcFarm:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
