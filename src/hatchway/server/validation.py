r"""Request bodies checked against the service models that botocore ships (SSM, IAM, KMS).

Every operation's body is decoded (:func:`decode_body`) and then checked against its input shape
(:class:`RequestValidator`) before any service code sees it, so services work with values of the
types the model promises and every malformed request is a 400 with AWS's
``ValidationException``, never a 500.

**Why a walk of our own rather than ``botocore.validate.ParamValidator``.** The model is
botocore's; the checker is not, because ``ParamValidator`` validates what a Python caller hands
boto3, not JSON off the wire: it takes ``true`` as an integer and any date string as a timestamp;
its timestamp check raises ``OverflowError`` for ``10**400`` and ``RuntimeError`` for ``1e300``
(the 500s this module exists to prevent); it checks ``min`` but not ``max``, ``pattern`` or
``enum``; and its report is one pre-formatted string echoing whole values, with no public way to
the individual errors. So the shapes of the operations this server implements are compiled once
at start (:func:`compile_operation`: about 30 ms for the model, then nothing per request) into
:class:`Rule` trees covering required members, JSON types, string and list lengths, integer
ranges, enums, patterns and timestamps.

Choices, each where AWS is either silent or ambiguous:

* **Unknown members are ignored** (and dropped before services see the body). AWS does not
  document what its servers do with them; botocore, boto3 and the ``aws`` CLI validate on the
  client and never send a member their model lacks, so only an SDK built from a newer model
  would, and forward compatibility says it should not break. ``null`` is the same as absent.
* **Nesting** is bounded by parsing, not by a scan before it. Only signed requests are parsed
  (``api.Api.handle``), plus ``RegisterManagedInstance``'s bodies of at most 16 KiB. A
  bracket-counting pre-scan was measured on 1 MiB bodies: up to 110 ms (many short strings to
  skip) where ``json.loads`` takes 0.5 ms to refuse ``[[[[…`` (the C decoder guards its own
  recursion and stops after about a thousand levels) and at most ~140 ms for the worst flat
  body, which a depth limit would not refuse anyway. Nothing then recurses into a parsed body
  beyond the model's own depth (4 levels at most): see :func:`_check`.
* **Timestamps** are JSON numbers (seconds since the epoch, as botocore sends them), finite and
  within years 1970–9999. ``json.loads`` turns ``1e400`` into ``inf`` and ``NaN`` into ``nan``:
  both are refused here.
* **Patterns** are matched as Smithy specifies: ECMA-262 flavour, searched for (not implicitly
  anchored), ``$`` only at the very end and ``.`` not matching line terminators. Python's ``$``
  also matches before a final newline and its ``.`` matches ``\r``, so both are rewritten
  (:func:`python_regex`: ``"mi-…\n"`` must not pass ``^mi-[0-9a-f]{17}$``), and ``re.ASCII``
  keeps ``\d`` and ``\w`` ASCII as there. The few patterns using Java's Unicode classes
  (``\p{L}``…), which ``re`` lacks, are rewritten by hand in :data:`_PYTHON_PATTERNS` (tested
  equal over all of Unicode). A pattern Python still cannot compile is skipped (types and
  lengths are still checked); none of the served operations has one (tested).
* **Messages** are AWS's: ``1 validation error detected: Value 'x' at 'filters.1.member.key'
  failed to satisfy constraint: Member must satisfy enum value set: [A, B]``, with every echoed
  input cut to :data:`MAX_ECHO` characters and control characters escaped.

``RegisterManagedInstance`` is not in botocore's public model: :data:`REGISTER_MODEL` gives it a
small schema in the same format, compiled and checked the same way. The ``Hatchway.*`` (IAM)
operations are checked against botocore's IAM model, and those IAM lacks (``SetPassword``)
against :data:`HATCHWAY_MODEL`; the key service's (``TrentService.*``) against botocore's KMS
model. Blobs (KMS's ciphertexts and plaintexts) are base64 on the wire: they are decoded here,
their lengths checked in bytes, and services get ``bytes``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
import reprlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from types import MappingProxyType
from typing import Any

from botocore.loaders import Loader
from botocore.model import ListShape, MapShape, OperationModel, ServiceModel, Shape, StructureShape

from hatchway.errors import SerializationError, ValidationError
from hatchway.server.events.shapes import EVENT_OPERATIONS, EVENT_SHAPES

__all__ = [
    "HATCHWAY_MODEL",
    "MAX_ECHO",
    "REGISTER_MODEL",
    "Kind",
    "RequestValidator",
    "Rule",
    "check_framing",
    "compile_operation",
    "decode_body",
    "load_iam_model",
    "load_kms_model",
    "load_logs_model",
    "load_ssm_model",
    "python_regex",
]

log = logging.getLogger(__name__)

MAX_ECHO = 64
"""Characters of an input value echoed in an error message."""

MAX_LISTED = 10
"""Validation errors spelled out in one message (all are counted)."""

TIMESTAMP_MIN = 0.0
TIMESTAMP_MAX = 253_402_300_799.0  # 9999-12-31T23:59:59Z, the last second ``datetime`` can hold

# Patterns of the model that use Java's Unicode classes, which Python's ``re`` lacks, written for
# Python. ``[^\W_]`` is exactly Java's ``[\p{L}\p{N}]`` (Python's ``\w`` is letters, numbers and
# "_"); the explicit list is ``\p{Z}`` (Zs, Zl, Zp). tests/server/test_validation.py checks the
# rewrite against ``unicodedata`` for every code point.
_Z = "\u0020\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_PYTHON_PATTERNS: Mapping[str, str] = MappingProxyType(
    {
        r"^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$": rf"^((?:[^\W_]|[{_Z}_.:/=+\-@])*)$",
    }
)

# Java Unicode classes inside larger patterns (IAM's tag keys and values use the class above
# with ``+`` and ``*``), rewritten where they appear. Patterns with one of these are compiled
# without ``re.ASCII``, as the rewrite needs Unicode's ``\W``.
_PYTHON_CLASSES: Mapping[str, str] = MappingProxyType(
    {
        r"[\p{L}\p{Z}\p{N}_.:/=+\-@]": rf"(?:[^\W_]|[{_Z}_.:/=+\-@])",
    }
)

REGISTER_MODEL: Mapping[str, Any] = MappingProxyType(
    {
        "metadata": {"protocol": "json", "targetPrefix": "AmazonSSM", "jsonVersion": "1.1"},
        "operations": {
            "RegisterManagedInstance": {
                "name": "RegisterManagedInstance",
                "http": {"method": "POST", "requestUri": "/"},
                "input": {"shape": "RegisterManagedInstanceRequest"},
            }
        },
        "shapes": {
            "RegisterManagedInstanceRequest": {
                "type": "structure",
                "required": ["ActivationId", "ActivationCode", "PublicKey"],
                "members": {
                    "ActivationId": {"shape": "ActivationId"},
                    "ActivationCode": {"shape": "ActivationCode"},
                    "PublicKey": {"shape": "PublicKey"},
                    "PublicKeyType": {"shape": "PublicKeyType"},
                    "Fingerprint": {"shape": "Fingerprint"},
                },
            },
            # ActivationId and ActivationCode as in botocore's model (CreateActivation's output).
            "ActivationId": {
                "type": "string",
                "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
            },
            "ActivationCode": {
                "type": "string",
                "min": 20,
                "max": 250,
                "pattern": "^[A-Za-z0-9+/=_-]+$",
            },
            # Base64 of a DER SubjectPublicKeyInfo: 392 characters for RSA-2048, ~1,500 for 8192.
            "PublicKey": {
                "type": "string",
                "min": 1,
                "max": 4096,
                "pattern": "^[A-Za-z0-9+/]+={0,2}$",
            },
            "PublicKeyType": {"type": "string", "enum": ["Rsa"]},
            # The agent's own id for its machine (a UUID from Hatchway's and AWS's agents);
            # stored in a 64-character column.
            "Fingerprint": {
                "type": "string",
                "min": 1,
                "max": 64,
                "pattern": "^[A-Za-z0-9._:/+=-]+$",
            },
        },
    }
)


HATCHWAY_MODEL: Mapping[str, Any] = MappingProxyType(
    {
        "metadata": {"protocol": "json", "targetPrefix": "Hatchway", "jsonVersion": "1.1"},
        "operations": {
            "SetPassword": {
                "name": "SetPassword",
                "http": {"method": "POST", "requestUri": "/"},
                "input": {"shape": "SetPasswordRequest"},
            },
            **EVENT_OPERATIONS,
            "GetSessionRecording": {
                "name": "GetSessionRecording",
                "http": {"method": "POST", "requestUri": "/"},
                "input": {"shape": "GetSessionRecordingRequest"},
            },
            "LookupEvents": {
                "name": "LookupEvents",
                "http": {"method": "POST", "requestUri": "/"},
                "input": {"shape": "LookupEventsRequest"},
            },
            "VerifyAuditTrail": {
                "name": "VerifyAuditTrail",
                "http": {"method": "POST", "requestUri": "/"},
                "input": {"shape": "VerifyAuditTrailRequest"},
            },
            "DescribeCluster": {
                "name": "DescribeCluster",
                "http": {"method": "POST", "requestUri": "/"},
                "input": {"shape": "DescribeClusterRequest"},
            },
        },
        "shapes": {
            "SetPasswordRequest": {
                "type": "structure",
                "required": ["UserName", "Password"],
                "members": {
                    "UserName": {"shape": "userNameType"},
                    "Password": {"shape": "passwordType"},
                },
            },
            "GetSessionRecordingRequest": {
                "type": "structure",
                "required": ["SessionId"],
                "members": {
                    "SessionId": {"shape": "sessionIdType"},
                    "NextToken": {"shape": "recordingTokenType"},
                    "MaxBytes": {"shape": "recordingChunkType"},
                },
            },
            # As SSM's model has SessionId; the token is a byte offset; chunks up to 1 MiB.
            "sessionIdType": {"type": "string", "min": 1, "max": 96},
            "recordingTokenType": {"type": "string", "max": 32},
            "recordingChunkType": {"type": "integer", "min": 1, "max": 1048576},
            # CloudTrail's LookupEvents request (its model's shapes; MaxResults up to 1,000
            # here, and more than one attribute, all of which must hold).
            "LookupEventsRequest": {
                "type": "structure",
                "members": {
                    "LookupAttributes": {"shape": "LookupAttributesList"},
                    "StartTime": {"shape": "Date"},
                    "EndTime": {"shape": "Date"},
                    "MaxResults": {"shape": "MaxResults"},
                    "NextToken": {"shape": "NextToken"},
                },
            },
            "LookupAttributesList": {
                "type": "list",
                "member": {"shape": "LookupAttribute"},
                "max": 6,
            },
            "LookupAttribute": {
                "type": "structure",
                "required": ["AttributeKey", "AttributeValue"],
                "members": {
                    "AttributeKey": {"shape": "LookupAttributeKey"},
                    "AttributeValue": {"shape": "LookupAttributeValue"},
                },
            },
            "LookupAttributeKey": {
                "type": "string",
                "enum": [
                    "EventId",
                    "EventName",
                    "ReadOnly",
                    "Username",
                    "ResourceName",
                    "AccessKeyId",
                ],
            },
            "LookupAttributeValue": {"type": "string", "min": 1, "max": 2000},
            "Date": {"type": "timestamp"},
            "MaxResults": {"type": "integer", "min": 1, "max": 1000},
            "NextToken": {"type": "string", "max": 64},
            "VerifyAuditTrailRequest": {
                "type": "structure",
                "members": {"Anchors": {"shape": "AnchorList"}},
            },
            "DescribeClusterRequest": {"type": "structure", "members": {}},
            "AnchorList": {"type": "list", "member": {"shape": "Anchor"}, "max": 100},
            "Anchor": {
                "type": "structure",
                "required": ["Sequence", "Hash"],
                "members": {
                    "Sequence": {"shape": "Sequence"},
                    "Hash": {"shape": "Hash"},
                },
            },
            "Sequence": {"type": "long", "min": 1},
            "Hash": {"type": "string", "min": 64, "max": 64, "pattern": "^[0-9a-f]{64}$"},
            # As IAM's model has them (CreateLoginProfile's UserName and Password).
            "userNameType": {"type": "string", "min": 1, "max": 64, "pattern": "[\\w+=,.@-]+"},
            "passwordType": {
                "type": "string",
                "min": 1,
                "max": 128,
                "pattern": "[\\u0009\\u000A\\u000D\\u0020-\\u00FF]+",
                "sensitive": True,
            },
            **EVENT_SHAPES,
        },
    }
)
"""Hatchway operations that IAM's model lacks (the rest of ``Hatchway.*`` are IAM's):
SetPassword, and the audit trail's LookupEvents (CloudTrail's) and VerifyAuditTrail."""


def load_ssm_model() -> ServiceModel:
    """botocore's SSM service model, read with its loader (no botocore session: cheaper)."""
    return ServiceModel(Loader().load_service_model("ssm", "service-2"), service_name="ssm")


