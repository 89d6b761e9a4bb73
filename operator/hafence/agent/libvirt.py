"""The ``libvirt`` driver: a VM is a libvirt domain, driven through libvirt's own API.

libvirt-python (built against the host's libvirt, see docs/architecture.md) gives one
connection per URI, kept for the agent's lifetime as VDSM keeps one, with keepalive
so a daemon that stops answering is noticed.  The bindings block, so every call runs
on that URI's own worker thread and is waited for with a timeout: a hung daemon makes
the call fail (an ``unknown`` observation, a failed stop), never the agent hang.
Calls still queued behind a hung one are cancelled, not run late.

Lifecycle events, not polling: a domain's "active" bit is cached per connection until
a lifecycle event for that domain (or the loss of the connection) invalidates it, and
each event wakes the agent, so a crash is handled at once.

Domains carry hafence's mark in their XML (``<metadata>``, namespace ``NS``): the
datacenter (namespace), VM name, host and placement epoch.  ``discover`` lists the
active domains and keeps those marked for this datacenter and host; a domain is looked
up by the UUID it had when started, so another domain of the same name (defined after
ours was undefined) is never taken for ours.  A domain of the right name that carries
no mark (``domainXML``) or another VM's mark is never replaced: that is a start error.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import logging
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from hafence.agent.domain_policy import DomainPolicy, parse
from hafence.agent.drivers import (
    DOMAIN_UUID,
    RUNNING,
    DriverError,
    LocalVM,
    Observed,
    StartError,
    StopError,
)
from hafence.api.vm import Runtime

NS = "https://hafence.io/xmlns/libvirt-domain/1"
PREFIX = "hafence"

log = logging.getLogger(__name__)
T = TypeVar("T")

_loop_lock = threading.Lock()
_loop_started = False


def _libvirt() -> Any:
    try:
        import libvirt
    except ImportError:
        raise DriverError(
            "the libvirt driver needs libvirt-python (pip install 'hafence[libvirt]')"
        ) from None
    return libvirt


def _start_event_loop() -> None:
    """libvirt's default event loop, once per process and before any connection:
    keepalive and lifecycle events need it."""
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        lv = _libvirt()
        lv.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                lv.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_started = True


@dataclass(frozen=True)
class Mark:
    """What hafence writes into a domain's <metadata>."""

    datacenter: str
    name: str
    host: str
    epoch: int

    @property
    def key(self) -> str:
        return f"{self.datacenter}/{self.name}"

    def element(self) -> str:
        el = ET.Element(
            "vm",
            {
                "datacenter": self.datacenter,
                "name": self.name,
                "host": self.host,
                "epoch": str(self.epoch),
            },
        )
        return ET.tostring(el, encoding="unicode")

    @classmethod
    def parse(cls, text: str) -> Mark | None:
        try:
            el = ET.fromstring(text)
            return cls(el.attrib["datacenter"], el.attrib["name"], el.attrib["host"],
                       int(el.attrib.get("epoch", "0")))  # fmt: skip
        except (ET.ParseError, KeyError, ValueError):
            return None


def domain_name(domain_xml: str) -> str:
    """The <name> of a domain definition; StartError naming the field if there is none."""
    return _parse(domain_xml).findtext("name", "").strip()


def _parse(domain_xml: str) -> ET.Element:
    root = parse(domain_xml)  # no DTD: what is checked is what libvirt reads
    if root.tag != "domain" or not (root.findtext("name") or "").strip():
        raise StartError("spec.runtime.libvirt.domainXML needs a <domain> with a <name>")
    return root


def stamped_xml(domain_xml: str, mark: Mark) -> str:
    """``domain_xml`` with hafence's mark in its <metadata> (any earlier mark replaced)."""
    root = _parse(domain_xml)
    meta = root.find("metadata")
    if meta is None:
        meta = ET.SubElement(root, "metadata")
    for old in list(meta):
        if old.tag == f"{{{NS}}}vm":
            meta.remove(old)
    el = ET.SubElement(meta, f"{{{NS}}}vm")
    el.attrib.update(ET.fromstring(mark.element()).attrib)
    ET.register_namespace(PREFIX, NS)
    return ET.tostring(root, encoding="unicode")


def _with_uuid(domain_xml: str, uuid: str) -> str:
    """``domain_xml`` naming ``uuid`` unless it names a UUID of its own."""
    root = ET.fromstring(domain_xml)
    if (root.findtext("uuid") or "").strip():
        return domain_xml
    el = root.find("uuid")
    if el is None:
        el = ET.Element("uuid")
        root.insert(1, el)
    el.text = uuid
    ET.register_namespace(PREFIX, NS)
    return ET.tostring(root, encoding="unicode")


