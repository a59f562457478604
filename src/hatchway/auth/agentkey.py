"""The agent's identity key pair (docs/protocol.md §10.1, §10.2).

At registration the agent creates an RSA-2048 key, sends the public half as base64 of its DER
SubjectPublicKeyInfo (AWS's ``PublicKey`` field, ≥ 392 characters), and from then on signs every
request SigV4-style with RSA-PSS-SHA256, salt length 32. The server keeps only the public key.

The private key lives in one file on the node, PEM PKCS#8, unencrypted (the agent must start
unattended) and readable by its owner only.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from hatchway.auth.atomicfile import write_atomic
from hatchway.errors import ConfigError

__all__ = [
    "KEY_SIZE",
    "MIN_KEY_SIZE",
    "PSS_SALT_LENGTH",
    "generate_private_key",
    "load_private_key",
    "load_public_key_b64",
    "pss_signer",
    "public_key_b64",
    "save_private_key",
]

KEY_SIZE = 2048
"""Bits in a new agent key: what AWS's agent generates."""

MIN_KEY_SIZE = 2048
"""Smallest RSA key the server accepts at registration or verification."""

PSS_SALT_LENGTH = 32
"""RSA-PSS salt length in bytes used by AWS's agent (``ssm_rsaV4.go``)."""

_PRIVATE_KEY_MODE = 0o600


def generate_private_key() -> rsa.RSAPrivateKey:
    """Create a fresh RSA-2048 key (public exponent 65537) for a registering agent."""
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE)


def public_key_b64(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> str:
    """Return base64 (standard alphabet) of the DER SubjectPublicKeyInfo of ``key``.

    This is the ``PublicKey`` string of ``RegisterManagedInstance``; for RSA-2048 it is 392
    characters long.
    """
    public = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode("ascii")


def load_public_key_b64(text: str) -> rsa.RSAPublicKey:
    """Parse a ``PublicKey`` string (base64 DER SubjectPublicKeyInfo) into an RSA public key.

    Used when a node registers (to reject junk early) and when its signatures are verified.

    Raises:
        ConfigError: not base64, not DER, not RSA, or fewer than 2048 bits.
    """
    try:
        der = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError("PublicKey is not valid base64") from exc
    try:
        public = serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError("PublicKey is not a DER SubjectPublicKeyInfo") from exc
    if not isinstance(public, rsa.RSAPublicKey):
        raise ConfigError("PublicKey must be an RSA key (PublicKeyType 'Rsa')")
    if public.key_size < MIN_KEY_SIZE:
        raise ConfigError(
            f"PublicKey is an RSA-{public.key_size} key; at least {MIN_KEY_SIZE} bits required"
        )
    return public


def save_private_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    """Write ``key`` to ``path`` as unencrypted PEM PKCS#8, atomically, with mode 0600.

    Raises:
        ConfigError: the file cannot be written.
    """
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        write_atomic(path, pem, mode=_PRIVATE_KEY_MODE)
    except OSError as exc:
        raise ConfigError(f"cannot write the agent key {path}: {exc.strerror or exc}") from exc


def load_private_key(path: Path) -> rsa.RSAPrivateKey:
    """Read the agent's private key written by :func:`save_private_key`.

    Raises:
        ConfigError: the file is missing, unreadable, corrupt or not an RSA key.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(
            f"agent key {path} not found: is this node registered? (hatchway agent register)"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read the agent key {path}: {exc.strerror or exc}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"agent key {path} is corrupt or encrypted") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(f"agent key {path} is not an RSA key")
    return key


def pss_signer(key: rsa.RSAPrivateKey) -> Callable[[bytes], bytes]:
    """Return a function that signs bytes with RSA-PSS-SHA256, MGF1-SHA256, salt length 32.

    This is the ``private_key_sign`` callback of ``auth.sigv4.sign_request_rsa``; keeping the
    key behind a closure lets the stdlib-only signer stay free of ``cryptography``.
    """
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=PSS_SALT_LENGTH)

    def sign(message: bytes) -> bytes:
        return key.sign(message, pss, hashes.SHA256())

    return sign
