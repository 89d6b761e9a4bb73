"""What a VM's spec may put into a libvirt domain: an allow-list the agent checks.

Whoever may write an HAVirtualMachine hands the agent a domain XML, and libvirt does
what it says with the hypervisor's rights: a ``<disk type='block'>`` on the host's own
disk, a ``<hostdev>``, a ``<filesystem>`` sharing ``/``, ``<qemu:commandline>``
arguments, a serial port logging into ``/etc/cron.d``, ``<seclabel type='none'>``...
each is root on the host.  So by default the agent defines only domains built from a
subset that reaches nothing of the host but CPU time, memory, the image directories
it was given (``--libvirt-image-dir``), libvirt networks and bridges; anything else
is refused before libvirt sees it, naming ``spec.runtime.libvirt.domainXML`` and the
element.  ``--libvirt-unrestricted-domain-xml`` turns the element check off where
everyone who writes VMs is trusted like root on the hypervisors.

An allow-list rather than a deny-list: libvirt adds host-reaching elements with every
release, and an element this module does not know is refused, not let through.  Inside
the elements it allows, two checks run everywhere as a backstop: no element or
attribute of another XML namespace (``qemu:``, ``lxc:``...; ``<metadata>`` is libvirt's
opaque store and exempt), and no absolute path anywhere but in the places whose path
this module checks (so a host path in an element it did not think of is refused too).

The allowed subset (docs/deploy.md lists it for admins):

- disks: ``type='file'`` (or empty cdrom/floppy) whose file lies under an image
  directory, format ``raw`` or ``qcow2``; a qcow2 disk declares its backing chain
  (images under the image directories too) ending in an empty ``<backingStore/>``, as
  qemu would otherwise open whatever backing file the image's header names;
- interfaces: ``network`` and ``bridge`` only, no ``<script>``, no tap/vhost device
  paths, no ``managed='no'`` target, no ROM file;
- serial/console/channel/parallel: ``pty``, ``null``, ``vc``, ``spicevmc``,
  ``spiceport``, ``qemu-vdagent``, and a ``unix`` channel whose socket libvirt places
  itself (the guest agent's); no ``<log file>``;
- graphics ``vnc``/``spice`` without sockets or render nodes; audio ``none``/``spice``;
  input without host event devices; rng from ``/dev/urandom``/``/dev/random`` or
  builtin; TPM ``emulator``; memory devices ``dimm``/``virtio-mem``; controllers,
  video, sound, watchdog, memballoon, panic, vsock, iommu, hub;
- firmware: ``<loader>`` read-only under /usr/share or in an image directory, its
  ``<nvram>`` in an image directory; kernel/initrd/dtb/ACPI tables in one;
- ``<emulator>`` only a distribution's qemu binary; ``<seclabel>`` only
  ``type='dynamic'`` (sVirt keeps confining each qemu to the files its XML names),
  never ``relabel='no'`` or a label of one's own;
- refused outright: hostdev, filesystem, smartcard, redirdev, shmem, lease, pstore,
  ``<bootloader>``, ``<idmap>``, ``<resource>``, container init, block/dir/network/
  volume disks, ``<blkiotune><device>``, fw_cfg entries from files, host SMBIOS.

Parsing: Python's expat, with a first pass that refuses any DOCTYPE (hence any entity
declaration, external entity or default attribute), the same handler defusedxml
installs, without a dependency.  The driver then hands libvirt the tree this module
checked, serialized again (libvirt.stamped_xml), never the original text: with no
DTD, libvirt's libxml2 and expat read the same elements and attributes, so what was
checked is what is defined.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
import xml.parsers.expat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hafence.agent.drivers import StartError
from hafence.api.grammar import libvirt_uri_error

FIELD = "spec.runtime.libvirt.domainXML"
OPEN = "--libvirt-unrestricted-domain-xml"
# A distribution's qemu, where libvirt itself finds it: an <emulator> is the program
# libvirt runs, so any other path is code execution.
EMULATOR = r"/usr/(?:bin/qemu-system-[a-z0-9_]+|libexec/qemu-kvm|bin/(?:qemu-)?kvm)"
FIRMWARE_DIR = Path("/usr/share")  # read-only firmware of packages (OVMF, SeaBIOS, edk2)
RNG_DEVICES = ("/dev/urandom", "/dev/random")
CHARDEV_TYPES = ("pty", "null", "vc", "spicevmc", "spiceport", "qemu-vdagent")
DISK_FORMATS = ("raw", "qcow2")
PTY_PATH = r"/dev/pts/[0-9]+"  # `virsh dumpxml` of a running domain: libvirt ignores it


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Children of <domain> with nothing of the host in them (the backstops still apply).
_PLAIN_TOP = _words(
    "name uuid genid title description maxMemory memory currentMemory memoryBacking "
    "memtune vcpu vcpus iothreads iothreadids defaultiothread cputune numatune "
    "features cpu clock on_poweroff on_reboot on_crash on_lockfailure pm perf keywrap "
    "launchSecurity throttlegroups"
)
_REFUSED_TOP = {
    "bootloader": "runs a program of the host to boot the guest",
    "bootloader_args": "belongs to <bootloader>, which runs a program of the host",
    "idmap": "maps host user IDs into a container",
    "resource": "places the domain into a host cgroup partition",
}
_PLAIN_DEVICES = _words(
    "controller video sound watchdog memballoon panic vsock iommu hub nvram redirfilter crypto"
)
_REFUSED_DEVICES = {
    "hostdev": "passes a host device (PCI, USB, SCSI, mediated) to the guest",
    "filesystem": "shares a host directory with the guest",
    "smartcard": "passes the host's smartcard reader or a host chardev",
    "redirdev": "redirects a host USB device through a chardev",
    "shmem": "maps host shared memory, shared with other domains",
    "lease": "takes a lock in a host lockspace file",
    "pstore": "stores guest data in a host file",
}
_OS_PLAIN = _words("type boot bootmenu bios cmdline firmware")
_CONTAINER_OS = _words("init initarg initenv initdir inituser initgroup")
# Output-only or guest-side text a path backstop must not read as a host path.
_TEXT_EXEMPT = frozenset({"cmdline", "description", "title"})


class DomainRefused(StartError):
    """The domain XML asks for something the agent's policy does not allow."""


