"""The heartbeat contract between the host agent and the operator: one Lease per host.

The agent writes it, the operator reads it; both import the names from here so the
wire format has one definition.  Pure: no I/O, no clock (callers pass ``now``).

A heartbeat Lease (``coordination.k8s.io/v1``)::

    metadata.name       = the Host's name, in the Host's namespace
    metadata.labels     = {hafence.io/component: host-heartbeat, hafence.io/host: NAME}
    spec.holderIdentity = "NAME/<agent instance id>"   (a new id per agent process)
    spec.leaseDurationSeconds, spec.renewTime (microtime), spec.acquireTime
    metadata.annotations:
        hafence.io/boot-id                   the host's kernel boot ID
        hafence.io/agent-version             the agent's version
        hafence.io/vm-count                  VMs the agent runs right now
        hafence.io/ready: "true"             only after the S3 sweep of this connection
        hafence.io/watchdog-device           self-fencing armed: the watchdog device the
        hafence.io/watchdog-granted-seconds  agent opened, the timeout its driver granted
        hafence.io/watchdog-boot-id          (WDIOC_GETTIMEOUT) and the boot it was armed in
        hafence.io/self-fencing-unavailable  self-fencing asked for, no device armed: why
        hafence.io/cluster                   the Host's spec.cluster (peer check)
        hafence.io/peer-endpoint             HOST:PORT of the agent's peer endpoint

``hafence.io/watchdog-timeout-seconds`` was written by older agents whose watchdog was
a thread of their own: it is parsed, and never proof of anything.  Self-fence proof
comes only from the three ``watchdog-*`` annotations together, with
``watchdog-boot-id`` equal to ``boot-id`` (:attr:`HeartbeatInfo.self_fence_armed`):
a device armed in an earlier boot is no device now.

``ready`` is absent while the agent has not yet stopped every VM not placed on its
host since it (re)gained contact with the API server: a renewing but not-ready lease
is a live agent that must not be counted as Up yet.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

COMPONENT_LABEL = "hafence.io/component"
HEARTBEAT_COMPONENT = "host-heartbeat"
HOST_LABEL = "hafence.io/host"
HEARTBEAT_SELECTOR = f"{COMPONENT_LABEL}={HEARTBEAT_COMPONENT}"

ANN_BOOT_ID = "hafence.io/boot-id"
ANN_AGENT_VERSION = "hafence.io/agent-version"
ANN_VM_COUNT = "hafence.io/vm-count"
ANN_WATCHDOG_TIMEOUT = "hafence.io/watchdog-timeout-seconds"
ANN_READY = "hafence.io/ready"
ANN_WATCHDOG_DEVICE = "hafence.io/watchdog-device"
ANN_WATCHDOG_GRANTED = "hafence.io/watchdog-granted-seconds"
ANN_WATCHDOG_BOOT_ID = "hafence.io/watchdog-boot-id"
ANN_SELF_FENCING_UNAVAILABLE = "hafence.io/self-fencing-unavailable"
ANN_CLUSTER = "hafence.io/cluster"
ANN_PEER_ENDPOINT = "hafence.io/peer-endpoint"

DEFAULT_LEASE_DURATION_SECONDS = 10
# Three renewals per lease duration, like kubelet's node leases: one lost write is not
# an outage.
RENEWALS_PER_DURATION = 3

_MICROTIME = "%Y-%m-%dT%H:%M:%S.%fZ"
_BOOT_ID = re.compile(r"^[0-9a-fA-F-]{8,64}$")
_ENDPOINT = re.compile(r"^[0-9A-Za-z.:\[\]-]{1,255}:[0-9]{1,5}$")


class LeaseError(ValueError):
    """A heartbeat Lease that does not follow the contract; names the field and value."""


def renew_interval(lease_duration_seconds: float) -> float:
    return lease_duration_seconds / RENEWALS_PER_DURATION


def api_timeout(lease_duration_seconds: float) -> float:
    """The agent's bound on one API call: well within a renewal interval, at least 2 s."""
    return max(2.0, renew_interval(lease_duration_seconds))


def peer_check_window(lease_duration_seconds: float) -> float:
    """How long after its lease went stale an agent may still feed its watchdog while
    it asks its peers whether the API server is down for them too (hafence.agent.peers).

    A peer counts as "lost the API server" only once its own last successful renewal
    started ``lost_after`` ago; in a real outage that happens at most a renewal
    interval and a hung call after the asker's own last success, and the rest of the
    window lets the check run.  The operator adds this window before it counts a silent host as
    self-fenced, so the check costs it time, never safety.
    """
    return 2 * renew_interval(lease_duration_seconds) + api_timeout(lease_duration_seconds) + 2.5


def lost_after(lease_duration_seconds: float) -> float:
    """Age of a peer's last successful renewal (start) from which it answers "lost".

    Later than its lease expiry by a whole API call plus slack for the operator's watch
    delay: by then the operator has seen that peer's lease expire too, which is what
    lets the operator bound the asker's API-outage mode (core/triggers.py).
    """
    return lease_duration_seconds + api_timeout(lease_duration_seconds) + 0.5


