"""The Condition element: IAM's operators, set qualifiers, ``…IfExists`` and missing keys.

A statement's conditions all hold (AND over operator blocks and over the keys in a block); for
one key, the request matches if it matches any of the policy's values (OR). Each operator is
compiled once at parse time into a predicate on one request value; policy variables (in the
string and ARN operators only, as in IAM) are substituted per request.

Missing keys (absent, or present with no values) follow IAM: the condition is false, except
that ``…IfExists`` and ``ForAllValues:`` are true, a negated operator (``StringNotEquals``,
``NotIpAddress``, …) is true, ``ForAnyValue:`` is false even when negated, and ``Null`` tests
exactly that absence. A request value that cannot be read as the operator's type (a number, a
date, an IP address, base64) matches no policy value.

A multi-valued key without a qualifier matches when any of its values matches (a negated
operator: when none does); ``ForAnyValue:`` needs one request value to satisfy the operator,
``ForAllValues:`` every one.
"""

from __future__ import annotations

import base64
import binascii
import enum
import ipaddress
import json
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .errors import PolicyError
from .patterns import (
    ARN_FORM,
    ArnPattern,
    Context,
    PatternSet,
    Template,
    is_arn_shape,
    parse_template,
)

Predicate = Callable[[str], bool]  # does one request value match any of the policy's values?
Prepare = Callable[[Context], Predicate]  # the predicate under one request's variables


class Qualifier(enum.Enum):
    """The set operators for multi-valued keys."""

    ANY = "ForAnyValue"
    ALL = "ForAllValues"


class Kind(enum.Enum):
    STRING = "string"
    STRING_IGNORE_CASE = "string, ignoring case"
    STRING_LIKE = "string pattern"
    ARN = "ARN"
    NUMERIC = "number"
    DATE = "date"
    BOOL = "boolean"
    BINARY = "base64"
    IP = "IP address or CIDR block"
    NULL = "presence test"


Compare = Callable[[float, float], bool]


@dataclass(frozen=True, slots=True)
class OperatorSpec:
    kind: Kind
    negated: bool = False
    compare: Compare | None = None


def _numeric_family(prefix: str, kind: Kind) -> dict[str, OperatorSpec]:
    return {
        f"{prefix}Equals": OperatorSpec(kind, False, operator.eq),
        f"{prefix}NotEquals": OperatorSpec(kind, True, operator.eq),
        f"{prefix}LessThan": OperatorSpec(kind, False, operator.lt),
        f"{prefix}LessThanEquals": OperatorSpec(kind, False, operator.le),
        f"{prefix}GreaterThan": OperatorSpec(kind, False, operator.gt),
        f"{prefix}GreaterThanEquals": OperatorSpec(kind, False, operator.ge),
    }


OPERATORS: dict[str, OperatorSpec] = {
    "StringEquals": OperatorSpec(Kind.STRING),
    "StringNotEquals": OperatorSpec(Kind.STRING, negated=True),
    "StringEqualsIgnoreCase": OperatorSpec(Kind.STRING_IGNORE_CASE),
    "StringNotEqualsIgnoreCase": OperatorSpec(Kind.STRING_IGNORE_CASE, negated=True),
    "StringLike": OperatorSpec(Kind.STRING_LIKE),
    "StringNotLike": OperatorSpec(Kind.STRING_LIKE, negated=True),
    # IAM treats ArnEquals like ArnLike: both take wildcards in each of the six parts.
    "ArnEquals": OperatorSpec(Kind.ARN),
    "ArnLike": OperatorSpec(Kind.ARN),
    "ArnNotEquals": OperatorSpec(Kind.ARN, negated=True),
    "ArnNotLike": OperatorSpec(Kind.ARN, negated=True),
    **_numeric_family("Numeric", Kind.NUMERIC),
    **_numeric_family("Date", Kind.DATE),
    "Bool": OperatorSpec(Kind.BOOL),
    "BinaryEquals": OperatorSpec(Kind.BINARY),
    "IpAddress": OperatorSpec(Kind.IP),
    "NotIpAddress": OperatorSpec(Kind.IP, negated=True),
    "Null": OperatorSpec(Kind.NULL),
}