def parse(text: str) -> ET.Element:
    """The root of ``text``; DomainRefused for anything but plain XML without a DTD."""
    guard = xml.parsers.expat.ParserCreate()

    def no_dtd(*_: object) -> None:
        raise DomainRefused(
            f"{FIELD}: a DOCTYPE (DTD, entity declarations) is not allowed: give the "
            "<domain> element without one"
        )

    guard.StartDoctypeDeclHandler = no_dtd
    guard.EntityDeclHandler = no_dtd
    guard.ExternalEntityRefHandler = no_dtd  # type: ignore[assignment]
    try:
        guard.Parse(text, True)
        return ET.fromstring(text)
    except (xml.parsers.expat.ExpatError, ET.ParseError) as exc:
        raise StartError(f"{FIELD} is not XML: {exc}") from None


def _tag(el: ET.Element) -> str:
    return el.tag if isinstance(el.tag, str) else "?"


def _show(el: ET.Element, *attrs: str) -> str:
    shown = "".join(f" {a}='{el.get(a)}'" for a in attrs if el.get(a) is not None)
    tag = _tag(el)
    if tag.startswith("{"):
        tag = tag.partition("}")[2]
    return f"<{tag}{shown}>"


@dataclass
class _Walk:
    policy: DomainPolicy
    checked: set[tuple[int, str | None]] = field(default_factory=set)  # (id(el), attr|None)

    # -- reporting --------------------------------------------------------------------
    def refuse(self, where: list[str], why: str) -> DomainRefused:
        return DomainRefused(
            f"{FIELD}: {''.join(where)} is not allowed: {why} (the agent allows any domain "
            f"XML only when started with {OPEN})"
        )

    def mark(self, el: ET.Element, attr: str | None = None) -> None:
        self.checked.add((id(el), attr))

    def path_ok(
        self,
        where: list[str],
        el: ET.Element,
        value: str | None,
        dirs: Iterable[Path],
        what: str,
        attr: str | None = None,
    ) -> None:
        """``value`` (an attribute or the text of ``el``) names a file under ``dirs``."""
        self.mark(el, attr)
        if value is None:
            return
        value = value.strip()
        dirs = list(dirs)
        if not os.path.isabs(value) or not any(_under(value, d) for d in dirs):
            places = ", ".join(str(d) for d in dirs) or "none: the agent has no --libvirt-image-dir"
            raise self.refuse(
                where, f"{what} {value!r} is not under an allowed directory ({places})"
            )

    # -- the walk ---------------------------------------------------------------------
    def domain(self, root: ET.Element) -> None:
        where = [_show(root, "type")]
        if root.get("type") not in ("kvm", "qemu"):
            raise self.refuse(where, "only type='kvm' or type='qemu' domains")
        for child in root:
            tag = _tag(child)
            at = [*where, _show(child)]
            if tag == "metadata":
                self.mark_subtree(child)
            elif tag in _PLAIN_TOP:
                self.plain(at, child)
            elif tag == "blkiotune":
                if child.find(".//device") is not None:
                    raise self.refuse([*at, "<device>"], "names a host block device")
                self.plain(at, child)
            elif tag == "sysinfo":
                self.sysinfo(at, child)
            elif tag == "os":
                self.os(at, child)
            elif tag == "devices":
                self.devices(at, child)
            elif tag == "seclabel":
                self.seclabel([*where, _show(child, "type", "relabel")], child, top=True)
            elif tag in _REFUSED_TOP:
                raise self.refuse(at, _REFUSED_TOP[tag])
            else:
                raise self.refuse(at, "not in the agent's allow-list of domain elements")

    def mark_subtree(self, el: ET.Element) -> None:
        for e in el.iter():
            self.mark(e)
            for a in e.attrib:
                self.mark(e, a)

    def plain(self, where: list[str], el: ET.Element) -> None:
        """A subtree with nothing of the host in it: only the backstops and the
        elements that can appear anywhere (seclabel, log)."""
        for e in el.iter():
            tag = _tag(e)
            if tag == "seclabel":
                self.seclabel([*where, _show(e, "relabel")], e, top=False)
            elif tag == "log":
                raise self.refuse([*where, _show(e, "file")], "writes a host file")

    def sysinfo(self, where: list[str], el: ET.Element) -> None:
        for entry in el.iter("entry"):
            if entry.get("file") is not None:
                raise self.refuse(
                    [*where, _show(entry, "file")], "reads a host file into the guest"
                )
        self.plain(where, el)

    def os(self, where: list[str], el: ET.Element) -> None:
        dirs = self.policy.image_dirs
        for child in el:
            tag = _tag(child)
            at = [*where, _show(child)]
            if tag in _OS_PLAIN:
                self.plain(at, child)
            elif tag == "smbios":
                if child.get("mode") == "host":
                    raise self.refuse([*where, _show(child, "mode")], "copies the host's SMBIOS")
            elif tag in ("kernel", "initrd", "dtb"):
                self.path_ok(at, child, child.text, dirs, tag)
            elif tag == "acpi":
                for table in child:
                    self.path_ok([*at, _show(table)], table, table.text, dirs, "ACPI table")
            elif tag == "loader":
                fw = [*dirs, FIRMWARE_DIR] if child.get("readonly") == "yes" else dirs
                self.path_ok(at, child, child.text, fw, "firmware (writable unless readonly='yes')")
            elif tag == "nvram":
                if child.get("type") not in (None, "file") or len(child):
                    raise self.refuse(
                        [*where, _show(child, "type")], "only a file in an image directory"
                    )
                self.path_ok(at, child, child.text, dirs, "nvram")
                self.path_ok(
                    at,
                    child,
                    child.get("template"),
                    [*dirs, FIRMWARE_DIR],
                    "nvram template",
                    attr="template",
                )
            elif tag in _CONTAINER_OS:
                raise self.refuse(at, "configures a container, not a qemu domain")
            else:
                raise self.refuse(at, "not in the agent's allow-list of <os> elements")

    def devices(self, where: list[str], el: ET.Element) -> None:
        for child in el:
            tag = _tag(child)
            at = [*where, _show(child, "type", "model")]
            if tag == "emulator":
                self.mark(child)
                if not re.fullmatch(EMULATOR, (child.text or "").strip()):
                    raise self.refuse(
                        [*where, f"<emulator>{child.text}"],
                        "libvirt would run that program; only a distribution's "
                        "qemu (/usr/bin/qemu-system-ARCH, /usr/libexec/qemu-kvm)",
                    )
            elif tag == "disk":
                self.disk(at, child)
            elif tag == "interface":
                self.interface(at, child)
            elif tag in ("serial", "console", "channel", "parallel"):
                self.chardev(at, child)
            elif tag == "graphics":
                self.graphics(at, child)
            elif tag == "audio":
                if child.get("type") not in ("none", "spice"):
                    raise self.refuse(
                        at, "only type='none' or 'spice' (others use host audio or files)"
                    )
                self.plain(at, child)
            elif tag == "input":
                if (
                    child.get("type") not in ("mouse", "tablet", "keyboard")
                    or child.find("source") is not None
                ):
                    raise self.refuse(
                        at, "only an emulated mouse, tablet or keyboard (no host event device)"
                    )
                self.plain(at, child)
            elif tag == "rng":
                self.rng(at, child)
            elif tag == "tpm":
                backend = child.find("backend")
                if backend is None or backend.get("type") != "emulator":
                    raise self.refuse(
                        at, "only an emulated TPM (<backend type='emulator'>), not the host's"
                    )
                self.plain(at, child)
            elif tag == "memory":
                if child.get("model") not in ("dimm", "virtio-mem"):
                    raise self.refuse(
                        at, "only model='dimm' or 'virtio-mem' (others map host files)"
                    )
                self.plain(at, child)
            elif tag == "video":
                driver = child.find("driver")
                if driver is not None and driver.get("name") == "vhostuser":
                    raise self.refuse(
                        [*at, _show(driver, "name")], "runs a host GPU helper over a socket"
                    )
                self.plain(at, child)
            elif tag in _PLAIN_DEVICES:
                self.plain(at, child)
            elif tag in _REFUSED_DEVICES:
                raise self.refuse(at, _REFUSED_DEVICES[tag])
            else:
                raise self.refuse(at, "not in the agent's allow-list of devices")

    def disk(self, where: list[str], el: ET.Element) -> None:
        if el.get("type") != "file":
            raise self.refuse(
                where,
                "only type='file' disks, images in the agent's image "
                "directories (block, dir, network and volume disks reach "
                "the host's devices, directories or storage)",
            )
        if el.get("device", "disk") not in ("disk", "cdrom", "floppy"):
            raise self.refuse(
                [*where, _show(el, "device")], "only device='disk', 'cdrom' or 'floppy'"
            )
        driver = el.find("driver")
        fmt = "raw" if driver is None else driver.get("type", "raw")
        if driver is not None and driver.get("name", "qemu") != "qemu":
            raise self.refuse([*where, _show(driver, "name")], "only the qemu disk driver")
        if fmt not in DISK_FORMATS:
            raise self.refuse(
                [*where, _show(driver, "type")] if driver is not None else where,
                "only raw or qcow2 images (other formats name further files)",
            )
        for child in el:
            tag = _tag(child)
            at = [*where, _show(child)]
            if tag == "source":
                self.source([*where, _show(child, "file")], child)
            elif tag == "backingStore":
                self.backing(at, child)
            elif tag in ("mirror", "auth", "reservations"):
                raise self.refuse(at, "reaches host storage or sockets outside the image")
            else:
                self.plain(at, child)
        if fmt != "raw":
            chain, node = el, el.find("backingStore")
            while node is not None and len(node):
                chain, node = node, node.find("backingStore")
            if node is None:
                raise self.refuse(
                    [*where, _show(chain)],
                    f"a {fmt} image needs its backing chain declared, ending in an "
                    "empty <backingStore/> (qemu would otherwise open whatever "
                    "the image's header names)",
                )

    def source(self, where: list[str], el: ET.Element) -> None:
        for attr in el.attrib:
            if attr not in ("file", "index", "startupPolicy"):
                raise self.refuse([*where[:-1], _show(el, attr)], "only a file source")
        self.path_ok(where, el, el.get("file"), self.policy.image_dirs, "image", attr="file")
        for child in el:
            if _tag(child) in ("reservations", "dataStore"):
                raise self.refuse([*where, _show(child)], "names a host socket or file")
        self.plain(where, el)

    def backing(self, where: list[str], el: ET.Element) -> None:
        if not len(el) and not el.attrib:
            return  # the end of the chain
        if el.get("type") != "file":
            raise self.refuse(
                [*where[:-1], _show(el, "type")], "only file images in the backing chain"
            )
        fmt = el.find("format")
        if fmt is None or fmt.get("type") not in DISK_FORMATS:
            raise self.refuse(where, "each backing image declares <format type='raw|qcow2'/>")
        for child in el:
            tag = _tag(child)
            if tag == "source":
                self.source([*where, "<source>"], child)
            elif tag == "backingStore":
                self.backing([*where, "<backingStore>"], child)
            elif tag != "format":
                raise self.refuse([*where, _show(child)], "not in a backing image's allow-list")

    def interface(self, where: list[str], el: ET.Element) -> None:
        if el.get("type") not in ("network", "bridge"):
            raise self.refuse(
                where,
                "only type='network' or 'bridge' interfaces (others "
                "take host NICs, tap devices, sockets or run scripts)",
            )
        for child in el:
            tag = _tag(child)
            at = [*where, _show(child)]
            if tag in ("script", "downscript"):
                raise self.refuse(at, "runs a host script")
            if tag == "backend" and (set(child.attrib) & {"tap", "vhost", "logFile"}):
                raise self.refuse(
                    [*where, _show(child, "tap", "vhost", "logFile")], "opens a host device or file"
                )
            if tag == "target" and child.get("managed") == "no":
                raise self.refuse(
                    [*where, _show(child, "managed")], "takes over an existing host tap device"
                )
            if tag == "rom" and child.get("file") is not None:
                raise self.refuse(
                    [*where, _show(child, "file")], "reads a host file as the NIC's ROM"
                )
            if tag in ("ip", "route", "portForward"):
                raise self.refuse(at, "configures the host side of a user/ethernet interface")
            self.plain(at, child)

    def chardev(self, where: list[str], el: ET.Element) -> None:
        kind = el.get("type", "pty")
        unix_channel = kind == "unix" and _tag(el) == "channel"
        if kind not in CHARDEV_TYPES and not unix_channel:
            raise self.refuse(
                where,
                f"only {', '.join(CHARDEV_TYPES)} (or a unix channel whose "
                "socket libvirt places): others read or write host files, "
                "devices, sockets or ports",
            )
        for child in el:
            tag = _tag(child)
            if tag == "log":
                raise self.refuse([*where, _show(child, "file")], "writes a host file")
            if tag == "source":
                self.chardev_source([*where, _show(child, "path", "mode")], kind, child)
            self.plain([*where, _show(child)], child)

    def chardev_source(self, where: list[str], kind: str, el: ET.Element) -> None:
        """The host side of a chardev is libvirt's to choose: only what names no host
        file, device or socket (a pty's path, as `virsh dumpxml` of a running domain
        prints it, is output that libvirt ignores on define)."""
        attrs, children = set(el.attrib), {_tag(c) for c in el}
        if kind == "pty" and attrs <= {"path"} and not children:
            path = el.get("path")
            if path is not None and not re.fullmatch(PTY_PATH, path):
                raise self.refuse(where, "a pty's path is /dev/pts/N")
            self.mark(el, "path")
        elif not (
            (kind == "spiceport" and attrs <= {"channel"} and not children)
            or (kind == "qemu-vdagent" and not attrs and children <= {"clipboard", "mouse"})
        ):
            raise self.refuse(where, "the host side of a chardev is libvirt's to choose")

    def graphics(self, where: list[str], el: ET.Element) -> None:
        if el.get("type") not in ("vnc", "spice"):
            raise self.refuse(where, "only vnc or spice (others use the host's display or GPU)")
        if el.get("socket") is not None:
            raise self.refuse(
                [*where[:-1], _show(el, "type", "socket")], "creates a host socket at that path"
            )
        for child in el.iter():
            if _tag(child) == "listen" and child.get("type", "address") not in (
                "address",
                "network",
                "none",
            ):
                raise self.refuse(
                    [*where, _show(child, "type")], "only address, network or none listens"
                )
            if _tag(child) == "gl" and child.get("rendernode") is not None:
                raise self.refuse([*where, _show(child, "rendernode")], "opens a host GPU device")
        self.plain(where, el)

    def rng(self, where: list[str], el: ET.Element) -> None:
        backend = el.find("backend")
        model = None if backend is None else backend.get("model")
        if backend is None or model not in ("random", "builtin"):
            raise self.refuse(
                [*where, _show(backend, "model")] if backend is not None else where,
                "only <backend model='random'> (/dev/urandom, /dev/random) or 'builtin'",
            )
        if model == "random":
            self.mark(backend)
            if (backend.text or "/dev/urandom").strip() not in RNG_DEVICES:
                raise self.refuse(
                    [*where, f"<backend model='random'>{backend.text}"],
                    "only /dev/urandom or /dev/random",
                )
        self.plain(where, el)

    def seclabel(self, where: list[str], el: ET.Element, *, top: bool) -> None:
        self.mark(el)
        if el.get("relabel") == "no" or (top and el.get("type", "dynamic") != "dynamic"):
            raise self.refuse(
                where,
                "sVirt stays on: only type='dynamic' labels that libvirt "
                "chooses, never relabel='no' or type='none'/'static'",
            )
        if len(el):
            raise self.refuse([*where, _show(el[0])], "a label of one's own is not allowed")

    # -- the backstops ----------------------------------------------------------------
    def backstops(self, root: ET.Element, *, paths: bool) -> None:
        stack: list[tuple[ET.Element, list[str]]] = [(root, [_show(root, "type")])]
        while stack:
            el, where = stack.pop()
            if _tag(el) == "metadata":
                continue
            for attr, value in el.attrib.items():
                if attr.startswith("{"):
                    raise self.refuse(
                        [*where[:-1], _show(el), f" attribute {attr}"],
                        "attributes of another XML namespace are not allowed",
                    )
                if paths and value.strip().startswith("/") and (id(el), attr) not in self.checked:
                    raise self.refuse([*where[:-1], _show(el, attr)], "names a host path")
            text = (el.text or "").strip()
            if (
                paths
                and text.startswith("/")
                and _tag(el) not in _TEXT_EXEMPT
                and (id(el), None) not in self.checked
            ):
                raise self.refuse([*where, text], "names a host path")
            for child in el:
                tag = _tag(child)
                if tag.startswith("{"):
                    ns, _, local = tag[1:].partition("}")
                    raise self.refuse(
                        [*where, f"<{local} xmlns='{ns}'>"],
                        "elements of another XML namespace (qemu:commandline, "
                        "qemu:arg...) pass options straight to the hypervisor",
                    )
                stack.append((child, [*where, _show(child)]))


