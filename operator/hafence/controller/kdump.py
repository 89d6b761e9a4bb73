"""The core's kdump levels in the operator: WaitForKdump actions on the shared listener.

The operator listens itself (``--kdump-listen HOST:PORT``, one UDP socket for every
namespace, :class:`hafence.fencing.kdump.KdumpListener`) rather than through a fence
proxy: fence_kdump_send in a crashed host's kdump initrd sends to the addresses its
kdump.conf names (``fence_kdump_nodes``), before any SSH or agent could relay them, so
the listener must be an address the hosts' management network reaches; nothing is
gained by running Debian's one-node ``fence_kdump`` on a proxy host, and a proxy would
be one more machine whose word becomes fence proof.

What a message must be to count (the trust model, docs/kdump.md):

- sent from the address a kdump FenceAgent of *this* host declares (``spec.address``,
  an IP address: the schema refuses names).  The listener ignores every other source
  address.  An address also declared for another Host (its ``spec.address`` or one of
  its kdump FenceAgents) cannot tell the two apart: the level fails, saying so;
- fence-agents' magic and version (``fencing/kdump.py``);
- received after the core issued the wait (``since``) and within the agent's timeout;
- and the host's lease still expired when it arrives: the Lease is re-read first
  (``lease_guard.py``), so a host that renews is never taken for a dumping one.

A message carries no secret: the proof is as good as the management network's
protection against spoofed UDP source addresses, as with fence_kdump itself.  The
FenceAgent's ``port`` (if set) must be the listener's: a host that sends elsewhere is
never heard, and that misconfiguration is named rather than waited out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from hafence.api.fenceagent import KDUMP_TYPES
from hafence.controller import clock
from hafence.controller.cache import Cache
from hafence.controller.inflight import InFlight
from hafence.controller.leader import NotLeader
from hafence.controller.lease_guard import LeaseGuard
from hafence.core import messages as m
from hafence.fencing.kdump import KdumpListener, host_address

log = logging.getLogger(__name__)

Feed = Callable[[m.Input], Awaitable[None]]


class KdumpWaits:
    """One task per WaitForKdump; each ends with a KdumpResult fed to the core."""

    def __init__(
        self,
        namespace: str,
        cache: Cache,
        feed: Feed,
        guard: LeaseGuard,
        listener: KdumpListener | None,
    ) -> None:
        self.namespace = namespace
        self.cache = cache
        self.feed = feed
        self.guard = guard
        self.listener = listener
        self.inflight = InFlight()

    def start(self, action: m.WaitForKdump) -> None:
        self.inflight.start(action.op_id, self._run(action), "WaitForKdump")

    def timed_out(self, action: m.StepTimedOut) -> None:
        self.inflight.stop(action.op_id)

    async def cancel(self) -> None:
        await self.inflight.stop_all()

    async def _run(self, action: m.WaitForKdump) -> None:
        try:
            result = await self._wait(action)
        except Exception as exc:  # a bug here must not leave the level without a result
            log.exception("kdump wait for host %s/%s failed", self.namespace, action.host)
            result = self._result(action, False, "", f"{type(exc).__name__}: {exc}")
        try:
            await self.feed(result)
        except NotLeader as exc:  # the next leader waits again (nothing is in flight)
            log.warning("kdump result for %s not taken: %s", action.host, exc)

    def _result(self, action: m.WaitForKdump, seen: bool, agent: str, why: str) -> m.KdumpResult:
        return m.KdumpResult(clock.now(), action.host, action.op_id, seen, agent, why)

    async def _wait(self, action: m.WaitForKdump) -> m.KdumpResult:
        listener = self.listener
        if listener is None:
            return self._result(
                action,
                False,
                "",
                "the operator runs no fence_kdump listener (start it with --kdump-listen "
                "HOST:PORT, e.g. 0.0.0.0:7410)",
            )
        addresses: dict[str, str] = {}  # canonical address -> agent
        problems: list[str] = []
        for name in action.agents:
            address, problem = self._address(name, action.host, listener.port)
            if problem is not None:
                problems.append(f"{name}: {problem}")
            elif address is not None:
                addresses[listener.watch(address)] = name
        if not addresses:
            return self._result(action, False, "", "; ".join(problems) or "no kdump agent")
        waits = {
            asyncio.create_task(listener.wait_for_dump(a, action.timeout, since=action.since)): a
            for a in addresses
        }
        seen: tuple[str, float] | None = None
        try:
            pending = set(waits)
            while pending and seen is None:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    at = task.result()
                    if at is not None and seen is None:
                        seen = (waits[task], at)
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        if seen is None:
            why = (
                f"no fence_kdump message from {', '.join(sorted(addresses))} within "
                f"{action.timeout:g}s"
            )
            return self._result(action, False, "", "; ".join([why, *problems]))
        address, at = seen
        # S5's boundary: a renewal the watch has not delivered goes to the core first, so
        # a host that renews its lease is never taken for one in its crash kernel.
        await self.guard.renewed_unseen(action.host)
        agent = addresses[address]
        waited = max(at - action.since, 0.0)
        return self._result(
            action, True, agent, f"fence_kdump message from {address} ({agent}) after {waited:.1f}s"
        )

    def _address(self, name: str, host: str, port: int) -> tuple[str | None, str | None]:
        """The agent's source address, or why it cannot be listened for."""
        obj = self.cache.get("FenceAgent", self.namespace, name)
        spec = (obj or {}).get("spec") or {}
        if obj is None:
            return None, "fence agent no longer declared"
        if spec.get("type") not in KDUMP_TYPES:
            return None, f"type {spec.get('type')!r} is not kdump"
        try:
            address = host_address(str(spec.get("address", "")))
        except ValueError as exc:
            return None, f"spec.address: {exc}"
        declared = spec.get("port")
        if declared is not None and int(declared) != port:
            return None, (
                f"spec.port {declared}: the operator's listener is on UDP port {port} "
                "(--kdump-listen); the host's kdump messages would never be heard"
            )
        other = self._claimed_by_other(address, host)
        if other is not None:
            return None, (
                f"spec.address {address} is also declared for host {other}: a message "
                "from it cannot tell the two hosts apart"
            )
        return address, None

    def _claimed_by_other(self, address: str, host: str) -> str | None:
        for obj in self.cache.of_kind("Host", self.namespace):
            name = obj["metadata"]["name"]
            if name != host and _same(str((obj.get("spec") or {}).get("address", "")), address):
                return str(name)
        for obj in self.cache.of_kind("FenceAgent", self.namespace):
            spec = obj.get("spec") or {}
            owner = str((spec.get("hostRef") or {}).get("name", ""))
            if (
                owner != host
                and spec.get("type") in KDUMP_TYPES
                and _same(str(spec.get("address", "")), address)
            ):
                return owner
        return None


def _same(value: str, address: str) -> bool:
    try:
        return host_address(value) == address
    except ValueError:
        return False  # a host name: never the same as an IP address
