"""JSON payloads: exact Go bytes (docs/protocol.md §3.1, §4.5), round trips, malformed input."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hatchway.errors import LocalProtocolError, RemoteProtocolError
from hatchway.protocol.frames import FlagValue
from hatchway.protocol.gojson import dumps
from hatchway.protocol.payloads import (
    AcknowledgeContent,
    AgentHeartbeat,
    AgentSessionState,
    AgentTaskAcknowledge,
    AgentTaskComplete,
    AgentTaskPayload,
    ChannelClosedPayload,
    MGSPayload,
    OpenDataChannelInput,
    SizePayload,
    decode_exit_code,
    decode_flag,
    encode_exit_code,
    encode_flag,
)

ACK_JSON = (
    b'{"AcknowledgedMessageType":"output_stream_data",'
    b'"AcknowledgedMessageId":"dd01e56b-ff48-483e-a508-b5f073f31b16",'
    b'"AcknowledgedMessageSequenceNumber":0,"IsSequentialMessage":true}'
)


def test_acknowledge_matches_vector_2() -> None:
    ack = AcknowledgeContent("output_stream_data", "dd01e56b-ff48-483e-a508-b5f073f31b16", 0)
    assert ack.to_json() == ACK_JSON
    assert len(ACK_JSON) == 176
    assert AcknowledgeContent.from_json(ACK_JSON) == ack


def test_acknowledge_keys_are_case_insensitive() -> None:
    data = b'{"acknowledgedmessagetype":"x","ACKNOWLEDGEDMESSAGESEQUENCENUMBER":7}'
    ack = AcknowledgeContent.from_json(data)
    assert (ack.acknowledged_message_type, ack.acknowledged_sequence_number) == ("x", 7)
    assert ack.acknowledged_message_id == ""


def test_open_data_channel_input_matches_protocol_example() -> None:
    expected = (
        b'{"MessageSchemaVersion":"1.0","RequestId":"11111111-2222-3333-4444-555555555555",'
        b'"TokenValue":"TOKEN","ClientId":"aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",'
        b'"ClientVersion":"1.2.677.0"}'
    )
    message = OpenDataChannelInput(
        token_value="TOKEN",
        request_id="11111111-2222-3333-4444-555555555555",
        client_id="aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
        client_version="1.2.677.0",
    )
    assert message.to_json() == expected
    assert OpenDataChannelInput.from_json(expected) == message


def test_open_data_channel_input_without_client_version() -> None:
    message = OpenDataChannelInput(token_value="T", request_id="r", client_id="c")
    assert b"ClientVersion" not in message.to_json()
    assert OpenDataChannelInput.from_json(message.to_json()) == message
    # AWS's agent variant has ClientInstanceId, which we ignore (docs/protocol.md §3.2).
    agent = b'{"MessageSchemaVersion":"1.0","RequestId":"r","TokenValue":"T",'
    agent += b'"ClientInstanceId":"mi-1","ClientId":""}'
    assert OpenDataChannelInput.from_json(agent).token_value == "T"


def test_size_payload() -> None:
    assert SizePayload(80, 24).to_json() == b'{"cols":80,"rows":24}'
    assert SizePayload.from_json(b'{"cols":80,"rows":24}') == SizePayload(80, 24)
    with pytest.raises(RemoteProtocolError, match="cols"):
        SizePayload.from_json(b'{"cols":-1,"rows":24}')


def test_agent_session_state() -> None:
    state = AgentSessionState("Connected", "s-1")
    assert state.to_json() == b'{"SchemaVersion":1,"SessionState":"Connected","SessionId":"s-1"}'
    assert AgentSessionState.from_json(state.to_json()) == state


def test_channel_closed_round_trip_and_field_order() -> None:
    closed = ChannelClosedPayload("m-1", "2018-01-01", "i-1", "s-1", output="bye")
    assert closed.to_json() == (
        b'{"MessageId":"m-1","CreatedDate":"2018-01-01","DestinationId":"i-1",'
        b'"SessionId":"s-1","MessageType":"channel_closed","SchemaVersion":1,"Output":"bye"}'
    )
    assert ChannelClosedPayload.from_json(closed.to_json()) == closed


def test_channel_closed_from_agent_struct_without_output() -> None:
    closed = ChannelClosedPayload.from_json(b'{"sessionId":"s-1","MessageType":"channel_closed"}')
    assert (closed.session_id, closed.output, closed.message_id) == ("s-1", "", "")


def test_mgs_payload_double_encodes_task() -> None:
    task = AgentTaskPayload(
        session_id="s-1",
        document_name="SSM-SessionManagerRunShell",
        document_content={"schemaVersion": "1.0", "sessionType": "Standard_Stream"},
        parameters={},
        run_as_user="alice",
    )
    mgs = MGSPayload.wrap(task, "aws.ssm.sessionManager.s-1")
    decoded = json.loads(mgs.to_json())
    assert list(decoded) == ["Content", "TaskId", "Topic", "SchemaVersion"]
    assert isinstance(decoded["Content"], str)
    assert json.loads(decoded["Content"])["SessionId"] == "s-1"
    assert mgs.task_id == "s-1"
    again = MGSPayload.from_json(mgs.to_json())
    assert again == mgs
    assert again.unwrap_task() == task


def test_mgs_payload_unwrap_rejects_bad_content() -> None:
    with pytest.raises(RemoteProtocolError, match="AgentTaskPayload"):
        MGSPayload(content="not json", task_id="t", topic="x").unwrap_task()
    with pytest.raises(RemoteProtocolError, match="DocumentContent"):
        MGSPayload(content='{"SessionId":"s"}', task_id="t", topic="x").unwrap_task()


def test_agent_task_complete() -> None:
    done = AgentTaskComplete(task_id="s-1", final_task_status="Success", instance_id="mi-1")
    decoded = json.loads(done.to_json())
    assert list(decoded) == [
        "SchemaVersion",
        "TaskId",
        "Topic",
        "FinalTaskStatus",
        "IsRoutingFailure",
        "AwsAccountId",
        "InstanceId",
        "Output",
        "S3Bucket",
        "S3UrlSuffix",
        "CwlGroup",
        "CwlStream",
        "RetryNumber",
    ]
    assert decoded["Topic"] == "agent_task_complete"
    assert AgentTaskComplete.from_json(done.to_json()) == done


def test_agent_task_acknowledge() -> None:
    ack = AgentTaskAcknowledge(message_id="m-1", task_id="s-1", topic="agent_task_complete")
    assert ack.to_json() == (
        b'{"SchemaVersion":1,"MessageId":"m-1","TaskId":"s-1","Topic":"agent_task_complete"}'
    )
    assert AgentTaskAcknowledge.from_json(ack.to_json()) == ack


def test_agent_heartbeat_round_trip() -> None:
    beat = AgentHeartbeat(
        hostname="web-1",
        platform_type="linux",
        platform_name="Debian GNU/Linux",
        platform_version="12",
        ip_address="10.0.0.5",
        agent_version="0.1.0",
        active_sessions=2,
    )
    assert AgentHeartbeat.from_json(beat.to_json()) == beat
    with pytest.raises(RemoteProtocolError, match="ActiveSessions"):
        AgentHeartbeat.from_json(b'{"Hostname":"h","AgentVersion":"1","ActiveSessions":-1}')


def test_go_escaping() -> None:
    assert dumps({"a": "<b>&\u2028é"}) == '{"a":"\\u003cb\\u003e\\u0026\\u2028é"}'.encode()
    assert dumps({"a": None, "b": []}) == b'{"a":null,"b":[]}'


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "invalid JSON"),
        (b"{", "invalid JSON"),
        (b"\xff\xfe{", "invalid JSON"),
        (b"[]", "expected a JSON object"),
        (b'{"cols":80}', "rows is missing"),
        (b'{"cols":80,"rows":null}', "rows is missing"),
        (b'{"cols":"80","rows":24}', "cols must be an integer"),
        (b'{"cols":80.5,"rows":24}', "cols must be an integer"),
        (b'{"cols":true,"rows":24}', "cols must be an integer"),
        (b'{"cols":NaN,"rows":24}', "invalid JSON"),
        (b'{"cols":4294967296,"rows":24}', "outside"),
    ],
)
def test_malformed_size_payload(data: bytes, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        SizePayload.from_json(data)


@pytest.mark.parametrize(
    ("cls", "data", "match"),
    [
        (AcknowledgeContent, b'{"AcknowledgedMessageType":"x"}', "SequenceNumber is missing"),
        (
            AcknowledgeContent,
            b'{"AcknowledgedMessageType":1,"AcknowledgedMessageSequenceNumber":0}',
            "must be a string",
        ),
        (
            AcknowledgeContent,
            b'{"AcknowledgedMessageType":"x","AcknowledgedMessageSequenceNumber":0'
            b',"IsSequentialMessage":"yes"}',
            "must be a boolean",
        ),
        (ChannelClosedPayload, b'{"MessageId":"m"}', "SessionId is missing"),
        (AgentSessionState, b'{"SessionId":"s"}', "SessionState is missing"),
        (OpenDataChannelInput, b'{"RequestId":"r"}', "TokenValue is missing"),
        (OpenDataChannelInput, b'{"TokenValue":"t","ClientVersion":5}', "ClientVersion"),
        (AgentTaskPayload, b'{"SessionId":"s","DocumentContent":[]}', "must be an object"),
        (AgentTaskComplete, b'{"TaskId":"t","InstanceId":"i"}', "FinalTaskStatus is missing"),
        (AgentTaskAcknowledge, b'{"TaskId":"t"}', "MessageId is missing"),
        (MGSPayload, b'{"Content":{"a":1}}', "Content must be a string"),
    ],
)
def test_malformed_payloads(cls: Any, data: bytes, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        cls.from_json(data)


def test_flags() -> None:
    assert encode_flag(FlagValue.TERMINATE_SESSION) == bytes.fromhex("00000002")
    assert decode_flag(bytes.fromhex("00000003")) == FlagValue.CONNECT_TO_PORT_ERROR
    assert decode_flag(bytes.fromhex("00000063")) == 99
    with pytest.raises(RemoteProtocolError, match="4 bytes"):
        decode_flag(b"\x00\x01")
    with pytest.raises(LocalProtocolError):
        encode_flag(-1)  # type: ignore[arg-type]


@pytest.mark.parametrize("code", [0, 1, 127, 255, -1])
def test_exit_code_round_trip(code: int) -> None:
    assert decode_exit_code(encode_exit_code(code)) == code


def test_exit_code_format_and_errors() -> None:
    assert encode_exit_code(3) == b"EXIT_CODE: 3"
    assert decode_exit_code(b"EXIT_CODE: 42\n") == 42
    for bad in (b"", b"EXIT_CODE:", b"EXIT_CODE: x", b"exit 1"):
        with pytest.raises(RemoteProtocolError, match="exit-code"):
            decode_exit_code(bad)


def test_notice_round_trip_and_endpoint_event() -> None:
    from hatchway.protocol.control import control_frame
    from hatchway.protocol.events import Notice
    from hatchway.protocol.frames import MessageType
    from hatchway.protocol.payloads import NoticeKind, NoticePayload
    from hatchway.protocol.reliability import Endpoint, Role

    notice = NoticePayload(NoticeKind.NODE_AWAY, "the node went away", grace=120)
    assert NoticePayload.from_json(notice.to_json()) == notice
    assert NoticePayload.from_json(b'{"Kind":"Future","Message":"m"}').grace is None
    client = Endpoint(Role.CLIENT, wall_clock=lambda: 1.0)
    frame = control_frame(MessageType.HATCHWAY_NOTICE, notice.to_json(), now=1.0)
    assert client.receive(frame, now=0.0) == [Notice(notice)]


@pytest.mark.parametrize(
    "data", [b"{}", b'{"Kind":1}', b'{"Kind":"NodeAway","Grace":-1}', b'{"Kind":"x","Grace":"5"}']
)
def test_malformed_notice(data: bytes) -> None:
    from hatchway.protocol.payloads import NoticePayload

    with pytest.raises(RemoteProtocolError):
        NoticePayload.from_json(data)
