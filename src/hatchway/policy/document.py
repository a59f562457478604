"""Policy documents: IAM's JSON grammar for identity-based policies, validated and compiled.

``parse_policy`` checks a document the way IAM does on ``CreatePolicy``/``PutUserPolicy`` and
compiles it once (wildcards into regular expressions, condition values into predicates), so
that evaluating a request does no parsing. Every error names the path to the element and what
is wrong with it.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .conditions import Condition, compile_condition, parse_operator, value_text
from .errors import PolicyError
from .patterns import ARN_FORM, ArnPattern, Context, PatternSet, is_arn_shape, wildcard_regex

__all__ = [
    "MAX_POLICY_CHARS",
    "MAX_SOURCE_CHARS",
    "VERSIONS",
    "Effect",
    "PolicyDocument",
    "PolicyError",
    "Statement",
    "parse_policy",
]

MAX_POLICY_CHARS = 6144  # IAM's limit for a managed policy, white space not counted
MAX_SOURCE_CHARS = 131072  # the text as sent, white space included: refused before parsing
VERSION_2012 = "2012-10-17"  # the current grammar: policy variables are substituted
VERSION_2008 = "2008-10-17"  # the original one: "${…}" is literal text
VERSIONS = (VERSION_2012, VERSION_2008)
ROOT = "PolicyDocument"  # the path of the document itself in error messages

_TOP_FIELDS = frozenset({"Version", "Id", "Statement"})
_STATEMENT_FIELDS = frozenset(
    {"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition"}
)
_RESOURCE_POLICY_FIELDS = frozenset({"Principal", "NotPrincipal"})
_SID = re.compile(r"[A-Za-z0-9]*")
# service:Action, both parts of letters, digits, "-" and "_", with wildcards; or "*" alone.
_ACTION = re.compile(r"[A-Za-z0-9_*?-]+:[A-Za-z0-9_*?-]+")
_ACTION_CACHE_LIMIT = 1024  # distinct action names remembered per document
_REQUEST_CACHE_LIMIT = 4096  # distinct (action, resource) pairs remembered per document


class Effect(enum.Enum):
    ALLOW = "Allow"
    DENY = "Deny"


class ResourceMatcher:
    """A statement's Resource or NotResource patterns, matched against a request's aliases."""

    __slots__ = ("_dynamic", "_patterns", "_static_fullmatch", "match_all")

    def __init__(self, patterns: Sequence[str], paths: Sequence[str], *, variables: bool) -> None:
        self.match_all = "*" in patterns
        static: list[str] = []
        dynamic: list[ArnPattern] = []
        for pattern, path in zip(patterns, paths, strict=True):
            if pattern == "*":
                continue
            if not is_arn_shape(pattern):
                raise PolicyError(
                    path,
                    f'{pattern!r} is not "*" or an ARN ({ARN_FORM})',
                )
            arn = ArnPattern(pattern, path, variables=variables)
            if arn.static is not None:
                static.append(arn.static)
            else:
                dynamic.append(arn)
        self._patterns = PatternSet(static, list(dynamic))
        self._dynamic = bool(dynamic)
        compiled = self._patterns.static
        self._static_fullmatch = compiled.fullmatch if compiled is not None else None

    def verdict(self, resources: Sequence[str]) -> bool | None:
        """``any_matches`` when it does not depend on the request's variables, else None."""
        if self.match_all:
            return True
        fullmatch = self._static_fullmatch
        if fullmatch is not None:
            for resource in resources:  # a loop, not any(): see any_matches
                if fullmatch(resource) is not None:
                    return True
        return None if self._dynamic else False

    def any_matches(self, resources: Sequence[str], context: Context) -> bool:
        """Whether any of ``resources`` (one resource's aliases) matches any pattern."""
        if self.match_all:
            return True
        regex = self._patterns.matcher(context)
        if regex is None:
            return False
        fullmatch = regex.fullmatch
        for resource in resources:  # noqa: SIM110 - a loop: any() and a generator cost 2x here
            if fullmatch(resource) is not None:
                return True
        return False


