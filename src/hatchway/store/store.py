"""The composition of all repositories over one database: what the server is handed."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from hatchway.store.audit import AuditHook, AuditRepository
from hatchway.store.console import ConsoleRepository
from hatchway.store.database import Database, DatabaseLimits, async_url, migrate
from hatchway.store.documents import DocumentRepository
from hatchway.store.events import EventRepository, Outbox
from hatchway.store.identity import IdentityRepository
from hatchway.store.kms import KmsRepository
from hatchway.store.logs import LogRepository
from hatchway.store.policies import PolicyRepository
from hatchway.store.recordings import RecordingRepository
from hatchway.store.repositories import (
    ActivationRepository,
    NodeRepository,
    NonceRepository,
    SessionRepository,
    SettingsRepository,
)


@dataclass(frozen=True)
class Store:
    """All repositories sharing one :class:`Database` (its queues and transaction wrappers)."""

    database: Database
    settings: SettingsRepository
    identity: IdentityRepository
    policies: PolicyRepository
    activations: ActivationRepository
    nodes: NodeRepository
    documents: DocumentRepository
    sessions: SessionRepository
    nonces: NonceRepository
    events: EventRepository
    recordings: RecordingRepository
    audit: AuditRepository
    kms: KmsRepository
    logs: LogRepository
    console: ConsoleRepository

    @classmethod
    def open(
        cls, url: str, *, run_migrations: bool = True, limits: DatabaseLimits | None = None
    ) -> Store:
        """Migrate (unless told not to) and open the database at ``url``.

        ``url`` may name no driver (``postgresql://…``): the async one is chosen
        (:func:`~hatchway.store.database.async_url`). ``limits`` defaults to the chosen limits
        of the URL's backend (:meth:`DatabaseLimits.for_url`).

        Raises:
            ConfigError: ``url`` is not a database URL.
            StoreError: the database cannot be reached or migrated.
        """
        url = async_url(url)
        if run_migrations:
            migrate(url)
        db = Database(url, limits)
        outbox = Outbox()  # events written in the transactions of the changes they report
        db.commit_hook = AuditHook()
        return cls(
            database=db,
            settings=SettingsRepository(db),
            identity=IdentityRepository(db),
            policies=PolicyRepository(db),
            activations=ActivationRepository(db, outbox),
            nodes=NodeRepository(db, outbox),
            documents=DocumentRepository(db),
            sessions=SessionRepository(db, outbox),
            nonces=NonceRepository(db),
            events=EventRepository(db, outbox),
            recordings=RecordingRepository(db),
            audit=AuditRepository(db),
            kms=KmsRepository(db),
            logs=LogRepository(db),
            console=ConsoleRepository(db),
        )

    @property
    def engine(self) -> AsyncEngine:
        """The write engine, for test set-up and tools; repositories go through ``database``."""
        return self.database.engine

    async def close(self) -> None:
        """Let heartbeat and audit batches under way finish, then close every connection."""
        await self.nodes.settle()
        await self.audit.settle()
        await self.database.dispose()
