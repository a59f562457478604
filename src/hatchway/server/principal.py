"""Who is calling: the authenticated principal of an API request, and where it called from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

_NO_TAGS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated user (via one of its access keys), with the facts of the request that
    policies may test: the user's tags, the caller's address and whether TLS carried it."""

    user_id: str
    user_name: str
    account_id: str
    access_key_id: str
    tags: Mapping[str, str] = field(default_factory=lambda: _NO_TAGS)
    source_ip: str = ""
    secure_transport: bool = False

    @property
    def arn(self) -> str:
        return user_arn(self.account_id, self.user_name)


def user_arn(account_id: str, user_name: str) -> str:
    """A user's ARN (IAM's form; Hatchway's users live in the server's account)."""
    return f"arn:aws:iam::{account_id}:user/{user_name}"
