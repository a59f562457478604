"""Fixtures that start real servers and agents on loopback (TLS) and stop them afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cluster import Cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A running TLS server shared by the tests of one module."""
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    c.start_server()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def node(cluster: Cluster) -> str:
    """A registered node with its agent running and Online (shared by the module)."""
    node_id, state = cluster.register("shared", "--tag", "Env=test")
    cluster.start_agent(state, node_id)
    return node_id


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A server of the test's own, for tests that restart or break it."""
    c = Cluster(tmp_path)
    c.start_server()
    try:
        yield c
    finally:
        c.close()
