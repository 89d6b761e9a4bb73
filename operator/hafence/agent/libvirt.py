"""The ``libvirt`` driver: a VM is a libvirt domain, driven through ``virsh``.

One interactive ``virsh -c URI`` per URI stays open for the agent's lifetime (one
libvirt connection, as VDSM keeps one), fed a command at a time and read up to an
``echo`` marker.  Besides sparing a connection per call, this is what makes the
driver testable against ``test:///default``, whose domains live only as long as the
connection that made them.

A domain is either defined from ``spec.runtime.libvirt.domainXML`` or an existing one
named by ``domainName``.  Stop is ``shutdown`` (ACPI), then ``destroy`` after the
grace period; the self-fencing kill is ``destroy`` at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shlex
import subprocess
import tempfile
import threading
import time
import xml.etree.ElementTree as ET

from hafence.agent.drivers import LocalVM, Observed, StartError
from hafence.api.vm import Runtime

_PROMPT = "virsh # "
_RUNNING = {"running", "paused", "blocked", "in shutdown", "pmsuspended"}


log = logging.getLogger(__name__)


class VirshError(RuntimeError):
    pass


def domain_name(domain_xml: str) -> str:
    """The <name> of a domain definition; StartError naming the field if there is none."""
    try:
        root = ET.fromstring(domain_xml)
    except ET.ParseError as exc:
        raise StartError(f"spec.runtime.libvirt.domainXML is not XML: {exc}") from None
    name = (root.findtext("name") or "").strip()
    if root.tag != "domain" or not name:
        raise StartError("spec.runtime.libvirt.domainXML needs a <domain> with a <name>")
    return name


class VirshShell:
    def __init__(self, uri: str, timeout: float = 30.0) -> None:
        self.uri = uri
        self.timeout = timeout
        self._lock = threading.Lock()
        self._n = 0
        self._carry = b""
        try:
            self.proc = subprocess.Popen(
                ["virsh", "-q", "-c", uri],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise VirshError(f"virsh -c {uri}: {exc.strerror or exc}") from None

    def run(self, *argv: str) -> str:
        """Run one virsh command; its output, or VirshError with virsh's message."""
        with self._lock:
            if self.proc.poll() is not None:
                raise VirshError(f"virsh -c {self.uri} exited with code {self.proc.returncode}")
            self._n += 1
            # Quoted in the command, bare in the output: the echoed command line never
            # matches the marker we wait for.
            marker = f"__hafence_done_{self._n}__"
            echo = f'echo "{marker}"'
            line = shlex.join(argv)
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write(f"{line}\n{echo}\n".encode())
            self.proc.stdin.flush()
            buf = self._carry
            fd = self.proc.stdout.fileno()
            deadline = time.monotonic() + self.timeout
            while marker.encode() not in buf.replace(echo.encode(), b""):
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    raise VirshError(f"virsh {argv[0]}: no answer within {self.timeout:g}s")
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise VirshError(f"virsh -c {self.uri} exited during {argv[0]}")
                buf += chunk
            head, _, self._carry = buf.replace(echo.encode(), b"").partition(marker.encode())
        # Piped virsh prints its prompt and echoes each command line; drop both.
        kept = []
        for raw in head.decode(errors="replace").split("\n"):
            ln = raw.replace(_PROMPT, "")
            if ln.strip() != line:
                kept.append(ln)
        text = "\n".join(kept)
        errors = [
            ln[len("error:") :].strip() for ln in text.splitlines() if ln.startswith("error:")
        ]
        if errors:
            raise VirshError("; ".join(e for e in errors if e))
        return text.strip()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(b"quit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


class LibvirtDriver:
    name = "libvirt"

    def __init__(self) -> None:
        self._shells: dict[str, VirshShell] = {}
        self._lock = threading.Lock()

    def shell(self, uri: str) -> VirshShell:
        with self._lock:
            sh = self._shells.get(uri)
            if sh is None or sh.proc.poll() is not None:
                sh = self._shells[uri] = VirshShell(uri)
            return sh

    def close(self) -> None:
        with self._lock:
            for sh in self._shells.values():
                sh.close()
            self._shells.clear()

    def domstate(self, uri: str, domain: str) -> str:
        return self.shell(uri).run("domstate", domain).splitlines()[0].strip()

    def start(self, key: str, epoch: int, runtime: Runtime) -> LocalVM:
        lv = runtime.libvirt
        if lv is None:
            raise StartError("spec.runtime.libvirt is missing for driver 'libvirt'")
        try:
            sh = self.shell(lv.uri)
            if lv.domain_xml is not None:
                domain = domain_name(lv.domain_xml)
                with tempfile.NamedTemporaryFile("w", suffix=".xml", delete=False) as fh:
                    fh.write(lv.domain_xml)
                try:
                    sh.run("define", fh.name)
                finally:
                    os.unlink(fh.name)
            else:
                assert lv.domain_name is not None
                domain = lv.domain_name
            if self.domstate(lv.uri, domain) not in _RUNNING:
                started = LocalVM(key=key, driver=self.name, epoch=epoch, uri=lv.uri, domain=domain)
                try:
                    sh.run("start", domain)
                except VirshError as exc:
                    # "start" without an answer may still bring the domain up.  Failed
                    # tells the operator the VM is not running here (it may then start
                    # it elsewhere), so that must be made true first.
                    if not self._confirmed_off(started):
                        log.error(
                            "virsh start %s: %s; domain state unconfirmed: kept "
                            "as this host's, so observation and the S3 sweep "
                            "handle it",
                            domain,
                            exc,
                        )
                        return started
                    raise
        except VirshError as exc:
            field = "domainXML" if lv.domain_xml is not None else "domainName"
            raise StartError(f"spec.runtime.libvirt.{field} ({lv.uri}): {exc}") from None
        return LocalVM(key=key, driver=self.name, epoch=epoch, uri=lv.uri, domain=domain)

    def _confirmed_off(self, vm: LocalVM) -> bool:
        """Destroy ``vm`` if it runs; True only if virsh then says it is not running."""
        assert vm.uri is not None and vm.domain is not None
        try:
            if self.domstate(vm.uri, vm.domain) in _RUNNING:
                self.shell(vm.uri).run("destroy", vm.domain)
            return self.domstate(vm.uri, vm.domain) not in _RUNNING
        except VirshError:
            return False

    def observe(self, vm: LocalVM) -> Observed:
        assert vm.uri is not None and vm.domain is not None
        try:
            state = self.domstate(vm.uri, vm.domain)
        except VirshError as exc:
            return Observed(False, f"domain {vm.domain}: {exc}")
        if state in _RUNNING:
            return Observed(True)
        return Observed(False, f"domain {vm.domain} is {state}")

    def stop(self, vm: LocalVM, grace: float) -> None:
        assert vm.uri is not None and vm.domain is not None
        if not self.observe(vm).running:
            return
        with contextlib.suppress(VirshError):  # no ACPI: destroyed below
            self.shell(vm.uri).run("shutdown", vm.domain)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not self.observe(vm).running:
                return
            time.sleep(0.1)
        self.kill(vm)

    def kill(self, vm: LocalVM) -> None:
        assert vm.uri is not None and vm.domain is not None
        if self.observe(vm).running:
            try:
                self.shell(vm.uri).run("destroy", vm.domain)
            except VirshError as exc:
                if self.observe(vm).running:
                    raise RuntimeError(f"virsh destroy {vm.domain}: {exc}") from None
