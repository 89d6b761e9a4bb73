"""`hafence fence-agent test` and `hafence power` against the real control plane."""

from __future__ import annotations

import base64
import subprocess
import sys
from typing import Any

import pytest

from hafence.kube import Api
from hafence.lab.bmc import BmcFarm

from .conftest import PASSWORD, USER

pytestmark = pytest.mark.controlplane


def hafence(kubeconfig: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hafence", *args, "--kubeconfig", kubeconfig],
        capture_output=True,
        text=True,
        timeout=60,
    )


def secret(api: Api, ns: str, name: str, password: str = PASSWORD) -> None:
    data = {"username": USER, "password": password}
    api.core.create_namespaced_secret(
        ns,
        {
            "metadata": {"name": name},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        },
    )


def agent(
    api: Api,
    ns: str,
    name: str,
    host: str,
    port: int,
    order: int = 1,
    secret_name: str = "bmc",
    type_: str = "ipmilan",
) -> dict[str, Any]:
    return api.create(
        "FenceAgent",
        ns,
        {
            "metadata": {"name": name},
            "spec": {
                "hostRef": {"name": host},
                "type": type_,
                "address": "127.0.0.1",
                "port": port,
                "credentialsSecretRef": {"name": secret_name},
                "order": order,
                "timeoutSeconds": 3,
                "powerWaitSeconds": 3,
                # Debian's agents default to IPMI 1.5; the simulated BMCs speak 2.0.
                "options": "lanplus=yes" if type_.startswith("fence_") else "",
            },
        },
    )


def condition(obj: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == "Reachable")


def test_fence_agent_test_records_status(
    api: Api, namespace: str, kubeconfig: str, farm: BmcFarm
) -> None:
    bmc = farm.add("h1", USER, PASSWORD, power="off")
    secret(api, namespace, "bmc")
    agent(api, namespace, "h1-ipmi", "h1", bmc.port)
    done = hafence(kubeconfig, "fence-agent", "test", "h1-ipmi", "-n", namespace)
    assert done.returncode == 0, done.stderr
    assert "power off" in done.stdout
    obj = api.get("FenceAgent", namespace, "h1-ipmi")
    status = obj["status"]
    assert status["lastTestResult"] == "Succeeded" and status["powerState"] == "off"
    assert status["lastTestTime"] and status["observedGeneration"] == 1
    cond = condition(obj)
    assert cond["status"] == "True" and cond["reason"] == "StatusSucceeded"
    assert bmc.action_names == []  # a test never switches power

    bmc.dead = True
    done = hafence(kubeconfig, "fence-agent", "test", "h1-ipmi", "-n", namespace)
    assert done.returncode == 1
    obj = api.get("FenceAgent", namespace, "h1-ipmi")
    assert obj["status"]["lastTestResult"] == "Failed"
    assert obj["status"]["powerState"] == "unknown"
    cond = condition(obj)
    assert cond["status"] == "False" and cond["reason"] == "TimedOut"
    assert PASSWORD not in str(obj["status"]) and PASSWORD not in done.stderr


def test_missing_secret_and_key(api: Api, namespace: str, kubeconfig: str, farm: BmcFarm) -> None:
    bmc = farm.add("h1", USER, PASSWORD)
    agent(api, namespace, "no-secret", "h1", bmc.port, secret_name="absent")
    done = hafence(kubeconfig, "fence-agent", "test", "no-secret", "-n", namespace)
    assert done.returncode == 1
    assert "ConfigError" in done.stderr and f"Secret {namespace}/absent not found" in done.stderr
    obj = api.get("FenceAgent", namespace, "no-secret")
    assert condition(obj)["reason"] == "ConfigError"

    api.core.create_namespaced_secret(
        namespace,
        {"metadata": {"name": "half"}, "data": {"username": base64.b64encode(b"x").decode()}},
    )
    agent(api, namespace, "half-secret", "h1", bmc.port, secret_name="half")
    done = hafence(kubeconfig, "fence-agent", "test", "half-secret", "-n", namespace)
    assert done.returncode == 1 and "has no key 'password'" in done.stderr


def test_wrong_password_recorded_without_secret(
    api: Api, namespace: str, kubeconfig: str, farm: BmcFarm
) -> None:
    bmc = farm.add("h1", USER, PASSWORD)
    secret(api, namespace, "bad", password="Wr0ng-pa55word")
    agent(api, namespace, "h1-ipmi", "h1", bmc.port, secret_name="bad")
    done = hafence(kubeconfig, "fence-agent", "test", "h1-ipmi", "-n", namespace)
    assert done.returncode == 1 and "AuthFailed" in done.stderr
    obj = api.get("FenceAgent", namespace, "h1-ipmi")
    assert condition(obj)["reason"] == "AuthFailed"
    assert "Wr0ng-pa55word" not in str(obj) + done.stderr + done.stdout


def test_power_through_groups_in_order(
    api: Api, namespace: str, kubeconfig: str, farm: BmcFarm
) -> None:
    # order 1: two PDUs (a concurrent group); order 2: the BMC, a fallback level.
    pdus = [farm.add(f"pdu{i}", USER, PASSWORD) for i in range(2)]
    bmc = farm.add("bmc", USER, PASSWORD)
    secret(api, namespace, "bmc")
    agent(api, namespace, "h1-pdu-a", "h1", pdus[0].port, order=1)
    agent(api, namespace, "h1-pdu-b", "h1", pdus[1].port, order=1, type_="fence_ipmilan")
    agent(api, namespace, "h1-bmc", "h1", bmc.port, order=2)
    agent(api, namespace, "other-host", "h2", bmc.port, order=0)

    done = hafence(kubeconfig, "power", "h1", "status", "-n", namespace)
    assert done.returncode == 0, done.stderr
    assert "power on" in done.stdout and "Error" not in done.stdout

    pdus[1].dead = True  # one PDU will not switch off: the group fails, level 2 acts
    done = hafence(kubeconfig, "power", "h1", "off", "-n", namespace)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("order 1 [h1-pdu-a,h1-pdu-b]: off failed")
    assert lines[1].startswith("order 2 [h1-bmc]: off succeeded")
    assert bmc.action_names == ["off"] and pdus[0].action_names == ["off"]

    pdus[1].dead = False
    done = hafence(kubeconfig, "power", "h1", "restart", "-n", namespace)
    assert done.returncode == 0, done.stderr
    assert [p.power for p in pdus] == ["on", "on"], done.stdout
    assert pdus[1].action_names == ["off", "on"]

    done = hafence(kubeconfig, "power", "nobody", "status", "-n", namespace)
    assert done.returncode == 1 and "no FenceAgents" in done.stderr
