"""Events on our objects, read back the way users read them: `kubectl describe`."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import pytest

from hafence.controller.events import REPORTING_CONTROLLER, EventRecorder, ObjectRef
from hafence.kube import Api
from hafence.lab.controlplane import ControlPlane

pytestmark = pytest.mark.controlplane


def make_host(api: Api, namespace: str, name: str) -> dict[str, Any]:
    return api.create(
        "Host",
        namespace,
        {
            "metadata": {"name": name},
            "spec": {
                "address": "127.0.0.1",
                "cluster": "rack-a",
                "capacity": {"cpu": 8, "memoryMiB": 16384},
            },
        },
    )


def events_of(api: Api, namespace: str, name: str) -> list[Any]:
    items = api.core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}"
    ).items
    return sorted(items, key=lambda e: e.reason)


def describe_events(control_plane: ControlPlane, namespace: str, name: str) -> str:
    out = control_plane.kubectl("describe", "host", name, "-n", namespace).stdout
    assert "Events:" in out, out
    return out.split("Events:", 1)[1]


async def test_events_show_in_kubectl_describe_and_repeats_aggregate(
    api: Api, namespace: str, control_plane: ControlPlane
) -> None:
    host = make_host(api, namespace, "hv-01")
    recorder = EventRecorder(api, instance="replica-a")

    await recorder.normal(host, "Registered", "host registered in cluster rack-a")
    for _ in range(3):
        await recorder.warning(host, "FenceFailed", "ipmilan 127.0.0.1:623: timed out")

    failed, registered = events_of(api, namespace, "hv-01")  # sorted by reason
    assert (registered.reason, registered.type, registered.count) == ("Registered", "Normal", 1)
    assert (failed.reason, failed.type, failed.count) == ("FenceFailed", "Warning", 3)
    assert failed.involved_object.uid == host["metadata"]["uid"]
    assert failed.reporting_component == REPORTING_CONTROLLER
    assert failed.source.component == REPORTING_CONTROLLER
    assert failed.reporting_instance == "replica-a"

    table = describe_events(control_plane, namespace, "hv-01")
    lines = [line.split() for line in table.strip().splitlines()]
    warning = next(line for line in lines if "FenceFailed" in line)
    normal = next(line for line in lines if "Registered" in line)
    assert warning[0] == "Warning" and normal[0] == "Normal"
    assert REPORTING_CONTROLLER in warning and REPORTING_CONTROLLER in normal
    # kubectl shows an aggregated Event as "<age> (x3 over <age>)".
    assert re.search(r"\(x3 over \S+\)", " ".join(warning)), table
    assert "ipmilan 127.0.0.1:623: timed out" in table
    assert "host registered in cluster rack-a" in table


async def test_a_different_message_or_an_expired_window_starts_a_new_event(
    api: Api, namespace: str
) -> None:
    host = make_host(api, namespace, "hv-02")
    offset = 0.0
    recorder = EventRecorder(api, aggregate_window=60.0, clock=lambda: time.monotonic() + offset)
    await recorder.warning(host, "FenceFailed", "attempt failed: timeout")
    await recorder.warning(host, "FenceFailed", "attempt failed: connection refused")
    await recorder.warning(host, "FenceFailed", "attempt failed: timeout")
    counts = sorted((e.message, e.count) for e in events_of(api, namespace, "hv-02"))
    assert counts == [
        ("attempt failed: connection refused", 1),
        ("attempt failed: timeout", 2),
    ]

    offset = 61.0  # past the window: the same message is news again
    await recorder.warning(host, "FenceFailed", "attempt failed: timeout")
    counts = sorted((e.message, e.count) for e in events_of(api, namespace, "hv-02"))
    assert counts == [
        ("attempt failed: connection refused", 1),
        ("attempt failed: timeout", 1),
        ("attempt failed: timeout", 2),
    ]


async def test_an_event_deleted_meanwhile_is_created_again(api: Api, namespace: str) -> None:
    host = make_host(api, namespace, "hv-03")
    recorder = EventRecorder(api)
    await recorder.normal(host, "Up", "heartbeat fresh")
    (first,) = events_of(api, namespace, "hv-03")
    api.core.delete_namespaced_event(first.metadata.name, namespace)  # as the TTL would
    await recorder.normal(host, "Up", "heartbeat fresh")
    (again,) = events_of(api, namespace, "hv-03")
    assert again.metadata.name != first.metadata.name and again.count == 1


async def test_post_writes_in_the_background(api: Api, namespace: str) -> None:
    host = make_host(api, namespace, "hv-04")
    recorder = EventRecorder(api)
    for i in range(5):
        recorder.post(host, "Normal", "VMPlaced", f"vm-{i} placed on hv-04")
    await recorder.aclose()
    assert len(events_of(api, namespace, "hv-04")) == 5


async def test_failures_are_logged_never_raised(
    api: Api, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = EventRecorder(api)
    gone = ObjectRef("hafence.io/v1alpha1", "Host", "no-such-namespace-x1", "hv-9", "uid-1")
    with caplog.at_level(logging.WARNING, logger="hafence.controller.events"):
        await recorder.warning(gone, "FenceFailed", "timeout")  # the API says 404
        await recorder.warning({"metadata": {}}, "FenceFailed", "timeout")
        await recorder.emit(gone, "Bogus", "X", "y")  # type: ignore[arg-type]
    messages = [r.getMessage() for r in caplog.records]
    assert any("no-such-namespace-x1/hv-9 not recorded: 404" in m for m in messages), messages
    assert any("object has no 'apiVersion'" in m for m in messages), messages
    assert any("type must be one of Normal, Warning" in m for m in messages), messages


async def test_long_messages_are_cut_to_the_api_limit(api: Api, namespace: str) -> None:
    host = make_host(api, namespace, "hv-05")
    await EventRecorder(api).warning(host, "FenceFailed", "x" * 5000)
    (event,) = events_of(api, namespace, "hv-05")
    assert len(event.message) == 1024 and event.message.endswith("...")


async def test_similar_events_combine_after_ten_messages(api: Api, namespace: str) -> None:
    """client-go's EventCorrelator: the 11th different message of one object, type and
    reason within the window joins one combined Event whose count grows."""
    host = make_host(api, namespace, "hv-06")
    recorder = EventRecorder(api)
    for i in range(15):
        await recorder.warning(host, "FenceFailed", f"attempt {i} failed: error {i}")
    await recorder.warning(host, "FenceFailed", "attempt 3 failed: error 3")  # a repeat
    events = events_of(api, namespace, "hv-06")
    combined = [e for e in events if e.message.startswith("(combined from similar events): ")]
    single = [e for e in events if e not in combined]
    assert len(single) == 10 and len(combined) == 1
    assert combined[0].count == 5
    assert combined[0].message.endswith("attempt 14 failed: error 14")
    assert next(e for e in single if e.message == "attempt 3 failed: error 3").count == 2