def load_kms_model() -> ServiceModel:
    """botocore's KMS service model: the input shapes of the ``TrentService.*`` operations."""
    return ServiceModel(Loader().load_service_model("kms", "service-2"), service_name="kms")


def load_logs_model() -> ServiceModel:
    """botocore's CloudWatch Logs model: the input shapes of the ``Logs_20140328.*`` operations."""
    return ServiceModel(Loader().load_service_model("logs", "service-2"), service_name="logs")


def load_iam_model() -> ServiceModel:
    """botocore's IAM service model: the input shapes of the ``Hatchway.*`` operations."""
    return ServiceModel(Loader().load_service_model("iam", "service-2"), service_name="iam")


class Kind(Enum):
    """The JSON value a shape expects, by botocore's shape type."""

    STRUCTURE = "structure"
    LIST = "list"
    MAP = "map"
    STRING = "string"
    INTEGER = "integer"
    LONG = "long"
    BOOLEAN = "boolean"
    FLOAT = "float"
    DOUBLE = "double"
    TIMESTAMP = "timestamp"
    BLOB = "blob"


_EXPECTED = {
    Kind.STRUCTURE: "an object",
    Kind.MAP: "an object",
    Kind.LIST: "a list",
    Kind.STRING: "a string",
    Kind.BLOB: "a base64 string",
    Kind.INTEGER: "an integer",
    Kind.LONG: "an integer",
    Kind.BOOLEAN: "a boolean",
    Kind.FLOAT: "a number",
    Kind.DOUBLE: "a number",
    Kind.TIMESTAMP: "a number of seconds since 1970-01-01T00:00:00Z",
}


