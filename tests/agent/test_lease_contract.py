"""The heartbeat contract (hafence.api.lease): pure, no API server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hafence.api.lease import (
    ANN_BOOT_ID,
    ANN_READY,
    ANN_SELF_FENCING_UNAVAILABLE,
    ANN_VM_COUNT,
    ANN_WATCHDOG_BOOT_ID,
    ANN_WATCHDOG_DEVICE,
    ANN_WATCHDOG_GRANTED,
    ANN_WATCHDOG_TIMEOUT,
    HeartbeatInfo,
    LeaseError,
    WatchdogDeclaration,
    lease_annotations,
    lease_body,
    peer_check_window,
    renew_interval,
    validate_boot_id,
)

NOW = datetime(2026, 11, 26, 8, 0, 0, 123456, tzinfo=UTC)


BOOT = "b00t-1d00"


def body(watchdog: int | None = 30, ready: bool = True) -> dict[str, object]:
    return lease_body(
        host="h1",
        namespace="dc1",
        instance_id="abc123",
        lease_duration_seconds=10,
        renew_time=NOW,
        acquire_time=NOW - timedelta(minutes=1),
        annotations=lease_annotations(
            boot_id=BOOT,
            agent_version="0.1.0",
            vm_count=4,
            watchdog=None
            if watchdog is None
            else WatchdogDeclaration("/dev/watchdog0", watchdog, BOOT),
            self_fencing_unavailable="no --watchdog-device" if watchdog is None else None,
            ready=ready,
        ),
        resource_version="42",
    )


def test_round_trip() -> None:
    info = HeartbeatInfo.from_lease(body())
    assert info.host == "h1" and info.agent_instance == "abc123"
    assert info.renew_time == NOW
    assert info.boot_id == "b00t-1d00" and info.vm_count == 4 and info.ready
    assert info.self_fence_armed == WatchdogDeclaration("/dev/watchdog0", 30, BOOT)
    assert info.watchdog_timeout_seconds is None and info.resource_version == "42"
    assert info.expires_at == NOW + timedelta(seconds=10)
    assert info.fresh(NOW + timedelta(seconds=9.9)) and not info.fresh(NOW + timedelta(seconds=10))
    # expiry + peer-check window + twice the granted timeout (the close ping) + margin
    assert info.self_fenced_after(5) == NOW + timedelta(seconds=10 + peer_check_window(10) + 65)
    assert renew_interval(9) == 3


def test_watchdog_and_ready_only_when_declared() -> None:
    lease = body(watchdog=None, ready=False)
    annotations = lease["metadata"]["annotations"]  # type: ignore[index]
    assert ANN_WATCHDOG_DEVICE not in annotations and ANN_READY not in annotations
    info = HeartbeatInfo.from_lease(lease)
    assert info.self_fence_armed is None and not info.ready
    assert info.self_fencing_unavailable == "no --watchdog-device"
    assert info.self_fenced_after(5) is None


def test_old_software_watchdog_annotation_is_never_proof() -> None:
    lease = body(watchdog=None)
    lease["metadata"]["annotations"][ANN_WATCHDOG_TIMEOUT] = "30"  # type: ignore[index]
    info = HeartbeatInfo.from_lease(lease)
    assert info.watchdog_timeout_seconds == 30
    assert info.self_fence_armed is None and info.self_fenced_after(5) is None


def test_device_armed_in_another_boot_is_no_proof() -> None:
    lease = body()
    lease["metadata"]["annotations"][ANN_BOOT_ID] = "b00t-2d00"  # type: ignore[index]
    info = HeartbeatInfo.from_lease(lease)
    assert info.watchdog is not None and info.self_fence_armed is None
    assert info.self_fenced_after(5) is None


def test_partial_or_bad_declaration_is_no_declaration() -> None:
    """Never an unreadable lease: the operator would keep an older one, declaration and all."""
    lease = body()
    del lease["metadata"]["annotations"][ANN_WATCHDOG_BOOT_ID]  # type: ignore[attr-defined]
    assert HeartbeatInfo.from_lease(lease).self_fence_armed is None
    for bad in ("0", "-5", "five"):
        lease = body()
        lease["metadata"]["annotations"][ANN_WATCHDOG_GRANTED] = bad  # type: ignore[index]
        assert HeartbeatInfo.from_lease(lease).self_fence_armed is None
    lease = body()
    lease["metadata"]["annotations"]["hafence.io/peer-endpoint"] = "x; rm -rf /"  # type: ignore[index]
    assert HeartbeatInfo.from_lease(lease).peer_endpoint is None
    assert ANN_SELF_FENCING_UNAVAILABLE not in body()["metadata"]["annotations"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("path", "value", "needle"),
    [
        (("spec", "holderIdentity"), "other/abc", "names another host"),
        (("spec", "holderIdentity"), "h1", "'HOST/INSTANCE'"),
        (("spec", "renewTime"), "yesterday", "spec.renewTime 'yesterday'"),
        (("spec", "leaseDurationSeconds"), 0, "spec.leaseDurationSeconds 0"),
        (("metadata", "annotations", ANN_VM_COUNT), "many", f"{ANN_VM_COUNT} 'many'"),
    ],
)
def test_bad_lease_names_field_and_value(path: tuple[str, ...], value: object, needle: str) -> None:
    lease = body()
    target = lease
    for key in path[:-1]:
        target = target[key]  # type: ignore[assignment,index]
    target[path[-1]] = value  # type: ignore[index]
    with pytest.raises(LeaseError, match=needle.replace("(", r"\(")):
        HeartbeatInfo.from_lease(lease)


def test_boot_id_validation() -> None:
    assert validate_boot_id("0123ABCD-0000-4000-8000-000000000001").startswith("0123abcd")
    with pytest.raises(LeaseError, match="'not a uuid!'"):
        validate_boot_id("not a uuid!")
