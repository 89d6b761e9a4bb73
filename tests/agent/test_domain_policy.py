"""The libvirt driver's domain XML policy (hafence.agent.domain_policy).

Hostile domain XML as someone who may write HAVirtualMachines would write it: each
variant is refused with a message naming the field and the element.  Against a real
libvirt daemon, the variants libvirt itself defines (shown by defining them directly)
are never defined through the driver, an ``<emulator>`` script never runs, and a good
domain with its disk in the image directory runs.  Through a real agent, the refusal
lands in the VM's status.runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hafence.agent.domain_policy import DomainPolicy, DomainRefused, parse
from hafence.agent.drivers import StartError
from hafence.agent.libvirt import LibvirtDriver
from hafence.api.vm import Runtime
from hafence.kube import Api
from hafence.lab.libvirtd import Libvirtd, domain_xml, make_disk, unavailable

from .conftest import AgentProc
from .helpers import make_host, make_vm, place, runtime, wait_for

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
FIELD = "spec.runtime.libvirt.domainXML"
IMG = "@IMG@"  # replaced by the image directory
BOOT = "<boot dev='hd'/>"  # where the lab's domain XML boots from


def _variant(entry: dict[str, Any]) -> Callable[[str], str]:
    def make(name: str) -> str:
        xml = domain_xml(name)

        def put(old: str, new: str) -> str:
            # A variant that no longer finds its anchor in the lab's template would
            # test the harmless template instead: fail loudly.
            assert old in xml, f"variant {entry['id']}: {old!r} not in the lab's domain XML"
            return xml.replace(old, new, 1)

        if "devices" in entry:
            xml = put("<devices>", "<devices>" + entry["devices"])
        if "after_devices" in entry:
            xml = put("</devices>", "</devices>" + entry["after_devices"])
        if "os" in entry:
            xml = put(BOOT, entry["os"] + BOOT)
            xml = put("<on_poweroff>", "<features><acpi/></features><on_poweroff>")
        if "replace" in entry:
            old, new = entry["replace"]
            xml = put(old, new)
        return xml

    return make


# (id, XML for a domain name, fragment of the refusal, does libvirt 9 define it as is)
HOSTILE: list[tuple[str, Callable[[str], str], str, bool]] = [
    (e["id"], _variant(e), e["expect"], e.get("libvirt_defines", True))
    for e in yaml.safe_load((Path(__file__).parent / "domain_xml" / "hostile.yaml").read_text())
]

# As `virsh dumpxml --inactive` prints a production VM, within the subset.
PRODUCTION = f"""<?xml version='1.0'?>
<domain type='qemu'>
  <name>NAME</name>
  <title>db-1</title>
  <description>/srv/db/README says why</description>
  <metadata><app xmlns='urn:example'><owner path='/anything'/></app></metadata>
  <memory unit='MiB'>64</memory><currentMemory unit='MiB'>64</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/><bootmenu enable='no'/></os>
  <features><acpi/><apic/></features>
  <cpu mode='custom' match='exact' check='none'><model fallback='forbid'>qemu64</model></cpu>
  <clock offset='utc'><timer name='rtc' tickpolicy='catchup'/></clock>
  <on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none' discard='unmap'/>
      <source file='{IMG}/db-1.qcow2'/><backingStore/>
      <target dev='vda' bus='virtio'/><serial>db-1-root</serial>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/><source file='{IMG}/NAME.img'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/>
      <target dev='sda' bus='sata'/><readonly/></disk>
    <controller type='usb' index='0' model='piix3-uhci'/>
    <controller type='virtio-serial' index='0'/>
    <interface type='bridge'><mac address='52:54:00:12:34:56'/><source bridge='br-vm'/>
      <model type='virtio'/></interface>
    <interface type='network'><source network='default'/><model type='virtio'/></interface>
    <serial type='pty'><source path='/dev/pts/4'/><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <input type='tablet' bus='usb'/>
    <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'>
      <listen type='address' address='127.0.0.1'/></graphics>
    <audio id='1' type='none'/>
    <video><model type='cirrus'/></video>
    <watchdog model='i6300esb' action='reset'/>
    <memballoon model='virtio'/>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
  </devices>
  <seclabel type='dynamic' model='dac' relabel='yes'/>
</domain>"""


@pytest.fixture(scope="module")
def images(libvirt_daemon: Libvirtd) -> Path:
    """The image directory, inside the daemon's root (its user must reach it)."""
    d = libvirt_daemon.root / "images"
    make_disk(d / "a.img")
    return d


