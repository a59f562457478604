"""Client profiles: ``[profiles.NAME]`` tables in a TOML file.

The file is ``--config FILE``, else ``$HATCHWAY_CONFIG``, else
``~/.config/hatchway/config.toml``; the profile is ``--profile``, else ``$HATCHWAY_PROFILE``,
else ``default``. ``hatchway configure`` writes profiles (:func:`save_profile`).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hatchway.errors import ConfigError

if TYPE_CHECKING:
    from hatchway.transport.apiclient import ApiClient

#: The keys of a profile table, in the order ``configure`` writes a new one.
PROFILE_KEYS = ("endpoint", "ca_file", "region", "access_key_id", "secret_access_key")


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


def profile_name(profile: str | None, env: Mapping[str, str] = os.environ) -> str:
    """The profile meant: ``--profile``, else ``$HATCHWAY_PROFILE``, else ``default``."""
    return profile or env.get("HATCHWAY_PROFILE") or "default"


def _read_document(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc


def read_profiles(path: Path) -> dict[str, dict[str, object]]:
    """Every profile table in the file ({} when the file does not exist)."""
    profiles = _read_document(path).get("profiles", {})
    if not isinstance(profiles, dict):
        raise ConfigError(f"{path}: [profiles] must be a table")
    return profiles


def load_profile(
    config: str | None, profile: str | None, env: Mapping[str, str] = os.environ
) -> Profile:
    path = config_path(config, env)
    name = profile_name(profile, env)
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


def open_api(
    config: str | None, profile: str | None, env: Mapping[str, str] = os.environ
) -> ApiClient:
    """An API client signing with the profile's key (see :func:`load_profile`)."""
    from hatchway.auth.sigv4 import Credentials
    from hatchway.transport.apiclient import ApiClient

    p = load_profile(config, profile, env)
    return ApiClient(
        p.endpoint,
        region=p.region,
        credentials=Credentials(p.access_key_id, p.secret_access_key),
        ca_file=p.ca_file,
    )


def save_profile(path: Path, name: str, values: Mapping[str, str]) -> None:
    """Write profile ``name`` into the config file at ``path``, creating either if missing.

    The keys in ``values`` replace the profile's; its other keys, the other profiles and any
    other table in the file stay. The file is replaced atomically and left with mode 0600 (it
    holds secrets); its directory is created private (0700) if missing. The file is rewritten
    from its parsed content, so comments in it are not kept.

    Raises:
        ConfigError: the file exists but is not valid TOML, or is not laid out as profiles.
    """
    import tomli_w

    from hatchway.auth.atomicfile import write_private_text

    data = _read_document(path)
    profiles = data.setdefault("profiles", {})
    if not isinstance(profiles, dict):
        raise ConfigError(f"{path}: [profiles] must be a table")
    table = profiles.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: profiles.{name} must be a table")
    profiles[name] = {**table, **values}
    text = tomli_w.dumps(data)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private_text(path, text)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc
