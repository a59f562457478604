"""Requests the server must not trust or the client must not trust the server for: a
wrong secret, an unknown access key, a wrong region, an untrusted server certificate.
"""

from __future__ import annotations

from pathlib import Path

from tests.integration.bad_input import (
    assert_undisturbed,
    one_line_error,
    other_ca_file,
    write_profile,
)
from tests.integration.cluster import Cluster


def test_untrusted_server_certificate_is_refused(
    cluster: Cluster, node: str, tmp_path: Path
) -> None:
    other_ca = other_ca_file(tmp_path / "other")
    profile = write_profile(cluster, tmp_path / "p.toml", ca_file=str(other_ca))
    line = one_line_error(cluster.cli("--config", str(profile), "nodes", check=False))
    assert line.startswith(f"hatchway: TLS verification of {cluster.endpoint} failed")
    assert_undisturbed(cluster, node)


def test_wrong_secret_is_a_signature_error(cluster: Cluster, node: str, tmp_path: Path) -> None:
    profile = write_profile(cluster, tmp_path / "p.toml", secret_access_key="x" * 40)
    line = one_line_error(cluster.cli("--config", str(profile), "nodes", check=False))
    assert line.startswith("hatchway: InvalidSignatureException: ")
    assert "signature" in line.lower()
    assert_undisturbed(cluster, node)


def test_unknown_access_key_is_refused(cluster: Cluster, node: str, tmp_path: Path) -> None:
    profile = write_profile(cluster, tmp_path / "p.toml", access_key_id="HWAK0000000000000000")
    line = one_line_error(cluster.cli("--config", str(profile), "nodes", check=False))
    assert line.startswith("hatchway: UnrecognizedClientException: ")
    assert_undisturbed(cluster, node)


def test_wrong_region_is_a_signature_error(cluster: Cluster, node: str, tmp_path: Path) -> None:
    profile = write_profile(cluster, tmp_path / "p.toml", region="us-east-1")
    line = one_line_error(cluster.cli("--config", str(profile), "nodes", check=False))
    assert line.startswith("hatchway: InvalidSignatureException: ")
    assert "region" in line
    assert_undisturbed(cluster, node)