def xml_of(make: Callable[[str], str], name: str, images: Path) -> str:
    return make(name).replace(IMG, str(images))


# -- the policy alone --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "fragment"), [(h[1], h[2]) for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_hostile_domain_xml_is_refused_naming_the_element(
    make: Callable[[str], str], fragment: str, tmp_path: Path
) -> None:
    policy = DomainPolicy((tmp_path,))
    with pytest.raises(DomainRefused) as err:
        policy.check(parse(xml_of(make, "v", tmp_path)))
    message = str(err.value)
    assert message.startswith(f"{FIELD}: <domain type="), message
    assert fragment in message and "--libvirt-unrestricted-domain-xml" in message, message
    DomainPolicy(unrestricted=True).check(parse(xml_of(make, "v", tmp_path)))  # the flag opens it


_D = "<domain type='qemu'><name>{}</name></domain>"


@pytest.mark.parametrize(
    "text",
    [
        "<!DOCTYPE domain [<!ENTITY x SYSTEM 'file:///etc/shadow'>]>" + _D.format("&x;"),
        "<!DOCTYPE d [<!ENTITY a 'aaaaaaaa'><!ENTITY b '&a;&a;&a;&a;'>]>" + _D.format("&b;"),
        # A default attribute only a DTD-reading parser would see.
        "<!DOCTYPE domain [<!ATTLIST disk type CDATA 'block'>]>" + _D.format("d"),
        "<!DOCTYPE domain SYSTEM 'http://127.0.0.1:9/x.dtd'>" + _D.format("d"),
    ],
    ids=["external-entity", "entity-expansion", "default-attribute", "external-dtd"],
)
def test_a_dtd_is_refused_even_unrestricted(text: str) -> None:
    with pytest.raises(DomainRefused, match="DOCTYPE"):
        parse(text)


def test_production_xml_and_the_labs_pass(tmp_path: Path) -> None:
    policy = DomainPolicy((tmp_path,))
    policy.check(parse(xml_of(lambda n: PRODUCTION.replace("NAME", n), "db-1", tmp_path)))
    policy.check(parse(domain_xml("lab", tmp_path / "lab.img")))
    policy.check(parse(domain_xml("diskless")))  # and without an image directory at all
    DomainPolicy().check(parse(domain_xml("diskless")))
    firmware = _variant(
        {
            "os": "<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader>"
            f"<nvram template='/usr/share/OVMF/OVMF_VARS.fd'>{IMG}/v_VARS.fd</nvram>"
        }
    )
    policy.check(parse(xml_of(firmware, "v", tmp_path)))


def test_a_symlink_out_of_the_image_directory_does_not_count(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "root.img").symlink_to("/dev/sda")
    with pytest.raises(DomainRefused, match=r"root\.img' is not under"):
        DomainPolicy((images,)).check(parse(domain_xml("v", images / "root.img")))


def test_a_disk_needs_an_image_directory(tmp_path: Path) -> None:
    with pytest.raises(DomainRefused, match="the agent has no --libvirt-image-dir"):
        DomainPolicy().check(parse(domain_xml("v", tmp_path / "a.img")))


# -- the driver against a real libvirt ---------------------------------------------------

libvirt_only = pytest.mark.skipif(unavailable() is not None, reason=f"{unavailable()}")


@pytest.fixture
def driver(images: Path) -> Iterator[LibvirtDriver]:
    d = LibvirtDriver("h1", timeout=10.0, policy=DomainPolicy((images,)))
    yield d
    d.close()


def rt(uri: str, xml: str) -> Runtime:
    return Runtime.model_validate({"driver": "libvirt", "libvirt": {"uri": uri, "domainXML": xml}})


def _defined(conn, name: str) -> bool:  # type: ignore[no-untyped-def]
    return name in conn.listDefinedDomains() or name in [d.name() for d in conn.listAllDomains()]


@libvirt_only
def test_libvirt_would_define_them_the_driver_never_does(
    libvirt_daemon: Libvirtd, images: Path, driver: LibvirtDriver
) -> None:
    import libvirt

    conn = libvirt.open(libvirt_daemon.uri)
    try:
        for id_, make, fragment, libvirt_defines in HOSTILE:
            name = f"hostile-{id_}"
            xml = xml_of(make, name, images)
            if libvirt_defines:  # a real threat: libvirt itself takes it as it is
                conn.defineXML(xml).undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM)
            with pytest.raises(DomainRefused, match=fragment.replace("(", r"\(")):
                driver.start(f"ns/{name}", 1, rt(libvirt_daemon.uri, xml))
            assert not _defined(conn, name), f"{id_}: defined through the driver"
    finally:
        conn.close()


