"""No command execution through a FenceAgent (issue #10): the real fence_apc_snmp.

The first test shows the attack is real against Debian's agent; the others feed the
same crafted values through hafence's code paths and check the marker never appears.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hafence.api.fenceagent import FenceAgentSpec
from hafence.fencing.drivers import build_driver
from hafence.fencing.errors import Unsupported
from hafence.fencing.fence_agents import FenceAgentDriver, find_agent, run_local
from hafence.fencing.protocol import Credentials, DriverSettings

AGENT = "fence_apc_snmp"

pytestmark = pytest.mark.skipif(
    not Path("/usr/sbin/fence_apc_snmp").exists(), reason="Debian fence-agents missing"
)


def _crafted(marker: Path) -> str:
    return f"passwd_script=touch {marker}"


async def test_the_attack_is_real_against_the_raw_agent(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    stdin = f"action=status\nip=127.0.0.1\nplug=1\n{_crafted(marker)}\nsnmp_version=1\n"
    find_agent(AGENT)
    await run_local(AGENT, stdin.encode(), 30)
    assert marker.exists(), "fence-agents no longer run passwd_script: update this test"


@pytest.mark.parametrize("field", ["address", "plug"])
async def test_crafted_spec_bypassing_the_api_runs_nothing(tmp_path: Path, field: str) -> None:
    marker = tmp_path / "ran"
    body = {
        "hostRef": {"name": "h1"},
        "type": "apc_snmp",
        "address": "127.0.0.1",
        "plug": "1",
        "credentialsSecretRef": {"name": "pdu"},
        "options": "snmp_version=1",
        "timeoutSeconds": 5,
    }
    body[field] = f"{body[field]}\n{_crafted(marker)}"
    with pytest.raises(ValueError):
        FenceAgentSpec.model_validate(body)
    # model_copy skips validation, as an object stored under an older CRD would.
    spec = FenceAgentSpec.model_validate({**body, field: "1" if field == "plug" else "127.0.0.1"})
    spec = spec.model_copy(update={field: body[field]})
    with pytest.raises(Unsupported, match="is not"):
        driver = build_driver(spec, Credentials("apc", "private"))
        await driver.status()
    assert not marker.exists()


async def test_secret_with_a_line_break_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    password = f"private\n{_crafted(marker)}"
    driver = FenceAgentDriver(
        DriverSettings(name="pdu", timeout=5, power_wait=5, poll_interval=0.1),
        AGENT,
        "127.0.0.1",
        None,
        "1",
        Credentials("apc", password),
        {"snmp_version": "1"},
        runner=run_local,
    )
    with pytest.raises(Unsupported) as err:
        await driver.status()
    assert password not in str(err.value) and "touch" not in str(err.value)
    assert "line break" in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "options",
    [
        "snmp_version=1,passwd_script=touch {m}",
        "snmp_version=1,password-script=touch {m}",
        "snmp_version=1,snmpget_path={m}",
        "snmp_version=1,debug_file={m}",
    ],
)
async def test_refused_options_never_reach_the_agent(tmp_path: Path, options: str) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(Unsupported):
        FenceAgentDriver(
            DriverSettings(name="pdu", timeout=5, power_wait=5, poll_interval=0.1),
            AGENT,
            "127.0.0.1",
            None,
            "1",
            None,
            {k: v for k, _, v in (t.partition("=") for t in options.format(m=marker).split(","))},
            runner=run_local,
        )
    assert not marker.exists()


def test_host_key_comment_is_dropped_at_runtime() -> None:
    from hafence.api.host import HostSpec
    from hafence.fencing.resolve import grammar

    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    spec = HostSpec.model_validate(
        {
            "address": "hv1",
            "cluster": "prod",
            "capacity": {"cpu": 1, "memoryMiB": 1},
            "ssh": {
                "privateKeySecretRef": {"name": "k", "key": "id"},
                "hostKey": key + " root@hv1",
            },
        }
    )
    assert spec.ssh is not None and spec.ssh.host_key is not None
    assert grammar.host_key_material(spec.ssh.host_key) == key
