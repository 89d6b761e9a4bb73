"""Real peers for the fencing tests, all on 127.0.0.1, stopped even when a test fails."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hafence.api.fenceagent import FenceAgentSpec
from hafence.fencing.protocol import Credentials, SSHTarget
from hafence.lab.bmc import BmcFarm
from hafence.lab.sshd import Sshd

USER = "admin"
PASSWORD = "Sup3r-s3cret-pw"  # tests assert this never shows up in messages


@pytest.fixture
def farm() -> Iterator[BmcFarm]:
    with BmcFarm() as f:
        yield f


@pytest.fixture
def creds() -> Credentials:
    return Credentials(USER, PASSWORD)


def spec(type_: str, port: int, **extra: object) -> FenceAgentSpec:
    body: dict[str, object] = {
        "hostRef": {"name": "h1"},
        "type": type_,
        "address": "127.0.0.1",
        "port": port,
        "credentialsSecretRef": {"name": "bmc"},
        "timeoutSeconds": 5,
        "powerWaitSeconds": 5,
    }
    if type_.startswith("fence_"):
        # Debian's agents default to IPMI 1.5; the simulated BMCs speak 2.0 (lanplus).
        body["options"] = "lanplus=yes"
    body.update(extra)
    return FenceAgentSpec.model_validate(body)


@pytest.fixture
def sshd() -> Iterator[Sshd]:
    with Sshd() as server:
        yield server


def ssh_target(server: Sshd, **overrides: object) -> SSHTarget:
    values: dict[str, object] = {
        "address": "127.0.0.1",
        "port": server.port,
        "user": server.user,
        "private_key": server.client_key,
        "host_key": server.host_key,
    }
    values.update(overrides)
    return SSHTarget(**values)  # type: ignore[arg-type]