@libvirt_only
def test_an_emulator_of_ones_own_never_runs(
    libvirt_daemon: Libvirtd, images: Path, driver: LibvirtDriver
) -> None:
    # libvirt runs the <emulator> as soon as a domain naming it is defined (to probe
    # its capabilities): a script there is code execution at define time.
    marker = libvirt_daemon.root / "emulator-ran"
    script = libvirt_daemon.root / "evil-qemu"
    script.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    script.chmod(0o755)
    xml = domain_xml("hostile-emulator").replace("/usr/bin/qemu-system-x86_64", str(script))
    with pytest.raises(DomainRefused, match="<emulator>"):
        driver.start("ns/hostile-emulator", 1, rt(libvirt_daemon.uri, xml))
    assert not marker.exists()
    # The threat is real: defined directly, libvirt runs the script (and then fails).
    import libvirt

    conn = libvirt.open(libvirt_daemon.uri)
    try:
        with pytest.raises(libvirt.libvirtError):
            conn.defineXML(xml)
    finally:
        conn.close()
    assert marker.exists()


@libvirt_only
def test_a_good_domain_with_its_disk_in_the_image_directory_runs(
    libvirt_daemon: Libvirtd, images: Path, driver: LibvirtDriver
) -> None:
    import libvirt

    disk = make_disk(images / "good.img")
    vm = driver.start("ns/good", 1, rt(libvirt_daemon.uri, domain_xml("hafence-good", disk)))
    try:
        assert driver.observe(vm).running
        assert "hafence-good" in libvirt_daemon.qemu_pids()
    finally:
        driver.kill(vm)
    conn = libvirt.open(libvirt_daemon.uri)
    try:  # the production example is one libvirt defines, too
        prod = xml_of(lambda n: PRODUCTION.replace("NAME", n), "prod-example", images)
        DomainPolicy((images,)).check(parse(prod))
        conn.defineXML(prod).undefine()
    finally:
        conn.close()


# -- through a real agent: the refusal is in the VM's status -----------------------------


@libvirt_only
def test_the_agent_reports_a_refused_domain_in_the_vm_status(
    api: Api,
    namespace: str,
    start_agent: Callable[..., AgentProc],
    libvirt_daemon: Libvirtd,
    images: Path,
) -> None:
    import libvirt

    make_host(api, namespace, "h1")
    agent = start_agent(
        "h1", namespace, "--libvirt-uri", libvirt_daemon.uri, "--libvirt-image-dir", str(images)
    )
    hostile = xml_of(HOSTILE[0][1], "hafence-evil", images)  # the host's own disk
    make_vm(api, namespace, "evil", libvirt=(libvirt_daemon.uri, hostile))
    disk = make_disk(images / "fine.img")
    make_vm(api, namespace, "fine", libvirt=(libvirt_daemon.uri, domain_xml("hafence-fine", disk)))
    place(api, namespace, "evil", "h1", 1)
    place(api, namespace, "fine", "h1", 1)
    try:
        rt_ = wait_for(
            lambda: (r := runtime(api, namespace, "evil")).get("state") == "Failed" and r,
            what="the hostile VM Failed",
            timeout=60,
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{agent.log_text()}") from None
    assert f"{FIELD}: <domain type='qemu'><devices><disk type='block'>" in rt_["message"], (
        rt_,
        agent.log_text(),
    )
    wait_for(lambda: runtime(api, namespace, "fine").get("state") == "Running", what="Running")
    conn = libvirt.open(libvirt_daemon.uri)
    try:
        assert not _defined(conn, "hafence-evil")
        conn.lookupByName("hafence-fine").destroy()
    finally:
        conn.close()


def test_the_api_model_refuses_remote_and_program_running_uris() -> None:
    for uri in (
        "qemu+ext:///system?command=/tmp/evil",
        "qemu+ssh://root@elsewhere/system",
        "qemu+tcp://10.0.0.1/system",
        "lxc:///system",
        "qemu:///embed?root=/tmp/x",
    ):
        with pytest.raises(ValueError, match="is not a local qemu daemon"):
            Runtime.model_validate(
                {"driver": "libvirt", "libvirt": {"uri": uri, "domainName": "d"}}
            )
    with pytest.raises(StartError, match="not a local qemu daemon"):
        DomainPolicy().check_uri("qemu+ext:///system?command=/tmp/evil")
