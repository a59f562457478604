"""Fixtures for server tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.server.apiserver import ApiServer, running_api


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """The server's real aiohttp app on 127.0.0.1:0, shared by the tests of one module."""
    with running_api(tmp_path_factory.mktemp("api")) as running:
        yield running
