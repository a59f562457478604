"""The documents repository's contract (versions, default, races, filters), on SQLite and
PostgreSQL (the ``url`` fixture)."""

from __future__ import annotations

import asyncio

import pytest

from hatchway.errors import (
    DocumentAlreadyExists,
    DocumentVersionLimitExceeded,
    DuplicateDocumentContent,
    InvalidDocument,
    InvalidDocumentVersion,
)
from hatchway.store.documents import content_hash
from hatchway.store.records import Document
from hatchway.store.store import Store
from tests.store.conftest import with_store


def document(name: str = "Greet", content: str = '{"v": 1}', owner: str = "123") -> Document:
    return Document(
        name=name,
        document_type="Session",
        document_format="JSON",
        content=content,
        owner=owner,
        created_date=10.0,
    )


def test_versions_grow_and_the_default_moves(url: str) -> None:
    async def body(store: Store) -> None:
        docs = store.documents
        await docs.create(document())
        with pytest.raises(DocumentAlreadyExists):
            await docs.create(document())
        assert await docs.add_version("Greet", "v: 2", "YAML", 20.0, expected_latest=1) == 2
        with pytest.raises(DuplicateDocumentContent):
            await docs.add_version("Greet", "v: 2", "YAML", 21.0, expected_latest=2)
        head = await docs.get("Greet")
        assert head is not None
        assert (head.default_version, head.latest_version, head.content) == (1, 2, '{"v": 1}')
        second = await docs.version("Greet", 2)
        assert second is not None
        assert (second.content, second.document_format, second.document_version) == (
            "v: 2",
            "YAML",
            2,
        )
        assert second.version_created_date == 20.0
        assert await docs.version("Greet", 3) is None
        await docs.set_default("Greet", 2)
        head = await docs.get("Greet")
        assert head is not None and (head.content, head.document_format) == ("v: 2", "YAML")
        with pytest.raises(InvalidDocumentVersion):
            await docs.set_default("Greet", 5)
        with pytest.raises(InvalidDocument):
            await docs.set_default("Nope", 1)
        versions = await docs.versions("Greet", limit=10)
        assert [(v.version, v.is_default) for v in versions] == [(1, False), (2, True)]
        assert versions[0].content_hash == content_hash('{"v": 1}')
        with pytest.raises(InvalidDocumentVersion):
            await docs.delete_version("Greet", 2)  # the default
        await docs.delete_version("Greet", 1)
        assert [v.version for v in await docs.versions("Greet", limit=10)] == [2]
        assert await docs.delete("Greet")
        assert await docs.get("Greet") is None and not await docs.delete("Greet")
        assert await docs.versions("Greet", limit=10) == []

    with_store(url, body)


def test_concurrent_updates_make_distinct_versions(url: str) -> None:
    async def body(store: Store) -> None:
        await store.documents.create(document())

        async def update(i: int) -> int | str:
            try:
                return await store.documents.add_version(
                    "Greet", f'{{"v": {i + 10}}}', "JSON", 30.0, expected_latest=1
                )
            except InvalidDocumentVersion:
                return "lost"

        results = await asyncio.gather(*(update(i) for i in range(4)))
        assert sorted(results, key=str) == [2, "lost", "lost", "lost"]
        head = await store.documents.get("Greet")
        assert head is not None and head.latest_version == 2

    with_store(url, body)


def test_version_limit_and_missing_documents(url: str) -> None:
    async def body(store: Store) -> None:
        await store.documents.create(document())
        await store.documents.add_version("Greet", "a: 1", "YAML", 1.0, expected_latest=1)
        with pytest.raises(DocumentVersionLimitExceeded):
            await store.documents.add_version(
                "Greet", "a: 2", "YAML", 1.0, expected_latest=2, max_versions=2
            )
        with pytest.raises(InvalidDocument):
            await store.documents.add_version("Nope", "a: 2", "YAML", 1.0, expected_latest=1)

    with_store(url, body)


def test_find_filters_and_pages(url: str) -> None:
    async def body(store: Store) -> None:
        for name, owner in (("AWS-One", "Amazon"), ("Mine_1", "123"), ("Mine_2", "123")):
            await store.documents.create(document(name, owner=owner))
        docs = store.documents
        assert [d.name for d in await docs.find(limit=10)] == ["AWS-One", "Mine_1", "Mine_2"]
        assert [d.name for d in await docs.find(limit=1, offset=1)] == ["Mine_1"]
        assert [d.name for d in await docs.find(limit=10, owners={"Amazon"})] == ["AWS-One"]
        mine = await docs.find(limit=10, name_prefixes=["Mine_"])
        assert [d.name for d in mine] == ["Mine_1", "Mine_2"]
        # ``_`` is a literal in a prefix, not LIKE's wildcard.
        assert await docs.find(limit=10, name_prefixes=["Mine%"]) == []
        assert await docs.find(limit=10, document_types=["Command"]) == []

    with_store(url, body)
