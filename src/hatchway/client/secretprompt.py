"""Reading a secret (a password, a secret access key) without echoing it: asked on the terminal,
or one line of stdin when stdin is a pipe, so scripts can feed it without putting it on a
command line (where other local users see it in the process list)."""

from __future__ import annotations

import sys

import click

from hatchway.errors import ConfigError

__all__ = ["read_secret", "stdin_is_tty"]


def read_secret(prompt: str, *, confirm: bool) -> str:
    """A secret from a hidden prompt on stderr (asked twice if ``confirm``) when stdin is a
    terminal, else the first line of stdin (without its line ending).

    Raises:
        ConfigError: nothing was given.
    """
    if stdin_is_tty():
        value = str(click.prompt(prompt, hide_input=True, confirmation_prompt=confirm, err=True))
    else:
        value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise ConfigError(f"no {prompt.lower()} given")
    return value


def stdin_is_tty() -> bool:
    """Whether stdin is a terminal (a function of its own, so tests can pretend)."""
    return sys.stdin.isatty()
