"""The alert rules: well-formed, about metrics the operator really exports, and doing
what they say (promtool's rule unit tests, when promtool is available)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from deploy_support import MANIFESTS, render

from hafence.controller.metrics import HOLD_REASONS, HOST_PHASES, FenceAction, FenceResult, Metrics
from hafence.lab.controlplane import ControlPlane

RULES = MANIFESTS / "monitoring" / "hafence.rules.yaml"
RULE_TESTS = MANIFESTS / "monitoring" / "tests" / "hafence.rules.test.yaml"
DASHBOARD = MANIFESTS / "monitoring" / "hafence-dashboard.json"
REQUIRED = {
    "HafenceHostIsolated",
    "HafenceFencingFailing",
    "HafenceNoLeader",
    "HafenceHeartbeatsMissing",
    "HafenceFenceSkipped",
}
# Labels Prometheus adds to every scraped series, which rules may join on.
TARGET_LABELS = {"instance", "job", "pod", "namespace"}


def promtool() -> str | None:
    """$PROMTOOL, PATH, or the cache hack/promtool.sh builds into."""
    for candidate in (
        os.environ.get("PROMTOOL"),
        shutil.which("promtool"),
        str(Path.home() / ".cache" / "hafence" / "tools" / "promtool"),
    ):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def exported() -> dict[str, set[str]]:
    """Sample names the operator exports, with their label names."""
    out: dict[str, set[str]] = {}
    m = Metrics()
    m.fence_action("ipmilan", "off", "success", 1.0)  # labelled series appear once used
    m.soft_fence("success")
    m.agent_health(("dc", "h1-ipmi", "h1", "ipmilan"), False, 0.0)
    for line in m.render().decode().splitlines():
        found = re.match(r"^([a-z_]+)(?:\{([^}]*)\})? ", line)
        if found:
            labels = set(re.findall(r'([a-z_]+)="', found.group(2) or ""))
            out.setdefault(found.group(1), set()).update(labels)
    return out


def test_rules_are_complete_alerts() -> None:
    got = rules()
    assert {r["alert"] for r in got} >= REQUIRED
    for rule in got:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]


def check_expr(where: str, expr: str, metrics: dict[str, set[str]]) -> None:
    """Every metric an expression names is exported, with the labels it matches on."""
    values = {
        "phase": set(HOST_PHASES),
        "action": set(get_args(FenceAction)),
        "result": set(get_args(FenceResult)),
        "reason": set(HOLD_REASONS),
    }
    names = re.findall(r"\b(hafence_[a-z_]+)", expr)
    assert names, f"{where}: names no hafence metric"
    for name in names:
        assert name in metrics, f"{where}: the operator exports no {name}"
    for name, matchers in re.findall(r"\b(hafence_[a-z_]+)\{([^}]*)\}", expr):
        for label, value in re.findall(r'([a-z_]+)\s*(?:=~|!~|!=|=)\s*"([^"]*)"', matchers):
            assert label in metrics[name], f"{where}: {name} has no label {label}"
            if label in values:
                used = set(value.split("|"))
                assert used <= values[label], f"{where}: {label} {used - values[label]}"
    for grouping in re.findall(r"\b(?:by|on|without)\s*\(([^)]*)\)", expr):
        for label in (g.strip() for g in grouping.split(",")):
            known = TARGET_LABELS | {"le"} | set().union(*metrics.values())
            assert label in known, f"{where}: no metric has label {label}"


def test_rules_use_only_exported_metrics_and_labels() -> None:
    metrics = exported()
    for rule in rules():
        check_expr(rule["alert"], rule["expr"], metrics)


def test_dashboard_parses_and_queries_only_exported_metrics() -> None:
    """manifests/monitoring/hafence-dashboard.json: valid JSON, the panels the issue
    asks for, and each query about metrics the operator's registry really has."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert dashboard["uid"] and len({p["id"] for p in panels}) == len(panels)
    metrics = exported()
    used: set[str] = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            check_expr(f"panel {panel['title']!r}", target["expr"], metrics)
            used.update(re.findall(r"\b(hafence_[a-z_]+)", target["expr"]))
    wanted = {
        "hafence_hosts",  # hosts by phase, outages
        "hafence_fence_attempts_total",
        "hafence_fence_duration_seconds_bucket",
        "hafence_vm_recovery_seconds_bucket",
        "hafence_leader",
        "hafence_leader_epoch",
        "hafence_fence_agent_reachable",
    }
    assert wanted <= used, wanted - used


def test_promtool_checks_the_rules() -> None:
    tool = promtool()
    if tool is None:
        pytest.skip("promtool not found: ./hack/promtool.sh builds it")
    proc = subprocess.run(
        [tool, "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_alerts_fire_when_they_should_and_only_then() -> None:
    tool = promtool()
    if tool is None:
        pytest.skip("promtool not found: ./hack/promtool.sh builds it")
    proc = subprocess.run(
        [tool, "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_service_monitor_scrapes_the_metrics_service(control_plane: ControlPlane) -> None:
    monitoring = render(control_plane, "monitoring")
    assert {o["kind"] for o in monitoring} == {"ServiceMonitor", "PrometheusRule", "ConfigMap"}
    (dashboard,) = [o for o in monitoring if o["kind"] == "ConfigMap"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["hafence-dashboard.json"]) == json.loads(
        DASHBOARD.read_text()
    )
    (monitor,) = [o for o in monitoring if o["kind"] == "ServiceMonitor"]
    (service,) = [o for o in render(control_plane, "base") if o["kind"] == "Service"]
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