@dataclass(frozen=True, slots=True, eq=False)
class Rule:
    """One shape of the model, compiled: what the JSON value at one place must be."""

    kind: Kind
    min: int | None = None
    """Least length (strings, lists, maps) or value (numbers)."""
    max: int | None = None
    pattern: re.Pattern[str] | None = None
    pattern_text: str = ""
    """The model's (Java) pattern, quoted in messages."""
    enum: tuple[str, ...] = ()
    members: Mapping[str, Rule] = field(default_factory=dict)
    """Structure members by wire name."""
    required: frozenset[str] = frozenset()
    member: Rule | None = None
    """List element."""
    key: Rule | None = None
    value: Rule | None = None
    """Map key and value."""


def python_regex(pattern: str) -> str:
    """An ECMA-262 (Smithy) pattern in Python's syntax: ``$`` → ``\\Z``, ``.`` → no line ends.

    Only outside character classes and escapes; everything else is the same in both.
    """
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            # Python reads a "]" right after "[" or "[^" as a literal: copy those along.
            end = i + 1
            end += pattern.startswith("^", end)
            end += pattern.startswith("]", end)
            out.append(pattern[i:end])
            in_class = True
            i = end
            continue
        elif char == "$":
            char = r"\Z"
        elif char == ".":
            char = r"[^\n\r\u2028\u2029]"
        out.append(char)
        i += 1
    return "".join(out)


def _compile_pattern(text: str) -> re.Pattern[str] | None:
    override = _PYTHON_PATTERNS.get(text)
    if override is None and any(java in text for java in _PYTHON_CLASSES):
        override = text
        for java, python in _PYTHON_CLASSES.items():
            override = override.replace(java, python)
    try:
        if override is not None:
            return re.compile(python_regex(override))  # Unicode classes: no re.ASCII
        return re.compile(python_regex(text), re.ASCII)
    except re.error as exc:
        # A Java-only construct with no rewrite in _PYTHON_PATTERNS: skip the pattern (types and
        # lengths are still checked). Not reached for the operations this server implements.
        log.debug("pattern %r is not a Python regular expression (%s); not checked", text, exc)
        return None


def compile_operation(operation: OperationModel) -> Rule:
    """Compile an operation's input shape (an empty structure if it has none).

    Raises:
        ValueError: the shape is recursive or has a document (free-form JSON) member; no
            operation Hatchway serves has either.
    """
    shape = operation.input_shape
    if shape is None:
        return Rule(Kind.STRUCTURE)
    return _compile(shape, ())


def _compile(shape: Shape, outer: tuple[str, ...]) -> Rule:
    if shape.name in outer:
        raise ValueError(f"recursive shape {' > '.join((*outer, shape.name))}")
    inner = (*outer, shape.name)
    metadata = shape.metadata
    if metadata.get("document"):
        # Free-form JSON: no operation Hatchway serves has one, and a walk of it would need
        # its own depth limit.
        raise ValueError(f"document shape {shape.name} is not supported")
    kind = Kind(shape.type_name)
    pattern_text = metadata.get("pattern", "")
    common: dict[str, Any] = {
        "min": metadata.get("min"),
        "max": metadata.get("max"),
        "pattern": _compile_pattern(pattern_text) if pattern_text else None,
        "pattern_text": pattern_text,
        "enum": tuple(metadata.get("enum", ())),
    }
    if isinstance(shape, StructureShape):
        return Rule(
            kind,
            members=MappingProxyType({n: _compile(s, inner) for n, s in shape.members.items()}),
            required=frozenset(metadata.get("required", ())),
            **common,
        )
    if isinstance(shape, ListShape):
        return Rule(kind, member=_compile(shape.member, inner), **common)
    if isinstance(shape, MapShape):
        return Rule(
            kind, key=_compile(shape.key, inner), value=_compile(shape.value, inner), **common
        )
    return Rule(kind, **common)


