"""First start, once for every replica sharing a database: what a server sets up before it
serves, made by whichever replica comes first and reused by the others.

A first start makes the installation's account id, the built-in documents and policies, the
TLS identity (a CA and a server certificate) and the administrator with its access key. When
several replicas start at once against one empty PostgreSQL database, exactly one of each must
come out of it:

* Schema migrations run under their own advisory lock (``store.database.migrate``).
* Every replica must be given the same master key: the first one stores a value encrypted
  under it (:data:`MASTER_KEY_CHECK`), and a replica that cannot decrypt it refuses to start.
* Everything else runs under :attr:`ClusterLock.FIRST_START` (``Database.exclusive``): the
  replicas take turns, and each finds what the ones before it made. The steps are also safe
  without it (``set_if_absent``, inserts that lose a race with ``Conflict`` and then read the
  winner), except the admin's access key ("no active key, then make one"), which is why the
  lock is taken.
* The TLS identity lives in the database, so that every replica presents the same certificate
  under the same CA (clients pin one CA): one ``server_settings`` value, :data:`TLS_IDENTITY`,
  JSON with the certificates in PEM and both private keys encrypted under the master key
  (:class:`SecretBox`, each bound to a context naming the key and its certificate's SHA-256).
  Every replica writes ``ca.pem``, ``server.pem`` and ``server.key`` into its data directory
  from it (never ``ca.key``), so TLS contexts and the admin profile's ``ca_file`` work as with
  one server. A replica asked for names the stored certificate does not cover (its host name,
  a ``--tls-san``), or finding it near expiry, re-issues it under the lock with the union of
  the names and stores it; the replicas already running present the new one from their next
  start (it is signed by the same CA, so clients notice nothing).

On SQLite (the embedded default: one process, its data directory) the lock is nothing and the
TLS identity stays in files, exactly as before (``certificates.ensure_tls_identity``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hatchway.auth.secretbox import SecretBox
from hatchway.errors import ConfigError, CorruptData, StoreError
from hatchway.server.bootstrap import AdminCredentials, ensure_account_id, ensure_admin
from hatchway.server.documents import builtin_documents
from hatchway.server.settings import ServerSettings
from hatchway.store.database import ClusterLock
from hatchway.store.store import Store

if TYPE_CHECKING:  # certificates (x509) is imported only when TLS is on: start-up time
    from hatchway.server.certificates import TlsIdentity, TlsMaterial

__all__ = [
    "MASTER_KEY_CHECK",
    "TLS_IDENTITY",
    "FirstStart",
    "admin_credentials",
    "check_master_key",
    "first_start",
    "shared_tls_identity",
]

log = logging.getLogger(__name__)

TLS_IDENTITY = "tls_identity"
"""The ``server_settings`` key holding the shared TLS identity."""
MASTER_KEY_CHECK = "master_key_check"
"""The ``server_settings`` key holding a value encrypted under the installation's master key."""
_CHECK_PLAINTEXT = b"hatchway master key"
_WRONG_MASTER_KEY = (
    "this master key is not the one the installation in this database was set up with: "
    "every replica must be given the same master key (--master-key-file)"
)
_FORMAT = 1
_RENEW_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class FirstStart:
    """What first start gives the server: its account id and, with TLS, its identity."""

    account_id: str
    tls: TlsIdentity | None


async def first_start(
    store: Store, box: SecretBox, settings: ServerSettings, now: float
) -> FirstStart:
    """Make (or find) the account id, the built-in documents and the TLS identity.

    Runs at every start, under the first-start lock when the database is shared.

    Raises:
        ConfigError: the TLS files or the stored identity cannot be used (see
            :func:`shared_tls_identity`).
        StoreError: the database failed.
    """
    async with store.database.exclusive(ClusterLock.FIRST_START):
        if store.database.shared:
            await check_master_key(store, box, settings.admin_user)
        account_id = await ensure_account_id(store)
        for document in builtin_documents(now):
            await store.documents.ensure(document)
        identity: TlsIdentity | None = None
        if settings.tls:
            if store.database.shared:
                identity = await shared_tls_identity(
                    store, box, settings.data_dir, extra_sans=settings.tls_sans
                )
            else:
                from hatchway.server.certificates import ensure_tls_identity

                identity = ensure_tls_identity(settings.data_dir, extra_sans=settings.tls_sans)
    return FirstStart(account_id, identity)


async def check_master_key(store: Store, box: SecretBox, admin_name: str) -> None:
    """Refuse to start with another master key than the installation's.

    The first server stores a value encrypted under its master key (:data:`MASTER_KEY_CHECK`);
    every later one must decrypt it. Without this, a replica given a key of its own (each
    ``DIR/master.key`` by default) would start and then fail on the first secret it reads. On
    a database set up before the check existed, the key must first decrypt the secrets of
    ``admin_name``'s access keys.

    Raises:
        ConfigError: this master key is not the one the installation was set up with.
    """
    stored = await store.settings.get(MASTER_KEY_CHECK)
    if stored is None:
        # A database set up before the check existed: the admin's secret says whether this is
        # its key, before the check value makes this key the installation's for good.
        await _check_against_admin_key(store, box, admin_name)
        mine = box.encrypt(_CHECK_PLAINTEXT, context=MASTER_KEY_CHECK.encode())
        stored = await store.settings.set_if_absent(MASTER_KEY_CHECK, mine)
    try:
        box.decrypt(stored, context=MASTER_KEY_CHECK.encode())
    except CorruptData as exc:
        raise ConfigError(_WRONG_MASTER_KEY) from exc