def holder_identity(host: str, instance_id: str) -> str:
    return f"{host}/{instance_id}"


def split_holder_identity(value: str) -> tuple[str, str]:
    host, sep, instance = value.partition("/")
    if not sep or not host or not instance:
        raise LeaseError(f"spec.holderIdentity {value!r} is not 'HOST/INSTANCE'")
    return host, instance


def format_microtime(when: datetime) -> str:
    if when.tzinfo is None:
        raise LeaseError(f"renewTime {when!r} has no time zone")
    return when.astimezone(UTC).strftime(_MICROTIME)


def parse_microtime(value: str, field: str = "spec.renewTime") -> datetime:
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise LeaseError(f"{field} {value!r} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise LeaseError(f"{field} {value!r} has no time zone")
    return parsed.astimezone(UTC)


def validate_boot_id(value: str) -> str:
    """Kernel boot IDs are UUIDs; the lab may pass any hex-and-dash token."""
    if not _BOOT_ID.match(value):
        raise LeaseError(f"boot ID {value!r} is not a hex/dash token (like a UUID)")
    return value.lower()


def lease_labels(host: str) -> dict[str, str]:
    return {COMPONENT_LABEL: HEARTBEAT_COMPONENT, HOST_LABEL: host}


@dataclass(frozen=True)
class WatchdogDeclaration:
    """What an agent declares once its watchdog device is armed and being fed."""

    device: str
    granted_seconds: int
    boot_id: str


def validate_peer_endpoint(value: str) -> str:
    if not _ENDPOINT.match(value) or not 0 < int(value.rsplit(":", 1)[1]) < 65536:
        raise LeaseError(f"peer endpoint {value!r} is not HOST:PORT (like 192.0.2.11:7443)")
    return value


def lease_annotations(
    *,
    boot_id: str,
    agent_version: str,
    vm_count: int,
    ready: bool,
    watchdog: WatchdogDeclaration | None = None,
    self_fencing_unavailable: str | None = None,
    cluster: str | None = None,
    peer_endpoint: str | None = None,
) -> dict[str, str]:
    out = {
        ANN_BOOT_ID: boot_id,
        ANN_AGENT_VERSION: agent_version,
        ANN_VM_COUNT: str(vm_count),
    }
    if watchdog is not None:
        if watchdog.granted_seconds <= 0:
            raise LeaseError(f"granted watchdog timeout {watchdog.granted_seconds!r} is not > 0")
        out[ANN_WATCHDOG_DEVICE] = watchdog.device
        out[ANN_WATCHDOG_GRANTED] = str(watchdog.granted_seconds)
        out[ANN_WATCHDOG_BOOT_ID] = watchdog.boot_id
    elif self_fencing_unavailable:
        out[ANN_SELF_FENCING_UNAVAILABLE] = self_fencing_unavailable[:500]
    if cluster:
        out[ANN_CLUSTER] = cluster
    if peer_endpoint:
        out[ANN_PEER_ENDPOINT] = validate_peer_endpoint(peer_endpoint)
    if ready:
        out[ANN_READY] = "true"
    return out


def lease_body(
    *,
    host: str,
    namespace: str,
    instance_id: str,
    lease_duration_seconds: int,
    renew_time: datetime,
    acquire_time: datetime,
    annotations: Mapping[str, str],
    resource_version: str | None = None,
) -> dict[str, Any]:
    """The whole Lease object the agent writes (create, or replace guarded by RV)."""
    metadata: dict[str, Any] = {
        "name": host,
        "namespace": namespace,
        "labels": lease_labels(host),
        "annotations": dict(annotations),
    }
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": holder_identity(host, instance_id),
            "leaseDurationSeconds": lease_duration_seconds,
            "acquireTime": format_microtime(acquire_time),
            "renewTime": format_microtime(renew_time),
        },
    }


