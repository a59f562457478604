"""The server's TLS identity, real TLS handshakes with it, and CA pinning over real HTTPS."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import ipaddress
import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from hatchway.errors import ConfigError, Unavailable
from hatchway.server.certificates import (
    TlsIdentity,
    ensure_tls_identity,
    fetch_and_pin_ca,
    fingerprint_of_pem,
    install_tls_material,
    new_tls_material,
    normalize_fingerprint,
    read_tls_material,
    renew_tls_material,
    ssl_server_context,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOST = "testhost"


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(cert: x509.Certificate) -> set[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(name.value) for name in ext}


def make(directory: Path, **kwargs: object) -> TlsIdentity:
    options: dict[str, object] = {"hostname": HOST, "now": NOW, **kwargs}
    return ensure_tls_identity(directory, **options)  # type: ignore[arg-type]


# ---- files ----------------------------------------------------------------------------------


def test_first_call_creates_files_with_modes(tmp_path: Path) -> None:
    identity = make(tmp_path / "tls", extra_sans=["10.1.2.3", "Hatchway.Example", "[fd00::1]"])
    directory = tmp_path / "tls"
    assert identity.ca_cert_path == directory / "ca.pem"
    assert identity.cert_path == directory / "server.pem"
    assert identity.key_path == directory / "server.key"
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()}
    assert modes["ca.key"] == modes["server.key"] == 0o600
    assert modes["ca.pem"] == modes["server.pem"] == 0o644
    assert not any(name.endswith(".tmp") for name in modes)

    ca = load_cert(identity.ca_cert_path)
    der = ca.public_bytes(serialization.Encoding.DER)
    assert identity.ca_fingerprint == hashlib.sha256(der).hexdigest()
    assert identity.ca_fingerprint == fingerprint_of_pem(identity.ca_cert_path)
    assert normalize_fingerprint(identity.ca_fingerprint) == identity.ca_fingerprint


def test_ca_certificate(tmp_path: Path) -> None:
    ca = load_cert(make(tmp_path).ca_cert_path)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert ca.not_valid_after_utc - ca.not_valid_before_utc >= timedelta(days=3650)
    assert ca.subject == ca.issuer


def test_server_certificate(tmp_path: Path) -> None:
    identity = make(tmp_path, extra_sans=["10.1.2.3", "Hatchway.Example", "[fd00::1]", " "])
    chain = x509.load_pem_x509_certificates(identity.cert_path.read_bytes())
    server, ca = chain
    assert ca == load_cert(identity.ca_cert_path)
    server.verify_directly_issued_by(ca)
    assert sans(server) == {
        "127.0.0.1",
        "::1",
        "localhost",
        HOST,
        "10.1.2.3",
        "hatchway.example",
        "fd00::1",
    }
    ip_names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.1.2.3") in ip_names.get_values_for_type(x509.IPAddress)
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert server.not_valid_after_utc - NOW == timedelta(days=365)


def test_default_hostname_is_in_the_certificate(tmp_path: Path) -> None:
    identity = ensure_tls_identity(tmp_path)
    assert socket.gethostname().lower().rstrip(".") in sans(load_cert(identity.cert_path))


def test_second_call_reuses_everything(tmp_path: Path) -> None:
    first = make(tmp_path, extra_sans=["10.1.2.3"])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    second = make(tmp_path, extra_sans=["10.1.2.3"], now=NOW + timedelta(days=100))
    assert second == first
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    # A subset of the names already covered does not re-issue either.
    make(tmp_path)
    assert (tmp_path / "server.pem").read_bytes() == before["server.pem"]


def test_new_san_reissues_server_certificate_only(tmp_path: Path) -> None:
    first = make(tmp_path)
    ca_before = (tmp_path / "ca.pem").read_bytes()
    key_before = (tmp_path / "server.key").read_bytes()
    second = make(tmp_path, extra_sans=["new.example"])
    assert second.ca_fingerprint == first.ca_fingerprint
    assert (tmp_path / "ca.pem").read_bytes() == ca_before
    assert (tmp_path / "server.key").read_bytes() != key_before
    assert "new.example" in sans(load_cert(second.cert_path))


def test_renewal_30_days_before_expiry(tmp_path: Path) -> None:
    make(tmp_path)
    original = (tmp_path / "server.pem").read_bytes()
    make(tmp_path, now=NOW + timedelta(days=334))
    assert (tmp_path / "server.pem").read_bytes() == original
    make(tmp_path, now=NOW + timedelta(days=336))
    renewed = load_cert(tmp_path / "server.pem")
    assert renewed.not_valid_after_utc == NOW + timedelta(days=336 + 365)


def test_corrupt_or_mismatched_server_files_are_reissued(tmp_path: Path) -> None:
    make(tmp_path)
    (tmp_path / "server.pem").write_text("garbage")
    make(tmp_path)
    load_cert(tmp_path / "server.pem")
    other = tmp_path / "other"
    make(other)
    (tmp_path / "server.key").write_bytes((other / "server.key").read_bytes())
    make(tmp_path)
    ssl_server_context(make(tmp_path))  # key and certificate match again


def test_user_supplied_certificate_without_ca_key(tmp_path: Path) -> None:
    make(tmp_path)
    (tmp_path / "ca.key").unlink()
    make(tmp_path)  # still fits: used as is
    with pytest.raises(ConfigError, match=r"CA key .* is missing"):
        make(tmp_path, extra_sans=["needs-a-new.example"])


def test_ca_key_without_certificate_is_config_error(tmp_path: Path) -> None:
    make(tmp_path)
    (tmp_path / "ca.pem").unlink()
    with pytest.raises(ConfigError, match="without"):
        make(tmp_path)


def test_expired_ca_is_config_error(tmp_path: Path) -> None:
    make(tmp_path)
    with pytest.raises(ConfigError, match="expired"):
        make(tmp_path, now=NOW + timedelta(days=3651))


def test_corrupt_ca_is_config_error(tmp_path: Path) -> None:
    make(tmp_path)
    (tmp_path / "ca.pem").write_text("garbage")
    with pytest.raises(ConfigError):
        make(tmp_path)


def test_concurrent_first_start_creates_one_ca(tmp_path: Path) -> None:
    results: list[TlsIdentity] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        barrier.wait()
        results.append(make(tmp_path))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 4
    assert {r.ca_fingerprint for r in results} == {fingerprint_of_pem(tmp_path / "ca.pem")}


def test_fingerprint_of_pem_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        fingerprint_of_pem(tmp_path / "absent.pem")
    (tmp_path / "bad.pem").write_text("nope")
    with pytest.raises(ConfigError):
        fingerprint_of_pem(tmp_path / "bad.pem")


# ---- the identity as bytes (kept in a shared database) -----------------------------------------


def test_new_material_needs_no_renewal_until_it_nears_expiry() -> None:
    material = new_tls_material(extra_sans=["h.example"], hostname=HOST, now=NOW)
    assert "PRIVATE KEY" not in repr(material)  # keys never in a repr, a log line, a traceback
    assert renew_tls_material(material, extra_sans=["h.example"], hostname=HOST, now=NOW) is None
    later = NOW + timedelta(days=340)
    renewed = renew_tls_material(material, extra_sans=["h.example"], hostname=HOST, now=later)
    assert renewed is not None
    fresh, reason = renewed
    assert reason.startswith("it expires on")
    assert fresh.ca_cert == material.ca_cert and fresh.ca_key == material.ca_key
    assert fresh.server_cert != material.server_cert
    assert {"h.example", HOST} <= set(fresh.names())


def test_material_without_its_ca_key_cannot_be_renewed() -> None:
    material = new_tls_material(hostname=HOST, now=NOW)
    keyless = dataclasses.replace(material, ca_key=None)
    assert renew_tls_material(keyless, hostname=HOST, now=NOW) is None  # fine as it is
    with pytest.raises(ConfigError, match="CA key is not stored"):
        renew_tls_material(keyless, extra_sans=["new.example"], hostname=HOST, now=NOW)
    other = new_tls_material(hostname=HOST, now=NOW)
    mixed = dataclasses.replace(material, ca_key=other.ca_key)
    with pytest.raises(ConfigError, match="not the key of the stored CA"):
        renew_tls_material(mixed, extra_sans=["new.example"], hostname=HOST, now=NOW)


def test_installed_material_is_what_a_server_presents(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    material = new_tls_material(hostname="localhost", now=datetime.now(UTC))
    make(tmp_path)  # files of another CA there before (its ca.key is then foreign)
    identity = install_tls_material(tmp_path, material)
    assert identity.ca_fingerprint == material.ca_fingerprint
    assert identity.cert_path.read_bytes() == material.server_cert
    assert identity.key_path.read_bytes() == material.server_key
    assert stat.S_IMODE(identity.key_path.stat().st_mode) == 0o600
    assert "PRIVATE KEY" not in caplog.text
    assert any("is not the key of the shared CA" in r.getMessage() for r in caplog.records)
    ssl_server_context(identity)  # loads
    assert read_tls_material(tmp_path).server_key == material.server_key


# ---- real TLS ---------------------------------------------------------------------------------


@contextmanager
def tls_echo_server(context: ssl.SSLContext) -> Iterator[int]:
    """Accept TLS connections on 127.0.0.1:0 and answer each with b"ok"."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            raw.settimeout(5)
            try:
                with context.wrap_socket(raw, server_side=True) as conn:
                    conn.sendall(b"ok")
            except (OSError, ssl.SSLError):
                pass  # the client refused our certificate: expected in some tests

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def client_context(ca_file: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file))
    # What Python 3.13's default context enforces; our certificates must pass it.
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


