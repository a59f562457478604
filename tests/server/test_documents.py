"""Session documents: parameters checked, defaults filled in, placeholders substituted
(docs/protocol.md §8.6), and StartSession running every built-in document."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hatchway.errors import InvalidDocument, ValidationError
from hatchway.protocol.payloads import AgentTaskPayload
from hatchway.server.documents import builtin_documents, resolve
from hatchway.server.principal import Principal
from hatchway.server.sessions import SessionService
from hatchway.server.settings import ServerSettings
from hatchway.store.records import Document
from tests.fakes import FakeClock, MemorySessions

BUILTIN = {d.name: json.loads(d.content) for d in builtin_documents(0.0)}
NODE = "mi-0123456789abcdef0"
ALICE = Principal("u1", "alice", "123456789012", "HWAKALICE")

PORT_PATTERN = BUILTIN["AWS-StartPortForwardingSession"]["parameters"]["portNumber"][
    "allowedPattern"
]


def test_every_session_type_has_a_builtin_document() -> None:
    assert {d["sessionType"] for d in BUILTIN.values()} == {
        "Standard_Stream",
        "InteractiveCommands",
        "NonInteractiveCommands",
        "Port",
    }


# -- resolve: table-driven -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "parameters", "properties", "resolved"),
    [
        pytest.param(
            "AWS-StartPortForwardingSession",
            {},
            {"portNumber": "80", "type": "LocalPortForwarding", "localPortNumber": "0"},
            {"portNumber": ["80"], "localPortNumber": ["0"]},
            id="port-defaults",
        ),
        pytest.param(
            "AWS-StartPortForwardingSession",
            {"portNumber": ["8080"], "localPortNumber": ["65535"]},
            {"portNumber": "8080", "type": "LocalPortForwarding", "localPortNumber": "65535"},
            {"portNumber": ["8080"], "localPortNumber": ["65535"]},
            id="port-given",
        ),
        pytest.param(
            "AWS-StartPortForwardingSessionToRemoteHost",
            {"host": ["db.internal"], "portNumber": ["5432"]},
            {
                "portNumber": "5432",
                "type": "LocalPortForwarding",
                "localPortNumber": "0",
                "host": "db.internal",
            },
            {"host": ["db.internal"], "portNumber": ["5432"], "localPortNumber": ["0"]},
            id="remote-host",
        ),
        pytest.param(
            "AWS-StartSSHSession",
            {},
            {"portNumber": "22"},
            {"portNumber": ["22"]},
            id="ssh-default-no-type",
        ),
        pytest.param(
            "AWS-StartNonInteractiveCommand",
            {"command": ["sh -c 'echo {{ command }}; exit 42'"]},
            {
                os: {"commands": "sh -c 'echo {{ command }}; exit 42'", "runAsElevated": False}
                for os in ("linux", "windows", "macos")
            },
            {"command": ["sh -c 'echo {{ command }}; exit 42'"]},
            id="values-are-not-substituted-again",
        ),
        pytest.param(
            "AWS-StartInteractiveCommand",
            {"command": [""]},
            {os: {"commands": "", "runAsElevated": False} for os in ("linux", "windows", "macos")},
            {"command": [""]},
            id="empty-command-allowed-without-pattern",
        ),
        pytest.param("SSM-SessionManagerRunShell", {}, None, {}, id="shell-no-parameters"),
    ],
)
def test_resolve(
    document: str,
    parameters: dict[str, list[str]],
    properties: dict[str, Any] | None,
    resolved: dict[str, list[str]],
) -> None:
    original = json.dumps(BUILTIN[document], sort_keys=True)
    content, values = resolve(BUILTIN[document], parameters, document)
    assert content.get("properties") == properties
    assert values == resolved
    # Only properties change; the input document is untouched.
    assert {k: v for k, v in content.items() if k != "properties"} == {
        k: v for k, v in BUILTIN[document].items() if k != "properties"
    }
    assert json.dumps(BUILTIN[document], sort_keys=True) == original


@pytest.mark.parametrize(
    ("document", "parameters", "message"),
    [
        pytest.param(
            "AWS-StartPortForwardingSession",
            {"portNumber": ["99999"]},
            f'Parameter "portNumber" is "99999", which does not match the allowed pattern '
            f"{PORT_PATTERN}",
            id="pattern",
        ),
        pytest.param(
            "AWS-StartPortForwardingSession",
            {"portNumber": ["0"]},
            'Parameter "portNumber" is "0"',
            id="port-zero-not-a-destination",
        ),
        pytest.param(
            "AWS-StartPortForwardingSession",
            {"portNumber": ["80\n"]},
            'Parameter "portNumber" is "80\n"',
            id="trailing-newline-is-not-a-full-match",
        ),
        pytest.param(
            "AWS-StartSSHSession",
            {"portNumber": ["22", "23"]},
            'Parameter "portNumber" is of type String and takes one value, not 2',
            id="string-takes-one-value",
        ),
        pytest.param(
            "AWS-StartSSHSession",
            {"portNumber": []},
            'Parameter "portNumber" is of type String and takes one value, not 0',
            id="string-needs-a-value",
        ),
        pytest.param(
            "AWS-StartSSHSession",
            {"host": ["x.example"]},
            'Parameter "host" is not defined in document AWS-StartSSHSession',
            id="unknown",
        ),
        pytest.param(
            "SSM-SessionManagerRunShell",
            {"command": ["ls"]},
            'Parameter "command" is not defined',
            id="shell-takes-none",
        ),
        pytest.param(
            "AWS-StartPortForwardingSessionToRemoteHost",
            {},
            'Parameter "host" is required in document AWS-StartPortForwardingSessionToRemoteHost',
            id="required",
        ),
        pytest.param(
            "AWS-StartPortForwardingSessionToRemoteHost",
            {"host": ["a;b.example"]},
            'Parameter "host" is "a;b.example", which does not match',
            id="host-pattern",
        ),
        pytest.param(
            "AWS-StartInteractiveCommand",
            {},
            'Parameter "command" is required',
            id="command-required",
        ),
    ],
)
def test_resolve_refuses(document: str, parameters: dict[str, list[str]], message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        resolve(BUILTIN[document], parameters, document)
    assert message in refused.value.message
    assert refused.value.code == "ValidationException"


CUSTOM: dict[str, Any] = {
    "schemaVersion": "1.0",
    "sessionType": "InteractiveCommands",
    "description": "{{ mode }} stays here",
    "parameters": {
        "mode": {"type": "String", "allowedValues": ["fast", "slow"], "default": "fast"},
        "hosts": {"type": "StringList", "allowedPattern": "[a-z]+", "default": ["a", "b"]},
    },
    "properties": {
        "linux": {
            "commands": "run --{{mode}} {{ hosts }} {{ssm:/secret}} {{ undefined }}",
            "list": "{{ hosts }}",
            "nested": [{"x": "{{  mode  }}"}, 3, True, None],
        }
    },
}


def test_custom_document_allowed_values_string_lists_and_other_placeholders() -> None:
    content, values = resolve(CUSTOM, {"mode": ["slow"]})
    assert values == {"mode": ["slow"], "hosts": ["a", "b"]}
    assert content["properties"] == {
        "linux": {
            "commands": "run --slow a,b {{ssm:/secret}} {{ undefined }}",
            "list": ["a", "b"],
            "nested": [{"x": "slow"}, 3, True, None],
        }
    }
    assert content["description"] == "{{ mode }} stays here"


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"mode": ["medium"]}, 'Parameter "mode" is "medium", which is not one of the allowed'),
        ({"hosts": ["ok", "NOT"]}, 'Parameter "hosts" is "NOT", which does not match'),
    ],
)
def test_custom_document_refusals(parameters: dict[str, list[str]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        resolve(CUSTOM, parameters)


def test_a_string_list_takes_any_number_of_values() -> None:
    assert resolve(CUSTOM, {"hosts": []})[1]["hosts"] == []


# -- StartSession ----------------------------------------------------------------------------


@dataclass
class _Documents:
    by_name: dict[str, Document] = field(
        default_factory=lambda: {d.name: d for d in builtin_documents(0.0)}
    )

    async def get(self, name: str) -> Document | None:
        return self.by_name.get(name)

    async def version(self, name: str, version: int) -> Document | None:
        found = self.by_name.get(name)
        return found if found is not None and found.document_version == version else None


@dataclass
class _Nodes:
    async def get(self, instance_id: str) -> object | None:
        return object() if instance_id == NODE else None


@dataclass
class _Store:
    documents: _Documents = field(default_factory=_Documents)
    nodes: _Nodes = field(default_factory=_Nodes)
    sessions: MemorySessions = field(default_factory=MemorySessions)


@dataclass
class _Control:
    tasks: list[AgentTaskPayload] = field(default_factory=list)

    def is_connected(self, node_id: str) -> bool:
        return node_id == NODE

    async def reachable(self, node_id: str) -> bool:
        return self.is_connected(node_id)

    async def start_session(self, node_id: str, task: AgentTaskPayload) -> None:
        self.tasks.append(task)


def _service() -> tuple[SessionService, _Store, _Control]:
    store, control = _Store(), _Control()
    service = SessionService(
        store,  # type: ignore[arg-type]
        ServerSettings(data_dir=Path("/nonexistent")),
        FakeClock(),
        control,  # type: ignore[arg-type]
    )
    return service, store, control


@pytest.mark.asyncio
@pytest.mark.parametrize("document", sorted(BUILTIN))
async def test_start_session_runs_every_builtin_document(document: str) -> None:
    service, store, control = _service()
    given: dict[str, list[str]] = {}
    if document == "AWS-StartPortForwardingSessionToRemoteHost":
        given = {"host": ["db.internal"], "portNumber": ["5432"]}
    elif "Command" in document:
        given = {"command": ["echo hi"]}
    body = {"Target": NODE, "DocumentName": document, "Parameters": given}
    answer = await service.start(ALICE, body, "wss://gw.example/v1/data-channel/")
    assert answer["SessionId"].startswith("alice-")
    [task] = control.tasks
    expected_content, expected_parameters = resolve(BUILTIN[document], given, document)
    assert task.document_name == document
    assert task.document_content == expected_content
    assert task.parameters == expected_parameters
    assert "{{" not in json.dumps(task.document_content.get("properties", {}))
    assert store.sessions.rows[answer["SessionId"]].parameters == expected_parameters
    # What travels to the agent decodes to the same.
    assert AgentTaskPayload.from_json(task.to_json()) == task


@pytest.mark.asyncio
async def test_start_session_refuses_bad_parameters_before_any_session_exists() -> None:
    service, store, control = _service()
    body = {
        "Target": NODE,
        "DocumentName": "AWS-StartPortForwardingSession",
        "Parameters": {"portNumber": ["99999"]},
    }
    with pytest.raises(ValidationError, match='Parameter "portNumber" is "99999"'):
        await service.start(ALICE, body, "wss://gw.example/")
    assert control.tasks == [] and store.sessions.rows == {}


@pytest.mark.asyncio
async def test_start_session_refuses_an_unknown_session_type() -> None:
    service, store, control = _service()
    odd = Document("Odd", "Session", "JSON", json.dumps({"sessionType": "Telepathy"}), "me", 0.0)
    store.documents.by_name["Odd"] = odd
    with pytest.raises(InvalidDocument, match="Telepathy"):
        await service.start(ALICE, {"Target": NODE, "DocumentName": "Odd"}, "wss://gw.example/")
    assert control.tasks == []
