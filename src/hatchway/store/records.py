"""Typed records that the repositories return (rows parsed at the SQL edge)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class SessionStatus(StrEnum):
    """DescribeSessions' ``Status`` values (docs/protocol.md §2.2)."""

    CONNECTING = "Connecting"
    CONNECTED = "Connected"
    DISCONNECTED = "Disconnected"
    TERMINATING = "Terminating"
    TERMINATED = "Terminated"
    FAILED = "Failed"

    @property
    def is_active(self) -> bool:
        return self not in (SessionStatus.TERMINATED, SessionStatus.FAILED)


ACTIVE_STATUSES = tuple(s.value for s in SessionStatus if s.is_active)
HISTORY_STATUSES = tuple(s.value for s in SessionStatus if not s.is_active)


@dataclass(frozen=True, slots=True)
class User:
    """An IAM user. ``password_hash`` is ``tokens.hash_secret``'s string, or ``None``: no
    login profile."""

    user_id: str
    name: str
    created_at: float
    path: str = "/"
    tags: dict[str, str] = field(default_factory=dict)
    password_hash: str | None = field(default=None, repr=False)
    password_last_used_at: float | None = None


class KeyStatus(StrEnum):
    """An access key's ``Status`` (IAM's ``statusType``, less ``Expired``, which IAM uses only
    for other kinds of credential)."""

    ACTIVE = "Active"
    INACTIVE = "Inactive"


@dataclass(frozen=True, slots=True)
class AccessKey:
    """An access key with its owner's name and tags (what authentication and policy
    evaluation need from one lookup). The secret stays encrypted (``auth.secretbox``)."""

    access_key_id: str
    user_id: str
    user_name: str
    secret_encrypted: str = field(repr=False)
    status: str
    created_at: float = 0.0
    last_used_at: float | None = None
    user_tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Group:
    group_id: str
    name: str
    created_at: float
    path: str = "/"


@dataclass(frozen=True, slots=True)
class ManagedPolicy:
    """A managed policy; ``attachment_count`` is counted when it is read."""

    policy_id: str
    arn: str
    name: str
    path: str
    description: str
    default_version_id: str
    builtin: bool
    created_at: float
    updated_at: float
    attachment_count: int = 0


@dataclass(frozen=True, slots=True)
class PolicyVersion:
    version_id: str
    document: str
    created_at: float
    is_default: bool


@dataclass(frozen=True, slots=True)
class StoredPolicy:
    """One policy document that applies to a user, with where it came from.

    ``label`` is a managed policy's ARN, or ``user/<name>/<PolicyName>`` /
    ``group/<name>/<PolicyName>`` for an inline policy.
    """

    label: str
    document: str


@dataclass(frozen=True, slots=True)
class Activation:
    activation_id: str
    code_hash: str
    description: str
    default_instance_name: str
    iam_role: str
    registration_limit: int
    registrations_count: int
    expiration_date: float
    created_date: float
    tags: dict[str, str] = field(default_factory=dict)
    failed_attempts: int = 0
    locked_at: float | None = None

    def expired(self, now: float) -> bool:
        return now >= self.expiration_date

    @property
    def locked(self) -> bool:
        """Locked after too many wrong codes: refuses every code until it is recreated."""
        return self.locked_at is not None


@dataclass(frozen=True, slots=True)
class Node:
    instance_id: str
    activation_id: str
    public_key: str
    public_key_type: str
    fingerprint: str
    name: str
    computer_name: str
    platform_type: str
    platform_name: str
    platform_version: str
    ip_address: str
    agent_version: str
    registration_date: float
    last_ping_at: float | None
    connected: bool
    tags: dict[str, str] = field(default_factory=dict)
    agent_generation: int = 0
    #: Scale-out: the replica that holds the node's control channel ("": none, or one server).
    replica: str = ""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """One agent heartbeat to record: when it arrived and what the node said about itself."""

    instance_id: str
    at: float
    computer_name: str
    platform_type: str
    platform_name: str
    platform_version: str
    ip_address: str
    agent_version: str


@dataclass(frozen=True, slots=True)
class Session:
    session_id: str
    target: str
    status: SessionStatus
    start_date: float
    end_date: float | None
    document_name: str
    owner: str
    reason: str
    details: str
    max_session_duration: str
    parameters: dict[str, Any]
    run_as: str
    exit_code: int | None
    bytes_in: int
    bytes_out: int
    owner_id: str = ""
    source_ip: str = ""
    #: The preferences that applied when it started (``server.preferences.Preferences``).
    preferences: dict[str, Any] = field(default_factory=dict)
    #: Scale-out: the replica whose gateway relays it ("" on a single server).
    relay: str = ""


@dataclass(frozen=True, slots=True)
class SessionToken:
    token_hash: str
    session_id: str
    created_at: float
    first_used_at: float | None
    revoked: bool


@dataclass(frozen=True, slots=True)
class Document:
    """A session document at one version (by default its default version)."""

    name: str
    document_type: str
    document_format: str
    content: str
    owner: str
    created_date: float
    default_version: int = 1
    latest_version: int = 1
    #: The version ``content`` is (the default version unless asked for another).
    document_version: int = 1
    #: When this version was created (the document's ``created_date`` for version 1).
    version_created_date: float | None = None


@dataclass(frozen=True, slots=True)
class SessionConnection:
    """One TCP connection a port session carried, as its agent reported it."""

    destination: str
    opened_at: float
    closed_at: float | None
    bytes_in: int
    bytes_out: int
    error: str = ""
