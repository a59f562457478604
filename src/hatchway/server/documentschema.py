"""AWS's session-document schema: parsing document content (JSON or YAML) and checking it.

A session document (docs/protocol.md §8.6) is an object with ``schemaVersion`` ``"1.0"``, a
``sessionType`` (``Standard_Stream``, ``InteractiveCommands``, ``NonInteractiveCommands`` or
``Port``), and optionally ``description``, ``inputs`` (the preferences, for ``Standard_Stream``),
``parameters`` (what StartSession's ``Parameters`` may set) and ``properties`` (what the agent
runs, with ``{{ name }}`` references to the parameters).

:func:`check_content` reports every problem it finds at once, each as ``<field path>: <what is
wrong>`` (``parameters.who.type: 'Text' is not one of String, StringList, …``), and raises
``InvalidDocumentContent`` (HTTP 400), so an administrator fixes a document in one round.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, Final

import yaml

from hatchway.errors import InvalidDocumentContent, InvalidDocumentSchemaVersion

__all__ = [
    "FORMATS",
    "INPUT_KEYS",
    "PARAMETER_TYPES",
    "SCHEMA_VERSION",
    "SESSION_TYPES",
    "check_content",
    "parse",
    "render",
]

SCHEMA_VERSION: Final = "1.0"
FORMATS: Final = ("JSON", "YAML")
SESSION_TYPES: Final = ("Standard_Stream", "InteractiveCommands", "NonInteractiveCommands", "Port")
PARAMETER_TYPES: Final = ("String", "StringList", "Integer", "Boolean", "MapList", "StringMap")
MAX_PROBLEMS: Final = 10
"""Problems spelled out in one error message (all are counted)."""
MAX_DEPTH: Final = 32
"""Deepest nesting of objects and lists accepted (a session document needs five levels)."""


class _NoAliasLoader(yaml.SafeLoader):
    """``safe_load`` without anchors and aliases: a few hundred bytes of nested aliases would
    otherwise expand to billions of nodes for whoever walks the result (this schema check,
    JSON rendering). Session documents never need them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in documents", event.start_mark
            )
        return super().compose_node(parent, index)


_TOP_LEVEL: Final = frozenset(
    {"schemaVersion", "description", "sessionType", "inputs", "parameters", "properties"}
)
#: ``SSM-SessionManagerRunShell``'s inputs (AWS's preference keys) and their JSON types;
#: ``"minutes"`` is a whole number of minutes given as a string or a number ("" = unset).
INPUT_KEYS: Final[Mapping[str, str]] = {
    "s3BucketName": "string",
    "s3KeyPrefix": "string",
    "s3EncryptionEnabled": "boolean",
    "cloudWatchLogGroupName": "string",
    "cloudWatchEncryptionEnabled": "boolean",
    "cloudWatchStreamingEnabled": "boolean",
    "kmsKeyId": "string",
    "runAsEnabled": "boolean",
    "runAsDefaultUser": "string",
    "idleSessionTimeout": "minutes",
    "maxSessionDuration": "minutes",
    "shellProfile": "shellProfile",
}
#: Allowed minutes of the two time limits (AWS's ranges).
MINUTE_RANGES: Final[Mapping[str, tuple[int, int]]] = {
    "idleSessionTimeout": (1, 60),
    "maxSessionDuration": (1, 1440),
}
_PARAMETER_KEYS: Final = frozenset(
    {
        "type", "description", "default", "allowedValues", "allowedPattern", "displayType",
        "minItems", "maxItems", "minChars", "maxChars",
    }
)  # fmt: skip
_PARAMETER_NAME: Final = re.compile(r"^[A-Za-z0-9_]{1,128}$")
_PLATFORMS: Final = ("linux", "windows", "macos")
_RUN_USER: Final = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_PLACEHOLDER: Final = re.compile(r"\{\{\s*([A-Za-z0-9_.:-]+)\s*\}\}")


