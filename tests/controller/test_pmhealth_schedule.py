"""The power-management health check's schedule, with the real core: spread over the
interval, one check at a time per BMC, never for a host in an outage."""

from __future__ import annotations

import asyncio
from typing import Any

from hafence.api.host import HostStatus
from hafence.controller.cache import Cache
from hafence.controller.metrics import Metrics
from hafence.controller.pmhealth import PMHealth, offset
from hafence.core import messages as m
from hafence.core.engine import Engine
from hafence.core.policy import Settings
from tests.core.core_helpers import host_spec


def agent(name: str, host: str, port: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "dc", "resourceVersion": "1"},
        "spec": {"hostRef": {"name": host}, "type": "ipmilan", "address": "10.0.0.9", "port": port},
    }


def scheduled(engine: Engine, cache: Cache, now: float) -> list[str]:
    """The agents whose check the scheduler starts at ``now`` (started at 0)."""

    async def run() -> list[str]:
        pm = PMHealth(None, cache, None, Metrics(), {"dc": engine}, 60.0)  # type: ignore[arg-type]
        pm._schedule(0.0, now)
        names = sorted(t.get_name().removeprefix("pm-") for t in pm._tasks)
        for task in list(pm._tasks):
            task.cancel()
        await asyncio.gather(*pm._tasks, return_exceptions=True)
        return names

    return asyncio.run(run())


def test_spread_rate_limited_and_never_during_an_outage() -> None:
    engine = Engine(Settings(startup_quiet_period=0.0))
    engine.handle(m.HostObserved(0.0, "up", host_spec(), status=HostStatus(phase="Up")))
    engine.handle(m.HostObserved(0.0, "up2", host_spec(), status=HostStatus(phase="Up")))
    out = HostStatus(phase="Fencing")
    engine.handle(m.HostObserved(0.0, "down", host_spec(), status=out))
    assert engine.hosts["down"].phase.value == "Fencing"
    cache = Cache()
    cache.put("FenceAgent", agent("up-ipmi", "up", 623))
    cache.put("FenceAgent", agent("down-ipmi", "down", 624))
    # Two hosts behind one device (a PDU's two outlets): the same address and port.
    cache.put("FenceAgent", agent("up2-pdu-a", "up2", 161))
    cache.put("FenceAgent", agent("up2-pdu-b", "up2", 161))

    offsets = [offset("dc", n, 60.0) for n in ("up-ipmi", "down-ipmi", "up2-pdu-a")]
    assert all(0 <= o < 60 for o in offsets) and len(set(offsets)) == 3
    # Halfway through the interval, only the agents whose point has come are checked.
    early = {n for n in ("up-ipmi",) if offset("dc", n, 60.0) <= 30.0}
    assert {n for n in scheduled(engine, cache, 30.0) if n == "up-ipmi"} == early
    started = scheduled(engine, cache, 60.0)  # every agent is due by the interval's end
    assert "down-ipmi" not in started  # the fencing path owns that BMC now
    assert "up-ipmi" in started
    assert len([n for n in started if n.startswith("up2-pdu")]) == 1, started