def handshake(port: int, context: ssl.SSLContext, server_hostname: str) -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=server_hostname) as conn,
    ):
        return conn.recv(2)


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> TlsIdentity:
    return ensure_tls_identity(tmp_path_factory.mktemp("tls"), hostname=HOST)


def test_tls_handshake_with_hostname_checks(identity: TlsIdentity) -> None:
    server_context = ssl_server_context(identity)
    assert server_context.minimum_version >= ssl.TLSVersion.TLSv1_2
    with tls_echo_server(server_context) as port:
        for name in ("127.0.0.1", "localhost", HOST):
            assert handshake(port, client_context(identity.ca_cert_path), name) == b"ok"
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(port, client_context(identity.ca_cert_path), "evil.example")


def test_tls_client_with_another_ca_is_refused(identity: TlsIdentity, tmp_path: Path) -> None:
    other = ensure_tls_identity(tmp_path, hostname=HOST)
    with (
        tls_echo_server(ssl_server_context(identity)) as port,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        handshake(port, client_context(other.ca_cert_path), "127.0.0.1")


def test_ssl_server_context_bad_files(tmp_path: Path) -> None:
    broken = TlsIdentity(tmp_path / "ca.pem", tmp_path / "s.pem", tmp_path / "s.key", "0" * 64)
    with pytest.raises(ConfigError):
        ssl_server_context(broken)


# ---- fetch_and_pin_ca against a real HTTPS server ---------------------------------------------


@contextmanager
def https_ca_server(
    identity: TlsIdentity, served_ca: Path, address: str = "127.0.0.1"
) -> Iterator[int]:
    """A threaded HTTPS server presenting ``identity`` and serving ``served_ca`` at /ca.pem."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/ca.pem":
                self.send_error(404)
                return
            body = served_ca.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-pem-file")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((address, 0), Handler)
    server.daemon_threads = True
    server.socket = ssl_server_context(identity).wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def colon_upper(fingerprint: str) -> str:
    return ":".join(fingerprint[i : i + 2] for i in range(0, 64, 2)).upper()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_fetch_and_pin_ca_match(identity: TlsIdentity, tmp_path: Path, host: str) -> None:
    dest = tmp_path / "pins" / "ca.pem"
    with https_ca_server(identity, identity.ca_cert_path) as port:
        result = fetch_and_pin_ca(
            f"https://{host}:{port}/", colon_upper(identity.ca_fingerprint), dest, timeout=5
        )
    assert result == dest
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644
    assert fingerprint_of_pem(dest) == identity.ca_fingerprint
    # The stored file is a working trust anchor.
    with tls_echo_server(ssl_server_context(identity)) as port:
        assert handshake(port, client_context(dest), "localhost") == b"ok"


def test_fetch_and_pin_ca_mismatch(identity: TlsIdentity, tmp_path: Path) -> None:
    dest = tmp_path / "ca.pem"
    wrong = "ab" * 32
    with (
        https_ca_server(identity, identity.ca_cert_path) as port,
        pytest.raises(ConfigError) as info,
    ):
        fetch_and_pin_ca(f"https://127.0.0.1:{port}", wrong, dest, timeout=5)
    assert info.value.message == (
        f"TLS fingerprint mismatch: the server's CA is {identity.ca_fingerprint}, expected {wrong}"
    )
    assert not dest.exists()


def test_fetch_and_pin_ca_served_ca_must_have_issued_the_server_cert(
    identity: TlsIdentity, tmp_path: Path
) -> None:
    """A server handing out a CA it does not use fails the verified second request."""
    decoy = ensure_tls_identity(tmp_path / "decoy", hostname=HOST)
    dest = tmp_path / "ca.pem"
    with (
        https_ca_server(identity, decoy.ca_cert_path) as port,
        pytest.raises(ConfigError, match="issued by the pinned CA"),
    ):
        fetch_and_pin_ca(f"https://127.0.0.1:{port}", decoy.ca_fingerprint, dest, timeout=5)
    assert not dest.exists()


def test_fetch_and_pin_ca_hostname_not_covered(identity: TlsIdentity, tmp_path: Path) -> None:
    """Verification includes the host name: an address not in the certificate is refused."""
    try:
        server = https_ca_server(identity, identity.ca_cert_path, address="127.0.0.2")
        port = server.__enter__()
    except OSError:
        pytest.skip("127.0.0.2 is not a loopback address here")
    try:
        with pytest.raises(ConfigError, match="issued by the pinned CA"):
            fetch_and_pin_ca(
                f"https://127.0.0.2:{port}", identity.ca_fingerprint, tmp_path / "ca.pem", timeout=5
            )
    finally:
        server.__exit__(None, None, None)
    assert not (tmp_path / "ca.pem").exists()


def test_fetch_and_pin_ca_unreachable_or_missing(identity: TlsIdentity, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(Unavailable):
        fetch_and_pin_ca(
            f"https://127.0.0.1:{closed_port}", identity.ca_fingerprint, tmp_path / "x", timeout=5
        )
    with https_ca_server(identity, identity.ca_cert_path) as port, pytest.raises(Unavailable):
        fetch_and_pin_ca(
            f"https://127.0.0.1:{port}/prefix", identity.ca_fingerprint, tmp_path / "x", timeout=5
        )
    assert not (tmp_path / "x").exists()
