"""Server settings, loaded once from the command line and passed down (frozen)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from hatchway.errors import ConfigError
from hatchway.protocol.timing import HEARTBEAT_INTERVAL

DEFAULT_LISTEN = "127.0.0.1:8443"
MiB = 1024 * 1024


@dataclass(frozen=True)
class ServerSettings:
    """Everything the server needs to know; defaults are the embedded single-machine mode.

    Attributes:
        data_dir: holds the SQLite database, TLS files, master key and admin profile.
        host, port: where to listen (port 0 picks a free one).
        tls: serve HTTPS/WSS (plain HTTP only on loopback).
        public_url: base URL clients should use in StreamUrl (else the request's Host).
        heartbeat_interval: agents send a heartbeat this often; two missed → ConnectionLost.
        disconnect_grace: how long a session waits for a vanished end to come back.
        token_first_use: a client token must be used within this many seconds of issue.
        max_frame_size / max_body_size: per data-channel frame and per API request body.
    """

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8443
    tls: bool = True
    public_url: str | None = None
    tls_sans: tuple[str, ...] = ()
    master_key_file: Path | None = None
    database_url: str | None = None
    region: str = "local"
    heartbeat_interval: float = HEARTBEAT_INTERVAL
    disconnect_grace: float = 120.0
    agent_attach_timeout: float = 30.0
    token_first_use: float = 60.0
    max_frame_size: int = MiB
    max_body_size: int = MiB
    admin_user: str = field(default="admin")

    @property
    def db_path(self) -> Path:
        return self.data_dir / "hatchway.db"

    @property
    def master_key_path(self) -> Path:
        return self.master_key_file or self.data_dir / "master.key"

    @property
    def admin_profile_path(self) -> Path:
        return self.data_dir / "admin-profile.toml"

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"


def parse_listen(text: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[v6]:PORT`` for IPv6) into a host and port."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not host:
        raise ConfigError(f"--listen must be HOST:PORT, not {text!r}")
    port = int(port_text)
    if port > 65535:
        raise ConfigError(f"--listen port {port} is out of range")
    return host.strip("[]"), port


def is_loopback(host: str) -> bool:
    """Whether ``host`` names a loopback address (plain HTTP is allowed only there)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
