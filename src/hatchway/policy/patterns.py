"""Wildcards and policy variables, compiled once into regular expressions.

IAM patterns know two wildcards, ``*`` (any run of characters) and ``?`` (one character), and,
in policies of Version 2012-10-17, policy variables ``${key}`` whose value comes from the
request context, ``${key, 'default'}`` with a default used when the key is absent, and the
escapes ``${*}``, ``${?}`` and ``${$}`` for a literal ``*``, ``?`` and ``$``. A substituted
value is always literal text: a ``*`` in a user name is not a wildcard.

A :class:`Template` is a string split into those pieces. One without variables is resolved at
parse time; one with variables is resolved per request, and a variable whose key is absent
(and has no default) makes the template resolve to ``None``: that resource or condition value
matches nothing, as in IAM.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import PolicyError

# A context as the evaluator sees it: keys lower-cased, every value a tuple of strings.
Context = Mapping[str, tuple[str, ...]]

_ESCAPES = {"*": "*", "?": "?", "$": "$"}


@dataclass(frozen=True, slots=True)
class Literal:
    """Text that means itself; ``wild`` says whether its ``*`` and ``?`` are wildcards."""

    text: str
    wild: bool


@dataclass(frozen=True, slots=True)
class Variable:
    """``${key}`` or ``${key, 'default'}``; ``key`` is lower-cased (keys are case-insensitive)."""

    key: str
    default: str | None


Piece = Literal | Variable


def variable_value(context: Context, piece: Variable) -> str | None:
    """The text a variable stands for, or None when the key is absent or multi-valued."""
    values = context.get(piece.key)
    if values is not None and len(values) == 1:
        return values[0]
    return piece.default


@dataclass(frozen=True, slots=True)
class Template:
    """A policy string split into literal text and variables."""

    source: str
    pieces: tuple[Piece, ...]

    @property
    def has_variables(self) -> bool:
        return any(isinstance(p, Variable) for p in self.pieces)

    @property
    def variables(self) -> tuple[Variable, ...]:
        return tuple(p for p in self.pieces if isinstance(p, Variable))

    def text(self, context: Context) -> str | None:
        """The string with variables substituted (wildcards left as written)."""
        out: list[str] = []
        for piece in self.pieces:
            if isinstance(piece, Literal):
                out.append(piece.text)
            else:
                value = variable_value(context, piece)
                if value is None:
                    return None
                out.append(value)
        return "".join(out)

    def regex(self, context: Context, star: str = ".*", one: str = ".") -> str | None:
        """A regular expression for the string: wildcards in written text, the rest literal."""
        out: list[str] = []
        for piece in self.pieces:
            if isinstance(piece, Literal):
                out.append(
                    wildcard_regex(piece.text, star, one) if piece.wild else re.escape(piece.text)
                )
            else:
                value = variable_value(context, piece)
                if value is None:
                    return None
                out.append(re.escape(value))
        return "".join(out)


_NO_CONTEXT: Context = {}


def wildcard_regex(text: str, star: str = ".*", one: str = ".") -> str:
    """``*`` and ``?`` as ``star`` and ``one``; every other character literal."""
    return "".join(star if c == "*" else one if c == "?" else re.escape(c) for c in text)


def parse_template(source: str, path: str, *, variables: bool) -> Template:
    """Split ``source`` into pieces; ``variables`` is False for Version 2008-10-17 documents.

    Raises:
        PolicyError: an unterminated ``${``, an empty key or a malformed default value.
    """
    if not variables or "${" not in source:
        return Template(source, (Literal(source, True),) if source else ())
    pieces: list[Piece] = []
    pos = 0
    while True:
        start = source.find("${", pos)
        if start < 0:
            break
        if start > pos:
            pieces.append(Literal(source[pos:start], True))
        end = source.find("}", start + 2)
        if end < 0:
            raise PolicyError(path, f"unterminated policy variable at offset {start}")
        pieces.append(_variable(source[start + 2 : end].strip(), path))
        pos = end + 1
    if pos < len(source):
        pieces.append(Literal(source[pos:], True))
    return Template(source, tuple(pieces))


def _variable(body: str, path: str) -> Piece:
    if body in _ESCAPES:
        return Literal(_ESCAPES[body], False)
    key, comma, default = body.partition(",")
    key = key.strip()
    if not key:
        raise PolicyError(path, "empty policy variable name")
    if not comma:
        return Variable(key.lower(), None)
    default = default.strip()
    if len(default) < 2 or default[0] != "'" or default[-1] != "'":
        raise PolicyError(path, f"default value of ${{{key}}} must be in single quotes")
    inner = default[1:-1]
    if "'" in inner.replace("''", ""):
        raise PolicyError(path, f"a quote in the default value of ${{{key}}} must be doubled")
    return Variable(key.lower(), inner.replace("''", "'"))


# --- ARNs -------------------------------------------------------------------------------------

# Partitions that name the same thing: AWS's published policies say ``arn:aws:…`` and keep
# working against Hatchway's ``arn:hatchway:…`` names (and the reverse).
EQUIVALENT_PARTITIONS = frozenset({"aws", "hatchway"})
ARN_FORM = "arn:partition:service:region:account:resource"
ARN_PARTS = 6  # arn:partition:service:region:account:resource (the resource keeps its colons)


def is_arn_shape(text: str) -> bool:
    """``arn:`` followed by at least five more colon-separated parts."""
    return text.startswith("arn:") and text.count(":") >= ARN_PARTS - 1


class ArnPattern:
    """An ARN with wildcards, matched part by part (IAM's ArnLike): a ``*`` in the partition,
    service, region or account never crosses a colon; one in the resource part may.

    Variables are allowed only in the resource part, after the fifth colon (as in IAM).
    """

    __slots__ = ("_prefix", "_resource", "source", "static")

    def __init__(self, source: str, path: str, *, variables: bool) -> None:
        self.source = source
        parts = source.split(":", ARN_PARTS - 1)
        head = ":".join(parts[: ARN_PARTS - 1])
        if variables and "${" in head:
            raise PolicyError(
                path, "policy variables are allowed only in the resource part of an ARN"
            )
        part_regexes = [wildcard_regex(p, "[^:]*", "[^:]") for p in parts[1 : ARN_PARTS - 1]]
        if any(re.fullmatch(part_regexes[0], p) for p in EQUIVALENT_PARTITIONS):
            alternatives = {part_regexes[0], *map(re.escape, sorted(EQUIVALENT_PARTITIONS))}
            part_regexes[0] = "(?:" + "|".join(sorted(alternatives)) + ")"
        self._prefix = "arn:" + ":".join(part_regexes) + ":"
        self._resource = parse_template(parts[-1], path, variables=variables)
        self.static: str | None = None if self._resource.has_variables else self.regex(_NO_CONTEXT)

    def regex(self, context: Context) -> str | None:
        resource = self._resource.regex(context)
        return None if resource is None else self._prefix + resource

    @property
    def has_variables(self) -> bool:
        return self.static is None

    @property
    def variables(self) -> tuple[Variable, ...]:
        return self._resource.variables


class PatternSet:
    """Several wildcard patterns matched as one: a string matches if it matches any of them.

    The patterns without variables are compiled into one regular expression at parse time; those
    with variables are compiled for each set of variable values (remembered for the last
    ``CACHE_LIMIT`` of them), and one whose variable is absent matches nothing.
    """

    CACHE_LIMIT = 256

    __slots__ = ("_cache", "_dynamic", "_flags", "_single", "_static", "_variables")

    def __init__(
        self, static: list[str], dynamic: list[ArnPattern | Template], *, ignore_case: bool = False
    ) -> None:
        self._flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
        self._static = (
            re.compile("|".join(f"(?:{r})" for r in static), self._flags) if static else None
        )
        self._dynamic = tuple(dynamic)
        self._variables = tuple(dict.fromkeys(v for p in dynamic for v in p.variables))
        # The usual case, one variable and no default: its raw context value is the cache key.
        only = self._variables[0] if len(self._variables) == 1 else None
        self._single = only.key if only is not None and only.default is None else None
        self._cache: dict[object, re.Pattern[str] | None] = {}

    @property
    def has_variables(self) -> bool:
        return bool(self._dynamic)

    @property
    def static(self) -> re.Pattern[str] | None:
        """The variable-free patterns as one expression (None when there are none)."""
        return self._static

    def matcher(self, context: Context) -> re.Pattern[str] | None:
        """One compiled expression for every pattern under ``context`` (None: matches nothing)."""
        if not self._dynamic:
            return self._static
        key: object
        if self._single is not None:
            key = context.get(self._single)
        else:
            key = tuple(variable_value(context, v) for v in self._variables)
        try:
            return self._cache[key]
        except KeyError:
            pass
        if len(self._cache) >= self.CACHE_LIMIT:
            self._cache.clear()
        compiled = self._cache[key] = self._compile(context)
        return compiled

    def _compile(self, context: Context) -> re.Pattern[str] | None:
        regexes = [f"(?:{self._static.pattern})"] if self._static is not None else []
        for pattern in self._dynamic:
            regex = pattern.regex(context)
            if regex is not None:
                regexes.append(f"(?:{regex})")
        return re.compile("|".join(regexes), self._flags) if regexes else None