def parse(content: str, document_format: str) -> dict[str, Any]:
    """The document object in ``content`` (``JSON`` or ``YAML``; YAML by ``safe_load``).

    Raises:
        InvalidDocumentContent: not parseable in that format, or not an object.
    """
    if document_format == "YAML":
        try:
            value = yaml.load(content, Loader=_NoAliasLoader)  # a SafeLoader
        except RecursionError:
            raise InvalidDocumentContent(_too_deep()) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or "not valid YAML"
            raise InvalidDocumentContent(
                f"The content is not valid YAML{where}: {problem}"
            ) from None
    else:
        try:
            value = json.loads(content)
        except RecursionError:
            raise InvalidDocumentContent(_too_deep()) from None
        except json.JSONDecodeError as exc:
            raise InvalidDocumentContent(
                f"The content is not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
    if not isinstance(value, dict):
        raise InvalidDocumentContent(
            f"The content must be a {document_format} object (a mapping), not {_kind(value)}."
        )
    _check_plain(value)
    return value


def _too_deep() -> str:
    return f"The content nests objects and lists more than {MAX_DEPTH} levels deep."


def _check_plain(value: Any) -> None:
    """Refuse what JSON cannot carry (YAML's dates, sets, binary, ``.nan``; keys other than
    strings) and nesting deeper than :data:`MAX_DEPTH`, without recursion."""
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack:
        item, path, level = stack.pop()
        if isinstance(item, dict | list):
            if level > MAX_DEPTH:
                raise InvalidDocumentContent(_too_deep())
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        where = f"{path}.{key}" if path else str(key)
                        raise InvalidDocumentContent(f"{where}: keys must be strings")
                    stack.append((child, f"{path}.{key}" if path else key, level + 1))
            else:
                stack.extend((child, f"{path}[{i}]", level + 1) for i, child in enumerate(item))
        elif isinstance(item, float) and not math.isfinite(item):
            raise InvalidDocumentContent(f"{path}: {item} is not a number JSON can carry")
        elif item is not None and not isinstance(item, str | int | float | bool):
            raise InvalidDocumentContent(
                f"{path}: a {type(item).__name__} is not a JSON value (quote it as a string)"
            )


def render(document: Mapping[str, Any], document_format: str) -> str:
    """``document`` as ``JSON`` or ``YAML`` text (GetDocument's format conversion)."""
    if document_format == "YAML":
        return str(yaml.safe_dump(dict(document), sort_keys=False, allow_unicode=True))
    return json.dumps(document, indent=2)


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, path: str, what: str) -> None:
        self.items.append(f"{path}: {what}")

    def raise_if_any(self) -> None:
        if not self.items:
            return
        count = len(self.items)
        shown = "; ".join(self.items[:MAX_PROBLEMS])
        more = f" (and {count - MAX_PROBLEMS} more)" if count > MAX_PROBLEMS else ""
        noun = "problem" if count == 1 else "problems"
        raise InvalidDocumentContent(
            f"The session document is not valid ({count} {noun}): {shown}{more}"
        )


def check_content(document: Mapping[str, Any]) -> None:
    """Check a parsed document against the session-document schema.

    Raises:
        InvalidDocumentSchemaVersion: ``schemaVersion`` is a string other than ``1.0``.
        InvalidDocumentContent: anything else wrong, every problem with its field path.
    """
    problems = _Problems()
    version = document.get("schemaVersion")
    if version is None:
        problems.add("schemaVersion", 'is required (session documents use "1.0")')
    elif not isinstance(version, str):
        problems.add("schemaVersion", f'must be the string "1.0", not {_kind(version)}')
    elif version != SCHEMA_VERSION:
        raise InvalidDocumentSchemaVersion(
            f"schemaVersion: {_show(version)} is not a session-document schema version "
            f'(only "{SCHEMA_VERSION}" is)'
        )
    for key in document:
        if key not in _TOP_LEVEL:
            problems.add(str(key), "is not a field of session documents (allowed: "
                         + ", ".join(sorted(_TOP_LEVEL)) + ")")  # fmt: skip
    if "description" in document and not isinstance(document["description"], str):
        problems.add("description", f"must be a string, not {_kind(document['description'])}")
    session_type = document.get("sessionType")
    if session_type is None:
        problems.add("sessionType", "is required (one of " + ", ".join(SESSION_TYPES) + ")")
    elif session_type not in SESSION_TYPES:
        problems.add(
            "sessionType", f"{_show(session_type)} is not one of " + ", ".join(SESSION_TYPES)
        )
    if "inputs" in document:
        _check_inputs(document["inputs"], session_type, problems)
    names: set[str] = set()
    if "parameters" in document:
        names = _check_parameters(document["parameters"], problems)
    if "properties" in document:
        _check_properties(document["properties"], session_type, names, problems)
    elif session_type in ("InteractiveCommands", "NonInteractiveCommands"):
        problems.add("properties", f"is required for sessionType {session_type} "
                     "(properties.linux.commands is what runs)")  # fmt: skip
    problems.raise_if_any()


