"""Built-in session documents (AWS's schema and document names), shipped as package data, and
how StartSession's ``Parameters`` are checked against a document and put into it.

:func:`resolve` is pure: it validates the request's parameters against the document's
``parameters`` definitions (docs/protocol.md §8.6), fills in defaults and substitutes
``{{ name }}`` placeholders in the document's ``properties``, and nowhere else.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

from hatchway.errors import ValidationError
from hatchway.server.documentschema import parse
from hatchway.store.records import Document

DEFAULT_SHELL_DOCUMENT = "SSM-SessionManagerRunShell"
"""The shell document, which also holds the preferences (``server.preferences``)."""
AMAZON = "Amazon"
"""Owner of the built-in documents (read-only, except :data:`DEFAULT_SHELL_DOCUMENT`)."""


def builtin_documents(now: float) -> list[Document]:
    """Every JSON document in ``server/documents/`` as a ``Document`` record."""
    folder = resources.files("hatchway.server") / "documents"
    docs = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            content = entry.read_text(encoding="utf-8")
            json.loads(content)  # a broken package should fail loudly at start
            docs.append(
                Document(
                    name=entry.name[: -len(".json")],
                    document_type="Session",
                    document_format="JSON",
                    content=content,
                    owner=AMAZON,
                    created_date=now,
                )
            )
    return docs


def parse_content(document: Document) -> dict[str, Any]:
    """The stored document's object (JSON or YAML; checked when it was written)."""
    return parse(document.content, document.document_format)


#: ``{{ name }}`` or ``{{name}}``: a document parameter reference (docs/protocol.md §8.6).
#: ``{{ssm:…}}`` and other names a document does not define are left as they are.
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.:-]+)\s*\}\}")


def _definitions(content: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The document's parameter definitions; a malformed document is the server's bug."""
    raw = content.get("parameters") or {}
    if not isinstance(raw, dict) or not all(isinstance(d, dict) for d in raw.values()):
        raise TypeError("document parameters must be an object of objects")
    return raw


_SINGLE_VALUED = ("String", "Integer", "Boolean")


def _as_values(default: Any) -> list[str]:
    if isinstance(default, list):
        return [_as_text(v) for v in default]
    return [_as_text(default)]


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _check_value(name: str, value: str, definition: Mapping[str, Any]) -> None:
    allowed = definition.get("allowedValues")
    if allowed is not None and value not in [str(a) for a in allowed]:
        raise ValidationError(
            f'Parameter "{name}" is "{value}", which is not one of the allowed values: '
            + ", ".join(str(a) for a in allowed)
        )
    pattern = definition.get("allowedPattern")
    # AWS matches the whole value against the pattern as written (Java's Matcher.matches()).
    if pattern is not None and re.fullmatch(str(pattern), value) is None:
        raise ValidationError(
            f'Parameter "{name}" is "{value}", which does not match the allowed pattern {pattern}'
        )


def validate_parameters(
    content: Mapping[str, Any],
    parameters: Mapping[str, Sequence[str]],
    document_name: str = "",
) -> dict[str, list[str]]:
    """Every parameter the document defines, with its value: given, or its default.

    Raises:
        ValidationError: a parameter the document does not define, a required parameter (one
            without a default) missing, a ``String`` parameter given other than one value, or
            a value outside ``allowedValues`` or not matching ``allowedPattern``. The message
            names the parameter.
    """
    definitions = _definitions(content)
    where = f" in document {document_name}" if document_name else ""
    for name in parameters:
        if name not in definitions:
            raise ValidationError(f'Parameter "{name}" is not defined{where}.')
    resolved: dict[str, list[str]] = {}
    for name, definition in definitions.items():
        if name in parameters:
            values = [str(v) for v in parameters[name]]
        elif "default" in definition:
            values = _as_values(definition["default"])
        else:
            raise ValidationError(f'Parameter "{name}" is required{where} and has no default.')
        kind = definition.get("type", "String")
        if kind in _SINGLE_VALUED and len(values) != 1:
            raise ValidationError(
                f'Parameter "{name}" is of type {kind} and takes one value, not {len(values)}.'
            )
        if kind == "Integer" and re.fullmatch(r"-?[0-9]{1,18}", values[0]) is None:
            raise ValidationError(f'Parameter "{name}" is "{values[0]}", which is not an integer.')
        if kind == "Boolean":
            values = [values[0].lower()] if values[0].lower() in ("true", "false") else values
            if values[0] not in ("true", "false"):
                raise ValidationError(
                    f'Parameter "{name}" is "{values[0]}", which is not true or false.'
                )
        for value in values:
            _check_value(name, value, definition)
        resolved[name] = values
    return resolved


def _substitute(node: Any, values: Mapping[str, list[str]], kinds: Mapping[str, str]) -> Any:
    if isinstance(node, dict):
        return {key: _substitute(item, values, kinds) for key, item in node.items()}
    if isinstance(node, list):
        return [_substitute(item, values, kinds) for item in node]
    if not isinstance(node, str):
        return node
    whole = _PLACEHOLDER.fullmatch(node)
    if whole and whole.group(1) in values and kinds[whole.group(1)] == "StringList":
        return list(values[whole.group(1)])  # a list where the whole value is the reference

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            return match.group(0)
        return ",".join(values[name]) if kinds[name] == "StringList" else values[name][0]

    return _PLACEHOLDER.sub(replace, node)


def resolve(
    document_content: Mapping[str, Any],
    parameters: Mapping[str, Sequence[str]],
    document_name: str = "",
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Check ``parameters`` against the document and substitute them into its ``properties``.

    Returns:
        The document content with ``{{ name }}`` references in ``properties`` replaced (the rest
        of the document untouched), and every defined parameter with its value (defaults filled
        in), as the agent receives them in its AgentTaskPayload (docs/protocol.md §10.4).

    Raises:
        ValidationError: see :func:`validate_parameters`.
    """
    values = validate_parameters(document_content, parameters, document_name)
    kinds = {
        name: str(d.get("type", "String")) for name, d in _definitions(document_content).items()
    }
    content = copy.deepcopy(dict(document_content))
    if "properties" in content:
        content["properties"] = _substitute(content["properties"], values, kinds)
    return content, values