@dataclass(frozen=True, slots=True)
class Statement:
    """One compiled statement. ``name`` is its Sid, else ``Statement[index]``."""

    index: int
    sid: str | None
    effect: Effect
    actions: tuple[str, ...]
    not_action: bool
    resources: tuple[str, ...]
    not_resource: bool
    conditions: tuple[Condition, ...]
    _actions: re.Pattern[str] = field(repr=False, compare=False)
    _resources: ResourceMatcher = field(repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.sid or f"Statement[{self.index}]"

    def covers_action(self, action: str) -> bool:
        """Whether the Action (or NotAction) element selects ``action`` (case-insensitive)."""
        return (self._actions.fullmatch(action) is not None) is not self.not_action

    def covers_resource(self, resources: Sequence[str], context: Context) -> bool:
        """Resource: any alias matches a pattern. NotResource: no alias matches any."""
        return self._resources.any_matches(resources, context) is not self.not_resource

    def resource_verdict(self, resources: Sequence[str]) -> bool | None:
        """``covers_resource`` when it needs no context (no variables involved), else None."""
        verdict = self._resources.verdict(resources)
        return None if verdict is None else verdict is not self.not_resource

    def conditions_hold(self, context: Context) -> bool:
        return all(c.holds(context) for c in self.conditions)


Candidate = tuple[Statement, bool]  # a statement, and whether its Resource needs the context


@dataclass(frozen=True, slots=True)
class PolicyDocument:
    """A validated, compiled policy. ``text`` is its canonical JSON (compact, keys as written)."""

    version: str
    statements: tuple[Statement, ...]
    text: str
    _by_action: dict[str, tuple[Statement, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _by_request: dict[tuple[str, tuple[str, ...]], tuple[Candidate, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def candidates(self, action: str, resources: tuple[str, ...]) -> tuple[Candidate, ...]:
        """The statements that may apply to ``action`` (lower-cased) on ``resources``, each
        with whether its Resource element still has to be checked against the request's
        variables; the rest of the statements cannot apply, whatever the context.

        Remembered for the last ``_REQUEST_CACHE_LIMIT`` (action, resource) pairs: the action
        and the variable-free resource patterns are the bulk of the work and depend on nothing
        else.
        """
        key = (action, resources)
        found = self._by_request.get(key)
        if found is None:
            pairs = []
            for statement in self.statements_for(action):
                verdict = statement.resource_verdict(resources)
                if verdict is not False:
                    pairs.append((statement, verdict is None))
            found = tuple(pairs)
            if len(self._by_request) >= _REQUEST_CACHE_LIMIT:
                self._by_request.clear()
            self._by_request[key] = found
        return found

    def statements_for(self, action: str) -> tuple[Statement, ...]:
        """The statements whose Action/NotAction selects ``action`` (given lower-cased).

        Remembered per action name, so evaluation looks at the few statements that can apply;
        bounded, because SimulatePrincipalPolicy takes action names from callers.
        """
        found = self._by_action.get(action)
        if found is None:
            found = tuple(s for s in self.statements if s.covers_action(action))
            if len(self._by_action) >= _ACTION_CACHE_LIMIT:
                self._by_action.clear()
            self._by_action[action] = found
        return found


def parse_policy(source: str | bytes | Mapping[str, Any]) -> PolicyDocument:
    """Validate and compile an identity-based policy document.

    Args:
        source: the JSON text (str, or UTF-8 bytes) or the already-decoded JSON object.

    Raises:
        PolicyError: the document breaks IAM's grammar (the message names the path), is larger
            than ``MAX_POLICY_CHARS`` without white space, or is not JSON.
    """
    document = _load(source) if isinstance(source, str | bytes) else source
    if not isinstance(document, Mapping):
        raise PolicyError(ROOT, "must be a JSON object")
    text = _canonical(document)
    if len(text) > MAX_POLICY_CHARS:
        raise PolicyError(
            ROOT,
            f"is {len(text)} characters without white space, "
            f"more than the limit of {MAX_POLICY_CHARS}",
        )
    return _Parser().document(document, text)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            # json.loads would keep the last silently; a policy must mean what it shows.
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _load(source: str | bytes) -> Any:
    if len(source) > MAX_SOURCE_CHARS:
        raise PolicyError(ROOT, f"is longer than {MAX_SOURCE_CHARS} characters")
    try:
        text = source.decode("utf-8") if isinstance(source, bytes) else source
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise PolicyError(ROOT, "is not UTF-8") from exc
    except RecursionError as exc:
        raise PolicyError(ROOT, "is nested too deeply") from exc
    except ValueError as exc:  # json.JSONDecodeError and our hooks' refusals
        raise PolicyError(ROOT, f"is not valid JSON: {exc}") from exc


def _canonical(document: Mapping[str, Any]) -> str:
    try:
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise PolicyError(ROOT, f"is not a JSON document: {exc}") from exc


def _strings(value: Any, path: str) -> tuple[list[str], list[str]]:
    """A string or a non-empty list of strings, with each one's path."""
    if isinstance(value, str):
        return [value], [path]
    if isinstance(value, list):
        if not value:
            raise PolicyError(path, "must not be an empty list")
        paths = [f"{path}[{i}]" for i in range(len(value))]
        for item, item_path in zip(value, paths, strict=True):
            if not isinstance(item, str):
                raise PolicyError(item_path, "must be a string")
        return list(value), paths
    raise PolicyError(path, "must be a string or a list of strings")


class _Parser:
    def __init__(self) -> None:
        self.variables = True

    def document(self, document: Mapping[str, Any], text: str) -> PolicyDocument:
        for name in document:
            if name not in _TOP_FIELDS:
                raise PolicyError(str(name), "unknown field")
        version = document.get("Version", VERSION_2008)
        if version not in VERSIONS:
            raise PolicyError("Version", f"must be {VERSION_2012} or {VERSION_2008}")
        self.variables = version == VERSION_2012
        if "Id" in document and not isinstance(document["Id"], str):
            raise PolicyError("Id", "must be a string")
        if "Statement" not in document:
            raise PolicyError("Statement", "required")
        raw = document["Statement"]
        if isinstance(raw, Mapping):
            raw = [raw]
        if not isinstance(raw, list):
            raise PolicyError("Statement", "must be an object or a list of objects")
        if not raw:
            raise PolicyError("Statement", "must not be an empty list")
        statements = tuple(self.statement(item, i) for i, item in enumerate(raw))
        seen: dict[str, int] = {}
        for statement in statements:
            if statement.sid:
                if statement.sid in seen:
                    raise PolicyError(
                        f"Statement[{statement.index}].Sid",
                        f"{statement.sid!r} is also the Sid of Statement[{seen[statement.sid]}]",
                    )
                seen[statement.sid] = statement.index
        return PolicyDocument(version=version, statements=statements, text=text)

    def statement(self, raw: Any, index: int) -> Statement:
        path = f"Statement[{index}]"
        if not isinstance(raw, Mapping):
            raise PolicyError(path, "must be an object")
        for name in raw:
            if name in _RESOURCE_POLICY_FIELDS:
                raise PolicyError(f"{path}.{name}", "not allowed in an identity-based policy")
            if name not in _STATEMENT_FIELDS:
                raise PolicyError(f"{path}.{name}", "unknown field")
        sid = raw.get("Sid")
        if sid is not None and (not isinstance(sid, str) or not _SID.fullmatch(sid)):
            raise PolicyError(f"{path}.Sid", "must contain only letters A-Z, a-z and digits")
        try:
            effect = Effect(raw.get("Effect"))
        except ValueError:
            raise PolicyError(f"{path}.Effect", "must be Allow or Deny") from None
        actions, not_action = self.exactly_one(raw, path, "Action", "NotAction")
        action_values, action_paths = _strings(actions, f"{path}.{_name('Action', not_action)}")
        for action, action_path in zip(action_values, action_paths, strict=True):
            if action != "*" and not _ACTION.fullmatch(action):
                raise PolicyError(action_path, f'{action!r} is not "*" or service:Action')
        resources, not_resource = self.exactly_one(raw, path, "Resource", "NotResource")
        resource_path = f"{path}.{_name('Resource', not_resource)}"
        resource_values, resource_paths = _strings(resources, resource_path)
        return Statement(
            index=index,
            sid=sid or None,
            effect=effect,
            actions=tuple(action_values),
            not_action=not_action,
            resources=tuple(resource_values),
            not_resource=not_resource,
            conditions=self.conditions(raw.get("Condition"), f"{path}.Condition"),
            _actions=re.compile(
                "|".join(f"(?:{wildcard_regex(a)})" for a in action_values),
                re.IGNORECASE | re.DOTALL,
            ),
            _resources=ResourceMatcher(resource_values, resource_paths, variables=self.variables),
        )

    @staticmethod
    def exactly_one(raw: Mapping[str, Any], path: str, name: str, negated: str) -> tuple[Any, bool]:
        if name in raw and negated in raw:
            raise PolicyError(
                f"{path}.{negated}", f"a statement takes {name} or {negated}, not both"
            )
        if name in raw:
            return raw[name], False
        if negated in raw:
            return raw[negated], True
        raise PolicyError(f"{path}.{name}", f"required ({name} or {negated})")

    def conditions(self, raw: Any, path: str) -> tuple[Condition, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, Mapping):
            raise PolicyError(path, "must be an object of operators")
        compiled: list[Condition] = []
        for op_name, block in raw.items():
            op_path = f"{path}.{op_name}"
            op = parse_operator(op_name, op_path)
            if not isinstance(block, Mapping):
                raise PolicyError(op_path, "must be an object of condition keys")
            if not block:
                raise PolicyError(op_path, "must name at least one condition key")
            for key, value in block.items():
                key_path = f"{op_path}.{key}"
                if not key:
                    raise PolicyError(key_path, "empty condition key")
                values, paths = self.condition_values(value, key_path)
                compiled.append(compile_condition(op, key, values, paths, variables=self.variables))
        return tuple(compiled)

    @staticmethod
    def condition_values(value: Any, path: str) -> tuple[list[str], list[str]]:
        items, paths = (
            (value, [f"{path}[{i}]" for i in range(len(value))])
            if isinstance(value, list)
            else ([value], [path])
        )
        if not items:
            raise PolicyError(path, "must not be an empty list")
        texts: list[str] = []
        for item, item_path in zip(items, paths, strict=True):
            text = value_text(item)
            if text is None:
                raise PolicyError(item_path, "must be a string, a number or a boolean")
            texts.append(text)
        return texts, paths


def _name(name: str, negated: bool) -> str:
    return f"Not{name}" if negated else name
