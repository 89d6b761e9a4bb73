"""Self-fencing in the lab: real agents, their watchdog stand-ins (firing = the virtual
host's reset, a new boot ID), the peer check, the operator at ``--profile lab``.

Every Host self-fences with a 5 s watchdog; the victims' BMCs are deaf, so hard
fencing cannot move anything.  What must hold (the 100 ms sampler of VM processes):

- a hung (SIGSTOP) or crashed (SIGKILL) agent: no HA VM of it starts elsewhere while
  its first process runs; its VMs run again only after the stand-in fired and the host
  came back with a new boot ID, or after other proof;
- an API-server outage (every agent cut off) of twice the timeout: no VM killed
  anywhere, no stand-in fires.

One lab for the module, three hosts.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hafence.lab.runner import Lab, LabConfig

TIMEOUT = 5


@pytest.fixture(scope="module")
def lab(kubeconfig: str) -> Iterator[Lab]:
    lab = Lab(
        LabConfig(
            hosts=3,
            kubeconfig=Path(kubeconfig),
            out=sys.stdout,
            spinner=False,
            self_fencing=TIMEOUT,
        )
    )
    try:
        lab.start()
        assert lab.dc is not None
        # Every agent has listed all its peers (they list every --peer-refresh).
        until = time.monotonic() + 2 * lab.dc.timings.peer_refresh + 1
        lab.wait_for("agents knowing their peers", lambda: time.monotonic() >= until, 10)
        yield lab
    finally:
        if lab.operator is not None and lab.operator.poll() is None:
            print("\n--- operator log (tail) ---\n" + lab.log_tail("operator.log", 40))
        lab.close()


def victim(lab: Lab) -> tuple[str, dict[str, int]]:
    """A host running an HA VM, and the PIDs of its HA VMs."""
    assert lab.checker is not None
    for name in sorted(lab.dc.hosts if lab.dc else {}):
        pids = {
            s.name: s.pid
            for s in lab.checker.sightings
            if s.host == name and s.gone is None and s.name.startswith("ha-")
        }
        if pids:
            return name, pids
    raise AssertionError("no host runs an HA VM")


def assert_no_early_start(lab: Lab, host: str, pids: dict[str, int], t0: float) -> None:
    """No HA VM of ``host`` started anywhere else while its first process lived."""
    assert lab.checker is not None
    assert not lab.checker.violations, [v.describe() for v in lab.checker.violations]
    for name, pid in pids.items():
        first = next(s for s in lab.checker.sightings if s.pid == pid)
        for s in lab.checker.started_between({name}, t0, time.monotonic()):
            if s.host != host:
                assert first.gone is not None and s.first_seen >= first.gone, (
                    f"{name} started on {s.host} at {s.first_seen:.2f} while pid {pid} on "
                    f"{host} ran (gone {first.gone})"
                )


def hung_or_crashed(lab: Lab, fault: str) -> None:
    assert lab.dc is not None
    lab.wait_steady()
    host, pids = victim(lab)
    vh = lab.dc.hosts[host]
    vh.bmc.dead = True  # hard fencing cannot work: only self-fencing may release VMs
    old_boot, resets, restarts = vh.boot_id, vh.watchdog_resets, vh.agent_restarts
    assert vh.watchdog is not None and vh.watchdog.running, "the device was never armed"
    t0 = lab.timeline.fault(host, f"agent {fault}; BMC deaf")
    try:
        if fault == "SIGSTOP":
            lab.dc.freeze_agent(host)
        else:
            lab.dc.crash_agent(host)

        def back() -> bool:
            assert lab.watchers is not None
            return lab.steady() and all(
                lab.watchers.vm_state.get(n, ("", ""))[0] == "Running" for n in pids
            )

        if fault == "SIGSTOP":
            # A frozen agent feeds nothing: the device must fire and reset the host.
            lab.wait_for(f"{host}'s watchdog to fire", lambda: vh.watchdog_resets > resets, 60)
        else:
            # The crash closed the device without the magic 'V': it fires, unless soft
            # fencing brought an agent back first (which feeds it again).
            lab.wait_for(
                f"{host}'s watchdog to fire or its agent to come back",
                lambda: vh.watchdog_resets > resets or vh.agent_restarts > restarts,
                60,
            )
        lab.wait_for(f"{host}'s HA VMs running again", back, 90)
    finally:
        vh.bmc.dead = False
    assert_no_early_start(lab, host, pids, t0)
    for name, pid in pids.items():
        first = next(s for s in lab.checker.sightings if s.pid == pid)  # type: ignore[union-attr]
        moved = [
            s
            for s in lab.checker.started_between({name}, t0, time.monotonic())  # type: ignore[union-attr]
            if s.pid != pid
        ]
        if moved:
            # They ran again only after the device fired and the host came back with a
            # new boot ID: the one way out with a deaf BMC and no confirmation.
            assert vh.watchdog_resets > resets and vh.boot_id != old_boot, (
                f"{name} restarted without the stand-in firing"
            )
            assert first.gone is not None


def test_hung_agent_never_doubles_a_vm(lab: Lab) -> None:
    hung_or_crashed(lab, "SIGSTOP")


def test_crashed_agent_never_doubles_a_vm(lab: Lab) -> None:
    hung_or_crashed(lab, "SIGKILL")


def test_api_server_outage_of_twice_the_timeout_kills_nothing(lab: Lab) -> None:
    assert lab.dc is not None and lab.checker is not None
    lab.wait_steady()
    # An agent the previous test had restarted (soft fence) learns its peers from its
    # first renewals: a few lease periods, so the outage meets every agent settled.
    time.sleep(3 * lab.config.agent_lease)
    live = {s.pid for s in lab.checker.sightings if s.gone is None}
    resets = {h.name: h.watchdog_resets for h in lab.dc.hosts.values()}
    t0 = lab.timeline.fault("all", f"every agent cut off from the API server for {2 * TIMEOUT}s")
    for name in lab.dc.hosts:
        lab.dc.cut_network(name)
    try:
        lab.wait_for("the outage", lambda: time.monotonic() >= t0 + 2 * TIMEOUT, 3 * TIMEOUT)
    finally:
        for name in lab.dc.hosts:
            lab.dc.restore_network(name)
    lab.wait_steady()
    gone = [s for s in lab.checker.sightings if s.pid in live and s.gone is not None]
    assert not gone, [f"{s.name} on {s.host}" for s in gone]
    assert {h.name: h.watchdog_resets for h in lab.dc.hosts.values()} == resets
    logs = "".join(h.agent_log.read_text() for h in lab.dc.hosts.values())
    assert "lost the API server too: an outage" in logs, "the peer check never ran"
