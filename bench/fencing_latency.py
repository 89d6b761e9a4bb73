"""Fencing driver latencies against the local simulators (all on 127.0.0.1).

Prints, per driver, the median and min-max of several runs of ``status`` and of
``off`` followed by ``on`` (each verified by polling, as the operator does).  Peers:
simulated IPMI BMCs (pyghmi server side), Debian's fence_ipmilan, sushy-tools'
Redfish emulator (fake driver, TLS, power changes applied without the emulator's
random 1-11 s delay), a real sshd for the fence proxy and soft fencing, Debian's
fence_kdump_send against the kdump listener, the lab's
iLO2 emulator (RIBCL over TLS) with Debian's fence_ilo2 and the article's options, and
the lab's APC PDU emulator (SNMP v1) with fence_apc_snmp, alone and as the two-PDU
concurrent group (off needs both outlets off).

    .venv/bin/python bench/fencing_latency.py [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable

from hafence.fencing.drivers import build_driver
from hafence.fencing.groups import run_group
from hafence.fencing.kdump import KdumpListener
from hafence.fencing.protocol import Credentials, FenceDriver
from hafence.fencing.ssh import soft_fence
from hafence.lab.bmc import BmcFarm
from hafence.lab.ilo2 import POWER_PRIV, Ilo2
from hafence.lab.pdu import ApcPdu, DualFeed
from hafence.lab.redfish import RedfishEmulator
from hafence.lab.sshd import Sshd
from hafence.lab.targets import fence_agent_spec, ssh_target

USER, PASSWORD = "admin", "bench-Pa55word"
KDUMP_SENDER = "/usr/libexec/fence-agents/fence_kdump_send"  # Debian's fence-agents
HAS_KDUMP_SENDER = os.path.exists(KDUMP_SENDER)


# Generous driver timeouts: a slow run is a figure, not a failure.
spec = functools.partial(fence_agent_spec, timeoutSeconds=10, powerWaitSeconds=10)


async def measure(fn: Callable[[], Awaitable[object]], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - start)
    return out


def fmt(samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return f"{statistics.median(ms):8.1f} ms  ({min(ms):.1f}-{max(ms):.1f})"


ONLY: list[str] = []  # --only: run the rows whose name contains one of these


def wanted(name: str) -> bool:
    return not ONLY or any(word in name for word in ONLY)


async def bench_driver(name: str, driver: FenceDriver, runs: int) -> None:
    if not wanted(name):
        return
    status = await measure(driver.status, runs)
    offs: list[float] = []
    ons: list[float] = []
    for _ in range(runs):
        offs += await measure(driver.off, 1)
        ons += await measure(driver.on, 1)
    print(f"{name:34s} status {fmt(status)}   off->verified {fmt(offs)}   on->verified {fmt(ons)}")


async def main(runs: int) -> None:
    creds = Credentials(USER, PASSWORD)
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, runs={runs}"
    )
    print(
        "# median (min-max); off/on->verified: the request, then polling status until the "
        "state is seen (poll interval 0.25 s), as the operator's fence step does"
    )
    with BmcFarm() as farm, Sshd() as sshd:
        bmc = farm.add("bench", USER, PASSWORD)
        await bench_driver(
            "ipmilan (native, pyghmi)", build_driver(spec("ipmilan", bmc.port), creds), runs
        )
        await bench_driver(
            "fence_ipmilan (fence-agents)",
            build_driver(spec("fence_ipmilan", bmc.port, options="lanplus=yes"), creds),
            runs,
        )
        proxy = ssh_target(sshd, name="proxy")
        await bench_driver(
            "fence_ipmilan via SSH fence proxy",
            build_driver(spec("ipmilan", bmc.port), creds, proxy),
            runs,
        )
        if wanted("ssh soft fence"):
            soft = await measure(lambda: soft_fence(proxy, "true", 10), runs)
            print(f"{'ssh soft fence (command `true`)':34s} run    {fmt(soft)}")
    with RedfishEmulator(USER, PASSWORD, power_delay=0) as rf:
        await bench_driver(
            "redfish (native, TLS insecure)",
            build_driver(spec("redfish", rf.port, options="ssl_insecure=yes"), creds),
            runs,
        )
        os.environ["SSL_CERT_FILE"] = str(rf.cert)
        await bench_driver(
            "redfish (native, TLS verified)", build_driver(spec("redfish", rf.port), creds), runs
        )
    await bench_emulated_devices(creds, runs)
    await bench_kdump(runs)


async def bench_kdump(runs: int) -> None:
    """Debian's fence_kdump_send started -> the listener has the host's message."""
    name = "kdump (fence_kdump_send -> listener)"
    if not wanted(name) or not HAS_KDUMP_SENDER:
        return
    async with KdumpListener(port=0) as kd:
        kd.watch("127.0.0.1")

        async def one() -> None:
            since = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                KDUMP_SENDER, f"--ipport={kd.port}", "--count=1", "127.0.0.1"
            )
            assert await kd.wait_for_dump("127.0.0.1", 10, since=since) is not None
            await proc.wait()

        print(f"{name:34s} seen   {fmt(await measure(one, runs))}")


async def bench_emulated_devices(creds: Credentials, runs: int) -> None:
    with Ilo2("bench", {USER: (PASSWORD, frozenset({POWER_PRIV}))}) as ilo:
        article = "ssl=yes,ssl_insecure=yes,inet4_only=yes"
        await bench_driver(
            "fence_ilo2 (iLO2 emulator, TLS)",
            build_driver(spec("ilo2", ilo.port, options=article), creds),
            runs,
        )
    with ApcPdu("pdu-a") as a, ApcPdu("pdu-b") as b:
        DualFeed("bench", [(pdu, pdu.add_outlet(1, "bench")) for pdu in (a, b)])
        pdu_spec = {"options": "snmp_version=1"}  # the community is the password
        pdu_creds = Credentials(USER, "private")
        drivers = [
            build_driver(spec("apc_snmp", pdu.port, plug="1", **pdu_spec), pdu_creds)
            for pdu in (a, b)
        ]
        await bench_driver("fence_apc_snmp (PDU emulator)", drivers[0], runs)
        status = await measure(lambda: run_group(drivers, "status"), runs)

        async def off_on() -> None:
            assert (await run_group(drivers, "off")).ok
            assert (await run_group(drivers, "on")).ok

        cycle = await measure(off_on, runs)
        print(f"{'apc_snmp PDU pair (group of 2)':34s} status {fmt(status)}   off->on {fmt(cycle)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--only", action="append", default=[], help="rows whose name contains this (repeatable)"
    )
    args = parser.parse_args()
    ONLY.extend(args.only)
    asyncio.run(main(args.runs))
