"""Who is calling: the authenticated principal of an API request."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated user (via one of its access keys)."""

    user_id: str
    user_name: str
    account_id: str
    access_key_id: str

    @property
    def arn(self) -> str:
        return f"arn:aws:iam::{self.account_id}:user/{self.user_name}"