IF_EXISTS = "IfExists"


@dataclass(frozen=True, slots=True)
class Operator:
    """An operator name taken apart: ``ForAllValues:StringLikeIfExists``."""

    name: str
    spec: OperatorSpec
    qualifier: Qualifier | None
    if_exists: bool


def parse_operator(name: str, path: str) -> Operator:
    """Raises PolicyError for a name that is not one of IAM's operators."""
    qualifier: Qualifier | None = None
    base = name
    for q in Qualifier:
        if name.startswith(q.value + ":"):
            qualifier, base = q, name[len(q.value) + 1 :]
            break
    if_exists = base.endswith(IF_EXISTS) and base != IF_EXISTS
    if if_exists:
        base = base[: -len(IF_EXISTS)]
    spec = OPERATORS.get(base)
    if spec is None:
        raise PolicyError(path, "unknown operator")
    if spec.kind is Kind.NULL and (if_exists or qualifier is not None):
        raise PolicyError(path, "Null takes neither a set qualifier nor IfExists")
    return Operator(name, spec, qualifier, if_exists)


def _never(_value: str) -> bool:
    return False


def _constant(predicate: Predicate) -> Prepare:
    return lambda _context: predicate


_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def read_number(text: str) -> float | int | None:
    """A decimal number (integers stay exact), or None."""
    if not _NUMBER.fullmatch(text):
        return None
    try:
        return int(text)
    except ValueError:
        number = float(text)
        return number if number not in (float("inf"), float("-inf")) else None