# ---- the walk ------------------------------------------------------------------------------

_echo_repr = reprlib.Repr()
_echo_repr.maxlevel = 2
_echo_repr.maxlist = _echo_repr.maxdict = 4
_echo_repr.maxstring = _echo_repr.maxother = MAX_ECHO


def parse_timestamp(value: str | float) -> float:
    """A point in time as seconds since the epoch: a number, or a string of one, or ISO 8601
    (a time without an offset is UTC). The one parser of times the API accepts.

    Raises:
        ValidationError: not a time, or outside 1970 .. 9999 (``nan``, ``inf``, ``1e400``).
    """
    seconds: float
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValidationError(f"not a timestamp: '{echo(value)}'")
    if isinstance(value, str):
        try:
            seconds = float(value)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError as exc:
                raise ValidationError(f"not a timestamp: '{echo(value)}'") from exc
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            seconds = parsed.timestamp()
    else:
        seconds = value  # compared before any float(): an int > 1e308 would overflow
    if not TIMESTAMP_MIN <= seconds <= TIMESTAMP_MAX:  # also false for nan
        raise ValidationError(f"not a timestamp: '{echo(value)}'")
    return float(seconds)


def echo(value: Any) -> str:
    """An input value as an error message may quote it: at most MAX_ECHO characters, printable."""
    if isinstance(value, str):
        text = value
    elif value is None or isinstance(value, bool):
        text = json.dumps(value)
    elif isinstance(value, float):
        text = json.dumps(value)  # NaN, Infinity, 1e+300
    elif isinstance(value, int):
        try:
            text = str(value)
        except ValueError:  # longer than sys.get_int_max_str_digits(); json.loads refuses those
            text = "(an integer too long to print)"
    else:
        text = _echo_repr.repr(value)
    if len(text) > MAX_ECHO:
        text = text[: MAX_ECHO - 1] + "…"
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text


