"""The kdump listener against Debian's real fence_kdump_send on loopback."""

from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path

import pytest

from hafence.fencing.kdump import MAGIC, KdumpListener, host_address

SENDER = Path("/usr/libexec/fence-agents/fence_kdump_send")
pytestmark = pytest.mark.skipif(
    not SENDER.exists(), reason="Debian's fence-agents (fence_kdump_send) not installed"
)


async def fence_kdump_send(port: int, count: int = 1) -> None:
    """Debian's sender, as a crashed host's kdump kernel runs it (target: 127.0.0.1)."""
    proc = await asyncio.create_subprocess_exec(
        str(SENDER),
        f"--ipport={port}",
        f"--count={count}",
        "--interval=1",
        "127.0.0.1",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 0, err


def send_from(source: str, port: int, payload: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.sendto(payload, ("127.0.0.1", port))


async def until(predicate: object, timeout: float = 5.0) -> None:  # noqa: ASYNC109
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_debian_sender_is_seen_for_its_host() -> None:
    async with KdumpListener(port=0) as kd:
        kd.watch("127.0.0.1")
        kd.watch("127.0.0.2")
        assert kd.dumping_since("127.0.0.1") is None
        waiting = asyncio.ensure_future(kd.wait_for_dump("127.0.0.1", timeout=10))
        await fence_kdump_send(kd.port, count=2)
        seen = await waiting
        assert seen is not None
        await until(lambda: kd.last_message("127.0.0.1") != seen)  # the second message
        since = kd.dumping_since("127.0.0.1")
        assert since == seen, "the dump began at its first message"
        last = kd.last_message("127.0.0.1")
        assert last is not None and last > since
        assert kd.dumping_since("127.0.0.2") is None, "another host is not dumping"
        assert sum(kd.ignored.values()) == 0


async def test_other_address_and_bad_messages_are_ignored() -> None:
    good = struct.pack("<II", MAGIC, 1)
    async with KdumpListener(port=0) as kd:
        kd.watch("127.0.0.1")
        send_from("127.0.0.2", kd.port, good)  # right message, wrong host
        send_from("127.0.0.1", kd.port, struct.pack("<II", 0x1B302A41, 1))
        send_from("127.0.0.1", kd.port, struct.pack("<II", MAGIC, 2))
        send_from("127.0.0.1", kd.port, good + b"\0")
        await until(lambda: sum(kd.ignored.values()) == 4)
        assert kd.ignored == {"address": 1, "magic": 1, "version": 1, "size": 1}
        assert kd.dumping_since("127.0.0.1") is None
        assert kd.dumping_since("127.0.0.2") is None
        assert await kd.wait_for_dump("127.0.0.1", timeout=0.3) is None
        # A big-endian sender's message is the same proof.
        send_from("127.0.0.1", kd.port, struct.pack(">II", MAGIC, 1))
        await until(lambda: kd.dumping_since("127.0.0.1") is not None)


async def test_many_hosts_and_stale_dumps() -> None:
    now = [100.0]
    async with KdumpListener(port=0, fresh=30, clock=lambda: now[0]) as kd:
        for address in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
            kd.watch(address)
        await fence_kdump_send(kd.port)
        send_from("127.0.0.3", kd.port, struct.pack("<II", MAGIC, 1))
        await until(lambda: kd.last_message("127.0.0.3") is not None)
        await until(lambda: kd.last_message("127.0.0.1") is not None)
        assert kd.dumping_since("127.0.0.1") == 100.0
        assert kd.dumping_since("127.0.0.2") is None
        # A message from before the host was lost is no proof of a dump now.
        now[0] = 200.0
        assert kd.dumping_since("127.0.0.1") is None
        assert await kd.wait_for_dump("127.0.0.1", timeout=0.2, since=150.0) is None
        # ...but one that came after it is, even if it came before the question.
        assert await kd.wait_for_dump("127.0.0.3", timeout=0.2, since=50.0) == 100.0
        await fence_kdump_send(kd.port)
        await until(lambda: kd.dumping_since("127.0.0.1") == 200.0)  # a new dump


def test_host_address_is_validated() -> None:
    assert host_address("::ffff:127.0.0.1") == "127.0.0.1"
    assert host_address("[2001:db8::1]") == "2001:db8::1"
    with pytest.raises(ValueError, match="not an IP address"):
        host_address("node1.example; rm -rf /")
