"""The server's TLS identity: its own CA and a server certificate signed by it.

On first start the server creates a private CA and a server certificate so that
TLS works with no setup; clients and agents pin the CA by fingerprint (``auth.pinning``).
Files, all in one directory:

* ``ca.pem`` / ``ca.key``: the CA (EC P-256, 10 years). Its SHA-256 fingerprint is what
  operators hand out, so it is never replaced automatically.
* ``server.pem`` / ``server.key``: the server certificate (EC P-256, 1 year) followed by the CA
  certificate, the chain the server presents. It is re-issued when it expires within 30 days,
  when it does not cover the requested names (127.0.0.1, ::1, localhost, the host name and
  every ``--tls-san``), or when it no longer matches the CA or its key.

Operators may supply their own files: a server certificate that already fits is used as is,
and ``ca.key`` is only needed when a certificate has to be issued.

Replicas sharing a database keep one identity in it instead (``server.clusterinit``): the same
issuing and checking code works on :class:`TlsMaterial`, the identity as PEM bytes
(:func:`new_tls_material`, :func:`renew_tls_material`), and :func:`install_tls_material` writes
what a replica serves with (``ca.pem``, ``server.pem``, ``server.key``; never ``ca.key``) into
its data directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import os
import secrets
import socket
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hatchway.auth.atomicfile import write_atomic
from hatchway.auth.pinning import fetch_and_pin_ca, normalize_fingerprint
from hatchway.errors import ConfigError

try:  # POSIX; elsewhere concurrent first starts on one directory are not serialised.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "TlsIdentity",
    "TlsMaterial",
    "ensure_tls_identity",
    "fetch_and_pin_ca",
    "fingerprint_of_pem",
    "install_tls_material",
    "new_tls_material",
    "normalize_fingerprint",
    "read_tls_material",
    "renew_tls_material",
    "ssl_server_context",
]

logger = logging.getLogger(__name__)

CA_VALIDITY = timedelta(days=3650)
SERVER_VALIDITY = timedelta(days=365)
RENEW_BEFORE = timedelta(days=30)
"""A server certificate that expires within this window is re-issued at start."""
BACKDATE = timedelta(hours=1)
"""``notBefore`` is set this far in the past to tolerate clients with slow clocks."""

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
SERVER_CERT_FILE = "server.pem"
SERVER_KEY_FILE = "server.key"
_LOCK_FILE = ".tls.lock"

_KEY_MODE = 0o600
_CERT_MODE = 0o644

GeneralName: TypeAlias = x509.DNSName | x509.IPAddress
IssuerKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
"""Key types accepted for ``ca.key`` (ours is EC; an operator's may be RSA)."""


@dataclass(frozen=True, slots=True)
class TlsIdentity:
    """Where the server's TLS files are, and the CA fingerprint to show operators."""

    ca_cert_path: Path
    cert_path: Path
    """Server certificate followed by the CA certificate (the chain to present)."""
    key_path: Path
    ca_fingerprint: str
    """Hex SHA-256 of the CA certificate's DER, lower-case, no colons."""


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """The TLS identity as PEM bytes, wherever it is kept (a data directory, a database).

    The private keys never appear in a ``repr`` (so not in a log line or a traceback).
    """

    ca_cert: bytes
    ca_key: bytes | None = field(repr=False)
    """``None`` where the CA key is not at hand (an operator's CA): nothing can be issued."""
    server_cert: bytes
    """The server certificate followed by the CA certificate (the chain to present)."""
    server_key: bytes = field(repr=False)

    @property
    def ca_fingerprint(self) -> str:
        """Hex SHA-256 of the CA certificate's DER (what clients pin)."""
        return _fingerprint(_parse_certificate(self.ca_cert, CA_CERT_FILE))

    def names(self) -> list[str]:
        """The names the server certificate covers (DNS names and IP addresses), as text."""
        cert = _parse_certificate(self.server_cert, SERVER_CERT_FILE)
        return sorted(str(name.value) for name in _san_of(cert))


def fingerprint_of_pem(path: Path) -> str:
    """Return the hex SHA-256 of the DER of the first certificate in the PEM file ``path``.

    Raises:
        ConfigError: the file is missing, unreadable or holds no valid certificate.
    """
    return _fingerprint(_load_certificate(path))


def _fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _load_certificate(path: Path) -> x509.Certificate:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read certificate {path}: {exc.strerror or exc}") from exc
    return _parse_certificate(data, str(path))


def _parse_certificate(data: bytes, what: str) -> x509.Certificate:
    """The first certificate of PEM ``data``; ``what`` names its origin in the error."""
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise ConfigError(f"{what} does not hold a valid PEM certificate") from exc


def _load_key(path: Path) -> IssuerKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read private key {path}: {exc.strerror or exc}") from exc
    return _parse_key(data, str(path))


def _parse_key(data: bytes, what: str) -> IssuerKey:
    """The private key of PEM ``data``; the error names ``what``, never the key."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{what} does not hold an unencrypted PEM private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{what} must hold an RSA or EC private key")
    return key


def _spki(public_key: CertificatePublicKeyTypes) -> bytes:
    """DER SubjectPublicKeyInfo, to compare keys of any type."""
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _general_name(text: str) -> GeneralName | None:
    """``192.0.2.1``/``[::1]`` → IPAddress, anything else → DNSName (lower-case, IDNA)."""
    name = text.strip()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if not name:
        return None
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    name = name.rstrip(".").lower()
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        logger.warning("ignoring TLS subject alternative name %r: not a valid host name", text)
        return None
    return x509.DNSName(name)


def _requested_names(hostname: str, extra_sans: Sequence[str]) -> list[GeneralName]:
    names: list[GeneralName] = []
    for text in ("127.0.0.1", "::1", "localhost", hostname, *extra_sans):
        general = _general_name(text)
        if general is not None and general not in names:
            names.append(general)
    return names


def _san_of(cert: x509.Certificate) -> set[GeneralName]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {name for name in san if isinstance(name, x509.DNSName | x509.IPAddress)}


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(*certs: x509.Certificate) -> bytes:
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)


def _create_ca(hostname: str, now: datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    # A random suffix keeps the CAs of different installations apart in trust stores.
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Hatchway"),
            x509.NameAttribute(
                NameOID.COMMON_NAME, f"Hatchway CA {hostname[:30]} {secrets.token_hex(4)}"
            ),
        ]
    )
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _issue_server_certificate(
    ca_cert: x509.Certificate,
    ca_key: IssuerKey,
    hostname: str,
    names: Sequence[GeneralName],
    now: datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Hatchway"),
                    x509.NameAttribute(NameOID.COMMON_NAME, (hostname or "localhost")[:64]),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + SERVER_VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    """Serialise identity creation between processes sharing ``directory``.

    Without it two replicas starting together could each write a CA, and ``ca.pem`` and
    ``ca.key`` could end up from different processes.
    """
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _server_certificate_problem(
    cert_path: Path,
    key_path: Path,
    ca_cert: x509.Certificate,
    names: Sequence[GeneralName],
    now: datetime,
) -> str | None:
    """Return why the server certificate must be (re-)issued, or ``None`` if it is fine."""
    if not cert_path.exists() or not key_path.exists():
        return "no server certificate yet"
    try:
        cert = _load_certificate(cert_path)
        key = _load_key(key_path)
    except ConfigError as exc:
        return exc.message
    return _certificate_problem(cert, key, ca_cert, names, now)


def _certificate_problem(
    cert: x509.Certificate,
    key: IssuerKey,
    ca_cert: x509.Certificate,
    names: Sequence[GeneralName],
    now: datetime,
) -> str | None:
    """Why a loaded server certificate must be (re-)issued, or ``None`` if it is fine."""
    if cert.not_valid_after_utc - RENEW_BEFORE <= now:
        return f"it expires on {cert.not_valid_after_utc:%Y-%m-%d}"
    if cert.not_valid_before_utc > now:
        return "it is not valid yet"
    missing = [name.value for name in names if name not in _san_of(cert)]
    if missing:
        return f"it does not cover {', '.join(str(value) for value in missing)}"
    if _spki(cert.public_key()) != _spki(key.public_key()):
        return f"{SERVER_KEY_FILE} does not match {SERVER_CERT_FILE}"
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return f"it was not issued by {CA_CERT_FILE}"
    return None


def ensure_tls_identity(
    data_dir: Path,
    *,
    extra_sans: Sequence[str] = (),
    hostname: str | None = None,
    now: datetime | None = None,
) -> TlsIdentity:
    """Return the server's TLS identity in ``data_dir``, creating or renewing what is needed.

    The first call creates the CA and the server certificate; later calls reuse them and only
    re-issue the server certificate when it is close to expiry or does not cover the requested
    names (see module docstring). Key files are written atomically with mode 0600.

    Args:
        data_dir: directory for ``ca.pem``, ``ca.key``, ``server.pem``, ``server.key``
            (created if missing).
        extra_sans: additional names for the server certificate (``--tls-san``): IP addresses
            become IPAddress entries, everything else DNSName.
        hostname: this machine's name; ``socket.gethostname()`` by default.
        now: the current time (tests); defaults to the system clock.

    Raises:
        ConfigError: the files are inconsistent (a CA key without its certificate, or a
            certificate that must be re-issued without the CA key), corrupt, the CA has
            expired, or the directory is not writable.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    hostname = socket.gethostname() if hostname is None else hostname
    names = _requested_names(hostname, extra_sans)
    ca_cert_path = data_dir / CA_CERT_FILE
    ca_key_path = data_dir / CA_KEY_FILE
    cert_path = data_dir / SERVER_CERT_FILE
    key_path = data_dir / SERVER_KEY_FILE
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _directory_lock(data_dir):
            ca_cert = _ensure_ca(ca_cert_path, ca_key_path, hostname, now)
            problem = _server_certificate_problem(cert_path, key_path, ca_cert, names, now)
            if problem is not None:
                if not ca_key_path.exists():
                    raise ConfigError(
                        f"the server certificate {cert_path} must be re-issued ({problem}) "
                        f"but the CA key {ca_key_path} is missing"
                    )
                ca_key = _load_key(ca_key_path)
                cert, key = _issue_server_certificate(ca_cert, ca_key, hostname, names, now)
                write_atomic(key_path, _private_pem(key), mode=_KEY_MODE)
                write_atomic(cert_path, _cert_pem(cert, ca_cert), mode=_CERT_MODE)
                logger.info("issued a new server certificate %s: %s", cert_path, problem)
    except OSError as exc:
        raise ConfigError(f"cannot write TLS files in {data_dir}: {exc.strerror or exc}") from exc
    return TlsIdentity(
        ca_cert_path=ca_cert_path,
        cert_path=cert_path,
        key_path=key_path,
        ca_fingerprint=_fingerprint(ca_cert),
    )


def _ensure_ca(
    ca_cert_path: Path, ca_key_path: Path, hostname: str, now: datetime
) -> x509.Certificate:
    """Load the CA, or create it if neither of its files exists."""
    cert_exists, key_exists = ca_cert_path.exists(), ca_key_path.exists()
    if not cert_exists and key_exists:
        raise ConfigError(
            f"{ca_key_path} exists without {ca_cert_path}; restore the certificate or remove "
            "the key to create a new CA (clients must then pin the new fingerprint)"
        )
    if not cert_exists:
        ca_cert, ca_key = _create_ca(hostname, now)
        # Key first: a CA certificate on disk always has its key next to it.
        write_atomic(ca_key_path, _private_pem(ca_key), mode=_KEY_MODE)
        write_atomic(ca_cert_path, _cert_pem(ca_cert), mode=_CERT_MODE)
        logger.info("created a new TLS CA %s (SHA-256 %s)", ca_cert_path, _fingerprint(ca_cert))
        return ca_cert
    ca_cert = _load_certificate(ca_cert_path)
    if ca_cert.not_valid_after_utc <= now:
        raise ConfigError(
            f"the CA certificate {ca_cert_path} expired on {ca_cert.not_valid_after_utc:%Y-%m-%d};"
            f" remove {ca_cert_path.name} and {ca_key_path.name} to create a new CA "
            "(clients must then pin the new fingerprint)"
        )
    if key_exists:
        existing_key = _load_key(ca_key_path)
        if _spki(existing_key.public_key()) != _spki(ca_cert.public_key()):
            raise ConfigError(f"{ca_key_path} is not the key of {ca_cert_path}")
    return ca_cert


# ---- the identity as bytes (kept in a shared database) ------------------------------------


def new_tls_material(
    *,
    extra_sans: Sequence[str] = (),
    hostname: str | None = None,
    now: datetime | None = None,
) -> TlsMaterial:
    """A new CA and a server certificate it signed, covering the requested names (the same
    names and lifetimes as :func:`ensure_tls_identity`'s)."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    hostname = socket.gethostname() if hostname is None else hostname
    ca_cert, ca_key = _create_ca(hostname, now)
    names = _requested_names(hostname, extra_sans)
    cert, key = _issue_server_certificate(ca_cert, ca_key, hostname, names, now)
    return TlsMaterial(
        ca_cert=_cert_pem(ca_cert),
        ca_key=_private_pem(ca_key),
        server_cert=_cert_pem(cert, ca_cert),
        server_key=_private_pem(key),
    )


def renew_tls_material(
    material: TlsMaterial,
    *,
    extra_sans: Sequence[str] = (),
    hostname: str | None = None,
    now: datetime | None = None,
) -> tuple[TlsMaterial, str] | None:
    """Re-issue the server certificate if it must be, keeping the CA; else ``None``.

    It must be when it expires within :data:`RENEW_BEFORE`, does not cover a requested name,
    does not match its key or was not issued by the CA (the checks of
    :func:`ensure_tls_identity`). The new certificate covers the requested names *and* every
    name the old one covered, so that replicas asking for different names (their host names,
    their ``--tls-san``) all end up covered by one certificate.

    Returns:
        The new material and why it was re-issued, or ``None`` if nothing had to change.

    Raises:
        ConfigError: the material is corrupt, the CA has expired, or a certificate must be
            issued without the CA key.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    hostname = socket.gethostname() if hostname is None else hostname
    ca_cert = _parse_certificate(material.ca_cert, f"the stored {CA_CERT_FILE}")
    if ca_cert.not_valid_after_utc <= now:
        raise ConfigError(
            f"the stored CA certificate expired on {ca_cert.not_valid_after_utc:%Y-%m-%d}"
        )
    requested = _requested_names(hostname, extra_sans)
    try:
        cert = _parse_certificate(material.server_cert, f"the stored {SERVER_CERT_FILE}")
        key = _parse_key(material.server_key, f"the stored {SERVER_KEY_FILE}")
    except ConfigError as exc:
        problem: str | None = exc.message
        covered: list[GeneralName] = []
    else:
        problem = _certificate_problem(cert, key, ca_cert, requested, now)
        covered = sorted(_san_of(cert), key=lambda name: str(name.value))
    if problem is None:
        return None
    if material.ca_key is None:
        raise ConfigError(
            f"the stored server certificate must be re-issued ({problem}) but the CA key is "
            "not stored with it"
        )
    ca_key = _parse_key(material.ca_key, f"the stored {CA_KEY_FILE}")
    if _spki(ca_key.public_key()) != _spki(ca_cert.public_key()):
        raise ConfigError(f"the stored {CA_KEY_FILE} is not the key of the stored CA certificate")
    names = [*requested, *(name for name in covered if name not in requested)]
    new_cert, new_key = _issue_server_certificate(ca_cert, ca_key, hostname, names, now)
    renewed = TlsMaterial(
        ca_cert=material.ca_cert,
        ca_key=material.ca_key,
        server_cert=_cert_pem(new_cert, ca_cert),
        server_key=_private_pem(new_key),
    )
    return renewed, problem


def read_tls_material(data_dir: Path) -> TlsMaterial:
    """The identity in ``data_dir``'s files (``ca.key`` may be missing: an operator's CA).

    Raises:
        ConfigError: a file other than ``ca.key`` is missing or unreadable.
    """
    ca_key_path = data_dir / CA_KEY_FILE

    def read(name: str) -> bytes:
        try:
            return (data_dir / name).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {data_dir / name}: {exc.strerror or exc}") from exc

    return TlsMaterial(
        ca_cert=read(CA_CERT_FILE),
        ca_key=read(CA_KEY_FILE) if ca_key_path.exists() else None,
        server_cert=read(SERVER_CERT_FILE),
        server_key=read(SERVER_KEY_FILE),
    )


def install_tls_material(data_dir: Path, material: TlsMaterial) -> TlsIdentity:
    """Write the files a server presents from ``material`` into ``data_dir``; return them.

    ``ca.pem``, ``server.pem`` and ``server.key`` are replaced atomically when their content
    differs (key files 0600); ``ca.key`` is never written (it stays where the material is
    kept). A ``ca.key`` already there that belongs to another CA is left alone, with a
    warning: it is not used, and the files it went with have been replaced.

    Raises:
        ConfigError: the material is corrupt or the directory is not writable.
    """
    ca_cert = _parse_certificate(material.ca_cert, f"the stored {CA_CERT_FILE}")
    files = (
        (SERVER_KEY_FILE, material.server_key, _KEY_MODE),  # key first, as _ensure_ca does
        (SERVER_CERT_FILE, material.server_cert, _CERT_MODE),
        (CA_CERT_FILE, material.ca_cert, _CERT_MODE),
    )
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _directory_lock(data_dir):
            for name, data, mode in files:
                path = data_dir / name
                try:
                    same = path.read_bytes() == data
                except OSError:
                    same = False
                if not same:
                    write_atomic(path, data, mode=mode)
    except OSError as exc:
        raise ConfigError(f"cannot write TLS files in {data_dir}: {exc.strerror or exc}") from exc
    stale_key = data_dir / CA_KEY_FILE
    if stale_key.exists():
        try:
            foreign = _spki(_load_key(stale_key).public_key()) != _spki(ca_cert.public_key())
        except ConfigError:
            foreign = True
        if foreign:
            logger.warning(
                "%s is not the key of the shared CA in %s: it is not used (the CA key is kept "
                "in the database); remove it",
                stale_key,
                data_dir / CA_CERT_FILE,
            )
    return TlsIdentity(
        ca_cert_path=data_dir / CA_CERT_FILE,
        cert_path=data_dir / SERVER_CERT_FILE,
        key_path=data_dir / SERVER_KEY_FILE,
        ca_fingerprint=_fingerprint(ca_cert),
    )


def ssl_server_context(identity: TlsIdentity) -> ssl.SSLContext:
    """Return a server-side ``SSLContext`` presenting the identity's chain, TLS 1.2 or later.

    Raises:
        ConfigError: the certificate or key cannot be loaded.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        # cert_path holds the server certificate followed by the CA: the chain is sent whole.
        context.load_cert_chain(certfile=identity.cert_path, keyfile=identity.key_path)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load the TLS certificate {identity.cert_path} and key {identity.key_path}: "
            f"{exc}"
        ) from exc
    return context
