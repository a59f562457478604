"""First start of several replicas against one PostgreSQL database (server/clusterinit.py):
one account, one admin with one key, one TLS identity presented by every replica."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from sqlalchemy.engine import make_url

from hatchway.auth.secretbox import SecretBox, load_or_create_master_key
from hatchway.auth.sigv4 import Credentials
from hatchway.client.config import load_profile
from hatchway.errors import ConfigError
from hatchway.server.app import Running, build_server, serve
from hatchway.server.bootstrap import ensure_admin
from hatchway.server.certificates import (
    ensure_tls_identity,
    fingerprint_of_pem,
    new_tls_material,
)
from hatchway.server.clusterinit import (
    MASTER_KEY_CHECK,
    TLS_IDENTITY,
    first_start,
    seal,
    shared_tls_identity,
)
from hatchway.server.settings import ServerSettings
from hatchway.store.database import ClusterLock, migrate, sqlite_url
from hatchway.store.store import Store
from hatchway.transport.apiclient import ApiClient
from tests.store.conftest import fresh_pg_database, run

START_TIMEOUT = 60.0
TLS_FILES = ("ca.pem", "server.pem", "server.key")


@pytest.fixture
def empty_pg() -> Iterator[str]:
    """A new database with no schema, given as operators write it (``postgresql://``)."""
    with fresh_pg_database() as url:
        yield make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass
class Replica:
    """One ``serve`` running in a thread of its own (its own event loop, like a process)."""

    settings: ServerSettings
    running: Running | None = None
    error: BaseException | None = None
    loop: asyncio.AbstractEventLoop | None = None
    stop: asyncio.Event | None = None

    def file(self, name: str) -> bytes:
        return (self.settings.data_dir / name).read_bytes()

    def api(self) -> ApiClient:
        p = load_profile(str(self.settings.admin_profile_path), "default")
        return ApiClient(
            p.endpoint,
            region=p.region,
            credentials=Credentials(p.access_key_id, p.secret_access_key),
            ca_file=p.ca_file,
        )

    def presented_certificate(self) -> bytes:
        """The DER certificate this replica presents, verified against its own ``ca.pem``."""
        assert self.running is not None
        context = ssl.create_default_context(cafile=str(self.running.ca_file))
        address = ("127.0.0.1", self.running.port)
        with (
            socket.create_connection(address, timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der


@contextmanager
def replicas(settings: Sequence[ServerSettings]) -> Iterator[list[Replica]]:
    """Start one ``serve`` per settings at the same moment; yield them once all are ready."""
    started = [Replica(s) for s in settings]
    barrier = threading.Barrier(len(started))
    done = [threading.Event() for _ in started]

    async def main(replica: Replica, ready: threading.Event) -> None:
        replica.loop = asyncio.get_running_loop()
        replica.stop = asyncio.Event()

        def on_ready(running: Running) -> None:
            replica.running = running
            ready.set()

        await serve(replica.settings, replica.stop, on_ready=on_ready)

    def thread_main(replica: Replica, ready: threading.Event) -> None:
        barrier.wait()
        try:
            asyncio.run(main(replica, ready))
        except BaseException as exc:  # reported to the test below
            replica.error = exc
        finally:
            ready.set()

    threads = [
        threading.Thread(target=thread_main, args=(r, e), daemon=True)
        for r, e in zip(started, done, strict=True)
    ]
    for thread in threads:
        thread.start()
    try:
        for replica, ready in zip(started, done, strict=True):
            assert ready.wait(START_TIMEOUT), "a replica did not start in time"
            assert replica.error is None and replica.running is not None, replica.error
        yield started
    finally:
        for replica in started:
            if replica.loop is not None and replica.stop is not None:
                with suppress(RuntimeError):  # its loop is closed already (it failed)
                    replica.loop.call_soon_threadsafe(replica.stop.set)
        for thread in threads:
            thread.join(START_TIMEOUT)


def replica_settings(url: str, key: Path, root: Path, count: int) -> list[ServerSettings]:
    return [
        ServerSettings(
            data_dir=root / f"replica-{i}", port=0, database_url=url, master_key_file=key
        )
        for i in range(count)
    ]


def cluster_state(url: str) -> tuple[str | None, list[str], list[tuple[str, str]]]:
    """The account id, the users' names and the admin's keys (id, status), read afterwards."""

    async def read() -> tuple[str | None, list[str], list[tuple[str, str]]]:
        store = Store.open(url)
        try:
            users = await store.identity.users()
            admin = await store.identity.user_by_name("admin")
            assert admin is not None
            keys = await store.identity.keys_of(admin.user_id)
            key_ids = [(k.access_key_id, k.status) for k in keys]
            return await store.settings.get("account_id"), [u.name for u in users], key_ids
        finally:
            await store.close()

    return run(read())


def test_three_replicas_start_at_once_on_an_empty_database(empty_pg: str, tmp_path: Path) -> None:
    key = tmp_path / "shared" / "master.key"  # not created yet: the replicas race for it too
    settings = replica_settings(empty_pg, key, tmp_path, 3)
    with replicas(settings) as first:
        for name in TLS_FILES:
            assert len({r.file(name) for r in first}) == 1, f"{name} differs between replicas"
        for replica in first:
            assert not (replica.settings.data_dir / "ca.key").exists()  # only in the database
        assert len({r.presented_certificate() for r in first}) == 1
        assert len({r.running.ca_fingerprint for r in first if r.running}) == 1
        arns = {r.api().call("GetUser", {}, service="Hatchway")["User"]["Arn"] for r in first}
        assert len(arns) == 1 and arns.pop().endswith(":user/admin")
        profiles = {
            (p.access_key_id, p.secret_access_key)
            for p in (load_profile(str(r.settings.admin_profile_path), None) for r in first)
        }
        assert len(profiles) == 1
        files = {name: first[0].file(name) for name in TLS_FILES}
    account, users, keys = cluster_state(empty_pg)
    assert account is not None and len(account) == 12
    assert users == ["admin"]
    assert len(keys) == 1 and keys[0][1] == "Active"
    assert profiles == {(keys[0][0], profiles.copy().pop()[1])}

    # A second start reuses everything: same account, admin, key and TLS files.
    with replicas(settings) as second:
        for replica in second:
            assert {name: replica.file(name) for name in TLS_FILES} == files
            p = load_profile(str(replica.settings.admin_profile_path), None)
            assert {(p.access_key_id, p.secret_access_key)} == profiles
            replica.api().call("DescribeInstanceInformation", {})
    assert cluster_state(empty_pg) == (account, users, keys)


def test_a_replica_with_another_master_key_is_refused(empty_pg: str, tmp_path: Path) -> None:
    (first,) = replica_settings(empty_pg, tmp_path / "a.key", tmp_path, 1)
    with replicas([first]):
        pass
    other = ServerSettings(
        data_dir=tmp_path / "other",
        port=0,
        database_url=empty_pg,
        master_key_file=tmp_path / "b.key",
    )
    with pytest.raises(ConfigError, match="same master key"):
        run(build_server(other))
    # Without TLS too (nothing else encrypted is read before the admin's key).
    no_tls = dataclasses.replace(other, tls=False)
    with pytest.raises(ConfigError, match="same master key"):
        run(build_server(no_tls))


# ---- the stored identity ---------------------------------------------------------------------


@asynccontextmanager
async def shared_store(url: str) -> AsyncIterator[Store]:
    migrate(url)
    store = Store.open(url, run_migrations=False)
    try:
        yield store
    finally:
        await store.close()


async def identity_for(
    store: Store, box: SecretBox, data_dir: Path, sans: Sequence[str] = (), hostname: str = "h1"
) -> str:
    """Run the TLS step of first start as a replica does; return the stored value."""
    async with store.database.exclusive(ClusterLock.FIRST_START):
        await shared_tls_identity(store, box, data_dir, extra_sans=sans, hostname=hostname)
    stored = await store.settings.get(TLS_IDENTITY)
    assert stored is not None
    return stored


def names_of(pem: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(name.value) for name in san}


def test_a_name_the_stored_certificate_lacks_reissues_it_for_every_name(
    empty_pg: str, tmp_path: Path
) -> None:
    box = SecretBox(bytes(32))
    a, b = tmp_path / "a", tmp_path / "b"

    async def main() -> None:
        async with shared_store(empty_pg) as store:
            stored = await identity_for(store, box, a, ["a.example"], hostname="host-a")
            assert "PRIVATE KEY" not in stored  # both keys are encrypted
            assert {"a.example", "host-a", "127.0.0.1", "localhost"} <= names_of(a / "server.pem")
            ca = (a / "ca.pem").read_bytes()

            # Replica b asks for names not covered: re-issued for the union, under the same CA
            # (pinned clients see no change).
            await identity_for(store, box, b, ["b.example", "10.0.0.2"], hostname="host-b")
            both = {"a.example", "host-a", "b.example", "host-b", "10.0.0.2"}
            assert both <= names_of(b / "server.pem")
            assert (b / "ca.pem").read_bytes() == ca
            assert (b / "server.pem").read_bytes() != (a / "server.pem").read_bytes()

            # Replica a's next start takes the new one as it is (it covers a's names too).
            again = await identity_for(store, box, a, ["a.example"], hostname="host-a")
            for name in TLS_FILES:
                assert (a / name).read_bytes() == (b / name).read_bytes()
            assert await identity_for(store, box, b, ["b.example"], hostname="host-b") == again

    run(main())


def test_a_ca_already_in_the_data_dir_becomes_the_clusters(empty_pg: str, tmp_path: Path) -> None:
    """A server that ran alone on this database kept its CA in files: clients pin it, so the
    first replica stores that one instead of making a new one."""
    alone = ensure_tls_identity(tmp_path / "alone", hostname="h1")
    box = SecretBox(bytes(32))

    async def main() -> None:
        async with shared_store(empty_pg) as store:
            await identity_for(store, box, tmp_path / "alone")
            await identity_for(store, box, tmp_path / "next")

    run(main())
    assert fingerprint_of_pem(tmp_path / "next" / "ca.pem") == alone.ca_fingerprint
    for name in TLS_FILES:
        assert (tmp_path / "next" / name).read_bytes() == (tmp_path / "alone" / name).read_bytes()


def test_a_stored_key_moved_onto_another_certificate_is_refused(
    empty_pg: str, tmp_path: Path
) -> None:
    """Each key is bound to its certificate: the server key of another identity (same master
    key) put in place of this one's does not decrypt."""
    box = SecretBox(bytes(32))
    other = json.loads(seal(box, new_tls_material(hostname="x")))

    async def main() -> None:
        async with shared_store(empty_pg) as store:
            stored = await identity_for(store, box, tmp_path / "a")
            swapped = {**json.loads(stored), "server_key": other["server_key"]}
            assert await store.settings.replace(TLS_IDENTITY, stored, json.dumps(swapped))
            with pytest.raises(ConfigError, match="cannot be decrypted"):
                await identity_for(store, box, tmp_path / "b")

    run(main())


def test_sqlite_keeps_the_tls_identity_in_files(tmp_path: Path) -> None:
    """The embedded default is unchanged: files (the CA key too) in the data directory, none
    of it in the database."""
    settings = ServerSettings(data_dir=tmp_path / "data", port=0)
    box = SecretBox(load_or_create_master_key(settings.master_key_path))

    async def main() -> None:
        store = Store.open(sqlite_url(settings.db_path))
        try:
            assert not store.database.shared
            started = await first_start(store, box, settings, 0.0)
            assert started.tls is not None
            assert await store.settings.get(TLS_IDENTITY) is None
            assert len(started.account_id) == 12
        finally:
            await store.close()

    run(main())
    assert {p.name for p in settings.data_dir.iterdir()} >= {"ca.key", *TLS_FILES}


def test_an_installation_older_than_the_check_is_checked_against_the_admins_key(
    empty_pg: str, tmp_path: Path
) -> None:
    """A database set up before the master-key check: a wrong key is refused before the check
    value would make it the installation's; the right one then stores the check."""
    right, wrong = SecretBox(bytes(32)), SecretBox(bytes([1]) * 32)
    settings = ServerSettings(data_dir=tmp_path / "d", port=0, tls=False, database_url=empty_pg)

    async def main() -> None:
        async with shared_store(empty_pg) as store:
            await ensure_admin(store, right, "admin", 0.0)
            with pytest.raises(ConfigError, match="same master key"):
                await first_start(store, wrong, settings, 0.0)
            assert await store.settings.get(MASTER_KEY_CHECK) is None
            await first_start(store, right, settings, 0.0)
            assert await store.settings.get(MASTER_KEY_CHECK) is not None
            with pytest.raises(ConfigError, match="same master key"):
                await first_start(store, wrong, settings, 0.0)

    run(main())
