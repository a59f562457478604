"""First start: the installation's account id, the built-in policies, the administrator and
its client profile."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from hatchway.auth.atomicfile import write_private_text
from hatchway.auth.secretbox import SecretBox, new_access_key_id, new_secret_access_key
from hatchway.errors import EntityAlreadyExists
from hatchway.server.iam import builtin_policies
from hatchway.store.records import User
from hatchway.store.store import Store

ADMINISTRATOR_ACCESS = "arn:aws:iam::aws:policy/AdministratorAccess"


@dataclass(frozen=True)
class AdminCredentials:
    user_name: str
    access_key_id: str
    secret_access_key: str = field(repr=False)  # never in a log line or traceback


async def ensure_account_id(store: Store) -> str:
    """A 12-digit account id, generated once (docs/design.md, "Identity, tokens and secrets")."""
    candidate = "".join(secrets.choice("0123456789") for _ in range(12))
    return await store.settings.set_if_absent("account_id", candidate)


async def ensure_builtin_policies(store: Store, now: float) -> None:
    """Insert the built-in managed policies, or bring their documents up to this release's."""
    for builtin in builtin_policies(now):
        await store.policies.ensure_builtin(builtin.policy, builtin.document, now)


async def ensure_admin(store: Store, box: SecretBox, name: str, now: float) -> AdminCredentials:
    """Create the bootstrap administrator and an access key unless they exist.

    Runs at every start, so it also brings the built-in policies up to date first. A newly
    created administrator gets ``AdministratorAccess``; an existing user is left as it is (an
    operator may have narrowed it on purpose). Replicas sharing a database call it under the
    first-start lock (``clusterinit.admin_credentials``), so that they neither make two users
    nor two keys; a user made meanwhile by another replica is used all the same.
    """
    await ensure_builtin_policies(store, now)
    user = await store.identity.user_by_name(name)
    if user is None:
        user = User(user_id="AIDA" + secrets.token_hex(8).upper(), name=name, created_at=now)
        try:
            await store.identity.create_user(user, attach=[ADMINISTRATOR_ACCESS])
        except EntityAlreadyExists:  # another replica made it first: use that one
            user = await store.identity.user_by_name(name)
            if user is None:
                raise
    keys = [k for k in await store.identity.keys_of(user.user_id) if k.status == "Active"]
    if keys:
        key = keys[0]
        secret = box.decrypt(key.secret_encrypted, context=key.access_key_id.encode()).decode()
        return AdminCredentials(name, key.access_key_id, secret)
    key_id, secret = new_access_key_id(), new_secret_access_key()
    encrypted = box.encrypt(secret.encode(), context=key_id.encode())
    await store.identity.create_access_key(key_id, user.user_id, encrypted, now)
    return AdminCredentials(name, key_id, secret)


def toml_string(value: str) -> str:
    """A TOML basic string (the values we write are plain, but escape anyway)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def write_profile(
    path: Path,
    *,
    endpoint: str,
    ca_file: Path | None,
    region: str,
    credentials: AdminCredentials,
    profile: str = "default",
) -> None:
    """Write a client profile file atomically with mode 0600 (it holds a secret)."""
    lines = [
        f"[profiles.{profile}]",
        f"endpoint = {toml_string(endpoint)}",
    ]
    if ca_file is not None:
        lines.append(f"ca_file = {toml_string(str(ca_file.resolve()))}")
    lines += [
        f"region = {toml_string(region)}",
        f"access_key_id = {toml_string(credentials.access_key_id)}",
        f"secret_access_key = {toml_string(credentials.secret_access_key)}",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private_text(path, "\n".join(lines) + "\n")
