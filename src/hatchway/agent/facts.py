"""What the agent reports about its node in heartbeats (hostname, platform, address)."""

from __future__ import annotations

import platform
import socket
import urllib.parse
from pathlib import Path

from hatchway import __version__
from hatchway.protocol.payloads import AgentHeartbeat


def _os_release() -> dict[str, str]:
    try:
        text = Path("/etc/os-release").read_text(encoding="utf-8")
    except OSError:
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


def heartbeat(endpoint: str, active_sessions: int) -> AgentHeartbeat:
    release = _os_release()
    return AgentHeartbeat(
        hostname=socket.gethostname(),
        platform_type=platform.system() or "Linux",
        platform_name=release.get("NAME", platform.system()),
        platform_version=release.get("VERSION_ID", platform.release()),
        ip_address=_address_towards(endpoint),
        agent_version=__version__,
        active_sessions=active_sessions,
    )