async def _check_against_admin_key(store: Store, box: SecretBox, admin_name: str) -> None:
    admin = await store.identity.user_by_name(admin_name)
    for key in await store.identity.keys_of(admin.user_id) if admin is not None else []:
        try:
            box.decrypt(key.secret_encrypted, context=key.access_key_id.encode())
        except CorruptData as exc:
            raise ConfigError(_WRONG_MASTER_KEY) from exc


async def admin_credentials(
    store: Store, box: SecretBox, name: str, now: float
) -> AdminCredentials:
    """The administrator's credentials, the user and its key made if missing (under the
    first-start lock: two replicas never both make a user or a key)."""
    async with store.database.exclusive(ClusterLock.FIRST_START):
        return await ensure_admin(store, box, name, now)


async def shared_tls_identity(
    store: Store,
    box: SecretBox,
    data_dir: Path,
    *,
    extra_sans: Sequence[str] = (),
    hostname: str | None = None,
    now: datetime | None = None,
) -> TlsIdentity:
    """The TLS identity stored in the database, made or renewed if needed, installed as files
    in ``data_dir``. Call it under :attr:`ClusterLock.FIRST_START`.

    With nothing stored yet, a CA already in ``data_dir`` (a server that ran alone on this
    database before: its clients pin that CA) is stored, its server certificate renewed first
    if needed, like :func:`~hatchway.server.certificates.ensure_tls_identity` would; else a new
    CA and certificate are made.

    Raises:
        ConfigError: the stored identity cannot be decrypted with this master key (replicas
            were given different ones) or is corrupt, its CA has expired, the certificate must
            be re-issued without a CA key, or ``data_dir`` is not writable.
        StoreError: the database failed.
    """
    from hatchway.server.certificates import (
        CA_CERT_FILE,
        ensure_tls_identity,
        install_tls_material,
        new_tls_material,
        read_tls_material,
        renew_tls_material,
    )

    options: dict[str, Any] = {"extra_sans": extra_sans, "hostname": hostname, "now": now}
    for _ in range(_RENEW_ATTEMPTS):
        stored = await store.settings.get(TLS_IDENTITY)
        if stored is None:
            if (data_dir / CA_CERT_FILE).exists():
                ensure_tls_identity(data_dir, **options)
                material, origin = read_tls_material(data_dir), f"the files in {data_dir}"
            else:
                material, origin = new_tls_material(**options), "a new CA"
            won = await store.settings.set_if_absent(TLS_IDENTITY, seal(box, material))
            material = unseal(box, won)
            log.info(
                "stored the cluster's TLS identity from %s (CA SHA-256 %s)",
                origin,
                material.ca_fingerprint,
            )
            return install_tls_material(data_dir, material)
        material = unseal(box, stored)
        renewed = renew_tls_material(material, **options)
        if renewed is None:
            return install_tls_material(data_dir, material)
        material, reason = renewed
        if await store.settings.replace(TLS_IDENTITY, stored, seal(box, material)):
            log.info(
                "re-issued the cluster's server certificate (%s), now for %s; replicas already "
                "running present it from their next start",
                reason,
                ", ".join(material.names()),
            )
            return install_tls_material(data_dir, material)
        # Changed meanwhile (only a server outside the lock could): look again.
    raise StoreError("the stored TLS identity kept changing while it was being renewed")


def _key_context(name: str, certificate: bytes) -> bytes:
    """A private key's ciphertext is bound to its name and its certificate: it cannot be
    moved onto another certificate, or swapped with the other key, unnoticed."""
    return f"hatchway tls {name} {hashlib.sha256(certificate).hexdigest()}".encode()


def seal(box: SecretBox, material: TlsMaterial) -> str:
    """The stored form of ``material``: JSON, the keys encrypted under the master key."""
    ca_key = material.ca_key
    return json.dumps(
        {
            "format": _FORMAT,
            "ca_cert": material.ca_cert.decode("ascii"),
            "ca_key": None
            if ca_key is None
            else box.encrypt(ca_key, context=_key_context("ca.key", material.ca_cert)),
            "server_cert": material.server_cert.decode("ascii"),
            "server_key": box.encrypt(
                material.server_key, context=_key_context("server.key", material.server_cert)
            ),
        },
        sort_keys=True,
    )


def unseal(box: SecretBox, stored: str) -> TlsMaterial:
    """Parse and decrypt what :func:`seal` made.

    Raises:
        ConfigError: it cannot be decrypted with this master key, or it is not what
            :func:`seal` makes.
    """
    from hatchway.server.certificates import TlsMaterial

    try:
        data = json.loads(stored)
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError("unknown format")
        ca_cert = str(data["ca_cert"]).encode("ascii")
        server_cert = str(data["server_cert"]).encode("ascii")
        sealed_ca_key, sealed_server_key = data["ca_key"], str(data["server_key"])
    except (ValueError, KeyError, TypeError, UnicodeError) as exc:
        raise ConfigError(
            f"the TLS identity stored in the database ({TLS_IDENTITY}) is corrupt: "
            f"{exc.__class__.__name__}"
        ) from exc
    try:
        ca_key = (
            None
            if sealed_ca_key is None
            else box.decrypt(str(sealed_ca_key), context=_key_context("ca.key", ca_cert))
        )
        server_key = box.decrypt(sealed_server_key, context=_key_context("server.key", server_cert))
    except CorruptData as exc:
        raise ConfigError(
            f"the TLS identity stored in the database cannot be decrypted: {_WRONG_MASTER_KEY}"
        ) from exc
    return TlsMaterial(
        ca_cert=ca_cert, ca_key=ca_key, server_cert=server_cert, server_key=server_key
    )
