"""The guide's promise: `kubectl describe host NAME` tells an outage's story through Events.

One hard-fencing outage through the real operator (played once per module, read by
each test): a host stops heartbeating and its SSH port stops answering (a network
cut) while its BMC, a simulated IPMI BMC on loopback, still answers.  The operator
soft-fences (which fails), fences through IPMI, restarts the HA VM elsewhere; the host
comes back with a new boot ID.  The story is read from the real kubectl's `describe`
output, not from the API.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from hafence.kube import load_api
from hafence.lab.bmc import BmcFarm
from hafence.lab.controlplane import ControlPlane
from tests.operator.conftest import Heartbeats, OperatorProcess, dump, wait_for

from .conftest import (
    PASSWORD,
    USER,
    ha_vm,
    host,
    ipmi_agent,
    ipmi_secret,
    ssh_to_nowhere,
    status,
)

pytestmark = pytest.mark.controlplane
HOSTS = ("hv-a1", "hv-a2", "hv-a3")
VICTIM, VM = "hv-a1", "db-primary"


ROW = re.compile(r"^\s+(Normal|Warning)\s+(\S+)\s+.*?\s+hafence-operator\s+(.*)$")


def described_rows(described: str) -> list[tuple[str, str]]:
    """(reason, message) of each row of the Events table of `kubectl describe`, in order."""
    _, sep, table = described.partition("\nEvents:")
    assert sep, f"no Events section:\n{described}"
    rows = [(m[2], m[3]) for line in table.splitlines() if (m := ROW.match(line))]
    assert rows, described
    return rows


def described_reasons(described: str) -> list[str]:
    return [reason for reason, _ in described_rows(described)]


def assert_in_order(reasons: list[str], story: list[str]) -> None:
    at = 0
    for i, step in enumerate(story):
        try:
            at = reasons.index(step, at) + 1
        except ValueError:
            raise AssertionError(
                f"{step} is not shown after {story[:i]}; the Events read: {reasons}"
            ) from None


@dataclass
class Outage:
    namespace: str
    host_described: str
    vm_described: str
    new_home: str
    events: list[dict[str, Any]]


@pytest.fixture(scope="module")
def outage(
    control_plane: ControlPlane, kubeconfig: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Outage]:
    tmp = tmp_path_factory.mktemp("outage")
    api = load_api(kubeconfig)
    namespace = f"outage-story-{uuid.uuid4().hex[:6]}"
    api.core.create_namespace({"metadata": {"name": namespace}})
    heartbeats = Heartbeats(api, namespace)
    op: OperatorProcess | None = None
    try:
        with BmcFarm() as bmcs:
            ipmi_secret(api, namespace)
            ssh = ssh_to_nowhere(api, namespace, tmp)
            for name in HOSTS:
                bmc = bmcs.add(name, USER, PASSWORD)
                body = host(name)
                body["spec"]["ssh"] = ssh
                api.create("Host", namespace, body)
                api.create("FenceAgent", namespace, ipmi_agent(f"{name}-ipmi", name, bmc))
                heartbeats.start(name)
            api.create("HAVirtualMachine", namespace, ha_vm(VM, preferred=VICTIM))
            # The outage happens long after start-up, as in production: no quiet period.
            op = OperatorProcess(
                kubeconfig,
                namespace,
                tmp / "operator.log",
                "--policy",
                "startup_quiet_period=0",
            )
            wait_for(
                lambda: status(api, "HAVirtualMachine", namespace, VM).get("host") == VICTIM,
                what=f"{VM} placed on {VICTIM}",
            )

            heartbeats.stop(VICTIM)  # the network cut: silent, SSH gone, BMC answering
            new_home: str = wait_for(
                lambda: (
                    where
                    if (where := status(api, "HAVirtualMachine", namespace, VM).get("host"))
                    not in (None, "", VICTIM)
                    else None
                ),
                timeout=60,
                what=f"{VM} restarted off {VICTIM}",
            )
            wait_for(lambda: "on" in bmcs[VICTIM].action_names, what="power on after release")
            boot_id = heartbeats.start(VICTIM)  # back from its reboot: a new boot ID
            wait_for(
                lambda: (
                    status(api, "Host", namespace, VICTIM).get("phase") == "Up"
                    and status(api, "Host", namespace, VICTIM).get("bootID") == boot_id
                ),
                what=f"{VICTIM} Up with its new boot ID",
            )

            def described() -> str | None:
                out = control_plane.kubectl("describe", "host", VICTIM, "-n", namespace).stdout
                reasons = described_reasons(out)
                # The outage is over when its last Event, HostUp, has been written.
                done = "FenceOperationSucceeded" in reasons and reasons.count("HostUp") >= 2
                return out if done else None

            host_described = wait_for(described, timeout=20, what="the outage's last Event")
            vm_described = control_plane.kubectl("describe", "havm", VM, "-n", namespace).stdout
            events = [
                api.core.api_client.sanitize_for_serialization(e)
                for e in api.core.list_namespaced_event(namespace).items
            ]
            assert op.proc.poll() is None, op.output()
            yield Outage(namespace, host_described, vm_described, new_home, events)
    finally:
        if op is not None:
            op.stop("kill")
            print(dump(api, namespace))
            print(f"---- operator log\n{op.output()[-20000:]}")
        heartbeats.close()
        api.close()


# The story of the host's outage.  Its SSH is configured but unreachable: soft
# fencing starts, then fails; the first HostUp is its boot, the last its return.
STORY = [
    "HostUp",
    "HostConnecting",
    "SoftFenceStarted",
    "SoftFenceFailed",
    "FenceOperationStarted",
    "FenceOperationSucceeded",
    "HostUp",
]


VM_STORY = ["VMPlaced", "VMSetUnknown", "VMReleased", "HAVMRestarted"]


def when(event: dict[str, Any]) -> str:
    """When an Event happened: its lastTimestamp, and within one second its name
    (hafence names Events NAME.<hex nanoseconds>, like client-go's recorder)."""
    return f"{event['lastTimestamp']} {event['metadata']['name']}"


def story_events(outage: Outage, name: str, story: list[str]) -> list[dict[str, Any]]:
    """The API's Events of the story, in story order (repeated reasons, the two HostUps,
    taken oldest first)."""
    mine = sorted(
        (e for e in outage.events if e["involvedObject"]["name"] == name),
        key=when,
    )
    picked = []
    for step in story:
        event = next(e for e in mine if e["reason"] == step and e not in picked)
        picked.append(event)
    return picked


def assert_told_in_order(described: str, events: list[dict[str, Any]]) -> None:
    """The operator recorded the steps in order, and kubectl shows every step recorded
    earlier than another above it."""
    rows = described_rows(described)
    story = [e["reason"] for e in events]
    stamps = [when(e) for e in events]
    assert stamps == sorted(stamps), list(zip(story, stamps, strict=True))
    position = [rows.index((e["reason"], e["message"])) for e in events]
    for i, j in itertools.combinations(range(len(events)), 2):
        if stamps[i] < stamps[j]:
            assert position[i] < position[j], (
                f"{story[i]} ({stamps[i]}) shown below {story[j]} ({stamps[j]}): {rows}"
            )


def test_describe_host_shows_every_step_of_the_outage(outage: Outage) -> None:
    print(outage.host_described)
    events = story_events(outage, VICTIM, STORY)
    assert_told_in_order(outage.host_described, events)
    assert "soft fencing" in events[1]["message"] and "outage" in events[1]["message"]
    assert "Unable to connect" in events[3]["message"]
    assert "hv-a1-ipmi" in events[4]["message"] and "off verified" in events[5]["message"]
    assert events[6]["message"] != events[0]["message"]  # the new boot ID
    assert PASSWORD not in outage.host_described


def test_describe_havm_tells_the_restart(outage: Outage) -> None:
    print(outage.vm_described)
    events = story_events(outage, VM, VM_STORY)
    assert_told_in_order(outage.vm_described, events)
    assert (
        events[3]["message"] == f"placed on {outage.new_home} after host {VICTIM} fence-proven off"
    )
    assert f"outage {VICTIM}-" in events[2]["message"]


def test_describe_orders_steps_of_the_same_second(outage: Outage) -> None:
    # Row by row, also for Events recorded within one second: kubectl sorts by the
    # whole second and keeps the name order among equals.
    assert_in_order(described_reasons(outage.host_described), STORY)
    assert_in_order(described_reasons(outage.vm_described), VM_STORY)
