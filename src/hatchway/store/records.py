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
    user_id: str
    name: str
    created_at: float


@dataclass(frozen=True, slots=True)
class AccessKey:
    access_key_id: str
    user_id: str
    user_name: str
    secret_encrypted: str
    status: str


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


@dataclass(frozen=True, slots=True)
class SessionToken:
    token_hash: str
    session_id: str
    created_at: float
    first_used_at: float | None
    revoked: bool


@dataclass(frozen=True, slots=True)
class Document:
    name: str
    document_type: str
    document_format: str
    content: str
    owner: str
    created_date: float
