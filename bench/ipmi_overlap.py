"""Native IPMI status reads one at a time, and two at once to two simulated BMCs.

The fence step of bench/ttr.py is bimodal (~0.2 s or ~1.1 s): an IPMI operation that
overlaps another host's takes 0.5-1 s longer.  This isolates it: N reads alone, N pairs
at once with both BMCs in this process's farm, and N pairs with the second BMC in a
process of its own (so the lab's shared BMC thread is ruled in or out).

    .venv/bin/python bench/ipmi_overlap.py [--pairs 15]

Prints every duration in ms, sorted.  A figure, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from datetime import UTC, datetime

from hafence.fencing.drivers import build_driver
from hafence.fencing.protocol import Credentials, FenceDriver
from hafence.lab.bmc import BmcFarm
from hafence.lab.ports import free_udp_port
from hafence.lab.targets import fence_agent_spec

USER, PASSWORD = "admin", "bench-Pa55word"
CHILD = (
    "import sys, time\n"
    "from hafence.lab.bmc import BmcFarm\n"
    "farm = BmcFarm()\n"
    "farm.add('b', sys.argv[2], sys.argv[3], port=int(sys.argv[1]))\n"
    "print('up', flush=True)\n"
    "time.sleep(3600)\n"
)


async def timed(driver: FenceDriver) -> float:
    since = time.monotonic()
    await driver.status()
    return time.monotonic() - since


def show(label: str, values: list[float]) -> None:
    print(f"{label:44s} {sorted(round(v * 1000) for v in values)}")


async def main(pairs: int, port: int) -> None:
    creds = Credentials(USER, PASSWORD)
    print(f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, status reads in ms, pairs={pairs}")
    with BmcFarm() as farm:
        a = farm.add("a", USER, PASSWORD)
        b = farm.add("b", USER, PASSWORD)
        da = build_driver(fence_agent_spec("ipmilan", a.port), creds)
        db = build_driver(fence_agent_spec("ipmilan", b.port), creds)
        alone, same = [], []
        for _ in range(pairs):
            alone.append(await timed(da))
            same += await asyncio.gather(timed(da), timed(db))
        show("alone", alone)
        show("two at once, BMCs in one farm", same)
        dc = build_driver(fence_agent_spec("ipmilan", port), creds)
        apart = []
        for _ in range(pairs):
            apart += await asyncio.gather(timed(da), timed(dc))
        show("two at once, second BMC in its own process", apart)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=15)
    args = p.parse_args()
    port = free_udp_port()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(port), USER, PASSWORD], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "up"
        asyncio.run(main(args.pairs, port))
    finally:
        child.kill()
        child.wait()
