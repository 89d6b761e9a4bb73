"""The libvirt driver against Debian's virsh and libvirt's test driver (test:///default).

The test driver keeps its domains per connection; the driver holds one virsh session
per URI, so a start is visible to the observe and stop that follow.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator

import pytest

from hafence.agent.drivers import StartError
from hafence.agent.libvirt import LibvirtDriver
from hafence.api.vm import Runtime
from hafence.kube import Api

from .conftest import AgentProc
from .helpers import make_host, place, runtime, wait_for

pytestmark = pytest.mark.skipif(shutil.which("virsh") is None, reason="virsh not installed")

URI = "test:///default"
XML = (
    "<domain type='test'><name>hafence-vm1</name><memory>131072</memory><vcpu>1</vcpu>"
    "<os><type arch='x86_64'>hvm</type></os></domain>"
)


@pytest.fixture
def driver() -> Iterator[LibvirtDriver]:
    d = LibvirtDriver()
    yield d
    d.close()


def rt(**libvirt: str) -> Runtime:
    return Runtime.model_validate({"driver": "libvirt", "libvirt": {"uri": URI, **libvirt}})


def test_existing_domain_stop_start_kill(driver: LibvirtDriver) -> None:
    vm = driver.start("ns/a", 1, rt(domainName="test"))
    assert vm.domain == "test" and driver.observe(vm).running
    driver.stop(vm, grace=2)
    obs = driver.observe(vm)
    assert not obs.running and "shut off" in obs.detail
    vm = driver.start("ns/a", 2, rt(domainName="test"))
    assert driver.observe(vm).running
    driver.kill(vm)
    assert not driver.observe(vm).running


def test_define_from_xml(driver: LibvirtDriver) -> None:
    vm = driver.start("ns/b", 1, rt(domainXML=XML))
    assert vm.domain == "hafence-vm1"
    assert driver.observe(vm).running
    assert "hafence-vm1" in driver.shell(URI).run("list", "--name")
    driver.stop(vm, grace=2)
    assert driver.domstate(URI, "hafence-vm1") == "shut off"


def test_unknown_domain_is_a_clear_start_error(driver: LibvirtDriver) -> None:
    with pytest.raises(StartError, match=r"spec.runtime.libvirt.domainName .*'nosuch'"):
        driver.start("ns/c", 1, rt(domainName="nosuch"))


def test_bad_xml_is_a_clear_start_error(driver: LibvirtDriver) -> None:
    with pytest.raises(StartError, match=r"spec.runtime.libvirt.domainXML"):
        driver.start("ns/d", 1, rt(domainXML="<domain><name>x</name>"))


def test_agent_runs_a_libvirt_vm(
    api: Api, namespace: str, start_agent: Callable[..., AgentProc]
) -> None:
    make_host(api, namespace, "h1")
    agent = start_agent("h1", namespace)
    api.create(
        "HAVirtualMachine",
        namespace,
        {
            "metadata": {"name": "lv"},
            "spec": {
                "placement": {"cluster": "lab"},
                "runtime": {"driver": "libvirt", "libvirt": {"uri": URI, "domainXML": XML}},
            },
        },
    )
    place(api, namespace, "lv", "h1", 1)
    wait_for(lambda: runtime(api, namespace, "lv").get("state") == "Running", what="Running")
    place(api, namespace, "lv", "h2", 2)
    wait_for(lambda: f"stopping {namespace}/lv" in agent.log_text(), what="the domain stopped")
    wait_for(lambda: not list((agent.state_dir / "vms").glob("*.json")), what="record dropped")
