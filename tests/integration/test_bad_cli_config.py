"""The CLI's own configuration is wrong: an unreachable endpoint, a corrupt config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.bad_input import (
    OK_INPUT,
    assert_undisturbed,
    one_line_error,
    write_profile,
)
from tests.integration.cluster import Cluster

# ---- the server and the client's configuration --------------------------------------------


@pytest.mark.parametrize("command", ["nodes", "start-session", "sessions"])
def test_unreachable_server_is_a_clear_error(
    cluster: Cluster, node: str, tmp_path: Path, closed_url: str, command: str
) -> None:
    closed = closed_url
    profile = write_profile(cluster, tmp_path / "p.toml", endpoint=closed)
    args = ["start-session", "--target", node] if command == "start-session" else [command]
    result = cluster.cli("--config", str(profile), *args, input=OK_INPUT, check=False)
    assert one_line_error(result) == (
        f"hatchway: cannot reach the server at {closed}: Connection refused"
    )
    assert_undisturbed(cluster, node)


CORRUPT_CONFIGS: dict[str, tuple[bytes, str]] = {
    "not TOML": (b"[profiles.default\nendpoint = ", "cannot read"),
    "not UTF-8": (b"\xff\xfe\x00[profiles.default]\n", "cannot read"),
    "profiles not a table": (b"profiles = 3\n", "[profiles] must be a table"),
    "profile missing": (b"[profiles.other]\nendpoint = 'https://x'\n", "not found"),
    "secret missing": (
        b"[profiles.default]\nendpoint = 'https://127.0.0.1:1'\naccess_key_id = 'HWAK'\n",
        "lacks secret_access_key",
    ),
    "endpoint not http": (
        b"[profiles.default]\nendpoint = 'ftp://x'\naccess_key_id = 'a'\nsecret_access_key = 'b'\n",
        "endpoint must be an http(s) URL",
    ),
    "port out of range": (
        b"[profiles.default]\nendpoint = 'https://127.0.0.1:99999'\naccess_key_id = 'a'\n"
        b"secret_access_key = 'b'\n",
        "invalid port",
    ),
    "CA file missing": (
        b"[profiles.default]\nendpoint = 'https://127.0.0.1:1'\naccess_key_id = 'a'\n"
        b"secret_access_key = 'b'\nca_file = '/nonexistent/ca.pem'\n",
        "cannot load CA file",
    ),
}


@pytest.mark.parametrize("kind", list(CORRUPT_CONFIGS))
def test_corrupt_config_file_is_a_clear_error(
    cluster: Cluster, node: str, tmp_path: Path, kind: str
) -> None:
    content, expected = CORRUPT_CONFIGS[kind]
    path = tmp_path / "config.toml"
    path.write_bytes(content)
    line = one_line_error(cluster.cli("--config", str(path), "nodes", check=False))
    assert expected in line
    assert_undisturbed(cluster, node)


def test_config_path_that_is_a_directory_is_a_clear_error(
    cluster: Cluster, node: str, tmp_path: Path
) -> None:
    line = one_line_error(cluster.cli("--config", str(tmp_path), "nodes", check=False))
    assert line.startswith(f"hatchway: cannot read {tmp_path}")
    assert_undisturbed(cluster, node)
