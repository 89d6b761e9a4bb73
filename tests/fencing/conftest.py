"""Real peers for the fencing tests, all on 127.0.0.1, stopped even when a test fails.

The specs and SSH targets that point drivers at them: :mod:`hafence.lab.targets`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hafence.fencing.protocol import Credentials
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


@pytest.fixture
def sshd() -> Iterator[Sshd]:
    with Sshd() as server:
        yield server
