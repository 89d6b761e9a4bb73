"""The operator's object cache (controller/cache.py) with objects as the real API
server returns them: stored without managedFields, never replaced by an older copy."""

from __future__ import annotations

import copy

import pytest

from hafence.controller.cache import Cache
from hafence.kube import Api

from .test_events import make_host

pytestmark = pytest.mark.controlplane


def test_objects_are_kept_without_managed_fields_and_the_callers_copy_is_untouched(
    api: Api, namespace: str
) -> None:
    make_host(api, namespace, "h1")
    api.patch("Host", namespace, "h1", {"status": {"phase": "Up"}}, status=True)
    obj = api.get("Host", namespace, "h1")
    assert len(obj["metadata"]["managedFields"]) == 2, "spec and status managers expected"
    before = copy.deepcopy(obj)
    cache = Cache()
    assert cache.put("Host", obj)
    kept = cache.get("Host", namespace, "h1")
    assert kept is not None
    assert "managedFields" not in kept["metadata"]
    assert obj == before, "the cache changed the object it was given"
    without = {k: v for k, v in before["metadata"].items() if k != "managedFields"}
    assert kept == {**before, "metadata": without}

    older = copy.deepcopy(before)
    api.patch("Host", namespace, "h1", {"status": {"phase": "Connecting"}}, status=True)
    assert cache.put("Host", api.get("Host", namespace, "h1"))
    assert not cache.put("Host", older), "an older resourceVersion replaced a newer one"
    newest = cache.get("Host", namespace, "h1")
    assert newest is not None and newest["status"]["phase"] == "Connecting"
