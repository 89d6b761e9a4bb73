"""FencingPolicy -> Settings and status, without an API server (tests/operator has the
live operator, tests/api the schema)."""

from __future__ import annotations

from typing import Any

from hafence.controller.policies import resolve, status_for
from hafence.core.policy import Settings


def obj(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name, "generation": 3}, "spec": spec}


def test_the_resource_wins_field_by_field_and_the_rest_keeps_the_flags() -> None:
    flags = Settings(soft_fence_timeout=20, connecting_grace=5)
    spec = {
        "default": {"connectingGraceSeconds": 12, "skipIfConnectivityBroken": False},
        "clusters": [{"cluster": "b", "connectivityThresholdPercent": 75}],
    }
    s, problem = resolve(flags, obj("default", spec))
    assert problem is None
    assert (s.connecting_grace, s.soft_fence_timeout) == (12, 20)
    assert not s.cluster("a").skip_if_connectivity_broken
    b = s.cluster("b")  # its entry over the resource's default
    assert (b.skip_if_connectivity_broken, b.connectivity_threshold_percent) == (False, 75)
    st = status_for(obj("default", spec), s, {"a", "b"}, problem)
    assert st.in_force and st.observed_generation == 3
    assert [(c.cluster, c.source) for c in st.clusters] == [("a", "default"), ("b", "cluster")]
    assert st.timings is not None and st.timings.connecting_grace_seconds == 12


def test_an_invalid_combination_keeps_the_flags_and_says_why() -> None:
    flags = Settings(connecting_grace=40, connecting_grace_max=60)
    bad = obj("default", {"default": {"connectingGraceMaxSeconds": 30}})
    s, problem = resolve(flags, bad)
    assert s == flags
    assert problem is not None and "connecting_grace_max" in problem
    st = status_for(bad, s, (), problem)
    assert not st.in_force and st.conditions[0].reason == "Invalid"
    assert "flags stay in force" in st.conditions[0].message


def test_only_the_policy_named_default_is_in_force() -> None:
    st = status_for(obj("team-b", {}), Settings(), (), None)
    assert st.in_force is False and st.timings is None
    assert st.conditions[0].reason == "Ignored"
    assert "nothing is merged" in st.conditions[0].message
    assert resolve(Settings(), None) == (Settings(), None)
