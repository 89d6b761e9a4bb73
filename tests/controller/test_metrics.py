"""Metrics and probes over real HTTP on loopback, parsed as Prometheus parses them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hafence.controller.metrics import HOST_PHASES, VM_PHASES, Metrics, MetricsServer


@pytest.fixture
async def server() -> AsyncIterator[MetricsServer]:
    async with MetricsServer(Metrics(), host="127.0.0.1", port=0) as srv:
        yield srv


async def scrape(srv: MetricsServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as http, http.get(f"{srv.url}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


async def status_of(srv: MetricsServer, path: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"{srv.url}{path}") as resp:
        return resp.status


async def test_scrape_shows_every_metric_with_its_value(server: MetricsServer) -> None:
    assert server.port != 0
    m = server.metrics
    m.set_host_phases({"Up": 7, "Fencing": 1})
    m.set_vm_phases({"Running": 40, "Down": 2})
    m.fence_action("ipmilan", "off", "success", 1.5)
    m.fence_action("ipmilan", "off", "success", 0.4)
    m.fence_action("redfish", "status", "timeout", 30.0)
    m.soft_fence("success")
    m.soft_fence("timeout")
    m.soft_fence("timeout")
    m.vm_recovered(12.0)
    m.vm_recovered(25.0)
    m.set_leader(True, 4)

    got = await scrape(server)

    def one(name: str, **labels: str) -> float:
        return got[(name, tuple(sorted(labels.items())))]

    assert one("hafence_hosts", phase="Up") == 7
    assert one("hafence_hosts", phase="Fencing") == 1
    # Phases without hosts are exported as 0, so dashboards need no absent() tricks.
    assert all(
        one("hafence_hosts", phase=p) == 0 for p in HOST_PHASES if p not in ("Up", "Fencing")
    )
    assert one("hafence_vms", phase="Running") == 40
    assert {p for (n, labels) in got if n == "hafence_vms" for _, p in labels} == set(VM_PHASES)
    assert (
        one("hafence_fence_attempts_total", driver="ipmilan", action="off", result="success") == 2
    )
    assert (
        one("hafence_fence_attempts_total", driver="redfish", action="status", result="timeout")
        == 1
    )
    assert one("hafence_fence_duration_seconds_count", driver="ipmilan", action="off") == 2
    assert one(
        "hafence_fence_duration_seconds_sum", driver="ipmilan", action="off"
    ) == pytest.approx(1.9)
    assert (
        one("hafence_fence_duration_seconds_bucket", driver="ipmilan", action="off", le="0.5") == 1
    )
    assert one("hafence_soft_fences_total", result="timeout") == 2
    assert one("hafence_soft_fences_total", result="success") == 1
    assert one("hafence_vm_recovery_seconds_count") == 2
    assert one("hafence_vm_recovery_seconds_bucket", le="15.0") == 1
    assert one("hafence_vm_recovery_seconds_bucket", le="30.0") == 2
    assert one("hafence_leader") == 1
    assert one("hafence_leader_epoch") == 4

    # Gauges are replaced, not accumulated: a host leaving a phase leaves its count.
    m.set_host_phases({"Up": 8})
    got = await scrape(server)
    assert one("hafence_hosts", phase="Up") == 8 and one("hafence_hosts", phase="Fencing") == 0


async def test_leader_gauges_follow_a_live_source(server: MetricsServer) -> None:
    state = {"leading": False, "epoch": 3}
    server.metrics.track_leader(lambda: bool(state["leading"]), lambda: int(state["epoch"]))
    got = await scrape(server)
    assert got[("hafence_leader", ())] == 0 and got[("hafence_leader_epoch", ())] == 3
    state.update(leading=True, epoch=4)
    got = await scrape(server)
    assert got[("hafence_leader", ())] == 1 and got[("hafence_leader_epoch", ())] == 4


async def test_probes(server: MetricsServer) -> None:
    assert await status_of(server, "/healthz") == 200
    assert await status_of(server, "/readyz") == 503
    server.set_ready(True)
    assert await status_of(server, "/readyz") == 200
    server.set_ready(False)
    assert await status_of(server, "/readyz") == 503
    assert await status_of(server, "/nothing") == 404


async def test_a_taken_port_is_a_clear_error(server: MetricsServer) -> None:
    other = MetricsServer(Metrics(), host="127.0.0.1", port=server.port)
    with pytest.raises(OSError, match=rf"cannot listen on 127.0.0.1:{server.port}"):
        await other.start()


def test_unknown_phase_is_kept_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    m = Metrics()
    m.set_host_phases({"Up": 1, "Exploded": 2})
    assert m.registry.get_sample_value("hafence_hosts", {"phase": "Exploded"}) == 2
    assert "unknown host phase(s) in metrics: Exploded" in caplog.text
