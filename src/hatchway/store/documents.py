"""Session documents and their versions (AWS's document versioning).

A document row holds its name, type, owner, default and latest version numbers, and the
default version's content (what StartSession runs, read in one query); ``document_versions``
holds every version. Versions are numbered from 1 and only grow: a new version is written with a
conditional ``UPDATE … WHERE latest_version = <what the caller saw>``, so two concurrent
updates cannot both become version *n* (one gets ``Conflict``), on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import and_, delete, false, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from hatchway.errors import (
    Conflict,
    DocumentAlreadyExists,
    DocumentVersionLimitExceeded,
    DuplicateDocumentContent,
    InvalidDocument,
    InvalidDocumentVersion,
)
from hatchway.store import schema as t
from hatchway.store.records import Document
from hatchway.store.repositories import _Repository

__all__ = ["MAX_VERSIONS", "DocumentRepository", "DocumentVersion", "content_hash"]

MAX_VERSIONS = 1000
"""Versions a document may have (AWS's quota)."""


def content_hash(content: str) -> str:
    """The document's ``Hash`` (``HashType`` ``Sha256``): hex SHA-256 of its content."""
    return hashlib.sha256(content.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class DocumentVersion:
    """One version of a document, as ListDocumentVersions lists it."""

    name: str
    version: int
    document_format: str
    content_hash: str
    created_date: float
    is_default: bool


class DocumentRepository(_Repository):
    """Documents, their versions and their default version."""

    async def get(self, name: str) -> Document | None:
        """The document at its default version."""
        rows = await self._fetch(select(t.documents).where(t.documents.c.name == name))
        return _document(rows[0]) if rows else None

    async def version(self, name: str, version: int) -> Document | None:
        """The document at ``version``; None if the document or that version does not exist."""
        d, v = t.documents.c, t.document_versions.c
        stmt = (
            select(
                t.documents,
                v.content.label("v_content"),
                v.document_format.label("v_format"),
                v.created_date.label("v_created"),
            )
            .join(t.document_versions, v.name == d.name)
            .where(d.name == name, v.version == version)
        )
        rows = await self._fetch(stmt)
        if not rows:
            return None
        m = rows[0]._mapping
        return replace(
            _document(rows[0]),
            content=m["v_content"],
            document_format=m["v_format"],
            document_version=version,
            version_created_date=m["v_created"],
        )

    async def find(
        self,
        *,
        limit: int,
        offset: int = 0,
        document_types: Collection[str] | None = None,
        owners: Collection[str] | None = None,
        not_owners: Collection[str] | None = None,
        name_prefixes: Collection[str] | None = None,
    ) -> list[Document]:
        """Documents at their default versions, by name; each filter is "any of these"."""
        c = t.documents.c
        stmt = select(t.documents)
        if document_types is not None:
            stmt = stmt.where(c.document_type.in_(list(document_types)))
        if owners is not None:
            stmt = stmt.where(c.owner.in_(list(owners)))
        if not_owners is not None:
            stmt = stmt.where(c.owner.not_in(list(not_owners)))
        if name_prefixes is not None:
            matches = (c.name.startswith(p, autoescape=True) for p in name_prefixes)
            stmt = stmt.where(or_(false(), *matches))
        stmt = stmt.order_by(c.name).limit(limit).offset(offset)
        return [_document(r) for r in await self._fetch(stmt)]

    async def versions(self, name: str, *, limit: int, offset: int = 0) -> list[DocumentVersion]:
        """The document's versions, oldest first."""
        d, v = t.documents.c, t.document_versions.c
        stmt = (
            select(t.document_versions, d.default_version)
            .join(t.documents, d.name == v.name)
            .where(v.name == name)
            .order_by(v.version)
            .limit(limit)
            .offset(offset)
        )
        return [
            DocumentVersion(
                name=r.name,
                version=r.version,
                document_format=r.document_format,
                content_hash=r.content_hash,
                created_date=r.created_date,
                is_default=r.version == r.default_version,
            )
            for r in await self._fetch(stmt)
        ]

    async def create(self, document: Document) -> None:
        """A new document whose version 1 is ``document``'s content.

        Raises:
            DocumentAlreadyExists: a document has that name.
        """
        try:
            async with self._transaction() as conn:
                await _insert(conn, document)
        except Conflict as exc:
            raise DocumentAlreadyExists(f"Document {document.name} already exists.") from exc

    async def ensure(self, document: Document) -> None:
        """Insert a built-in document if it is missing (never overwrites an edited one)."""
        if await self.get(document.name) is None:
            with contextlib.suppress(Conflict):  # another replica inserted it first
                async with self._transaction() as conn:
                    await _insert(conn, document)

    async def add_version(
        self,
        name: str,
        content: str,
        document_format: str,
        now: float,
        *,
        expected_latest: int,
        max_versions: int = MAX_VERSIONS,
    ) -> int:
        """Add the next version after ``expected_latest``; returns its number.

        Raises:
            InvalidDocument: the document is gone.
            DuplicateDocumentContent: the latest version has this content already.
            DocumentVersionLimitExceeded: the document has ``max_versions`` versions.
            InvalidDocumentVersion: another update made version ``expected_latest + 1`` first.
        """
        digest = content_hash(content)
        d, v = t.documents.c, t.document_versions.c
        async with self._transaction() as conn:
            # Only the latest version counts: going back to an older content is a new version.
            same = await conn.execute(
                select(v.content_hash).where(v.name == name, v.version == expected_latest)
            )
            if same.scalar() == digest:
                raise DuplicateDocumentContent(
                    f"The content is the same as the latest version ({expected_latest}) of "
                    f"document {name}."
                )
            count = (
                await conn.execute(
                    select(func.count()).select_from(t.document_versions).where(v.name == name)
                )
            ).scalar_one()
            if count >= max_versions:
                raise DocumentVersionLimitExceeded(
                    f"Document {name} has {count} versions, the most a document may have; "
                    "delete some (DeleteDocument with DocumentVersion) first."
                )
            new = expected_latest + 1
            changed = await conn.execute(
                update(t.documents)
                .where(d.name == name, d.latest_version == expected_latest)
                .values(latest_version=new)
            )
            if changed.rowcount != 1:
                gone = (await conn.execute(select(d.name).where(d.name == name))).first() is None
                if gone:
                    raise InvalidDocument(f"Document {name} does not exist.")
                raise InvalidDocumentVersion(
                    f"Document {name} changed meanwhile; its latest version is no longer "
                    f"{expected_latest}. Try again."
                )
            await conn.execute(
                insert(t.document_versions).values(
                    name=name,
                    version=new,
                    document_format=document_format,
                    content=content,
                    content_hash=digest,
                    created_date=now,
                )
            )
        return new

    async def set_default(self, name: str, version: int) -> None:
        """Make ``version`` the default (what sessions run).

        Raises:
            InvalidDocument: no such document.
            InvalidDocumentVersion: it has no such version.
        """
        d, v = t.documents.c, t.document_versions.c
        async with self._transaction() as conn:
            row = (
                await conn.execute(
                    select(v.content, v.document_format).where(v.name == name, v.version == version)
                )
            ).first()
            if row is None:
                if (await conn.execute(select(d.name).where(d.name == name))).first() is None:
                    raise InvalidDocument(f"Document {name} does not exist.")
                raise InvalidDocumentVersion(f"Document {name} has no version {version}.")
            await conn.execute(
                update(t.documents)
                .where(d.name == name)
                .values(
                    default_version=version,
                    content=row.content,
                    document_format=row.document_format,
                )
            )

    async def delete(self, name: str) -> bool:
        """Delete the document and every version; False if there was none."""
        async with self._transaction() as conn:
            await conn.execute(
                delete(t.document_versions).where(t.document_versions.c.name == name)
            )
            result = await conn.execute(delete(t.documents).where(t.documents.c.name == name))
            return bool(result.rowcount)

    async def delete_version(self, name: str, version: int) -> None:
        """Delete one version that is not the default.

        Raises:
            InvalidDocument: no such document.
            InvalidDocumentVersion: no such version, or it is the default version.
        """
        d, v = t.documents.c, t.document_versions.c
        async with self._transaction() as conn:
            row = (await conn.execute(select(d.default_version).where(d.name == name))).first()
            if row is None:
                raise InvalidDocument(f"Document {name} does not exist.")
            if row.default_version == version:
                raise InvalidDocumentVersion(
                    f"Version {version} is the default version of document {name}; make "
                    "another version the default first, or delete the whole document."
                )
            result = await conn.execute(
                delete(t.document_versions).where(and_(v.name == name, v.version == version))
            )
            if not result.rowcount:
                raise InvalidDocumentVersion(f"Document {name} has no version {version}.")


async def _insert(conn: AsyncConnection, document: Document) -> None:
    await conn.execute(
        insert(t.documents).values(
            name=document.name,
            document_type=document.document_type,
            document_format=document.document_format,
            content=document.content,
            owner=document.owner,
            created_date=document.created_date,
            default_version=1,
            latest_version=1,
        )
    )
    await conn.execute(
        insert(t.document_versions).values(
            name=document.name,
            version=1,
            document_format=document.document_format,
            content=document.content,
            content_hash=content_hash(document.content),
            created_date=document.created_date,
        )
    )


def _document(row: Any) -> Document:
    m = row._mapping
    return Document(
        name=m["name"],
        document_type=m["document_type"],
        document_format=m["document_format"],
        content=m["content"],
        owner=m["owner"],
        created_date=m["created_date"],
        default_version=m["default_version"],
        latest_version=m["latest_version"],
        document_version=m["default_version"],
        version_created_date=None,
    )
