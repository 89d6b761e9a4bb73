"""The list/watch race guard of the agent's placement cache (pure)."""

from __future__ import annotations

from typing import Any

from hafence.agent.placement import PlacementCache


def vm(name: str, rv: int, host: str | None = "h1", runtime_host: str | None = None) -> Any:
    status: dict[str, Any] = {"host": host}
    if runtime_host:
        status["runtime"] = {"host": runtime_host}
    return {
        "metadata": {"namespace": "ns", "name": name, "resourceVersion": str(rv)},
        "status": status,
    }


def test_not_synced_until_first_list() -> None:
    cache = PlacementCache()
    cache.apply("ADDED", vm("a", 5))
    assert not cache.synced
    cache.apply("snapshot", {"metadata": {"resourceVersion": "6"}, "items": [vm("a", 5)]})
    assert cache.synced


def test_lagging_watch_event_does_not_roll_back_a_fresher_list() -> None:
    cache = PlacementCache()
    cache.apply(
        "snapshot", {"metadata": {"resourceVersion": "20"}, "items": [vm("a", 20, host="h2")]}
    )
    cache.apply("MODIFIED", vm("a", 12, host="h1"))  # older than the list
    assert cache.objects["ns/a"]["status"]["host"] == "h2"
    cache.apply("MODIFIED", vm("a", 21, host="h3"))
    assert cache.objects["ns/a"]["status"]["host"] == "h3"


def test_stale_list_keeps_newer_watched_objects_and_drops_deleted() -> None:
    cache = PlacementCache()
    cache.apply(
        "snapshot", {"metadata": {"resourceVersion": "10"}, "items": [vm("a", 9), vm("b", 8)]}
    )
    cache.apply("MODIFIED", vm("a", 15, host="h2"))
    cache.apply("snapshot", {"metadata": {"resourceVersion": "12"}, "items": [vm("a", 9)]})
    assert cache.objects["ns/a"]["status"]["host"] == "h2"  # newer than that list
    assert "ns/b" not in cache.objects  # gone at the list's revision


def test_relevant_filters_other_hosts() -> None:
    cache = PlacementCache()
    cache.apply(
        "snapshot",
        {
            "metadata": {"resourceVersion": "10"},
            "items": [
                vm("here", 1),
                vm("there", 2, host="h2"),
                vm("ran-here", 3, host=None, runtime_host="h1"),
                vm("local", 4, host="h2"),
                vm("nowhere", 5, host=None),
            ],
        },
    )
    assert sorted(cache.relevant("h1", {"ns/local"})) == ["ns/here", "ns/local", "ns/ran-here"]
