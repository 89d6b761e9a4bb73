"""The scheduler's filters and preferences."""

from __future__ import annotations

from hafence.core.placement import HostView, choose_host, priority_key
from tests.core.core_helpers import vm_spec


def view(
    name: str,
    cpu: int = 8,
    mem: int = 8192,
    up: bool = True,
    cluster: str = "a",
    labels: dict[str, str] | None = None,
    groups: frozenset[str] = frozenset(),
    late: bool = False,
) -> HostView:
    return HostView(name, cluster, labels or {}, up, cpu, mem, groups, late)


def test_most_free_memory_wins_then_preferred_hosts_override() -> None:
    hosts = [view("h1", mem=2048), view("h2", mem=4096), view("h3", mem=4096, cpu=2)]
    assert choose_host(vm_spec(), hosts) == ("h2", "")
    assert choose_host(vm_spec(preferredHosts=["h1"]), hosts) == ("h1", "")


def test_filters_explain_why_nothing_fits() -> None:
    hosts = [
        view("h1", up=False),
        view("h2", cpu=1),
        view("h3", mem=100),
        view("h4", labels={"gpu": "no"}),
        view("x", cluster="b"),
    ]
    host, why = choose_host(vm_spec(cpu=2, mem=1024, hostSelector={"gpu": "no"}), hosts)
    assert host == "h4"
    host, why = choose_host(vm_spec(cpu=2, mem=1024, hostSelector={"gpu": "yes"}), hosts)
    assert host is None
    assert why.startswith("0/4 hosts of cluster a fit (need 2 cpu, 1024 MiB)")
    assert "1 not Up" in why and "host selector mismatch" in why


def test_anti_affinity_and_only() -> None:
    hosts = [view("h1", groups=frozenset({"db"})), view("h2")]
    assert choose_host(vm_spec(antiAffinityGroup="db"), hosts)[0] == "h2"
    assert choose_host(vm_spec(), hosts, only="h1")[0] == "h1"
    host, why = choose_host(vm_spec(), [view("h2")], only="h1")
    assert host is None and "may still run on h1" in why
    assert choose_host(vm_spec(cluster="zz"), hosts) == (None, "no host in cluster zz")


def test_priority_order() -> None:
    names = sorted(
        ["c", "a", "b"],
        key=lambda n: priority_key(n, vm_spec(prio={"a": "Low", "b": "High", "c": "High"}[n])),
    )
    assert names == ["b", "c", "a"]


def test_a_host_whose_heartbeat_is_late_is_the_last_choice() -> None:
    hosts = [view("h1", mem=16384, late=True), view("h2", mem=2048), view("h3", late=True)]
    assert choose_host(vm_spec(), hosts) == ("h2", "")
    assert choose_host(vm_spec(preferredHosts=["h1", "h3"]), hosts) == ("h2", "")
    # Still Up: when nothing else fits it is a target (its lease has not expired).
    assert choose_host(vm_spec(mem=4096), hosts) == ("h1", "")