@dataclass(frozen=True)
class HeartbeatInfo:
    """What the operator needs from one heartbeat Lease."""

    host: str
    agent_instance: str
    lease_duration_seconds: int
    renew_time: datetime
    boot_id: str
    agent_version: str
    vm_count: int
    watchdog_timeout_seconds: int | None  # the old software-only annotation: no proof
    ready: bool
    resource_version: str | None = None
    watchdog: WatchdogDeclaration | None = None
    self_fencing_unavailable: str | None = None
    cluster: str | None = None
    peer_endpoint: str | None = None

    @property
    def self_fence_armed(self) -> WatchdogDeclaration | None:
        """The device declaration, if it was made in the boot this lease speaks for."""
        w = self.watchdog
        if w is None or w.boot_id.lower() != self.boot_id.lower():
            return None
        return w

    @property
    def expires_at(self) -> datetime:
        return self.renew_time + timedelta(seconds=self.lease_duration_seconds)

    def fresh(self, now: datetime) -> bool:
        return now < self.expires_at

    def self_fenced_after(self, margin_seconds: float) -> datetime | None:
        """When the host is provably without VMs if it stays silent (S1 self-fence proof).

        The agent feeds its device at most :func:`peer_check_window` past its lease (or
        while its peers confirm an API-server outage, which the operator checks
        separately); the device fires at most twice the granted timeout after the last
        feed (the kernel pings once more when a crashed agent's file is closed); the
        caller's margin covers clock skew.  None without a device declared for this
        boot: silence then proves nothing.
        """
        w = self.self_fence_armed
        if w is None:
            return None
        window = peer_check_window(self.lease_duration_seconds)
        return self.expires_at + timedelta(seconds=window + 2 * w.granted_seconds + margin_seconds)

    @classmethod
    def from_lease(cls, obj: Mapping[str, Any]) -> HeartbeatInfo:
        """Parse a Lease as a camelCase dict (a watch event, or a serialized object)."""
        metadata = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        annotations: Mapping[str, str] = metadata.get("annotations") or {}
        labels: Mapping[str, str] = metadata.get("labels") or {}
        name = metadata.get("name", "")
        if labels.get(COMPONENT_LABEL) != HEARTBEAT_COMPONENT:
            raise LeaseError(
                f"Lease {name!r}: label {COMPONENT_LABEL} is "
                f"{labels.get(COMPONENT_LABEL)!r}, not {HEARTBEAT_COMPONENT!r}"
            )
        holder = spec.get("holderIdentity")
        if not isinstance(holder, str):
            raise LeaseError(f"Lease {name!r}: spec.holderIdentity {holder!r} is missing")
        host, instance = split_holder_identity(holder)
        if host != name:
            raise LeaseError(f"Lease {name!r}: spec.holderIdentity {holder!r} names another host")
        duration = spec.get("leaseDurationSeconds")
        if not isinstance(duration, int) or duration <= 0:
            raise LeaseError(
                f"Lease {name!r}: spec.leaseDurationSeconds {duration!r} is not a positive integer"
            )
        renew_raw = spec.get("renewTime")
        if isinstance(renew_raw, datetime):
            renew = renew_raw.astimezone(UTC)
        elif isinstance(renew_raw, str):
            renew = parse_microtime(renew_raw)
        else:
            raise LeaseError(f"Lease {name!r}: spec.renewTime {renew_raw!r} is missing")
        boot_id = annotations.get(ANN_BOOT_ID)
        if not boot_id:
            raise LeaseError(f"Lease {name!r}: annotation {ANN_BOOT_ID} is missing")
        # A malformed declaration or endpoint makes the lease say less, never makes it
        # unreadable: an unreadable lease would leave the operator with an older one,
        # and an older declaration must not outlive a lease that dropped it.
        watchdog = None
        granted_raw = annotations.get(ANN_WATCHDOG_GRANTED, "")
        declared = all(annotations.get(k) for k in _WATCHDOG_KEYS)
        if declared and granted_raw.isdigit() and int(granted_raw) > 0:
            watchdog = WatchdogDeclaration(
                annotations[ANN_WATCHDOG_DEVICE],
                int(granted_raw),
                annotations[ANN_WATCHDOG_BOOT_ID],
            )
        endpoint = annotations.get(ANN_PEER_ENDPOINT)
        if endpoint:
            try:
                validate_peer_endpoint(endpoint)
            except LeaseError:
                endpoint = None
        return cls(
            host=host,
            agent_instance=instance,
            lease_duration_seconds=duration,
            renew_time=renew,
            boot_id=boot_id,
            agent_version=annotations.get(ANN_AGENT_VERSION, ""),
            vm_count=_int_annotation(name, annotations, ANN_VM_COUNT, default=0),
            watchdog_timeout_seconds=(
                _int_annotation(name, annotations, ANN_WATCHDOG_TIMEOUT, default=0)
                if ANN_WATCHDOG_TIMEOUT in annotations
                else None
            ),
            ready=annotations.get(ANN_READY) == "true",
            resource_version=metadata.get("resourceVersion"),
            watchdog=watchdog,
            self_fencing_unavailable=annotations.get(ANN_SELF_FENCING_UNAVAILABLE) or None,
            cluster=annotations.get(ANN_CLUSTER) or None,
            peer_endpoint=endpoint or None,
        )


_WATCHDOG_KEYS = (ANN_WATCHDOG_DEVICE, ANN_WATCHDOG_GRANTED, ANN_WATCHDOG_BOOT_ID)


def _int_annotation(name: str, annotations: Mapping[str, str], key: str, default: int) -> int:
    raw = annotations.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise LeaseError(f"Lease {name!r}: annotation {key} {raw!r} is not an integer") from None
    if value < 0:
        raise LeaseError(f"Lease {name!r}: annotation {key} {raw!r} is negative")
    return value