def _under(path: str, directory: Path) -> bool:
    """``path`` lies inside ``directory``, read lexically (``..`` resolved) and on the
    host (symlinks resolved): a link out of the directory does not count."""
    lexical = os.path.normpath(path)
    base = os.path.normpath(directory)
    if os.path.commonpath([lexical, base]) != base or lexical == base:
        return False
    real, real_base = os.path.realpath(lexical), os.path.realpath(base)
    return os.path.commonpath([real, real_base]) == real_base and real != real_base


@dataclass(frozen=True)
class DomainPolicy:
    """The agent's rule for domain XML from VM specs (its flags)."""

    image_dirs: tuple[Path, ...] = ()
    unrestricted: bool = False

    def check_uri(self, uri: str) -> None:
        """Every VM's URI, also with unrestricted XML: the API refuses the others, and
        the agent connects to none it would not have accepted (libvirt's ext and ssh
        transports run programs named in the URI)."""
        error = libvirt_uri_error(uri)
        if error is not None:
            raise DomainRefused(f"spec.runtime.libvirt.{error}")

    def uri_ok(self, uri: str) -> bool:
        return libvirt_uri_error(uri) is None

    def check(self, root: ET.Element) -> None:
        """DomainRefused naming the element unless ``root`` is in the allowed subset."""
        if self.unrestricted:
            return
        walk = _Walk(self)
        walk.backstops(root, paths=False)  # first: name a qemu:commandline as such
        walk.domain(root)
        walk.backstops(root, paths=True)
