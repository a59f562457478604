"""A stand-in for ``transport.apiclient.ApiClient`` that records calls and answers from a
script, for testing CLI commands without a server."""

from __future__ import annotations

from typing import Any

import click.testing
import pytest

ApiCall = tuple[str, str, dict[str, Any]]  # (service, operation, body)


class FakeApi:
    """Answers ``call(operation, body, service=…)`` from ``responses``: a dict (every call),
    a list of dicts (one per call, in order) or an exception to raise; ``{}`` otherwise."""

    def __init__(self) -> None:
        self.calls: list[ApiCall] = []
        self.responses: dict[str, Any] = {}

    def call(
        self, operation: str, body: dict[str, Any], *, service: str = "AmazonSSM"
    ) -> dict[str, Any]:
        self.calls.append((service, operation, body))
        answer = self.responses.get(operation, {})
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, list):
            return dict(answer.pop(0))
        return dict(answer)


def install(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    """Make every CLI command talk to a new FakeApi."""
    import hatchway.client.config as config

    api = FakeApi()
    monkeypatch.setattr(config, "open_api", lambda *_, **__: api)
    return api


def invoke(*args: str, input: str | None = None) -> click.testing.Result:
    """Run ``hatchway ARGS`` in-process (click's runner: stdout and stderr kept apart)."""
    from hatchway.cli import cli

    return click.testing.CliRunner().invoke(cli, list(args), input=input)