def _check_inputs(inputs: Any, session_type: Any, problems: _Problems) -> None:
    if not isinstance(inputs, dict):
        problems.add("inputs", f"must be an object, not {_kind(inputs)}")
        return
    if session_type not in (None, "Standard_Stream") and inputs:
        problems.add("inputs", "applies to sessionType Standard_Stream only")
    for key, value in inputs.items():
        path = f"inputs.{key}"
        kind = INPUT_KEYS.get(key)
        if kind is None:
            problems.add(path, "is not a Session Manager preference (known: "
                         + ", ".join(INPUT_KEYS) + ")")  # fmt: skip
        elif kind == "string" and not isinstance(value, str):
            problems.add(path, f"must be a string, not {_kind(value)}")
        elif kind == "boolean" and not isinstance(value, bool):
            problems.add(path, f"must be true or false, not {_show(value)}")
        elif kind == "minutes":
            low, high = MINUTE_RANGES[key]
            if minutes_of(value, low, high) is None and value != "":
                problems.add(
                    path, f"{_show(value)} is not a whole number of minutes from {low} to {high}"
                )
        elif kind == "shellProfile":
            _check_shell_profile(value, path, problems)
    user = inputs.get("runAsDefaultUser")
    if isinstance(user, str) and user and not _RUN_USER.match(user):
        problems.add("inputs.runAsDefaultUser", f"{_show(user)} is not an OS user name "
                     "(lower-case letters, digits, _ and -; at most 32)")  # fmt: skip


