"""Power management checked before it matters: the leader's periodic status check finds
a BMC that stopped answering while its host is Up, records it where `hafence
fence-agent test` does, and exports what the alert HafenceFenceAgentUnreachable needs."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest
import yaml

from hafence.kube import Api
from hafence.lab.bmc import BmcFarm
from tests.operator.conftest import wait_for
from tests.operator.test_confirmation import status
from tests.operator.test_hard_fencing import datacenter

pytestmark = pytest.mark.controlplane
RULES = Path(__file__).resolve().parents[2] / "manifests" / "monitoring" / "hafence.rules.yaml"


@pytest.fixture
def bmcs() -> BmcFarm:
    with BmcFarm() as farm:
        yield farm


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def sample(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not (line.startswith(name + "{") or line.startswith(name + " ")):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def reachable(api: Api, ns: str, agent: str) -> str | None:
    conds = status(api, "FenceAgent", ns, agent).get("conditions", [])
    return next((c["status"] for c in conds if c["type"] == "Reachable"), None)


def test_a_deaf_bmc_of_an_up_host_is_found_and_alerted(
    api: Api, namespace: str, bmcs: BmcFarm, heartbeats, start_operator
) -> None:
    datacenter(api, namespace, bmcs, heartbeats, names=("h1", "h2"), timeout=3)
    op = start_operator("--pm-health-interval", "2", "--log-format", "json")
    for agent in ("h1-ipmi", "h2-ipmi"):
        wait_for(lambda a=agent: reachable(api, namespace, a) == "True", what=f"{agent} checked")
    st = status(api, "FenceAgent", namespace, "h1-ipmi")
    assert st["lastTestResult"] == "Succeeded" and st["powerState"] == "on"
    assert sample(scrape(op.port), "hafence_fence_agent_reachable", fence_agent="h1-ipmi") == 1

    bmcs["h1"].dead = True  # the BMC stops answering; the host itself is fine
    wait_for(lambda: reachable(api, namespace, "h1-ipmi") == "False", what="h1-ipmi unreachable")
    st = status(api, "FenceAgent", namespace, "h1-ipmi")
    assert st["lastTestResult"] == "Failed" and st["powerState"] == "unknown"
    metrics = scrape(op.port)
    labels = {"datacenter": namespace, "fence_agent": "h1-ipmi", "host": "h1"}
    assert sample(metrics, "hafence_fence_agent_reachable", **labels) == 0
    assert sample(metrics, "hafence_fence_agent_reachable", fence_agent="h2-ipmi") == 1
    failed = sum(
        sample(metrics, "hafence_fence_attempts_total", action="status", result=r) or 0
        for r in ("failure", "timeout")
    )
    assert failed >= 1
    # The alert's expression, evaluated on this scrape: every metric it names is
    # exported, and its condition holds for h1-ipmi only.
    (rule,) = [
        r
        for g in yaml.safe_load(RULES.read_text())["groups"]
        for r in g["rules"]
        if r["alert"] == "HafenceFenceAgentUnreachable"
    ]
    for name in set(re.findall(r"\b(hafence_[a-z_]+)", rule["expr"])):
        assert f"\n{name}" in metrics, name
    assert sample(metrics, "hafence_leader") == 1
    # Nothing was done to the host: Up, never fenced, its BMC never asked to power off.
    assert status(api, "Host", namespace, "h1")["phase"] == "Up"
    assert bmcs["h1"].action_names == [] and bmcs["h2"].action_names == []
    lines = [json.loads(x) for x in op.output().splitlines() if x.startswith("{")]
    checks = [x for x in lines if x.get("kind") == "pm-health" and x.get("agent") == "h1-ipmi"]
    assert {"success"} <= {x["result"] for x in checks}
    assert {x["result"] for x in checks} & {"failure", "timeout"}, checks
    assert all(x["host"] == "h1" and x["outage"] is None for x in checks if "outage" in x)
