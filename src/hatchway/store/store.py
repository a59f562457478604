"""The composition of all repositories over one engine: what the server is handed."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from hatchway.store.database import migrate, open_engine
from hatchway.store.repositories import (
    ActivationRepository,
    DocumentRepository,
    IdentityRepository,
    NodeRepository,
    NonceRepository,
    SessionRepository,
    SettingsRepository,
)


@dataclass(frozen=True)
class Store:
    """All repositories sharing one engine."""

    engine: AsyncEngine
    settings: SettingsRepository
    identity: IdentityRepository
    activations: ActivationRepository
    nodes: NodeRepository
    documents: DocumentRepository
    sessions: SessionRepository
    nonces: NonceRepository

    @classmethod
    def open(cls, url: str, *, run_migrations: bool = True) -> Store:
        """Migrate (unless told not to) and open the database at ``url``."""
        if run_migrations:
            migrate(url)
        engine = open_engine(url)
        return cls(
            engine=engine,
            settings=SettingsRepository(engine),
            identity=IdentityRepository(engine),
            activations=ActivationRepository(engine),
            nodes=NodeRepository(engine),
            documents=DocumentRepository(engine),
            sessions=SessionRepository(engine),
            nonces=NonceRepository(engine),
        )

    async def close(self) -> None:
        await self.engine.dispose()
