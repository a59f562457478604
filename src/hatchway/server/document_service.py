"""The document operations, in AWS's shapes: CreateDocument, UpdateDocument,
UpdateDocumentDefaultVersion, GetDocument, DescribeDocument, ListDocuments,
ListDocumentVersions and DeleteDocument (DocumentType ``Session`` only).

Rules, with AWS's error types:

* Names match the model's ``^[a-zA-Z0-9_\\-.]{3,128}$`` (checked by ``validation``); names
  starting ``AWS-``, ``aws``, ``amazon`` or ``amzn`` (any case) are reserved for AWS's own.
* The built-in AWS documents are read-only (``InvalidDocumentOperation``);
  ``SSM-SessionManagerRunShell`` holds the preferences and may be updated, not deleted.
* Content (JSON or YAML, at most :data:`MAX_CONTENT` bytes) is checked against the
  session-document schema (``documentschema``): ``InvalidDocumentContent`` names each field.
* UpdateDocument adds a version after the latest (``DocumentVersion`` must be ``$LATEST`` or
  the latest number); content equal to the latest version's is ``DuplicateDocumentContent``.
  Sessions run a document's default version; the preferences document's latest version applies
  (``server.preferences``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any, Final

from hatchway.errors import (
    InvalidDocument,
    InvalidDocumentContent,
    InvalidDocumentOperation,
    InvalidDocumentVersion,
    InvalidFilterKey,
    MaxDocumentSizeExceeded,
    ValidationError,
)
from hatchway.server.documents import AMAZON, DEFAULT_SHELL_DOCUMENT
from hatchway.server.documentschema import check_content, parse, render
from hatchway.server.pagination import page_request, page_response
from hatchway.server.principal import Principal
from hatchway.store.documents import MAX_VERSIONS, DocumentVersion, content_hash
from hatchway.store.records import Document
from hatchway.store.store import Store

__all__ = ["MAX_CONTENT", "RESERVED_PREFIXES", "DocumentService"]

MAX_CONTENT: Final = 64 * 1024
"""Largest document content in bytes (AWS's quota for documents)."""
RESERVED_PREFIXES: Final = ("aws", "amazon", "amzn")
PLATFORM_TYPES: Final = ["Windows", "Linux", "MacOS"]
_NUMBER: Final = re.compile(r"[1-9][0-9]{0,8}")

Operation = Callable[[Principal, dict[str, Any]], Awaitable[dict[str, Any]]]


class DocumentService:
    """Session documents and their versions, through AWS's document operations."""

    def __init__(self, store: Store, account_id: str, clock: Callable[[], float]) -> None:
        self._store = store
        self._account_id = account_id
        self._clock = clock

    def operations(self) -> dict[str, Operation]:
        """Every operation by name (``server.operations`` makes them ``ssm:<Name>``)."""
        return {
            "CreateDocument": self.create,
            "UpdateDocument": self.update,
            "UpdateDocumentDefaultVersion": self.update_default_version,
            "GetDocument": self.get,
            "DescribeDocument": self.describe,
            "ListDocuments": self.list_documents,
            "ListDocumentVersions": self.list_versions,
            "DeleteDocument": self.delete,
        }

    # ---- changes --------------------------------------------------------------------------

    async def create(self, _: Principal, body: dict[str, Any]) -> dict[str, Any]:
        name: str = body["Name"]
        if name.lower().startswith(RESERVED_PREFIXES):
            raise ValidationError(
                f"Document name {name} is reserved: names starting with AWS, Amazon or AMZN "
                "(any case) are AWS's."
            )
        # AWS takes an absent DocumentType as Command; this server keeps session documents only.
        document_type = body.get("DocumentType", "Session")
        if document_type != "Session":
            raise ValidationError(
                f"This server keeps session documents only: DocumentType must be Session, not "
                f"{document_type} (aws ssm create-document --document-type Session)."
            )
        _refuse_unsupported(body, ("Requires", "Attachments", "Tags", "TargetType"))
        document_format = _format_of(body)
        content: str = body["Content"]
        _check(content, document_format)
        now = self._clock()
        document = Document(
            name=name,
            document_type="Session",
            document_format=document_format,
            content=content,
            owner=self._account_id,
            created_date=now,
            version_created_date=now,
        )
        await self._store.documents.create(document)
        return {"DocumentDescription": _description(document)}

    async def update(self, _: Principal, body: dict[str, Any]) -> dict[str, Any]:
        name: str = body["Name"]
        current = await self._changeable(name)
        _refuse_unsupported(body, ("Attachments", "TargetType"))
        asked = body.get("DocumentVersion", "$LATEST")
        if asked != "$LATEST" and asked != str(current.latest_version):
            raise InvalidDocumentVersion(
                f"Only the latest version ({current.latest_version}) of document {name} can be "
                f"updated, not {asked}; use $LATEST."
            )
        document_format = _format_of(body)
        content: str = body["Content"]
        parsed = _check(content, document_format)
        if name == DEFAULT_SHELL_DOCUMENT and parsed.get("sessionType") != "Standard_Stream":
            raise InvalidDocumentContent(
                f"sessionType: {DEFAULT_SHELL_DOCUMENT} holds the preferences of shell "
                "sessions and stays Standard_Stream"
            )
        version = await self._store.documents.add_version(
            name,
            content,
            document_format,
            self._clock(),
            expected_latest=current.latest_version,
            max_versions=MAX_VERSIONS,
        )
        updated = await self._store.documents.version(name, version)
        if updated is None:  # deleted meanwhile
            raise InvalidDocument(f"Document with name {name} does not exist.")
        return {"DocumentDescription": _description(updated)}

    async def update_default_version(self, _: Principal, body: dict[str, Any]) -> dict[str, Any]:
        name: str = body["Name"]
        await self._changeable(name)
        version = _number(body["DocumentVersion"])
        await self._store.documents.set_default(name, version)
        return {"Description": {"Name": name, "DefaultVersion": str(version)}}

    async def delete(self, _: Principal, body: dict[str, Any]) -> dict[str, Any]:
        name: str = body["Name"]
        await self._changeable(name)
        if name == DEFAULT_SHELL_DOCUMENT:
            raise InvalidDocumentOperation(
                f"{name} holds the Session Manager preferences and cannot be deleted; update it "
                "instead."
            )
        if "DocumentVersion" in body:
            await self._store.documents.delete_version(name, _number(body["DocumentVersion"]))
            return {}
        if not await self._store.documents.delete(name):
            raise InvalidDocument(f"Document with name {name} does not exist.")
        return {}

    # ---- reads ----------------------------------------------------------------------------

    async def get(self, _: Principal, body: dict[str, Any]) -> dict[str, Any]:
        document = await self.at_version(body["Name"], body.get("DocumentVersion"))
        content = document.content
        wanted = body.get("DocumentFormat", document.document_format)
        if wanted not in ("JSON", "YAML"):
            raise ValidationError(f"DocumentFormat {wanted} is not supported (JSON or YAML).")
        if wanted != document.document_format:
            content = render(parse(content, document.document_format), wanted)
        return {
            "Name": document.name,
            "CreatedDate": _created(document),
            "DocumentVersion": str(document.document_version),
            "Status": "Active",
            "Content": content,
            "DocumentType": document.document_type,
            "DocumentFormat": wanted,
        }

    async def describe(self, _: Principal, body: dict[str, Any]) -> dict[str, Any]:
        document = await self.at_version(body["Name"], body.get("DocumentVersion"))
        return {"Document": _description(document)}

    async def list_documents(self, _: Principal, body: dict[str, Any]) -> dict[str, Any]:
        limit, offset = page_request(body, default=50)
        criteria = self._filters(body)
        rows = await self._store.documents.find(limit=limit + 1, offset=offset, **criteria)
        return {
            "DocumentIdentifiers": [_identifier(d) for d in rows[:limit]],
            **page_response(len(rows) > limit, offset + limit),
        }

    async def list_versions(self, _: Principal, body: dict[str, Any]) -> dict[str, Any]:
        name: str = body["Name"]
        if await self._store.documents.get(name) is None:
            raise InvalidDocument(f"Document with name {name} does not exist.")
        limit, offset = page_request(body, default=50)
        rows = await self._store.documents.versions(name, limit=limit + 1, offset=offset)
        return {
            "DocumentVersions": [_version(v) for v in rows[:limit]],
            **page_response(len(rows) > limit, offset + limit),
        }

    async def at_version(self, name: str, version: str | None) -> Document:
        """The document at ``version`` (``$DEFAULT``/absent, ``$LATEST`` or a number).

        Raises:
            InvalidDocument: no such document.
            InvalidDocumentVersion: no such version.
        """
        document = await self._store.documents.get(name)
        if document is None:
            raise InvalidDocument(f"Document with name {name} does not exist.")
        if version in (None, "$DEFAULT"):
            number = document.default_version
        elif version == "$LATEST":
            number = document.latest_version
        else:
            number = _number(str(version))
        found = await self._store.documents.version(name, number)
        if found is None:
            raise InvalidDocumentVersion(f"Document {name} has no version {version}.")
        return found

    # ---- helpers --------------------------------------------------------------------------

    async def _changeable(self, name: str) -> Document:
        document = await self._store.documents.get(name)
        if document is None:
            raise InvalidDocument(f"Document with name {name} does not exist.")
        if document.owner == AMAZON and name != DEFAULT_SHELL_DOCUMENT:
            raise InvalidDocumentOperation(
                f"{name} is one of AWS's documents, which are read-only; create a document of "
                "your own from its content instead."
            )
        return document

    def _filters(self, body: dict[str, Any]) -> dict[str, Any]:
        """ListDocuments' ``Filters`` (Key, Values) and ``DocumentFilterList`` (key, value)."""
        wanted: dict[str, list[str]] = {}
        for item in body.get("Filters", []):
            wanted.setdefault(item.get("Key", ""), []).extend(item.get("Values", []))
        for item in body.get("DocumentFilterList", []):
            key = {"Name": "Name", "Owner": "Owner", "DocumentType": "DocumentType"}.get(
                item["key"], item["key"]
            )
            wanted.setdefault(key, []).append(item["value"])
        criteria: dict[str, Any] = {}
        for key, values in wanted.items():
            if key == "DocumentType":
                criteria["document_types"] = values
            elif key == "Name":
                criteria["name_prefixes"] = values
            elif key == "Owner":
                self._owner_filter(values, criteria)
            else:
                raise InvalidFilterKey(
                    f"The filter key {key} is not supported (DocumentType, Owner, Name)."
                )
        return criteria

    def _owner_filter(self, values: list[str], criteria: dict[str, Any]) -> None:
        if any(v in ("All", "Public") for v in values):
            return
        owners: set[str] = set()
        for value in values:
            if value in ("Self", "Private"):
                owners.add(self._account_id)
            elif value == "Amazon":
                owners.add(AMAZON)
            else:
                owners.add(value)
        criteria["owners"] = owners


def _refuse_unsupported(body: dict[str, Any], members: tuple[str, ...]) -> None:
    for member in members:
        if body.get(member):
            raise ValidationError(f"{member} is not supported for session documents.")


def _format_of(body: dict[str, Any]) -> str:
    document_format = body.get("DocumentFormat", "JSON")
    if document_format not in ("JSON", "YAML"):
        raise ValidationError(
            f"DocumentFormat {document_format} is not supported for session documents "
            "(JSON or YAML)."
        )
    return str(document_format)


def _check(content: str, document_format: str) -> dict[str, Any]:
    size = len(content.encode())
    if size > MAX_CONTENT:
        raise MaxDocumentSizeExceeded(
            f"The content is {size} bytes; a document may have at most {MAX_CONTENT}."
        )
    parsed = parse(content, document_format)
    check_content(parsed)
    return parsed


def _number(text: str) -> int:
    if not _NUMBER.fullmatch(text):
        raise InvalidDocumentVersion(f"{text} is not a document version number.")
    return int(text)


def _created(document: Document) -> float:
    if document.version_created_date is not None:
        return document.version_created_date
    return document.created_date


def _content_of(document: Document) -> dict[str, Any]:
    try:
        return parse(document.content, document.document_format)
    except InvalidDocumentContent:
        return {}  # a stored document is checked when written; describe what can be read


def _default_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def _description(document: Document) -> dict[str, Any]:
    """A ``DocumentDescription`` (DescribeDocument, CreateDocument, UpdateDocument)."""
    content = _content_of(document)
    parameters = []
    raw = content.get("parameters")
    for name, definition in raw.items() if isinstance(raw, dict) else []:
        if not isinstance(definition, dict):
            continue
        parameter = {"Name": name, "Type": str(definition.get("type", "String"))}
        if isinstance(definition.get("description"), str):
            parameter["Description"] = definition["description"]
        if "default" in definition:
            parameter["DefaultValue"] = _default_value(definition["default"])
        parameters.append(parameter)
    out: dict[str, Any] = {
        "Hash": content_hash(document.content),
        "HashType": "Sha256",
        "Name": document.name,
        "Owner": document.owner,
        "CreatedDate": _created(document),
        "Status": "Active",
        "DocumentVersion": str(document.document_version),
        "Parameters": parameters,
        "PlatformTypes": PLATFORM_TYPES,
        "DocumentType": document.document_type,
        "SchemaVersion": str(content.get("schemaVersion", "1.0")),
        "LatestVersion": str(document.latest_version),
        "DefaultVersion": str(document.default_version),
        "DocumentFormat": document.document_format,
    }
    if isinstance(content.get("description"), str):
        out["Description"] = content["description"]
    return out


def _identifier(document: Document) -> dict[str, Any]:
    """A ``DocumentIdentifier`` (ListDocuments)."""
    content = _content_of(document)
    return {
        "Name": document.name,
        "CreatedDate": document.created_date,
        "Owner": document.owner,
        "PlatformTypes": PLATFORM_TYPES,
        "DocumentVersion": str(document.default_version),
        "DocumentType": document.document_type,
        "SchemaVersion": str(content.get("schemaVersion", "1.0")),
        "DocumentFormat": document.document_format,
    }


def _version(version: DocumentVersion) -> dict[str, Any]:
    """A ``DocumentVersionInfo`` (ListDocumentVersions)."""
    return {
        "Name": version.name,
        "DocumentVersion": str(version.version),
        "CreatedDate": version.created_date,
        "IsDefaultVersion": version.is_default,
        "DocumentFormat": version.document_format,
        "Status": "Active",
    }
