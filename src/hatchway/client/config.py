"""Client profiles: ``[profiles.NAME]`` tables in a TOML file.

The file is ``--config FILE``, else ``$HATCHWAY_CONFIG``, else
``~/.config/hatchway/config.toml``; the profile is ``--profile``, else ``$HATCHWAY_PROFILE``,
else ``default``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hatchway.errors import ConfigError


@dataclass(frozen=True)
class Profile:
    """Where the server is and how to sign requests to it."""

    name: str
    endpoint: str
    region: str
    access_key_id: str
    secret_access_key: str = field(repr=False)  # never in a log line or traceback
    ca_file: Path | None


def default_config_path(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".config")
    return Path(base) / "hatchway" / "config.toml"


def config_path(explicit: str | None, env: Mapping[str, str] = os.environ) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    if env.get("HATCHWAY_CONFIG"):
        return Path(env["HATCHWAY_CONFIG"]).expanduser()
    return default_config_path(env)


def read_profiles(path: Path) -> dict[str, dict[str, object]]:
    """Every profile table in the file ({} when the file does not exist)."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict):
        raise ConfigError(f"{path}: [profiles] must be a table")
    return profiles


def load_profile(
    config: str | None, profile: str | None, env: Mapping[str, str] = os.environ
) -> Profile:
    path = config_path(config, env)
    name = profile or env.get("HATCHWAY_PROFILE") or "default"
    profiles = read_profiles(path)
    if not profiles and not path.exists():
        raise ConfigError(
            f"no client configuration at {path}: run `hatchway up`, or pass --config with the "
            "server's admin-profile.toml"
        )
    table = profiles.get(name)
    if not isinstance(table, dict):
        raise ConfigError(f"profile {name!r} not found in {path}")
    missing = [k for k in ("endpoint", "access_key_id", "secret_access_key") if not table.get(k)]
    if missing:
        raise ConfigError(f"profile {name!r} in {path} lacks {', '.join(missing)}")
    ca = table.get("ca_file")
    ca_file = Path(str(ca)).expanduser() if ca else None
    if ca_file is not None and not ca_file.is_absolute():
        ca_file = path.parent / ca_file
    return Profile(
        name=name,
        endpoint=str(table["endpoint"]),
        region=str(table.get("region") or "local"),
        access_key_id=str(table["access_key_id"]),
        secret_access_key=str(table["secret_access_key"]),
        ca_file=ca_file,
    )
