"""Fixtures for the operator shell's building blocks: electors on the real API server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from hafence.controller.leader import LeaderElector
from hafence.kube import Api, load_api


class CountingClient:
    """Forwards to a real kubernetes client, counting the calls made through it."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return attr(*args, **kwargs)

        return counted


class ElectorFactory:
    """Builds electors, each with an Api (and connection pool) of its own, like replicas.

    Fast timings by default, so a takeover after expiry takes about two seconds.
    """

    def __init__(self, kubeconfig: str, namespace: str) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.made: list[tuple[LeaderElector, Api]] = []
        self.counters: dict[str, CountingClient] = {}

    def __call__(self, identity: str, **kwargs: Any) -> LeaderElector:
        api = load_api(self.kubeconfig)
        counter = CountingClient(api.coordination)
        api.coordination = counter
        options: dict[str, Any] = {
            "namespace": self.namespace,
            "lease_duration": 2,
            "renew_deadline": 1.5,
            "retry_period": 0.2,
        }
        options.update(kwargs)
        elector = LeaderElector(api, identity=identity, **options)
        self.made.append((elector, api))
        self.counters[identity] = counter
        return elector

    def api_of(self, elector: LeaderElector) -> Api:
        return next(api for e, api in self.made if e is elector)

    def calls(self, elector: LeaderElector) -> int:
        return self.counters[elector.identity].calls


@pytest.fixture
async def make_elector(kubeconfig: str, namespace: str) -> AsyncIterator[ElectorFactory]:
    factory = ElectorFactory(kubeconfig, namespace)
    yield factory
    for elector, api in factory.made:
        # Bounded: a teardown that hangs would hide which elector did not stop.
        async with asyncio.timeout(15):
            await elector.stop(release=False)
        api.close()
