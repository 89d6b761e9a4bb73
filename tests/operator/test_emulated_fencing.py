"""The article's iLO2 and the samples' PDU pair, end to end against the real control plane:
``hafence fence-agent test``, ``hafence power`` and a whole hard-fencing outage, with
Debian's fence_ilo2 / fence_apc_snmp talking to the lab's emulators on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from hafence.kube import Api
from hafence.lab.ilo2 import POWER_PRIV, Ilo2
from hafence.lab.pdu import ApcPdu, DualFeed
from tests.fencing.test_cli import hafence
from tests.operator.conftest import wait_for
from tests.operator.test_confirmation import host, status, vm
from tests.operator.test_hard_fencing import moved_off, placed

pytestmark = pytest.mark.controlplane
USER, PASSWORD = "fence-power", "iLO-p0wer-only"
ARTICLE = "ssl=yes,ssl_insecure=yes,inet4_only=yes"
HOSTS = ("h1", "h2", "h3")


@pytest.fixture(scope="module")
def ilos() -> Iterator[dict[str, Ilo2]]:
    devices = {name: Ilo2(name, {USER: (PASSWORD, frozenset({POWER_PRIV}))}) for name in HOSTS}
    yield devices
    for device in devices.values():
        device.close()


def secret(api: Api, ns: str, name: str, user: str, password: str) -> None:
    api.core.create_namespaced_secret(
        ns, {"metadata": {"name": name}, "stringData": {"username": user, "password": password}}
    )


def agent(api: Api, ns: str, name: str, host_name: str, **spec: Any) -> None:
    body = {
        "hostRef": {"name": host_name},
        "address": "127.0.0.1",
        "timeoutSeconds": 10,
        "powerWaitSeconds": 10,
        **spec,
    }
    api.create("FenceAgent", ns, {"metadata": {"name": name}, "spec": body})


def condition(api: Api, ns: str, name: str, kind: str) -> dict[str, Any] | None:
    conds = status(api, "FenceAgent", ns, name).get("conditions") or []
    return next((c for c in conds if c["type"] == kind), None)


def event_reasons(api: Api, ns: str, name: str) -> list[str]:
    items = api.core.list_namespaced_event(ns, field_selector=f"involvedObject.name={name}")
    return [e.reason for e in items.items]


def test_the_articles_ilo2_end_to_end(
    api: Api, namespace: str, kubeconfig: str, ilos: dict[str, Ilo2], heartbeats, start_operator
) -> None:
    ns = namespace
    secret(api, ns, "ilo-power-only", USER, PASSWORD)
    for name in HOSTS:
        ilos[name].set_power("on")
        api.create("Host", ns, host(name))
        agent(
            api,
            ns,
            f"{name}-ilo",
            name,
            type="ilo2",
            port=ilos[name].port,
            credentialsSecretRef={"name": "ilo-power-only"},
            options=ARTICLE,
        )
        heartbeats.start(name)
    # A second agent with a typo'd option: reported, not silently dropped.
    agent(
        api,
        ns,
        "h1-ilo-typo",
        "h1",
        type="ilo2",
        port=ilos["h1"].port,
        credentialsSecretRef={"name": "ilo-power-only"},
        options="ssl=yes,ssl_insecure=yes,powr_wait=3",
        order=2,
    )

    # oVirt's Test button.
    test = hafence(kubeconfig, "fence-agent", "test", "h1-ilo", "-n", ns)
    assert test.returncode == 0, test.stderr
    assert "h1-ilo: power on" in test.stdout
    assert "option inet4_only ignored: fence_ilo2 has no IP-family option" in test.stdout
    options = condition(api, ns, "h1-ilo", "OptionsValid")
    assert options and options["status"] == "True" and options["reason"] == "OptionsIgnored"
    assert condition(api, ns, "h1-ilo", "Reachable")["status"] == "True"  # type: ignore[index]

    # The power menu, through both agents of h1 in order.
    off = hafence(kubeconfig, "power", "h2", "off", "-n", ns)
    assert off.returncode == 0, off.stderr
    assert ilos["h2"].power == "off"
    on = hafence(kubeconfig, "power", "h2", "on", "-n", ns)
    assert on.returncode == 0 and ilos["h2"].power == "on", on.stderr
    st = hafence(kubeconfig, "power", "h2", "status", "-n", ns)
    assert st.returncode == 0 and "power on" in st.stdout, st.stderr
    for name in HOSTS:
        ilos[name].actions.clear()

    api.create("HAVirtualMachine", ns, vm("vm1"))
    op = start_operator()
    # The leader checks every FenceAgent's options: a condition and an Event each.
    typo = wait_for(
        lambda: condition(api, ns, "h1-ilo-typo", "OptionsValid"), what="OptionsValid on typo"
    )
    assert typo["status"] == "False" and "powr_wait" in typo["message"], typo
    wait_for(
        lambda: "FenceAgentOptionsUnknown" in event_reasons(api, ns, "h1-ilo-typo"),
        what="the Warning Event",
    )
    wait_for(
        lambda: "FenceAgentOptionsIgnored" in event_reasons(api, ns, "h1-ilo"),
        what="the ignored-options Event",
    )

    # The host goes silent; the operator fences it through fence_ilo2.
    victim = placed(api, ns)
    heartbeats.stop(victim)
    moved_off(api, ns, victim)
    wait_for(lambda: "on" in ilos[victim].action_names, what="power on after the release")
    actions = ilos[victim].action_names
    assert actions[0] == "off" and actions.index("off") < actions.index("on"), actions
    for name in HOSTS:
        if name != victim:
            assert ilos[name].action_names == [], name
    heartbeats.start(victim)
    wait_for(lambda: status(api, "Host", ns, victim).get("phase") == "Up", what="Up again")
    assert PASSWORD not in op.output()


def test_pdu_pair_off_needs_both(api: Api, namespace: str, kubeconfig: str) -> None:
    ns = namespace
    with ApcPdu("pdu-a") as a, ApcPdu("pdu-b") as b:
        feed = DualFeed("hv-a2", [(pdu, pdu.add_outlet(12, "hv-a2")) for pdu in (a, b)])
        secret(api, ns, "pdu-snmp", "snmp", "private")  # SNMP v1: the community
        api.create("Host", ns, host("hv-a2"))
        for pdu in (a, b):
            agent(
                api,
                ns,
                f"hv-a2-{pdu.name}",
                "hv-a2",
                type="apc_snmp",
                port=pdu.port,
                plug="12",
                credentialsSecretRef={"name": "pdu-snmp"},
                options="snmp_version=1",
            )
        b.refuse_writes = True
        refused = hafence(kubeconfig, "power", "hv-a2", "off", "-n", ns)
        assert refused.returncode == 1, refused.stdout
        assert "readOnly" in refused.stdout and feed.power == "on"
        b.refuse_writes = False
        off = hafence(kubeconfig, "power", "hv-a2", "off", "-n", ns)
        assert off.returncode == 0, off.stdout + off.stderr
        assert "power off" in off.stdout and feed.power == "off"
        on = hafence(kubeconfig, "power", "hv-a2", "on", "-n", ns)
        assert on.returncode == 0 and feed.power == "on", on.stdout + on.stderr
