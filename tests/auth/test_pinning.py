"""CA fingerprint handling (the network part is tested in tests/server/test_certificates.py)."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest

from hatchway.auth.pinning import (
    _der_to_pem,
    fetch_and_pin_ca,
    first_pem_certificate,
    normalize_fingerprint,
)
from hatchway.errors import ConfigError

HEX = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "text",
    [
        HEX,
        HEX.upper(),
        ":".join(HEX[i : i + 2] for i in range(0, 64, 2)).upper(),
        "  " + " ".join(HEX[i : i + 4] for i in range(0, 64, 4)) + "\n",
    ],
)
def test_normalize_fingerprint_accepts_common_forms(text: str) -> None:
    assert normalize_fingerprint(text) == HEX


@pytest.mark.parametrize("text", ["", HEX[:-1], HEX + "0", HEX[:-1] + "g", "sha1:" + HEX[:40]])
def test_normalize_fingerprint_rejects(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        normalize_fingerprint(text)
    assert info.value.message == "CA fingerprint must be 64 hex digits (SHA-256), colons optional"


@pytest.mark.parametrize("size", [1, 47, 48, 49, 500])
def test_pem_encoding_matches_ssl_module(size: int) -> None:
    der = os.urandom(size)
    pem = ssl.DER_cert_to_PEM_cert(der)
    assert _der_to_pem(der) == pem
    assert first_pem_certificate("junk before\n" + pem + pem) == der


def test_first_pem_certificate_rejects_non_pem() -> None:
    with pytest.raises(ConfigError):
        first_pem_certificate("<html>not a certificate</html>")
    with pytest.raises(ConfigError):
        first_pem_certificate("-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n")


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:1", "127.0.0.1:1", "https://"])
def test_fetch_rejects_bad_endpoints(tmp_path: Path, endpoint: str) -> None:
    with pytest.raises(ConfigError):
        fetch_and_pin_ca(endpoint, HEX, tmp_path / "ca.pem")
    assert not (tmp_path / "ca.pem").exists()
