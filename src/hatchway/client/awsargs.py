"""Command-line arguments spelled the way the ``aws`` CLI spells them.

* List options take several values after one flag (``--tags Key=a,Value=1 Key=b,Value=2``) as
  well as the flag repeated (:class:`ListOption`, expanded by :class:`AwsCommand`).
* Tags in the ``aws`` shorthand ``Key=k,Value=v``, as JSON (``[{"Key": "k", "Value": "v"}]``),
  or simply ``k=v`` (:func:`parse_tags`).
* Parameter values ``file://PATH`` (text) and ``fileb://PATH`` (bytes) are read from the file,
  the path relative to the current directory, ``~`` expanded (:func:`load_param`).

Standard library and click only: imported on the CLI's path.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

__all__ = ["AwsCommand", "ListOption", "load_param", "parse_context", "parse_tags"]


class ListOption(click.Option):
    """An option that may be given several values after one flag, like the ``aws`` CLI's list
    parameters; always ``multiple``. The values end at the next argument starting with ``-``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["multiple"] = True
        super().__init__(*args, **kwargs)


class AwsCommand(click.Command):
    """A command whose :class:`ListOption` values may follow one flag (``--tags a b``): they
    are rewritten to the repeated form (``--tags a --tags b``) before click parses them."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        flags = {flag for p in self.params if isinstance(p, ListOption) for flag in p.opts}
        return super().parse_args(ctx, expand_list_options(args, flags))


def expand_list_options(args: Iterable[str], flags: set[str]) -> list[str]:
    """``--tags a b --x`` → ``--tags a --tags b --x`` for each flag in ``flags``."""
    out: list[str] = []
    current: str | None = None  # the list flag whose values we are reading
    after_value = False  # at least one value read since the flag
    for arg in args:
        if arg == "--":
            current = None
            out.append(arg)
            continue
        name, eq, _ = arg.partition("=")
        if arg.startswith("-"):
            current = name if name in flags else None
            after_value = bool(eq) and current is not None
            out.append(arg)
        elif current is not None and after_value:
            out.extend((current, arg))
        else:
            after_value = current is not None
            out.append(arg)
    return out


def parse_tags(values: Iterable[str], option: str = "--tags") -> list[dict[str, str]]:
    """Tags from ``Key=k,Value=v`` (either order), ``k=v``, or a JSON list of ``{Key, Value}``.

    Raises:
        click.BadParameter: a value in none of these forms.
    """
    tags: list[dict[str, str]] = []
    for text in values:
        if text.lstrip().startswith("["):
            tags.extend(_json_tags(text, option))
            continue
        tags.append(_shorthand_tag(text, option))
    return tags


def _json_tags(text: str, option: str) -> list[dict[str, str]]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"invalid JSON: {exc}", param_hint=option) from None
    if not isinstance(data, list) or not all(
        isinstance(t, dict)
        and set(t) == {"Key", "Value"}
        and all(isinstance(v, str) for v in t.values())
        for t in data
    ):
        raise click.BadParameter('expected [{"Key": "k", "Value": "v"}, …]', param_hint=option)
    return [{"Key": t["Key"], "Value": t["Value"]} for t in data]


def _shorthand_tag(text: str, option: str) -> dict[str, str]:
    if text.startswith("Key="):
        key, sep, value = text[len("Key=") :].partition(",Value=")
    elif text.startswith("Value="):
        value, sep, key = text[len("Value=") :].partition(",Key=")
    else:
        key, sep, value = text.partition("=")
    if not sep or not key:
        raise click.BadParameter(
            f"{text!r} is not Key=KEY,Value=VALUE (or KEY=VALUE)", param_hint=option
        )
    return {"Key": key, "Value": value}


def parse_context(values: Iterable[str], option: str = "--context") -> list[dict[str, Any]]:
    """``k=v`` pairs as IAM ``ContextEntries``; a key given more than once gets all its values
    (as a ``stringList``)."""
    entries: dict[str, list[str]] = {}
    for text in values:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{text!r} is not KEY=VALUE", param_hint=option)
        entries.setdefault(key, []).append(value)
    return [
        {
            "ContextKeyName": key,
            "ContextKeyValues": vals,
            "ContextKeyType": "string" if len(vals) == 1 else "stringList",
        }
        for key, vals in entries.items()
    ]


def load_param(value: str, option: str) -> str:
    """The value of a parameter, read from a file for ``file://PATH`` or ``fileb://PATH`` as the
    ``aws`` CLI does (the path relative to the current directory, ``~`` expanded); any other
    value as it is. Text is UTF-8 (a byte-order mark is dropped).

    Raises:
        click.BadParameter: the file cannot be read, or is not UTF-8 text.
    """
    for prefix in ("file://", "fileb://"):
        if value.startswith(prefix):
            path = Path(value[len(prefix) :]).expanduser()
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise click.BadParameter(
                    f"cannot read {path}: {exc.strerror or exc}", param_hint=option
                ) from None
            try:
                return data.decode("utf-8-sig")
            except UnicodeDecodeError:
                raise click.BadParameter(f"{path} is not UTF-8 text", param_hint=option) from None
    return value
