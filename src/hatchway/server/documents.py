"""Built-in session documents (AWS's schema and document names), shipped as package data."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from hatchway.store.records import Document

DEFAULT_SHELL_DOCUMENT = "SSM-SessionManagerRunShell"


def builtin_documents(now: float) -> list[Document]:
    """Every JSON document in ``server/documents/`` as a ``Document`` record."""
    folder = resources.files("hatchway.server") / "documents"
    docs = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            content = entry.read_text(encoding="utf-8")
            json.loads(content)  # a broken package should fail loudly at start
            docs.append(
                Document(
                    name=entry.name[: -len(".json")],
                    document_type="Session",
                    document_format="JSON",
                    content=content,
                    owner="Amazon",
                    created_date=now,
                )
            )
    return docs


def parse_content(document: Document) -> dict[str, Any]:
    content: dict[str, Any] = json.loads(document.content)
    return content
