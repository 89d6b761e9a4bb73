"""Every fence type the CRD accepts runs its real Debian agent here, and the image and
``make setup`` install what those agents spawn.

Each agent is pointed at a loopback port nobody listens on: it must get as far as the
network and fail there ("connection refused", "timed out", "unable to connect"), never
on a missing helper program or a Python traceback.
"""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path

import pytest

from hafence.api.fenceagent import OVIRT_AGENT_TYPES, FenceAgentSpec
from hafence.fencing.agent_types import KNOWN_BROKEN, RUNTIMES, required_packages
from hafence.fencing.drivers import build_driver
from hafence.fencing.errors import FenceError, TimedOut, Unreachable, Unsupported
from hafence.fencing.fence_agents import Completed, FenceAgentDriver
from hafence.fencing.options import AGENT_TYPES, effective_options
from hafence.fencing.protocol import Credentials, DriverSettings

ROOT = Path(__file__).resolve().parents[2]
CREDS = Credentials("fence-test", "n0t-the-password")
_NOT_RUN = re.compile(
    r"not found|not executable|Traceback|(Attribute|Import|ModuleNotFound|Name|Type|Key)Error"
)
_AT_NETWORK = re.compile(
    r"refused|timed out|unable to connect|unreachable|no route|no response from", re.I
)


def closed_port() -> int:
    """A loopback port free for both TCP and UDP at the time of the call."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port


def test_the_table_covers_every_accepted_type() -> None:
    assert set(RUNTIMES) == set(OVIRT_AGENT_TYPES)
    for name, row in RUNTIMES.items():
        assert row.program == AGENT_TYPES[name].fence_agent
        assert "fence-agents" in row.packages
        assert Path("/usr/sbin", row.program).exists(), row


def _variants() -> list[tuple[str, bool]]:
    """(type, secure): the telnet agents run once over telnet and once over ssh."""
    out = []
    for name in OVIRT_AGENT_TYPES:
        out.append((name, False))
        kind = AGENT_TYPES[name]
        if kind.secure_option == "secure" and "secure" not in kind.defaults:
            out.append((name, True))
    return out


async def _run(name: str, secure: bool, port: int) -> tuple[str, bool, FenceError | str]:
    kind = AGENT_TYPES[name]
    opts = effective_options(kind, "secure=yes" if secure else "")
    if kind.native == "ipmi":
        opts.setdefault("lanplus", "1")
    # Short waits where the agent has them: the failure is immediate anyway.
    opts.update({"login_timeout": "3", "power_wait": "0"})
    credentials = None if kind.fence_agent in KNOWN_BROKEN else CREDS
    driver = FenceAgentDriver(
        DriverSettings(f"{name} probe", timeout=25, power_wait=2),
        kind.fence_agent,
        "127.0.0.1",
        port,
        "1",
        credentials,
        opts,
    )
    try:
        result = await driver.status()
    except FenceError as exc:
        return name, secure, exc
    return name, secure, f"answered {result.power_state}"


async def test_every_type_reaches_the_network_and_fails_there() -> None:
    port = closed_port()
    outcomes = await asyncio.gather(*(_run(n, s, port) for n, s in _variants()))
    bad = []
    for name, secure, outcome in outcomes:
        text = str(outcome)
        ok = (
            isinstance(outcome, Unreachable | TimedOut)
            and _AT_NETWORK.search(text)
            and not _NOT_RUN.search(text)
        )
        if not ok:
            bad.append(f"{name}{' secure' if secure else ''}: {type(outcome).__name__}: {text}")
    assert not bad, "\n".join(bad)


def test_a_known_broken_agent_is_refused_with_the_reason() -> None:
    spec = FenceAgentSpec.model_validate(
        {
            "hostRef": {"name": "h1"},
            "type": "eps",
            "address": "127.0.0.1",
            "credentialsSecretRef": {"name": "eps"},
        }
    )
    with pytest.raises(Unsupported, match="crashes when given a username"):
        build_driver(spec, CREDS)


def _dockerfile_packages() -> set[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found: set[str] = set()
    for line in text.splitlines():
        if "apt-get install" in line:
            words = line.split("apt-get install", 1)[1].split("&&", 1)[0].split()
            found.update(w for w in words if not w.startswith("-"))
    return found


def _makefile_packages() -> set[str]:
    values: dict[str, str] = {}
    for line in (ROOT / "Makefile").read_text().splitlines():
        m = re.match(r"^([A-Z_]+)\s*(:=|\+=)\s*(.*)$", line)
        if m:
            name, op, value = m.groups()
            value = re.sub(r"\$\(([A-Z_]+)\)", lambda v: values.get(v.group(1), ""), value)
            values[name] = (values.get(name, "") + " " + value) if op == "+=" else value
    return set(values.get("SYSTEM_PACKAGES", "").split())


def test_the_image_installs_what_every_agent_needs() -> None:
    missing = set(required_packages()) - _dockerfile_packages()
    assert not missing, f"Dockerfile's apt-get install lacks {sorted(missing)}"
    # --no-install-recommends stays: every needed package is named, nothing else comes.
    assert "--no-install-recommends" in (ROOT / "Dockerfile").read_text()


def test_make_setup_installs_what_every_agent_needs() -> None:
    missing = set(required_packages()) - _makefile_packages()
    assert not missing, f"Makefile's SYSTEM_PACKAGES lacks {sorted(missing)}"


async def test_an_snmp_device_that_never_answers_is_unreachable() -> None:
    """fence_apc_snmp sometimes reports a silent UDP peer as a failed status carrying
    snmpwalk's "Timeout: No Response from": that is the network, not the device."""
    said = (
        "2026-12-01 21:00:00,000 ERROR: Failed: Unable to obtain correct plug status "
        "or plug is not available\n"
        "/usr/bin/snmpwalk -m '' -Oeqn  -v '1' -c '***' '127.0.0.1:55333' "
        "'.1.3.6.1.2.1.1.2.0'\nTimeout: No Response from 127.0.0.1:55333\n"
    )

    async def runner(program: str, stdin: str, timeout: float) -> Completed:  # noqa: ASYNC109
        return Completed(1, "", said)

    driver = FenceAgentDriver(
        DriverSettings("pdu", timeout=5, power_wait=2),
        "fence_apc_snmp",
        "127.0.0.1",
        55333,
        "1",
        CREDS,
        {"snmp_version": "1"},
        runner=runner,
    )
    with pytest.raises(Unreachable, match="No Response"):
        await driver.status()
