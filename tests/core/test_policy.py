"""Policy defaults and their arithmetic (oVirt's numbers where oVirt has them)."""

from __future__ import annotations

import pytest

from hafence.core.policy import ClusterPolicy, Settings


def test_grace_grows_with_vms_and_is_bounded() -> None:
    s = Settings(connecting_grace=10, connecting_grace_per_vm=0.5, connecting_grace_max=30)
    assert s.grace(0) == 10
    assert s.grace(10) == 15
    assert s.grace(1000) == 30


def test_vm_retry_schedule_is_ovirts() -> None:
    s = Settings()
    assert [s.vm_retry_delay(n) for n in range(1, 11)] == [30.0] * 10
    assert s.vm_retry_delay(11) == 1800.0


def test_fence_retry_backoff() -> None:
    s = Settings(fence_retry_base=60, fence_retry_factor=2, fence_retry_max=300)
    assert [s.fence_retry_delay(a) for a in (1, 2, 3, 4)] == [60, 120, 240, 300]


def test_cluster_overrides() -> None:
    s = Settings(cluster_policies={"b": ClusterPolicy(fencing_enabled=False)})
    assert s.cluster("a").fencing_enabled and s.cluster("a").connectivity_threshold_percent == 50
    assert not s.cluster("b").fencing_enabled


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"soft_fence_timeout": -1}, "soft_fence_timeout"),
        ({"connecting_grace": 20, "connecting_grace_max": 10}, "connecting_grace_max"),
        ({"max_concurrent_fences": 0}, "max_concurrent_fences"),
        ({"fence_retry_factor": 0.5}, "fence_retry_factor"),
        (
            {"default_cluster_policy": ClusterPolicy(connectivity_threshold_percent=0)},
            "connectivity_threshold_percent",
        ),
        (
            {"cluster_policies": {"b": ClusterPolicy(connectivity_threshold_percent=101)}},
            "cluster b: connectivity_threshold_percent must be 1..100",
        ),
    ],
)
def test_bad_settings_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Settings(**kwargs)  # type: ignore[arg-type]
