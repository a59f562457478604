"""Agent key pairs: generation, the AWS PublicKey encoding, storage and PSS signing."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from hatchway.auth.agentkey import (
    generate_private_key,
    load_private_key,
    load_public_key_b64,
    pss_signer,
    public_key_b64,
    save_private_key,
)
from hatchway.errors import ConfigError


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return generate_private_key()


def test_generated_key_is_rsa_2048(key: rsa.RSAPrivateKey) -> None:
    assert key.key_size == 2048
    assert key.public_key().public_numbers().e == 65537


def test_public_key_b64_is_aws_public_key_field(key: rsa.RSAPrivateKey) -> None:
    text = public_key_b64(key)
    assert len(text) >= 392  # RegisterManagedInstance: PublicKey min length 392
    der = base64.b64decode(text, validate=True)
    loaded = serialization.load_der_public_key(der)
    assert isinstance(loaded, rsa.RSAPublicKey)
    assert loaded.public_numbers() == key.public_key().public_numbers()
    assert public_key_b64(key.public_key()) == text
    assert load_public_key_b64(text).public_numbers() == key.public_key().public_numbers()


def test_load_public_key_b64_rejects_junk() -> None:
    with pytest.raises(ConfigError, match="base64"):
        load_public_key_b64("not base64!")
    with pytest.raises(ConfigError, match="DER"):
        load_public_key_b64(base64.b64encode(b"garbage").decode())
    ec_der = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ConfigError, match="RSA"):
        load_public_key_b64(base64.b64encode(ec_der).decode())
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ConfigError, match="RSA-1024"):
        load_public_key_b64(public_key_b64(small))


def test_save_and_load_round_trip(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    path = tmp_path / "agent.key"
    save_private_key(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    loaded = load_private_key(path)
    assert loaded.private_numbers() == key.private_numbers()
    # Overwriting is atomic and keeps the mode; no temporary files are left behind.
    save_private_key(path, key)
    assert [p.name for p in tmp_path.iterdir()] == ["agent.key"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_save_into_missing_directory_is_config_error(
    tmp_path: Path, key: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(ConfigError, match="cannot write"):
        save_private_key(tmp_path / "missing" / "agent.key", key)


def test_load_missing_or_corrupt(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_private_key(tmp_path / "absent.key")
    corrupt = tmp_path / "corrupt.key"
    corrupt.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigError, match="corrupt"):
        load_private_key(corrupt)
    with pytest.raises(ConfigError, match="cannot read"):
        load_private_key(tmp_path)  # a directory
    ec_key = tmp_path / "ec.key"
    ec_key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ConfigError, match="not an RSA key"):
        load_private_key(ec_key)


def test_pss_signer_uses_sha256_and_salt_32(key: rsa.RSAPrivateKey) -> None:
    sign = pss_signer(key)
    message = b"AWS4-HMAC-SHA256\n20260101T000000Z\n..."
    signature = sign(message)
    assert len(signature) == 256
    assert sign(message) != signature  # PSS is randomised
    public = key.public_key()
    public.verify(
        signature,
        message,
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )
    with pytest.raises(InvalidSignature):
        public.verify(
            signature,
            message,
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=20),
            hashes.SHA256(),
        )
