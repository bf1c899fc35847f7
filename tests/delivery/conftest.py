"""Fixtures of the delivery tests: Tandem as separate processes (cluster.py) and an HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.delivery.cluster import Cluster


@pytest.fixture
async def make_cluster() -> AsyncIterator[Callable[..., Awaitable[Cluster]]]:
    """Start a cluster with `await make_cluster(**TANDEM_settings)`; every cluster is closed after the test."""
    clusters: list[Cluster] = []

    async def make(*, store_user: str | None = None, **env: str) -> Cluster:
        cluster = Cluster.create(store_user=store_user, **env)
        clusters.append(cluster)
        await cluster.start()
        return cluster

    yield make
    for cluster in clusters:
        # pytest shows what a fixture prints only when the test failed.
        for name in cluster.processes:
            print(f"--- last lines of the {name} log\n{cluster.log_tail(name)}")
        await cluster.close()
