"""Fixtures of the client tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.client.farend import Pipes


@pytest.fixture
def pipes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipes]:
    monkeypatch.setenv("LINES", "30")
    monkeypatch.setenv("COLUMNS", "100")
    (stdin, typing), (screen, stdout), (errors, stderr) = os.pipe(), os.pipe(), os.pipe()
    os.set_blocking(screen, False)
    os.set_blocking(errors, False)
    p = Pipes(stdin, typing, stdout, screen, stderr, errors)
    yield p
    for fd in (stdin, p.typing, stdout, screen, stderr, errors):
        if fd >= 0:
            os.close(fd)
