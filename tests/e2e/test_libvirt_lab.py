"""The lab on real VMs: a libvirt daemon per virtual host, qemu domains, shared disks.

One lab for the module (its daemons and domains are the expensive part), two
scenarios on it: a network cut (hard fencing through the BMC, whose "off" kills every
qemu of that host's daemon) and a power loss with a dead BMC (a person confirms).
The split-brain sampler watches qemu processes by ``-name guest=`` and the disk
images each holds open.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hafence.lab.libvirtd import qemu_processes, unavailable
from hafence.lab.runner import Lab, LabConfig

from .conftest import failed, play

pytestmark = [
    pytest.mark.slow,
    pytest.mark.controlplane,
    pytest.mark.timeout(200),
    pytest.mark.skipif(unavailable() is not None, reason=f"real VMs: {unavailable()}"),
]


@pytest.fixture(scope="module")
def lab(kubeconfig: str) -> Iterator[Lab]:
    lab = Lab(
        LabConfig(
            hosts=3, kubeconfig=Path(kubeconfig), out=sys.stdout, spinner=False, vm_driver="libvirt"
        )
    )
    try:
        lab.start()
        yield lab
    except BaseException:
        for host in lab.dc.hosts.values() if lab.dc is not None else ():
            print(f"\n--- {host.name}: agent log (tail) ---\n" + tail(host.agent_log))
            if host.libvirtd is not None:
                print(
                    f"--- {host.name}: libvirtd log ---\n" + tail(host.libvirtd.root / "daemon.log")
                )
        raise
    finally:
        if lab.operator is not None and lab.operator.poll() is None:
            print("\n--- operator log (tail) ---\n" + lab.log_tail("operator.log", 40))
        lab.close()


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return str(exc)


def qemu_of(lab: Lab) -> dict[str, list[str | None]]:
    assert lab.dc is not None
    out: dict[str, list[str | None]] = {}
    for _pid, key, host in lab.dc.vm_processes():
        out.setdefault(key.split("/", 1)[1], []).append(host)
    return out


def test_lab_vms_are_qemu_domains_on_shared_disks(lab: Lab) -> None:
    assert lab.dc is not None
    roots = {h.name: h.libvirtd for h in lab.dc.hosts.values()}
    assert all(roots.values())
    running = qemu_of(lab)
    for i, host in enumerate(sorted(roots), start=1):
        assert running.get(f"ha-{i}") == [host], running
    disks = sorted(p.name for p in lab.dc.shared.glob("*.img"))
    assert disks == sorted(f"{k}-{i}.img" for k in ("ha", "pet") for i in (1, 2, 3))
    roots_by_path = {str(d.root): h for h, d in roots.items() if d is not None}
    held = {guest: opened for _, guest, _, opened in qemu_processes(roots_by_path, lab.dc.shared)}
    assert held.get("ha-1") == [str(lab.dc.shared / "ha-1.img")], held


@pytest.mark.parametrize("scenario", ["network-cut", "power-loss"])
def test_scenario_on_real_vms(lab: Lab, scenario: str) -> None:
    assert lab.checker is not None and lab.dc is not None
    result = play(lab, scenario)
    assert result.ok, failed(result)
    ha = {n for n in result.moves if n.startswith("ha-")}
    assert ha, "the victim ran no HA VM"
    running = qemu_of(lab)
    for name in ha:
        assert len(running.get(name, [])) == 1, f"{name}: qemu on {running.get(name)}"
    assert not lab.checker.violations, [v.describe() for v in lab.checker.violations]
    assert not lab.dc.disk_violations, lab.dc.disk_violations
