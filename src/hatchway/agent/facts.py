"""What the agent reports about its node in heartbeats (host name, platform, address).

Collecting the facts blocks (``gethostname``, reading ``/etc/os-release``, and the UDP
``connect`` that finds our address towards the server, which may resolve a name), so it runs
in a worker thread, never on the event loop. What cannot change while the agent runs (the
platform) is read once.
"""

from __future__ import annotations

import asyncio
import functools
import platform
import socket
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hatchway import __version__
from hatchway.protocol.controlchannel import Heartbeat

OS_RELEASE = Path("/etc/os-release")


@dataclass(frozen=True, slots=True)
class Platform:
    type: str
    name: str
    version: str


def _os_release(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip().strip('"')
    return out


def _address_towards(endpoint: str) -> str:
    """The local address this node uses to reach the server (no packet is sent)."""
    host = urllib.parse.urlsplit(endpoint).hostname or "127.0.0.1"
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))
            return str(s.getsockname()[0])
    except OSError:
        return ""


class NodeFacts:
    """Collects heartbeats for one agent (see the module docstring)."""

    def __init__(self, endpoint: str, *, os_release: Path = OS_RELEASE) -> None:
        self._endpoint = endpoint
        self._os_release = os_release

    @functools.cached_property
    def platform(self) -> Platform:
        """Read once: the OS does not change under a running agent."""
        release = _os_release(self._os_release)
        system = platform.system() or "Linux"
        return Platform(
            type=system,
            name=release.get("NAME", system),
            version=release.get("VERSION_ID", platform.release()),
        )

    def collect(self, session_ids: Iterable[str]) -> Heartbeat:
        """A heartbeat (blocking: call it in a thread)."""
        facts = self.platform
        return Heartbeat.create(
            hostname=socket.gethostname(),
            platform_type=facts.type,
            platform_name=facts.name,
            platform_version=facts.version,
            ip_address=_address_towards(self._endpoint),
            agent_version=__version__,
            session_ids=tuple(session_ids),
        )

    async def heartbeat(self, session_ids: Iterable[str]) -> Heartbeat:
        """A heartbeat, collected in a worker thread."""
        return await asyncio.to_thread(self.collect, tuple(session_ids))
