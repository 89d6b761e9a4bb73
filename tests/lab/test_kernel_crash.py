"""The lab's kernel-crash host mode against the operator's kdump listener.

The host's crash kernel is Debian's fence_kdump_send; the listener is
hafence.fencing.kdump.  The host side only; the kdump level through the operator is
tests/e2e/test_scenarios.py (kernel-crash) and tests/operator/test_kdump_waits.py.
"""

from __future__ import annotations

import asyncio

import pytest

from hafence.fencing.kdump import KdumpListener
from hafence.kube import Api
from hafence.lab.datacenter import Datacenter
from hafence.lab.kdump import SENDER
from tests.agent.helpers import wait_for
from tests.lab.test_lab_parts import _boot_id, datacenter  # noqa: F401 - the fixture

pytestmark = [
    pytest.mark.controlplane,
    pytest.mark.skipif(not SENDER.exists(), reason="Debian's fence_kdump_send not installed"),
]


async def test_kernel_crash_sends_kdump_messages_then_reboots(
    datacenter: Datacenter,  # noqa: F811
    api: Api,
    namespace: str,
) -> None:
    dc = datacenter
    hv1, hv2 = dc.hosts["hv-1"], dc.hosts["hv-2"]
    assert hv1.address != hv2.address
    first_boot = await asyncio.to_thread(
        wait_for, lambda: _boot_id(api, namespace, "hv-1"), what="hv-1's lease"
    )
    api.patch("HAVirtualMachine", namespace, "ha-1",
              {"status": {"host": "hv-1", "placementEpoch": 1, "phase": "Scheduled"}},
              status=True)  # fmt: skip
    await asyncio.to_thread(
        wait_for,
        lambda: [h for _, k, h in dc.vm_processes() if k.endswith("/ha-1")] == ["hv-1"],
        what="ha-1 running on hv-1",
    )
    agent = hv1.agent
    async with KdumpListener(port=0) as kd:
        kd.watch(hv1.address)
        kd.watch(hv2.address)
        since = asyncio.get_running_loop().time()
        dc.crash_kernel("hv-1", ("127.0.0.1", kd.port), dump_seconds=2)

        # The crash kernel runs no VM and no agent; the chassis is still on.
        assert not [k for _, k, h in dc.vm_processes() if h == "hv-1"], "a VM survived"
        assert agent is not None and agent.poll() is not None, "the agent survived"
        assert hv1.bmc.power == "on" and hv1.bmc.action_names == []
        assert (hv1.dir / "unreachable").exists(), "no sshd in a kdump initrd"

        seen = await kd.wait_for_dump(hv1.address, timeout=10, since=since)
        assert seen is not None, "no fence_kdump message from the crashed host"
        assert kd.dumping_since(hv1.address) is not None
        assert kd.dumping_since(hv2.address) is None, "hv-2 did not crash"
        assert sum(kd.ignored.values()) == 0

        # After the dump the host reboots: a new boot ID, the sender gone.
        await asyncio.to_thread(
            wait_for,
            lambda: (b := _boot_id(api, namespace, "hv-1")) != first_boot and b,
            timeout=30,
            what="hv-1 back with a new boot ID",
        )
        assert hv1.kdump is None and hv1.dumps == 1 and hv1.dumps_interrupted == 0
        assert not (hv1.dir / "unreachable").exists()

        # A power-off during a dump ends it: the lab counts what the level must avoid.
        dc.crash_kernel("hv-2", ("127.0.0.1", kd.port), dump_seconds=60)
        assert await kd.wait_for_dump(hv2.address, timeout=10) is not None
        hv2.bmc.set_power("off")
        assert hv2.kdump is None and hv2.dumps_interrupted == 1


def test_sender_addresses_are_per_host() -> None:
    from hafence.lab.kdump import host_address

    assert [host_address(i) for i in range(3)] == ["127.0.0.10", "127.0.0.11", "127.0.0.12"]
    with pytest.raises(ValueError):
        host_address(240)
