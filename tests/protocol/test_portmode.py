"""Port-mode decisions (docs/protocol.md §8.4): both ends must agree with AWS's."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.protocol.handshake import AGENT_VERSION, CLIENT_VERSION
from hatchway.protocol.portmode import (
    KEEPALIVE_INTERVAL,
    KEEPALIVE_TIMEOUT,
    LOCAL_PORT_FORWARDING,
    PortMode,
    agent_compare,
    agent_keepalive,
    agent_uses_mux,
    client_keepalive,
    client_uses_mux,
    plugin_version_greater,
    port_mode_for,
)

LPF = LOCAL_PORT_FORWARDING


@pytest.mark.parametrize(
    ("version", "threshold", "greater"),
    [
        ("3.0.196.1", "3.0.196.0", True),
        ("3.0.196.0", "3.0.196.0", False),
        ("3.0.195.9", "3.0.196.0", False),
        ("3.0.1000.0", "3.0.196.0", True),  # numeric, not textual
        ("10.0.0.0", "3.0.196.0", True),
        ("3.3.1802.0", "3.0.196.0", True),
        ("3.3.1802", "3.0.196.0", False),  # 3 components against 4: not supported
        ("3.3.1802.0.1", "3.0.196.0", False),
        ("", "3.0.196.0", False),
        ("3.x.1.0", "3.0.196.0", False),  # non-numeric: not supported
        ("3.1.1511.1", "3.1.1511.0", True),
    ],
)
def test_plugin_comparison(version: str, threshold: str, greater: bool) -> None:
    assert plugin_version_greater(version, threshold) is greater


@pytest.mark.parametrize(
    ("version", "other", "sign"),
    [
        ("1.1.70", "1.1.70", 0),
        ("1.1.69", "1.1.70", -1),
        ("1.1.100", "1.1.70", 1),  # semver: numeric
        ("1.2.700.0", "1.1.70", 1),  # component-wise (4 parts is not semver)
        ("1.1.70.0", "1.1.70", 1),  # equal prefix: more components is greater
        ("1.1.69.9", "1.1.70", -1),
        ("1.1.70-beta", "1.1.70", -1),  # semver pre-release sorts first
        ("1.1.70-beta.2", "1.1.70-beta.11", -1),
        ("1.1.70-2", "1.1.70-beta", -1),
        ("1.2.331.0", "1.2.331.0", 0),
        ("1.2.332.0", "1.2.331.0", 1),
        ("abc", "1.1.70", 1),  # text compare: "abc" > "1"
        ("", "1.1.70", -1),
    ],
)
def test_agent_comparison(version: str, other: str, sign: int) -> None:
    result = agent_compare(version, other)
    assert (result > 0) - (result < 0) == sign


@given(st.lists(st.integers(0, 5000), min_size=1, max_size=5), st.integers(0, 5000))
def test_agent_comparison_is_antisymmetric(parts: list[int], extra: int) -> None:
    a = ".".join(map(str, parts))
    b = ".".join(map(str, [*parts[:-1], extra]))
    assert (agent_compare(a, b) > 0) == (agent_compare(b, a) < 0)


@pytest.mark.parametrize(
    ("port_type", "agent_version", "mux"),
    [
        (LPF, "3.0.196.1", True),
        (LPF, "3.0.196.0", False),
        (LPF, "3.1", False),
        (None, "3.3.1802.0", False),
        ("", "3.3.1802.0", False),
        ("localportforwarding", "3.3.1802.0", False),  # exact match, as the plugin
    ],
)
def test_client_uses_mux(port_type: str | None, agent_version: str, mux: bool) -> None:
    assert client_uses_mux(port_type, agent_version) is mux


@pytest.mark.parametrize(
    ("port_type", "client_version", "mux"),
    [
        (LPF, "1.1.70", True),
        (LPF, "1.1.70.0", True),
        (LPF, "1.1.61.0", False),
        (LPF, "1.2.323.0", True),
        (None, "1.2.700.0", False),
    ],
)
def test_agent_uses_mux(port_type: str | None, client_version: str, mux: bool) -> None:
    assert agent_uses_mux(port_type, client_version) is mux


@pytest.mark.parametrize(
    ("agent_version", "keepalive"),
    [("3.1.1511.0", True), ("3.1.1446.0", True), ("3.1.1512.0", False), ("3.2", True)],
)
def test_client_keepalive(agent_version: str, keepalive: bool) -> None:
    assert client_keepalive(agent_version) is keepalive


@pytest.mark.parametrize(
    ("client_version", "keepalive"),
    [("1.2.331.0", True), ("1.2.323.0", True), ("1.2.332.0", False), ("1.2.700.0", False)],
)
def test_agent_keepalive(client_version: str, keepalive: bool) -> None:
    assert agent_keepalive(client_version) is keepalive


def test_keepalive_timers_are_smux_defaults() -> None:
    assert (KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT) == (10.0, 30.0)


def test_hatchway_versions_make_both_ends_multiplex_without_keepalive() -> None:
    # AWS's plugin against Hatchway's agent, and AWS's agent against Hatchway's client.
    assert client_uses_mux(LPF, AGENT_VERSION)
    assert agent_uses_mux(LPF, CLIENT_VERSION)
    assert not client_keepalive(AGENT_VERSION)
    assert not agent_keepalive(CLIENT_VERSION)


@pytest.mark.parametrize(
    ("properties", "version", "client", "mode"),
    [
        ({"portNumber": "22"}, "3.3.1802.0", True, PortMode.STDIO),
        ({"portNumber": "22"}, "1.2.700.0", False, PortMode.STDIO),
        ({"type": LPF}, "3.3.1802.0", True, PortMode.MUX),
        ({"type": LPF}, "1.2.700.0", False, PortMode.MUX),
        ({"type": LPF}, "3.0.196.0", True, PortMode.BASIC),
        ({"type": LPF}, "1.1.61.0", False, PortMode.BASIC),
        ({"type": "Other"}, "3.3.1802.0", True, PortMode.STDIO),
    ],
)
def test_port_mode_for(
    properties: dict[str, str], version: str, client: bool, mode: PortMode
) -> None:
    assert port_mode_for(properties, version, client=client) is mode


@pytest.mark.parametrize(
    ("agent_version", "client_version"),
    [
        ("3.3.1802.0", "1.2.700.0"),
        ("3.0.196.0", "1.1.70"),  # an old agent: plugin basic; Hatchway's agent would be mux
        ("3.0.196.1", "1.1.61.0"),
    ],
)
def test_ends_agree_when_both_use_the_published_thresholds(
    agent_version: str, client_version: str
) -> None:
    # Each end decides alone; document which pairs agree. Real AWS versions (4 components,
    # ClientVersion >= 1.1.70 since 2019 and AgentVersion > 3.0.196.0 since 2020) always agree.
    props = {"type": LPF}
    client = port_mode_for(props, agent_version, client=True)
    agent = port_mode_for(props, client_version, client=False)
    agrees = client is agent
    expected = {
        ("3.3.1802.0", "1.2.700.0"): True,
        ("3.0.196.0", "1.1.70"): False,
        ("3.0.196.1", "1.1.61.0"): False,
    }[(agent_version, client_version)]
    assert agrees is expected
