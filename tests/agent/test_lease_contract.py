"""The heartbeat contract (hafence.api.lease): pure, no API server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hafence.api.lease import (
    ANN_READY,
    ANN_VM_COUNT,
    ANN_WATCHDOG_TIMEOUT,
    HeartbeatInfo,
    LeaseError,
    lease_annotations,
    lease_body,
    renew_interval,
    validate_boot_id,
)

NOW = datetime(2026, 11, 26, 8, 0, 0, 123456, tzinfo=UTC)


def body(watchdog: int | None = 30, ready: bool = True) -> dict[str, object]:
    return lease_body(
        host="h1",
        namespace="dc1",
        instance_id="abc123",
        lease_duration_seconds=10,
        renew_time=NOW,
        acquire_time=NOW - timedelta(minutes=1),
        annotations=lease_annotations(
            boot_id="b00t-1d00",
            agent_version="0.1.0",
            vm_count=4,
            watchdog_timeout_seconds=watchdog,
            ready=ready,
        ),
        resource_version="42",
    )


def test_round_trip() -> None:
    info = HeartbeatInfo.from_lease(body())
    assert info.host == "h1" and info.agent_instance == "abc123"
    assert info.renew_time == NOW
    assert info.boot_id == "b00t-1d00" and info.vm_count == 4 and info.ready
    assert info.watchdog_timeout_seconds == 30 and info.resource_version == "42"
    assert info.expires_at == NOW + timedelta(seconds=10)
    assert info.fresh(NOW + timedelta(seconds=9.9)) and not info.fresh(NOW + timedelta(seconds=10))
    assert info.self_fenced_after(5) == NOW + timedelta(seconds=45)
    assert renew_interval(9) == 3


def test_watchdog_and_ready_only_when_declared() -> None:
    lease = body(watchdog=None, ready=False)
    annotations = lease["metadata"]["annotations"]  # type: ignore[index]
    assert ANN_WATCHDOG_TIMEOUT not in annotations and ANN_READY not in annotations
    info = HeartbeatInfo.from_lease(lease)
    assert not info.watchdog_armed and not info.ready
    assert info.self_fenced_after(5) is None


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
