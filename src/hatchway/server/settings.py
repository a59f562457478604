"""Server settings, loaded once from the command line and passed down (frozen)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from hatchway.errors import ConfigError
from hatchway.protocol.timing import HEARTBEAT_INTERVAL

DEFAULT_LISTEN = "127.0.0.1:8443"
_PREFIX = re.compile(r"[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,3}")
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
        presence_write_interval: heartbeats are kept in memory and written to the database
            in one batch this often (seconds); ``LastPingDateTime`` lags by at most this much.
        disconnect_grace: how long a session waits for a vanished end to come back.
        token_first_use: a client token must be used within this many seconds of issue.
        max_frame_size / max_body_size: per data-channel frame and per API request body.
        activation_lock_after: wrong codes after which an activation is locked for good.
        kdf_workers / kdf_max_waiting: threads checking activation codes (scrypt), and how
            many checks may wait for one before further registrations get ``Throttled``.
        throttled_answer_delay: a ``Throttled`` registration is answered after this long.
        max_connections / max_connections_per_source: connection caps (``None``: derived
            from the file descriptor limit, see ``guard.ConnectionLimits.derive``).
        tls_handshake_timeout, request_head_timeout, request_body_timeout, keepalive_timeout:
            the connection time limits of ``server.guard`` (body: longest pause).
        recordings: where session recordings go: ``None`` or ``local`` (``recordings_dir``),
            or ``s3://BUCKET[/PREFIX]`` (spooled in ``recordings_dir`` first).
        recordings_endpoint_url, recordings_region: the S3-compatible store's (``None``:
            boto3's defaults).
        recordings_access_key_id, recordings_secret_access_key: the store's credentials
            (``None``: boto3's usual chain: environment, shared files, instance role).
        record_input: also record what clients type (``i`` events).
        recordings_kms_key: encrypt recordings at rest with this KMS key of the key service
            (key id, key ARN, ``alias/NAME`` or alias ARN; ``None``: not encrypted).
        log_group: the log group every shell and interactive-command session streams its
            output to (``None``: none, unless the session's document chooses one).
        recordings_retention_days, logs_retention_days: recordings of sessions that ended
            longer ago, and log events older than this, are deleted (``None``: kept; a log
            group's own retention policy takes precedence for its events).
        audit_retention_days: audit records older than this are deleted, an
            ``AuditTrailPruned`` record in the same transaction (``None``: kept).
        retention_interval: seconds between two runs of the retention job.
        console_idle_timeout: a console sign-in unused for this long is over (seconds).
        console_lifetime: a console sign-in is over this long after it began, used or not.
        console_resume_window: a console terminal without a browser is kept this long for
            the browser to come back (a reload, a network loss), then its session ends.
        nats_url: scale-out: NATS server URL(s), comma-separated (``None``: a single server,
            no cluster). Needs a shared ``database_url`` (PostgreSQL).
        nats_token, nats_credentials, nats_tls_ca, nats_tls_cert, nats_tls_key: how to
            authenticate to NATS (a token, a ``.creds`` file; user and password go in the
            URL) and the TLS files for ``tls://`` URLs.
        cluster_prefix: the first token of every NATS subject of this cluster (several
            clusters can share one NATS server).
        preference_minute: seconds per minute of the time-limit preferences
            (``idleSessionTimeout``, ``maxSessionDuration``): 60, except in tests
            (``HATCHWAY_TEST_PREFERENCE_SECONDS``), so limits can be seconds long there.
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
    presence_write_interval: float = 5.0
    disconnect_grace: float = 120.0
    agent_attach_timeout: float = 30.0
    token_first_use: float = 60.0
    max_frame_size: int = MiB
    max_body_size: int = MiB
    activation_lock_after: int = 20
    kdf_workers: int = 1
    kdf_max_waiting: int = 16
    throttled_answer_delay: float = 1.0
    max_connections: int | None = None
    max_connections_per_source: int | None = None
    tls_handshake_timeout: float = 10.0
    request_head_timeout: float = 10.0
    request_body_timeout: float = 10.0
    keepalive_timeout: float = 30.0
    admin_user: str = field(default="admin")
    recordings: str | None = None
    recordings_endpoint_url: str | None = None
    recordings_region: str | None = None
    recordings_access_key_id: str | None = field(default=None, repr=False)
    recordings_secret_access_key: str | None = field(default=None, repr=False)
    record_input: bool = False
    recordings_kms_key: str | None = None
    log_group: str | None = None
    recordings_retention_days: int | None = None
    logs_retention_days: int | None = None
    audit_retention_days: int | None = None
    retention_interval: float = 3600.0
    console_idle_timeout: float = 30 * 60.0
    console_lifetime: float = 12 * 3600.0
    console_resume_window: float = 120.0

    nats_url: str | None = None
    nats_token: str | None = field(default=None, repr=False)
    nats_credentials: Path | None = None
    nats_tls_ca: Path | None = None
    nats_tls_cert: Path | None = None
    nats_tls_key: Path | None = None
    cluster_prefix: str = "hatchway"

    preference_minute: float = 60.0

    def __post_init__(self) -> None:
        if self.nats_url is not None:
            if not self.database_url or self.database_url.startswith("sqlite"):
                raise ConfigError(
                    "--nats-url needs a database every replica shares: "
                    "--database-url postgresql://…"
                )
            if not all(u.strip() for u in self.nats_url.split(",")):
                raise ConfigError("--nats-url must be one or more URLs, comma-separated")
        if not _PREFIX.fullmatch(self.cluster_prefix):
            raise ConfigError(
                "--cluster-prefix must be letters, digits, - and _ (dots between tokens)"
            )
        key = self.recordings_kms_key
        if key is not None and (not key.strip() or len(key) > 2048 or not key.isprintable()):
            raise ConfigError(
                "--recordings-kms-key must be a key id, key ARN, alias/NAME or alias ARN"
            )

    @property
    def clustered(self) -> bool:
        """Whether this server is one replica of several (scale-out)."""
        return self.nats_url is not None

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
    def recordings_dir(self) -> Path:
        """Local recordings and the spool of recordings bound for S3 (0700)."""
        return self.data_dir / "recordings"

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
