"""The libvirt driver against a real libvirt daemon running real qemu (TCG) domains.

One session-mode libvirtd per module (hafence.lab.libvirtd), tiny diskless domains.
Faults are the daemon's own: killed (its qemu processes keep running, as with a real
libvirtd) or stopped with SIGSTOP (every call hangs).  The driver must then say
"unknown" and fail its stops, never "not running" while qemu runs.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator

import pytest

from hafence.agent.drivers import LocalVM, Observed, StartError, StopError
from hafence.agent.libvirt import NS, LibvirtDriver
from hafence.api.vm import Runtime
from hafence.lab.libvirtd import Libvirtd, domain_xml, unavailable

from .helpers import pid_alive, wait_for

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=f"{unavailable()}")


@pytest.fixture
def alive(libvirt_daemon: Libvirtd) -> Libvirtd:
    """The daemon, running and answering (a test before may have killed or stopped it)."""
    daemon = libvirt_daemon
    daemon.signal(signal.SIGCONT)
    if daemon.proc is None or daemon.proc.poll() is not None:
        daemon.start()
    return daemon


@pytest.fixture
def driver() -> Iterator[LibvirtDriver]:
    d = LibvirtDriver("h1", timeout=5.0)
    yield d
    d.close()


def rt(uri: str, **libvirt: str) -> Runtime:
    return Runtime.model_validate({"driver": "libvirt", "libvirt": {"uri": uri, **libvirt}})


def settled(
    driver: LibvirtDriver, vm: LocalVM, ok: Callable[[Observed], bool], fresh: bool = False
) -> Observed | None:
    obs = driver.observe(vm, fresh=fresh)
    return obs if ok(obs) else None


def raw(uri: str):  # type: ignore[no-untyped-def]
    import libvirt

    return libvirt.open(uri)


def test_start_marks_the_domain_and_stop_is_verified(
    alive: Libvirtd, driver: LibvirtDriver
) -> None:
    vm = driver.start("ns/a", 3, rt(alive.uri, domainXML=domain_xml("hafence-a")))
    pid = alive.qemu_pids()["hafence-a"]
    assert driver.observe(vm).running
    xml = raw(alive.uri).lookupByName("hafence-a").XMLDesc(0)
    assert NS in xml and 'datacenter="ns"' in xml and 'name="a"' in xml
    assert 'host="h1"' in xml and 'epoch="3"' in xml
    driver.stop(vm, grace=0.5)  # no ACPI in a guest that never booted: destroyed
    assert not pid_alive(pid), "stop returned while qemu still ran"
    assert driver.observe(vm).stopped
    # Placed here again: the definition left defined (as after a reboot) is reused.
    again = driver.start("ns/a", 4, rt(alive.uri, domainXML=domain_xml("hafence-a")))
    assert again.extra == vm.extra and driver.observe(again).running
    assert 'epoch="4"' in raw(alive.uri).lookupByName("hafence-a").XMLDesc(0)
    driver.kill(again)


def test_discover_finds_this_datacenters_marked_domains_only(
    alive: Libvirtd, driver: LibvirtDriver
) -> None:
    mine = driver.start("ns/b", 1, rt(alive.uri, domainXML=domain_xml("hafence-b")))
    elsewhere = LibvirtDriver("h2", timeout=5.0)
    try:
        theirs = elsewhere.start("ns/c", 1, rt(alive.uri, domainXML=domain_xml("hafence-c")))
        other_dc = driver.start("ns2/d", 1, rt(alive.uri, domainXML=domain_xml("hafence-d")))
        raw(alive.uri).createXML(domain_xml("unmarked"), 0)
        found = LibvirtDriver("h1", uris=[alive.uri]).discover("ns", [])
        assert [(v.key, v.domain, v.epoch) for v in found] == [("ns/b", "hafence-b", 1)]
        # Found without a record, it is still this driver's to stop (S3 sweep).
        driver.stop(found[0], grace=0.2)
        assert not driver.observe(mine).running
        for vm in (theirs, other_dc):
            driver.kill(vm)
    finally:
        elsewhere.close()
        raw(alive.uri).lookupByName("unmarked").destroy()


def test_a_domain_hafence_did_not_define_is_never_replaced(
    alive: Libvirtd, driver: LibvirtDriver
) -> None:
    raw(alive.uri).defineXML(domain_xml("taken"))
    with pytest.raises(StartError, match=r"domainXML: a domain 'taken' exists .* did not define"):
        driver.start("ns/e", 1, rt(alive.uri, domainXML=domain_xml("taken")))
    vm = driver.start("ns/f", 1, rt(alive.uri, domainXML=domain_xml("hafence-f")))
    with pytest.raises(StartError, match=r"belongs to hafence VM ns/f"):
        driver.start("ns/g", 1, rt(alive.uri, domainName="hafence-f"))
    driver.stop(vm, grace=0.2)
    # Someone else defines a domain of the same name: ours is gone, theirs is not ours.
    conn = raw(alive.uri)
    conn.lookupByName("hafence-f").undefine()
    conn.createXML(domain_xml("hafence-f"), 0)
    try:
        assert driver.observe(vm).stopped
    finally:
        conn.lookupByName("hafence-f").destroy()


def test_unknown_domain_name_is_a_clear_start_error(alive: Libvirtd, driver: LibvirtDriver) -> None:
    with pytest.raises(StartError, match=r"spec.runtime.libvirt.domainName: no domain 'nosuch'"):
        driver.start("ns/h", 1, rt(alive.uri, domainName="nosuch"))


def test_killed_daemon_is_unknown_and_stop_fails_while_qemu_runs(
    alive: Libvirtd, driver: LibvirtDriver
) -> None:
    vm = driver.start("ns/i", 1, rt(alive.uri, domainXML=domain_xml("hafence-i")))
    pid = alive.qemu_pids()["hafence-i"]
    alive.kill()
    assert pid_alive(pid)
    obs = wait_for(lambda: settled(driver, vm, lambda o: not o.running), what="doubt")
    assert obs.unknown, obs
    with pytest.raises(StopError):
        driver.stop(vm, grace=0.2)
    assert pid_alive(pid)
    alive.start()  # a new daemon finds its running qemu again
    wait_for(lambda: driver.observe(vm).running, what="the domain seen again")
    driver.stop(vm, grace=0.2)
    assert not pid_alive(pid)


def test_hung_daemon_is_unknown_within_the_timeout(alive: Libvirtd, driver: LibvirtDriver) -> None:
    vm = driver.start("ns/j", 1, rt(alive.uri, domainXML=domain_xml("hafence-j")))
    pid = alive.qemu_pids()["hafence-j"]
    alive.signal(signal.SIGSTOP)
    try:
        assert driver.observe(vm, fresh=True).unknown
        with pytest.raises(StopError, match="no answer within 5s"):
            driver.kill(vm)
        assert pid_alive(pid)
    finally:
        alive.signal(signal.SIGCONT)
    # The destroy that timed out may still land once the daemon runs again: whatever
    # happens, the driver's word comes to follow qemu's.
    wait_for(
        lambda: settled(driver, vm, lambda o: o.running == pid_alive(pid), fresh=True),
        timeout=30,
        what="the daemon answering again",
    )
    driver.kill(vm)
    assert not pid_alive(pid)