def minutes_of(value: Any, low: int, high: int) -> int | None:
    """A time limit's whole minutes (a number or a numeric string) within ``low``–``high``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,5}", value.strip()):
        value = int(value.strip())
    if isinstance(value, int) and low <= value <= high:
        return value
    return None


def _check_shell_profile(value: Any, path: str, problems: _Problems) -> None:
    if not isinstance(value, dict):
        problems.add(path, f"must be an object with linux and windows, not {_kind(value)}")
        return
    for key, item in value.items():
        if key not in ("linux", "windows"):
            problems.add(f"{path}.{key}", "is not a shell profile platform (linux, windows)")
        elif not isinstance(item, str):
            problems.add(f"{path}.{key}", f"must be a string of commands, not {_kind(item)}")


def _check_parameters(parameters: Any, problems: _Problems) -> set[str]:
    if not isinstance(parameters, dict):
        problems.add("parameters", f"must be an object of parameter definitions, not "
                     f"{_kind(parameters)}")  # fmt: skip
        return set()
    for name, definition in parameters.items():
        path = f"parameters.{name}"
        if not _PARAMETER_NAME.match(str(name)):
            problems.add(path, "a parameter name has 1 to 128 letters, digits and _")
        if not isinstance(definition, dict):
            problems.add(path, f"must be an object (type, default, …), not {_kind(definition)}")
            continue
        for key in definition:
            if key not in _PARAMETER_KEYS:
                problems.add(f"{path}.{key}", "is not a field of a parameter (allowed: "
                             + ", ".join(sorted(_PARAMETER_KEYS)) + ")")  # fmt: skip
        kind = definition.get("type")
        if kind is None:
            problems.add(f"{path}.type", "is required (one of " + ", ".join(PARAMETER_TYPES) + ")")
        elif kind not in PARAMETER_TYPES:
            problems.add(f"{path}.type", f"{_show(kind)} is not one of "
                         + ", ".join(PARAMETER_TYPES))  # fmt: skip
        if "description" in definition and not isinstance(definition["description"], str):
            problems.add(f"{path}.description", "must be a string")
        pattern = definition.get("allowedPattern")
        compiled: re.Pattern[str] | None = None
        if pattern is not None:
            if not isinstance(pattern, str):
                problems.add(f"{path}.allowedPattern", "must be a string (a regular expression)")
            else:
                try:
                    compiled = re.compile(pattern)
                except re.error as exc:
                    problems.add(f"{path}.allowedPattern", f"is not a regular expression: {exc}")
        allowed = definition.get("allowedValues")
        if allowed is not None and (
            not isinstance(allowed, list) or not all(_scalar(v) for v in allowed) or not allowed
        ):
            problems.add(f"{path}.allowedValues", "must be a non-empty list of values")
            allowed = None
        for key in ("minItems", "maxItems", "minChars", "maxChars"):
            item = definition.get(key)
            if item is not None and (isinstance(item, bool) or not isinstance(item, int)
                                     or item < 0):  # fmt: skip
                problems.add(f"{path}.{key}", "must be a whole number ≥ 0")
        if "default" in definition and kind in PARAMETER_TYPES:
            _check_default(definition["default"], str(kind), compiled, allowed, path, problems)
    return {str(name) for name in parameters}


def _check_default(
    default: Any,
    kind: str,
    pattern: re.Pattern[str] | None,
    allowed: list[Any] | None,
    path: str,
    problems: _Problems,
) -> None:
    where = f"{path}.default"
    if kind == "String" and not _scalar(default):
        problems.add(where, f"must be a string for type String, not {_kind(default)}")
        return
    if kind == "StringList" and not (
        isinstance(default, list) and all(_scalar(v) for v in default)
    ):
        problems.add(where, f"must be a list of strings for type StringList, not {_kind(default)}")
        return
    if kind == "Integer" and (isinstance(default, bool) or not _integer(default)):
        problems.add(where, f"{_show(default)} is not an integer")
        return
    if (
        kind == "Boolean"
        and not isinstance(default, bool)
        and str(default) not in ("true", "false")
    ):
        problems.add(where, f"{_show(default)} is not true or false")
        return
    if kind not in ("String", "StringList"):
        return
    values = default if isinstance(default, list) else [default]
    for value in values:
        text = _text(value)
        # An empty default means "not given" (AWS's own documents use it): no pattern check.
        if pattern is not None and text and pattern.fullmatch(text) is None:
            problems.add(where, f"{_show(text)} does not match allowedPattern")
        if allowed is not None and text not in [_text(a) for a in allowed]:
            problems.add(where, f"{_show(text)} is not one of allowedValues")


def _check_properties(
    properties: Any, session_type: Any, names: set[str], problems: _Problems
) -> None:
    if not isinstance(properties, dict):
        problems.add("properties", f"must be an object, not {_kind(properties)}")
        return
    if session_type in ("InteractiveCommands", "NonInteractiveCommands"):
        if not any(p in properties for p in _PLATFORMS):
            problems.add("properties", "needs linux (or windows, macos) with its commands")
        for platform, body in properties.items():
            path = f"properties.{platform}"
            if platform not in _PLATFORMS:
                problems.add(path, "is not a platform (linux, windows, macos)")
                continue
            if not isinstance(body, dict):
                problems.add(path, f"must be an object with commands, not {_kind(body)}")
                continue
            commands = body.get("commands")
            if commands is None:
                problems.add(f"{path}.commands", "is required (the command to run)")
            elif not (
                isinstance(commands, str)
                or (isinstance(commands, list) and all(isinstance(c, str) for c in commands))
            ):
                problems.add(f"{path}.commands", "must be a string or a list of strings")
            elevated = body.get("runAsElevated")
            if elevated is not None and not isinstance(elevated, bool):
                problems.add(f"{path}.runAsElevated", "must be true or false")
    elif session_type == "Port":
        for key, value in properties.items():
            if not _scalar(value):
                problems.add(f"properties.{key}", f"must be a string, not {_kind(value)}")
    _check_references(properties, "properties", names, problems)


def _check_references(node: Any, path: str, names: set[str], problems: _Problems) -> None:
    """Every ``{{ name }}`` in ``properties`` names a parameter (``ssm:`` ones are AWS's)."""
    if isinstance(node, dict):
        for key, item in node.items():
            _check_references(item, f"{path}.{key}", names, problems)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            _check_references(item, f"{path}[{index}]", names, problems)
    elif isinstance(node, str):
        for match in _PLACEHOLDER.finditer(node):
            name = match.group(1)
            if name not in names and not name.startswith("ssm:"):
                problems.add(path, f"refers to {{{{ {name} }}}}, which is not a parameter of "
                             "the document")  # fmt: skip


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def _integer(value: Any) -> bool:
    if isinstance(value, int):
        return True
    return isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value) is not None


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 64 else text[:63] + "…"