def read_date(text: str) -> float | None:
    """Seconds since the epoch from an ISO 8601 date or time (UTC when no offset is given)
    or from a number of epoch seconds; None when it is neither."""
    number = read_number(text)
    if number is not None:
        return float(number)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def read_binary(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def read_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    # A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; IPv4 blocks must match them.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _compile_strings(templates: Sequence[Template], fold: Callable[[str], str] | None) -> Prepare:
    def literal_set(context: Context) -> frozenset[str]:
        texts = (t.text(context) for t in templates)
        return frozenset(fold(x) if fold else x for x in texts if x is not None)

    if fold is None:
        if not any(t.has_variables for t in templates):
            return _constant(literal_set({}).__contains__)
        return lambda context: literal_set(context).__contains__

    def folded(values: frozenset[str]) -> Predicate:
        return lambda v: v.lower() in values

    if not any(t.has_variables for t in templates):
        return _constant(folded(literal_set({})))
    return lambda context: folded(literal_set(context))


def _compile_patterns(patterns: PatternSet) -> Prepare:
    def prepare(context: Context) -> Predicate:
        regex = patterns.matcher(context)
        if regex is None:
            return _never
        fullmatch = regex.fullmatch
        return lambda v: fullmatch(v) is not None

    static = prepare({}) if not patterns.has_variables else None
    return _constant(static) if static is not None else prepare


def _typed(
    values: Sequence[str],
    paths: Sequence[str],
    read: Callable[[str], object],
    what: str,
) -> list[object]:
    parsed = []
    for value, path in zip(values, paths, strict=True):
        result = read(value)
        if result is None:
            raise PolicyError(path, f"{value!r} is not {what}")
        parsed.append(result)
    return parsed


def compile_values(
    spec: OperatorSpec, values: Sequence[str], paths: Sequence[str], *, variables: bool
) -> Prepare:
    """The per-request predicate for one key's policy values. Raises PolicyError."""
    kind = spec.kind
    if kind in (Kind.STRING, Kind.STRING_IGNORE_CASE):
        templates = [
            parse_template(v, p, variables=variables) for v, p in zip(values, paths, strict=True)
        ]
        return _compile_strings(templates, str.lower if kind is Kind.STRING_IGNORE_CASE else None)
    if kind is Kind.STRING_LIKE:
        templates = [
            parse_template(v, p, variables=variables) for v, p in zip(values, paths, strict=True)
        ]
        static = [t.regex({}) or "" for t in templates if not t.has_variables]
        return _compile_patterns(PatternSet(static, [t for t in templates if t.has_variables]))
    if kind is Kind.ARN:
        arns = []
        for value, path in zip(values, paths, strict=True):
            if not is_arn_shape(value):
                raise PolicyError(path, f"{value!r} is not an ARN ({ARN_FORM})")
            arns.append(ArnPattern(value, path, variables=variables))
        static = [a.static for a in arns if a.static is not None]
        return _compile_patterns(PatternSet(static, [a for a in arns if a.has_variables]))
    if kind in (Kind.NUMERIC, Kind.DATE):
        read = read_number if kind is Kind.NUMERIC else read_date
        what = "a number" if kind is Kind.NUMERIC else "an ISO 8601 date or epoch seconds"
        bounds = tuple(_typed(values, paths, read, what))
        compare = spec.compare
        assert compare is not None

        def compare_any(v: str) -> bool:
            x = read(v)
            return x is not None and any(compare(x, b) for b in bounds)  # type: ignore[arg-type]

        return _constant(compare_any)
    if kind is Kind.BOOL:
        for value, path in zip(values, paths, strict=True):
            if value.lower() not in ("true", "false"):
                raise PolicyError(path, f"{value!r} is not true or false")
        truth = frozenset(v.lower() for v in values)
        return _constant(lambda v: v.lower() in truth)
    if kind is Kind.BINARY:
        blobs = frozenset(_typed(values, paths, read_binary, "base64"))
        return _constant(lambda v: read_binary(v) in blobs)
    if kind is Kind.IP:
        networks = tuple(_typed(values, paths, _read_network, "an IP address or CIDR block"))

        def in_any(v: str) -> bool:
            address = read_ip(v)
            return address is not None and any(address in n for n in networks)  # type: ignore[operator]

        return _constant(in_any)
    raise AssertionError(kind)  # Null is compiled by Condition itself


def _read_network(text: str) -> IpNetwork | None:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None


def value_text(value: object) -> str | None:
    """A JSON condition value as the string IAM compares (true → "true"), None if not one."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return None


@dataclass(frozen=True, slots=True)
class Condition:
    """One key under one operator: ``"StringLike": {"ssm:resourceTag/Env": ["dev", "test"]}``."""

    operator: str
    key: str
    values: tuple[str, ...]
    qualifier: Qualifier | None
    if_exists: bool
    negated: bool
    null: tuple[bool, ...] | None  # Null's wanted answers to "is the key absent?"
    _key: str = field(repr=False)
    _prepare: Prepare | None = field(repr=False, compare=False)

    def holds(self, context: Context) -> bool:
        """Whether this condition holds for a request (context keys lower-cased)."""
        found = context.get(self._key)
        if self.null is not None:
            return (not found) in self.null
        if not found:
            if self.if_exists or self.qualifier is Qualifier.ALL:
                return True
            if self.qualifier is Qualifier.ANY:
                return False
            return self.negated
        assert self._prepare is not None
        match = self._prepare(context)
        negated = self.negated
        if self.qualifier is None:
            return any(match(v) for v in found) is not negated
        if self.qualifier is Qualifier.ANY:
            return any(match(v) is not negated for v in found)
        return all(match(v) is not negated for v in found)


def compile_condition(
    op: Operator, key: str, values: Sequence[str], paths: Sequence[str], *, variables: bool
) -> Condition:
    """Raises PolicyError for a value the operator cannot use."""
    spec = op.spec
    null: tuple[bool, ...] | None = None
    prepare: Prepare | None = None
    if spec.kind is Kind.NULL:
        for value, path in zip(values, paths, strict=True):
            if value.lower() not in ("true", "false"):
                raise PolicyError(path, f"{value!r} is not true or false")
        null = tuple(v.lower() == "true" for v in values)
    else:
        prepare = compile_values(spec, values, paths, variables=variables)
    return Condition(
        operator=op.name,
        key=key,
        values=tuple(values),
        qualifier=op.qualifier,
        if_exists=op.if_exists,
        negated=spec.negated,
        null=null,
        _key=key.lower(),
        _prepare=prepare,
    )