class _Conn:
    """One URI: its connection, its worker thread, its cache of active bits."""

    def __init__(self, uri: str, on_event: Callable[[], None]) -> None:
        self.uri = uri
        self.on_event = on_event
        self.conn: Any = None
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="libvirt")
        self.active: dict[str, bool] = {}  # UUID -> active, valid until an event
        # Bumped by every event: a query that raced an event must not cache its answer.
        self.generation = 0
        self.lock = threading.Lock()

    def ensure(self) -> Any:
        """The open connection (on the worker thread only)."""
        lv = _libvirt()
        if self.conn is not None and self.conn.isAlive() != 1:
            self._drop()
        if self.conn is None:
            conn = lv.open(self.uri)
            try:
                conn.setKeepAlive(2, 3)
            except lv.libvirtError:
                pass  # local drivers (test:///) have no keepalive: nothing to detect
            conn.registerCloseCallback(self._closed, None)
            conn.domainEventRegisterAny(
                None, lv.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle, None
            )
            self.forget_all()
            self.conn = conn
        return self.conn

    def forget_all(self) -> None:
        with self.lock:
            self.active.clear()
            self.generation += 1

    def _drop(self) -> None:
        conn, self.conn = self.conn, None
        self.forget_all()
        if conn is not None:
            with contextlib.suppress(Exception):  # a dead connection may fail to close
                conn.close()

    def _closed(self, conn: Any, reason: int, opaque: Any) -> None:
        self.forget_all()
        log.warning("libvirt connection to %s closed (reason %s)", self.uri, reason)
        self.on_event()

    def _lifecycle(self, conn: Any, dom: Any, event: int, detail: int, opaque: Any) -> None:
        with self.lock:
            self.active.pop(dom.UUIDString(), None)
            self.generation += 1
        self.on_event()

    def cached(self, uuid: str) -> tuple[bool | None, int]:
        with self.lock:
            return self.active.get(uuid), self.generation

    def remember(self, uuid: str, active: bool, generation: int) -> None:
        with self.lock:
            if generation == self.generation:
                self.active[uuid] = active


