"""fence_kdump's listener, for many hosts at once: who is dumping, since when.

A host that crashes into its kdump kernel runs ``fence_kdump_send`` there, which
sends a UDP datagram (port 7410 by default) every ``--interval`` seconds (10 s by
default) to each node it is given.  The datagram is fence-agents' ``fence_kdump_msg``
(``agents/kdump/message.h``): two 32-bit words, the magic ``0x1B302A40`` and the
version ``1``, in the sender's byte order (little-endian from x86; checked with a
capture of Debian's sender on loopback: ``40 2a 30 1b 01 00 00 00``).

Why not Debian's ``fence_kdump`` itself: it binds the port for one invocation and
waits for one node, so two hosts fenced at once would fight for the port, and it
cannot tell the operator what it has seen before it was started.  One
:class:`KdumpListener` serves every host: it records, per sender address, the time
of the first and the last valid message of the current dump.

What counts: a datagram of exactly 8 bytes with the magic and version 1 (either byte
order: the C agent compares in its own, so a big-endian host talking to a
little-endian one would otherwise never be heard), from a source address the
operator declared with :meth:`KdumpListener.watch`.  A datagram from any other
address is not proof of anything and is only counted in ``ignored`` — which also
keeps memory bounded by the declared hosts.  The message carries no secret: like
fence_kdump, the proof is only as good as the network's protection against spoofed
source addresses (send kdump messages over the management network).
"""

from __future__ import annotations

import asyncio
import ipaddress
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from hafence.fencing.errors import FenceError

MAGIC = 0x1B302A40
VERSION = 1
DEFAULT_PORT = 7410
# fence_kdump_send sends every 10 s by default; three missed messages end a dump
# (oVirt waits 30 s, its KdumpStartedTimeout, for the first one).
DEFAULT_FRESH = 30.0
_LE = struct.pack("<II", MAGIC, VERSION)
_BE = struct.pack(">II", MAGIC, VERSION)


def host_address(value: str) -> str:
    """The canonical text of an IP address (IPv4-mapped IPv6 as IPv4); ValueError if not."""
    try:
        ip = ipaddress.ip_address(value.strip().strip("[]").split("%", 1)[0])
    except ValueError:
        raise ValueError(
            f"kdump: host address {value!r} is not an IP address "
            "(fence_kdump messages are matched by source address, e.g. 192.0.2.10 or 2001:db8::10)"
        ) from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def parse(datagram: bytes) -> str | None:
    """None for a valid fence_kdump message, else why it is not one."""
    if len(datagram) != len(_LE):
        return "size"
    if datagram in (_LE, _BE):
        return None
    if datagram[:4] in (_LE[:4], _BE[:4]):
        return "version"
    return "magic"


@dataclass
class Dump:
    first: float  # first message of this dump (clock of the listener)
    last: float  # latest message
    messages: int


class KdumpListener(asyncio.DatagramProtocol):
    """``async with KdumpListener(port=7410) as kd: kd.watch(addr); kd.dumping_since(addr)``.

    ``clock`` gives the times it records and compares (monotonic by default; the
    caller's ``since`` arguments must be on the same clock).  ``fresh``: a dump whose
    last message is older than this is over (the host stopped sending: dump done,
    rebooted, or it never was).
    """

    def __init__(
        self,
        bind: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        fresh: float = DEFAULT_FRESH,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bind = host_address(bind)
        self.port = port
        self.fresh = fresh
        self.clock = clock
        self.ignored: Counter[str] = Counter()  # reason -> datagrams: address, magic, ...
        self._watched: set[str] = set()
        self._dumps: dict[str, Dump] = {}
        self._waiters: dict[str, set[asyncio.Future[float]]] = {}
        self._transport: asyncio.DatagramTransport | None = None

    # -- lifecycle ----------------------------------------------------------------
    async def start(self) -> KdumpListener:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=(self.bind, self.port)
        )
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]  # port 0: the one chosen
        return self

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(FenceError("kdump listener closed"))
        self._waiters.clear()

    async def __aenter__(self) -> KdumpListener:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the hosts ----------------------------------------------------------------
    def watch(self, address: str) -> str:
        """Accept messages from this host address from now on; returns its canonical form."""
        canonical = host_address(address)
        self._watched.add(canonical)
        return canonical

    def unwatch(self, address: str) -> None:
        canonical = host_address(address)
        self._watched.discard(canonical)
        self._dumps.pop(canonical, None)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        try:
            sender = host_address(str(addr[0]))
        except ValueError:
            self.ignored["address"] += 1
            return
        if sender not in self._watched:
            self.ignored["address"] += 1
            return
        why = parse(data)
        if why is not None:
            self.ignored[why] += 1
            return
        now = self.clock()
        dump = self._dumps.get(sender)
        if dump is None or now - dump.last > self.fresh:
            self._dumps[sender] = Dump(now, now, 1)
        else:
            dump.last = now
            dump.messages += 1
        for waiter in self._waiters.pop(sender, set()):
            if not waiter.done():
                waiter.set_result(now)

    # -- what the operator asks -----------------------------------------------------
    def last_message(self, address: str) -> float | None:
        dump = self._dumps.get(host_address(address))
        return None if dump is None else dump.last

    def dumping_since(self, address: str) -> float | None:
        """When the host's current dump began (its first message), or None.

        None when no valid message came from this address within ``fresh`` seconds.
        """
        dump = self._dumps.get(host_address(address))
        if dump is None or self.clock() - dump.last > self.fresh:
            return None
        return dump.first

    async def wait_for_dump(
        self,
        address: str,
        timeout: float,  # noqa: ASYNC109 — fence_kdump's own timeout, the level's bound
        since: float | None = None,
    ) -> float | None:
        """fence_kdump's "off": the time of a message at or after ``since`` arriving
        within ``timeout`` seconds, or None.  A message already received at or after
        ``since`` answers at once (the host may have started dumping before the
        operator asked)."""
        canonical = host_address(address)
        if canonical not in self._watched:
            raise ValueError(f"kdump: {canonical} is not watched; watch() it first")
        last = self.last_message(canonical)
        if since is not None and last is not None and last >= since:
            return last
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(canonical, set()).add(waiter)
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return None
        finally:
            waiters = self._waiters.get(canonical)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[canonical]