def _camel(name: str) -> str:
    """AWS names members in validation paths with a lower-case first letter."""
    return name[:1].lower() + name[1:]


@dataclass(slots=True)
class _Report:
    """Failed constraints of one request: all counted, the first MAX_LISTED spelled out."""

    problems: list[str] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)
    count: int = 0

    def add(self, value: Any, path: str, constraint: str) -> None:
        """Record one failed constraint (returns None, the value of a refused input)."""
        self.count += 1
        self.constraints.append(constraint)
        if len(self.problems) < MAX_LISTED:
            shown = "null" if value is None else f"'{echo(value)}'"
            self.problems.append(
                f"Value {shown} at '{path}' failed to satisfy constraint: {constraint}"
            )

    def raise_if_any(self) -> None:
        if not self.count:
            return
        noun = "error" if self.count == 1 else "errors"
        more = (
            f"; and {self.count - len(self.problems)} more"
            if self.count > len(self.problems)
            else ""
        )
        raise ValidationError(
            f"{self.count} validation {noun} detected: " + "; ".join(self.problems) + more
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check(rule: Rule, value: Any, path: str, report: _Report) -> Any:
    """The value as services get it (structures keep known members only), or None if bad.

    The walk follows the model, which has no recursive or free-form shapes (compile_operation
    refuses them), so it is never deeper than the shape: however deep an ignored member nests,
    no Python code recurses into it.
    """
    kind = rule.kind
    if kind is Kind.STRUCTURE:
        if not isinstance(value, dict):
            return report.add(value, path, "Member must be an object")
        out: dict[str, Any] = {}
        for name, member in rule.members.items():
            item = value.get(name)
            where = f"{path}.{_camel(name)}" if path else _camel(name)
            if item is None:
                if name in rule.required:
                    report.add(None, where, "Member must not be null")
                continue
            out[name] = _check(member, item, where, report)
        return out
    if kind is Kind.LIST:
        if not isinstance(value, list):
            return report.add(value, path, "Member must be a list")
        if not _length_ok(rule, value, path, report):
            return None
        assert rule.member is not None
        return [
            _check_present(rule.member, item, f"{path}.{i}.member", report)
            for i, item in enumerate(value, start=1)
        ]
    if kind is Kind.MAP:
        if not isinstance(value, dict):
            return report.add(value, path, "Member must be an object")
        if not _length_ok(rule, value, path, report):
            return None
        assert rule.key is not None and rule.value is not None
        mapped: dict[str, Any] = {}
        for key, item in value.items():
            key_report = _Report()
            _check(rule.key, key, path, key_report)
            if key_report.count:
                failed = ", ".join(key_report.constraints)
                report.add(key, path, f"Map keys must satisfy constraint: [{failed}]")
            mapped[key] = _check_present(rule.value, item, f"{path}.{echo(key)}", report)
        return mapped
    return _check_scalar(rule, value, path, report)


def _check_present(rule: Rule, value: Any, path: str, report: _Report) -> Any:
    if value is None:
        return report.add(None, path, "Member must not be null")
    return _check(rule, value, path, report)


def _length_ok(rule: Rule, value: Any, path: str, report: _Report) -> bool:
    size = len(value)
    if rule.max is not None and size > rule.max:
        report.add(value, path, f"Member must have length less than or equal to {rule.max}")
        return False
    if rule.min is not None and size < rule.min:
        report.add(value, path, f"Member must have length greater than or equal to {rule.min}")
        return False
    return True


def _check_scalar(rule: Rule, value: Any, path: str, report: _Report) -> Any:
    kind = rule.kind
    if kind is Kind.BLOB:
        return _check_blob(rule, value, path, report)
    if kind is Kind.STRING:
        if not isinstance(value, str):
            return report.add(value, path, f"Member must be {_EXPECTED[kind]}")
        # Length first: a pattern never runs over a string longer than the model allows.
        if not _length_ok(rule, value, path, report):
            return None
        if rule.enum and value not in rule.enum:
            return report.add(
                value, path, f"Member must satisfy enum value set: [{', '.join(rule.enum)}]"
            )
        if rule.pattern is not None and rule.pattern.search(value) is None:
            return report.add(
                value,
                path,
                f"Member must satisfy regular expression pattern: {rule.pattern_text}",
            )
        return value
    if kind is Kind.BOOLEAN:
        if not isinstance(value, bool):
            return report.add(value, path, "Member must be a boolean")
        return value
    if kind in (Kind.INTEGER, Kind.LONG):
        if not isinstance(value, int) or isinstance(value, bool):
            return report.add(value, path, "Member must be an integer")
        return value if _range_ok(rule, value, path, report) else None
    if kind in (Kind.FLOAT, Kind.DOUBLE):
        if not _is_number(value) or not math.isfinite(value):
            return report.add(value, path, "Member must be a finite number")
        return value if _range_ok(rule, value, path, report) else None
    if kind is Kind.TIMESTAMP:
        # int > 1e308 makes float() raise OverflowError: compare before converting.
        if not _is_number(value) or not TIMESTAMP_MIN <= value <= TIMESTAMP_MAX:
            return report.add(
                value,
                path,
                f"Member must be a number of seconds since 1970-01-01T00:00:00Z, at most "
                f"{TIMESTAMP_MAX:.0f}",
            )
        return float(value)
    raise AssertionError(f"unhandled shape kind {kind}")  # pragma: no cover


def _check_blob(rule: Rule, value: Any, path: str, report: _Report) -> bytes | None:
    """A blob is base64 on the wire (botocore's JSON protocol); services get the bytes, and
    the model's lengths count bytes. The text is bounded before it is decoded."""
    if not isinstance(value, str):
        report.add(value, path, f"Member must be {_EXPECTED[Kind.BLOB]}")
        return None
    if rule.max is not None and len(value) > 4 * (rule.max // 3 + 1):
        report.add(value, path, f"Member must have length less than or equal to {rule.max}")
        return None
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        report.add(value, path, f"Member must be {_EXPECTED[Kind.BLOB]}")
        return None
    if not _length_ok(rule, data, path, report):
        return None
    return data


def _range_ok(rule: Rule, value: float, path: str, report: _Report) -> bool:
    if rule.max is not None and value > rule.max:
        report.add(value, path, f"Member must have value less than or equal to {rule.max}")
        return False
    if rule.min is not None and value < rule.min:
        report.add(value, path, f"Member must have value greater than or equal to {rule.min}")
        return False
    return True


class RequestValidator:
    """Input rules of the operations a server serves, compiled once at start.

    ``validate(operation, body)`` returns the body as services may use it — known members only,
    no ``null``s, every value of the type and within the limits the model gives — or raises
    ``ValidationError`` listing what is wrong, in AWS's words.
    """

    def __init__(self, rules: Mapping[str, Rule]) -> None:
        self._rules = dict(rules)

    @classmethod
    def for_operations(
        cls,
        names: Iterable[str],
        hatchway_ops: Iterable[str] = (),
        *,
        model: ServiceModel | None = None,
        iam_model: ServiceModel | None = None,
        kms_ops: Iterable[str] = (),
        kms_model: ServiceModel | None = None,
        logs_ops: Iterable[str] = (),
    ) -> RequestValidator:
        """Compile the SSM operations ``names`` (botocore's SSM model, or ``model``, and
        :data:`REGISTER_MODEL`), the ``Hatchway.*`` operations ``hatchway_ops`` (botocore's
        IAM model, or ``iam_model``, and :data:`HATCHWAY_MODEL`), the ``TrentService.*``
        operations ``kms_ops`` (botocore's KMS model, or ``kms_model``) and the
        ``Logs_20140328.*`` operations ``logs_ops`` (botocore's CloudWatch Logs model).

        The models themselves are not kept: only the compiled rules of these operations are.

        Raises:
            ValueError: an operation name is in both sets (one namespace of rules).
        """
        names, hatchway_ops = list(names), list(hatchway_ops)
        kms_ops, logs_ops = list(kms_ops), list(logs_ops)
        groups = [set(names), set(hatchway_ops), set(kms_ops), set(logs_ops)]
        both = {n for a, g in enumerate(groups) for h in groups[a + 1 :] for n in g & h}
        if both:
            raise ValueError(f"operations in two services: {', '.join(sorted(both))}")
        rules: dict[str, Rule] = {}
        if names:
            model = model or load_ssm_model()
            register = ServiceModel(dict(REGISTER_MODEL), service_name="ssm")
            for name in names:
                source = register if name in register.operation_names else model
                rules[name] = compile_operation(source.operation_model(name))
        if hatchway_ops:
            iam_model = iam_model or load_iam_model()
            own = ServiceModel(dict(HATCHWAY_MODEL), service_name="hatchway")
            for name in hatchway_ops:
                source = own if name in own.operation_names else iam_model
                rules[name] = compile_operation(source.operation_model(name))
        if kms_ops:
            kms_model = kms_model or load_kms_model()
            for name in kms_ops:
                rules[name] = compile_operation(kms_model.operation_model(name))
        if logs_ops:
            logs_model = load_logs_model()
            for name in logs_ops:
                rules[name] = compile_operation(logs_model.operation_model(name))
        return cls(rules)

    @property
    def operations(self) -> frozenset[str]:
        return frozenset(self._rules)

    def rule(self, operation: str) -> Rule:
        return self._rules[operation]

    def validate(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        """Check ``body`` (a decoded JSON object) against ``operation``'s input shape.

        Raises:
            ValidationError: ``ValidationException`` listing the failed constraints.
            KeyError: ``operation`` was not compiled (a server bug).
        """
        report = _Report()
        checked = _check(self._rules[operation], body, "", report)
        report.raise_if_any()
        assert isinstance(checked, dict)
        return checked


# ---- decoding ------------------------------------------------------------------------------

_JSON_SPACE = b" \t\n\r"


def check_framing(body: bytes) -> None:
    """Refuse, without parsing, a body that cannot be a JSON object: cheap enough for anyone.

    Runs before the signature is checked, so it looks only at what costs one pass in C: that
    the body is UTF-8 and starts with ``{`` and ends with ``}`` (an empty body means ``{}``).

    Raises:
        SerializationError: ``SerializationException``.
    """
    stripped = body.strip(_JSON_SPACE)
    if not stripped:
        return
    if not (stripped.startswith(b"{") and stripped.endswith(b"}")):
        raise SerializationError("request body must be a JSON object")
    try:
        stripped.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SerializationError("request body is not UTF-8") from exc


def decode_body(body: bytes) -> dict[str, Any]:
    """Parse a request body into a JSON object (an empty body is ``{}``).

    Every parse failure becomes ``SerializationError``, ``RecursionError`` included: the C
    decoder guards its own recursion, so ``[[[[…`` fails after reading about a thousand bytes
    and never reaches the log as a traceback. ``NaN``, ``Infinity`` and ``1e400`` parse (as
    floats) and are left to the validator, which refuses them where a number is expected.

    Raises:
        SerializationError: not UTF-8, not JSON, or not an object.
    """
    if not body.strip(_JSON_SPACE):
        return {}
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise SerializationError("request body is not UTF-8") from exc
    except RecursionError as exc:
        raise SerializationError("request body nests too deeply") from exc
    except ValueError as exc:
        # JSONDecodeError, and integers longer than Python's digit limit (4,300).
        raise SerializationError("request body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise SerializationError("request body must be a JSON object")
    return data