class LibvirtDriver:
    name = "libvirt"

    def __init__(
        self,
        host: str = "",
        *,
        uris: Iterable[str] = (),
        aliases: dict[str, str] | None = None,
        timeout: float = 10.0,
        on_event: Callable[[], None] | None = None,
        policy: DomainPolicy | None = None,
    ) -> None:
        self.host = host
        self.policy = policy or DomainPolicy()  # what a spec's domainXML may hold
        # A spec's URI -> this host's (libvirt's own uri_aliases, per agent: the lab's
        # virtual hosts share one /etc/libvirt but each has a daemon of its own).
        self.aliases = dict(aliases or {})
        self.uris = [self.resolve(u) for u in uris]  # this host's daemons: always swept
        self.timeout = timeout
        self.on_event = on_event or (lambda: None)
        self._conns: dict[str, _Conn] = {}
        self._abandoned = 0
        self._lock = threading.Lock()

    # -- calls --------------------------------------------------------------------------
    def resolve(self, uri: str) -> str:
        return self.aliases.get(uri, uri)

    def _conn(self, uri: str) -> _Conn:
        with self._lock:
            c = self._conns.get(uri)
            if c is None:
                _start_event_loop()
                c = self._conns[uri] = _Conn(uri, lambda: self.on_event())
            return c

    def call(self, uri: str, fn: Callable[[Any], T], what: str) -> T:
        """``fn(connection)`` on ``uri``'s worker, within the timeout; DriverError if
        libvirt fails or does not answer (a libvirtError ``fn`` catches is its own)."""
        c = self._conn(uri)
        lv = _libvirt()

        def work() -> T:
            return fn(c.ensure())

        fut = c.pool.submit(work)
        try:
            return fut.result(self.timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()  # still queued behind a hung call: never run it late
            self._abandon(c)
            raise DriverError(
                f"libvirt {uri}: {what}: no answer within {self.timeout:g}s"
            ) from None
        except lv.libvirtError as exc:
            raise DriverError(f"libvirt {uri}: {what}: {exc.get_error_message()}") from None

    def _abandon(self, c: _Conn) -> None:
        """A call hung: the next one gets a new connection on a new worker rather than
        queueing behind it (a connection whose open never finishes has no keepalive to
        end it).  The hung worker ends when its call does; a few are allowed to pile up,
        then calls queue again."""
        with self._lock:
            if self._conns.get(c.uri) is c and self._abandoned < 4:
                del self._conns[c.uri]
                self._abandoned += 1
                c.pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            conns, self._conns = list(self._conns.values()), {}
        for c in conns:
            c.pool.submit(c._drop)
            c.pool.shutdown(wait=False, cancel_futures=False)

    # -- the protocol ---------------------------------------------------------------------
    def start(self, key: str, epoch: int, runtime: Runtime) -> LocalVM:
        lv = runtime.libvirt
        if lv is None:
            raise StartError("spec.runtime.libvirt is missing for driver 'libvirt'")
        field = "domainXML" if lv.domain_xml is not None else "domainName"
        self.policy.check_uri(lv.uri)
        if lv.domain_xml is not None:
            self.policy.check(_parse(lv.domain_xml))  # refused: never defined
        uri = self.resolve(lv.uri)
        namespace, _, name = key.partition("/")
        mark = Mark(namespace, name, self.host, epoch)
        xml = stamped_xml(lv.domain_xml, mark) if lv.domain_xml is not None else None
        domain = domain_name(lv.domain_xml) if lv.domain_xml is not None else lv.domain_name
        assert domain is not None
        try:
            uuid, active = self.call(
                uri, lambda c: self._define(c, domain, xml, mark, field), "define"
            )
        except DriverError as exc:
            raise StartError(f"spec.runtime.libvirt.{field} ({uri}): {exc}") from None
        extra = {DOMAIN_UUID: uuid}
        vm = LocalVM(key=key, driver=self.name, epoch=epoch, uri=uri, domain=domain, extra=extra)
        if active:
            log.info("domain %s (%s) already runs with this VM's mark: adopted", domain, uri)
            return vm
        try:
            self.call(uri, lambda c: c.lookupByUUIDString(uuid).create(), "start")
        except DriverError as exc:
            # A start without an answer may still bring the domain up.  Failed tells the
            # operator the VM is not running here (it may then start it elsewhere), so
            # that must be made true first; if it cannot, the VM stays this host's.
            try:
                self.kill(vm)
            except StopError:
                log.error("%s; domain %s unconfirmed: kept as this host's", exc, domain)
                return vm
            raise StartError(f"spec.runtime.libvirt.{field} ({uri}): {exc}") from None
        return vm

    def _define(
        self, conn: Any, domain: str, xml: str | None, mark: Mark, field: str
    ) -> tuple[str, bool]:
        """(UUID, active) of the domain to start, defined or stamped with ``mark``."""
        lvm = _libvirt()
        try:
            existing = conn.lookupByName(domain)
        except lvm.libvirtError as exc:
            if exc.get_error_code() != lvm.VIR_ERR_NO_DOMAIN:
                raise
            existing = None
        if existing is not None:
            owner = self._mark(existing)
            if owner is None and xml is not None:
                raise StartError(
                    f"spec.runtime.libvirt.{field}: a domain {domain!r} exists on "
                    f"{conn.getURI()} that hafence did not define; not replaced"
                )
            if owner is not None and owner.key != mark.key:
                raise StartError(
                    f"spec.runtime.libvirt.{field}: domain {domain!r} on {conn.getURI()} "
                    f"belongs to hafence VM {owner.key}"
                )
            if existing.isActive():
                self._stamp(existing, mark, live=True)
                return existing.UUIDString(), True
        if xml is not None:
            if existing is not None:
                # Our earlier definition (a reboot, an earlier placement here): without
                # its UUID libvirt would take the XML for a second domain of that name.
                xml = _with_uuid(xml, existing.UUIDString())
            dom = conn.defineXML(xml)
        elif existing is None:
            raise StartError(f"spec.runtime.libvirt.domainName: no domain {domain!r}")
        else:
            dom = existing
            self._stamp(dom, mark, live=False)
        return dom.UUIDString(), False

    def _stamp(self, dom: Any, mark: Mark, *, live: bool) -> None:
        lvm = _libvirt()
        flags = lvm.VIR_DOMAIN_AFFECT_LIVE if live else lvm.VIR_DOMAIN_AFFECT_CONFIG
        if live and dom.isPersistent():
            flags |= lvm.VIR_DOMAIN_AFFECT_CONFIG
        dom.setMetadata(lvm.VIR_DOMAIN_METADATA_ELEMENT, mark.element(), PREFIX, NS, flags)

    @staticmethod
    def _mark(dom: Any) -> Mark | None:
        lvm = _libvirt()
        try:
            text = dom.metadata(lvm.VIR_DOMAIN_METADATA_ELEMENT, NS, 0)
        except lvm.libvirtError as exc:
            if exc.get_error_code() == lvm.VIR_ERR_NO_DOMAIN_METADATA:
                return None
            raise
        return Mark.parse(text)

    def _active(self, vm: LocalVM, *, fresh: bool = False) -> bool:
        """Is the domain ``vm`` started still active?  DriverError if libvirt cannot say."""
        assert vm.uri is not None
        uuid = vm.extra.get(DOMAIN_UUID)
        c = self._conn(vm.uri)
        hit, generation = c.cached(uuid) if uuid is not None else (None, 0)
        if hit is not None and not fresh and c.conn is not None:
            return hit
        lvm = _libvirt()

        def query(conn: Any) -> bool:
            try:
                dom = (
                    conn.lookupByUUIDString(uuid)
                    if uuid is not None
                    else conn.lookupByName(vm.domain)
                )
            except lvm.libvirtError as exc:
                if exc.get_error_code() == lvm.VIR_ERR_NO_DOMAIN:
                    return False  # undefined (a transient domain that stopped): gone
                raise
            active = bool(dom.isActive())
            if uuid is not None:
                c.remember(uuid, active, generation)
            return active

        return self.call(vm.uri, query, f"state of {vm.domain}")

    def observe(self, vm: LocalVM, *, fresh: bool = False) -> Observed:
        try:
            active = self._active(vm, fresh=fresh)
        except DriverError as exc:
            return Observed("unknown", str(exc))
        return RUNNING if active else Observed("stopped", f"domain {vm.domain} is not running")

    def stop(self, vm: LocalVM, grace: float) -> None:
        assert vm.uri is not None
        obs = self.observe(vm)
        if obs.stopped:
            return
        if obs.running:
            try:
                self.call(vm.uri, lambda c: self._dom(c, vm).shutdown(), "shutdown")
            except DriverError as exc:
                log.info("%s; destroying it after the grace period", exc)  # no ACPI
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                if self.observe(vm).stopped:
                    return
                time.sleep(0.1)
        self.kill(vm)

    def kill(self, vm: LocalVM) -> None:
        assert vm.uri is not None
        lvm = _libvirt()

        def destroy(conn: Any) -> None:
            try:
                dom = self._dom(conn, vm)
                if dom.isActive():
                    dom.destroy()
            except lvm.libvirtError as exc:
                if exc.get_error_code() not in (
                    lvm.VIR_ERR_NO_DOMAIN,
                    lvm.VIR_ERR_OPERATION_INVALID,
                ):
                    raise

        try:
            self.call(vm.uri, destroy, f"destroy {vm.domain}")
        except DriverError as exc:
            raise StopError(str(exc)) from None
        obs = self.observe(vm, fresh=True)
        if not obs.stopped:
            raise StopError(f"domain {vm.domain} not verified stopped: {obs.detail or 'running'}")

    @staticmethod
    def _dom(conn: Any, vm: LocalVM) -> Any:
        uuid = vm.extra.get(DOMAIN_UUID)
        return conn.lookupByUUIDString(uuid) if uuid is not None else conn.lookupByName(vm.domain)

    def discover(self, namespace: str, runtimes: Iterable[Runtime]) -> list[LocalVM]:
        uris = list(self.uris)
        with self._lock:
            uris += list(self._conns)
        uris += [
            self.resolve(rt.libvirt.uri)
            for rt in runtimes
            if rt.driver == "libvirt" and rt.libvirt and self.policy.uri_ok(rt.libvirt.uri)
        ]
        found: list[LocalVM] = []
        for uri in dict.fromkeys(uris):
            found += self.call(uri, functools.partial(self._marked, uri=uri, namespace=namespace),
                               "list domains")  # fmt: skip
        return found

    def _marked(self, conn: Any, *, uri: str, namespace: str) -> list[LocalVM]:
        lvm = _libvirt()
        out = []
        for dom in conn.listAllDomains(lvm.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            try:
                mark = self._mark(dom)
            except lvm.libvirtError as exc:
                if exc.get_error_code() == lvm.VIR_ERR_NO_DOMAIN:
                    continue  # went away while listing
                raise
            if mark is None or mark.datacenter != namespace:
                continue
            if mark.host != self.host:
                log.warning(
                    "domain %s on %s carries the mark of host %s, not %s: left alone",
                    dom.name(),
                    uri,
                    mark.host,
                    self.host,
                )
                continue
            out.append(
                LocalVM(
                    key=mark.key,
                    driver=self.name,
                    epoch=mark.epoch,
                    uri=uri,
                    domain=dom.name(),
                    extra={DOMAIN_UUID: dom.UUIDString()},
                )
            )
        return out
