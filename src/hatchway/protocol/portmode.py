"""Which mode a Port session runs in, decided the way AWS's plugin and agent decide it.

Nothing on the wire says whether a Port session is in stdio, basic or mux mode, or whether smux
keepalives are on: each end decides from the document's ``type`` property and the version the
other end announced in the handshake (docs/protocol.md §8.4). Hatchway's ends must decide exactly
as AWS's do, or a Hatchway end paired with an AWS end would speak a different mode. These are the
pure functions both of Hatchway's ends call.

Two comparisons, because AWS's two programs compare versions differently:

* the plugin (:func:`plugin_version_greater`) splits at ``.`` and compares numerically; a
  different number of components, or a non-numeric component, is "not supported" (False);
* the agent (:func:`agent_compare`) uses semantic-version rules when both versions are
  ``X.Y.Z`` semvers, else compares component by component (numerically when both are numbers,
  as text otherwise), and the version with more components is the greater when the shared ones
  are equal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Final, TypeVar

__all__ = [
    "AGENT_KEEPALIVE_OFF_ABOVE_CLIENT",
    "CLIENT_KEEPALIVE_OFF_ABOVE_AGENT",
    "KEEPALIVE_INTERVAL",
    "KEEPALIVE_TIMEOUT",
    "LOCAL_PORT_FORWARDING",
    "MUX_AGENT_ABOVE",
    "MUX_CLIENT_AT_LEAST",
    "PortMode",
    "agent_compare",
    "agent_keepalive",
    "agent_uses_mux",
    "client_keepalive",
    "client_uses_mux",
    "plugin_version_greater",
    "port_mode_for",
]

#: The ``type`` property value that selects the listener modes (docs/protocol.md §8.3).
LOCAL_PORT_FORWARDING: Final = "LocalPortForwarding"
#: The plugin multiplexes when AgentVersion is greater than this (4 components).
MUX_AGENT_ABOVE: Final = "3.0.196.0"
#: The agent multiplexes when ClientVersion is at least this.
MUX_CLIENT_AT_LEAST: Final = "1.1.70"
#: The plugin turns its smux keepalive off when AgentVersion is greater than this.
CLIENT_KEEPALIVE_OFF_ABOVE_AGENT: Final = "3.1.1511.0"
#: The agent turns its smux keepalive off when ClientVersion is greater than this.
AGENT_KEEPALIVE_OFF_ABOVE_CLIENT: Final = "1.2.331.0"
#: smux ``DefaultConfig``: a NOP every 10 s; the session is closed after 30 s without a frame.
KEEPALIVE_INTERVAL: Final = 10.0
KEEPALIVE_TIMEOUT: Final = 30.0

# go's strconv.Atoi: optional sign, decimal digits.
_GO_INT = re.compile(r"[+-]?[0-9]+")
# coreos/go-semver: X.Y.Z[-prerelease][+metadata], no leading zeros in X, Y, Z.
_SEMVER = re.compile(
    r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)


class PortMode(StrEnum):
    """How a Port session carries connections (docs/protocol.md §8.4)."""

    STDIO = "stdio"  # one connection; stdin/stdout on the client
    BASIC = "basic"  # one connection at a time, Flag DisconnectToPort between them
    MUX = "mux"  # smux v1 streams, any number at once (docs/protocol.md §8.5)


_Ordered = TypeVar("_Ordered", int, str, tuple[int, ...])


def _cmp(a: _Ordered, b: _Ordered) -> int:
    return (a > b) - (a < b)


def plugin_version_greater(version: str, threshold: str) -> bool:
    """True if ``version`` > ``threshold`` as AWS's plugin compares them (docs/protocol.md §8.4).

    An empty version, a different number of components or a component that is not a number
    makes the comparison fail, and the plugin then treats the feature as unsupported: False.
    """
    if not version or not threshold:
        return False
    ours, theirs = version.split("."), threshold.split(".")
    if len(ours) != len(theirs):
        return False
    for mine, other in zip(ours, theirs, strict=True):
        if not (_GO_INT.fullmatch(mine) and _GO_INT.fullmatch(other)):
            return False
        order = _cmp(int(mine), int(other))
        if order:
            return order > 0
    return False


def _prerelease_compare(a: str | None, b: str | None) -> int:
    # Semantic Versioning 2.0.0 §11: a version without a pre-release is the greater.
    if a is None or b is None:
        return (a is None) - (b is None)
    left, right = a.split("."), b.split(".")
    for x, y in zip(left, right, strict=False):
        if x.isdigit() and y.isdigit():
            order = _cmp(int(x), int(y))
        elif x.isdigit() or y.isdigit():
            order = -1 if x.isdigit() else 1  # numeric identifiers sort first
        else:
            order = _cmp(x, y)
        if order:
            return order
    return _cmp(len(left), len(right))


def agent_compare(version: str, other: str) -> int:
    """Compare versions as AWS's agent does (``versionutil.Compare`` with strict sorting).

    Returns a negative number, 0 or a positive number as ``version`` is less than, equal to or
    greater than ``other``.
    """
    ours, theirs = _SEMVER.fullmatch(version), _SEMVER.fullmatch(other)
    if ours and theirs:
        core = _cmp(
            tuple(int(ours.group(i)) for i in (1, 2, 3)),
            tuple(int(theirs.group(i)) for i in (1, 2, 3)),
        )
        return core or _prerelease_compare(ours.group(4), theirs.group(4))
    left, right = version.split("."), other.split(".")
    for x, y in zip(left, right, strict=False):
        if _GO_INT.fullmatch(x) and _GO_INT.fullmatch(y):
            order = _cmp(int(x), int(y))
        else:
            order = _cmp(x, y)
        if order:
            return order
    return len(left) - len(right)


def client_uses_mux(port_type: str | None, agent_version: str) -> bool:
    """Whether the client end multiplexes: ``LocalPortForwarding`` and AgentVersion > 3.0.196.0."""
    return port_type == LOCAL_PORT_FORWARDING and plugin_version_greater(
        agent_version, MUX_AGENT_ABOVE
    )


def agent_uses_mux(port_type: str | None, client_version: str) -> bool:
    """Whether the agent end multiplexes: ``LocalPortForwarding`` and ClientVersion ≥ 1.1.70."""
    return (
        port_type == LOCAL_PORT_FORWARDING
        and agent_compare(client_version, MUX_CLIENT_AT_LEAST) >= 0
    )


def client_keepalive(agent_version: str) -> bool:
    """Whether the client end sends smux NOPs and enforces the 30 s timeout.

    AWS's plugin turns its keepalive off when AgentVersion > 3.1.1511.0 (plugin comparison).
    """
    return not plugin_version_greater(agent_version, CLIENT_KEEPALIVE_OFF_ABOVE_AGENT)


def agent_keepalive(client_version: str) -> bool:
    """Whether the agent end sends smux NOPs and enforces the 30 s timeout.

    AWS's agent turns its keepalive off when ClientVersion > 1.2.331.0 (agent comparison).
    """
    return agent_compare(client_version, AGENT_KEEPALIVE_OFF_ABOVE_CLIENT) <= 0


def port_mode_for(properties: Mapping[str, object], peer_version: str, *, client: bool) -> PortMode:
    """The mode one end runs a Port session in (docs/protocol.md §8.4).

    Args:
        properties: the document's resolved ``properties`` (``type`` is read).
        peer_version: the other end's version from the handshake: AgentVersion on the client,
            ClientVersion on the agent.
        client: True on the client end, False on the agent.
    """
    port_type = properties.get("type")
    if port_type != LOCAL_PORT_FORWARDING:
        return PortMode.STDIO
    uses_mux = client_uses_mux if client else agent_uses_mux
    return PortMode.MUX if uses_mux(LOCAL_PORT_FORWARDING, peer_version) else PortMode.BASIC
