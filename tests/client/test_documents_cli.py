"""``hatchway preferences set``'s KEY=VALUE parsing and the one line ``sessions get`` shows."""

from __future__ import annotations

import click
import pytest

from hatchway.client.documents_cli import describe_preferences, parse_setting


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("idleSessionTimeout=15", ("idleSessionTimeout", "15")),
        ("maxSessionDuration=", ("maxSessionDuration", "")),
        ("runAsEnabled=TRUE", ("runAsEnabled", True)),
        ("runAsEnabled=false", ("runAsEnabled", False)),
        ("shellProfile.linux=cd ~; PS1='x= '", ("shellProfile.linux", "cd ~; PS1='x= '")),
    ],
)
def test_settings(text: str, parsed: tuple[str, object]) -> None:
    assert parse_setting(text) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("idleSessionTimeout", "is not KEY=VALUE"),
        ("idleTimeout=5", "is not a preference; known: idleSessionTimeout"),
        ("runAsEnabled=yes", "true or false"),
        ("idleSessionTimeout=ten", "whole number of minutes"),
    ],
)
def test_bad_settings_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(click.BadParameter, match=message):
        parse_setting(text)


def test_what_applied_in_one_line() -> None:
    applied = {"IdleSessionTimeout": 20, "RunAsEnabled": True, "RunAsUser": "ops",
               "ShellProfile": True, "MaxSessionDuration": 60}  # fmt: skip
    assert describe_preferences(applied) == "idle 20 min, max 60 min, run as ops, shell profile"
    assert describe_preferences({"IdleSessionTimeout": 5}) == "idle 5 min"
