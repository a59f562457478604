"""Control-channel messages: one decoder for both ends, every field a node sends checked."""

from __future__ import annotations

import uuid

import pytest

from hatchway.errors import RemoteProtocolError
from hatchway.protocol.control import control_frame
from hatchway.protocol.controlchannel import (
    MAX_CONTROL_MESSAGE,
    MAX_SESSIONS_PER_NODE,
    EndSession,
    FloodMeter,
    Heartbeat,
    LogBudget,
    Sender,
    StartSession,
    TaskAcknowledge,
    TaskComplete,
    TaskStatus,
    decode,
    encode,
    parse_exit_code,
)
from hatchway.protocol.frames import MessageType
from hatchway.protocol.gojson import dumps
from hatchway.protocol.payloads import AgentTaskPayload

NOW = 1_700_000_000.0


def beat_frame(**fields: object) -> bytes:
    doc: dict[str, object] = {
        "Hostname": "web-1",
        "PlatformType": "Linux",
        "PlatformName": "Debian GNU/Linux",
        "PlatformVersion": "12",
        "IPAddress": "10.0.0.5",
        "AgentVersion": "0.1.0",
        "ActiveSessions": 0,
    }
    doc.update(fields)
    return control_frame(MessageType.AGENT_HEARTBEAT, dumps(doc), now=NOW)


def complete_frame(output: str, status: str = "Success") -> bytes:
    doc = {
        "SchemaVersion": 1,
        "TaskId": "admin-0123456789abcdef0",
        "Topic": "agent_task_complete",
        "FinalTaskStatus": status,
        "InstanceId": "mi-0123456789abcdef0",
        "Output": output,
    }
    return control_frame(MessageType.AGENT_TASK_COMPLETE, dumps(doc), now=NOW)


def test_every_message_round_trips_between_the_two_ends() -> None:
    beat = Heartbeat.create(
        hostname="web-1",
        platform_type="Linux",
        platform_name="Debian",
        platform_version="12",
        ip_address="10.0.0.5",
        agent_version="0.1.0",
        session_ids=["admin-b", "admin-a"],
    )
    assert beat.session_ids == ("admin-a", "admin-b") and beat.active_sessions == 2
    assert decode(encode(beat, now=NOW), sender=Sender.AGENT) == beat

    done = TaskComplete.create(
        task_id="admin-a", status=TaskStatus.SUCCESS, instance_id="mi-0", output="0"
    )
    got = decode(encode(done, now=NOW), sender=Sender.AGENT)
    assert got == done and isinstance(got, TaskComplete) and got.exit_code == 0

    ack = TaskAcknowledge(done.message_id, "admin-a")
    assert decode(encode(ack, now=NOW), sender=Sender.SERVER) == ack

    task = AgentTaskPayload("admin-a", "SSM-SessionManagerRunShell", {"sessionType": "x"}, {})
    assert decode(encode(StartSession(task), now=NOW), sender=Sender.SERVER) == StartSession(task)

    end = EndSession("admin-a", "mi-0", "bye")
    assert decode(encode(end, now=NOW), sender=Sender.SERVER) == end


def test_each_end_accepts_only_what_its_peer_may_send() -> None:
    task = AgentTaskPayload("admin-a", "d", {}, {})
    with pytest.raises(RemoteProtocolError, match="unexpected control message"):
        decode(encode(StartSession(task), now=NOW), sender=Sender.AGENT)
    with pytest.raises(RemoteProtocolError, match="unexpected control message"):
        decode(beat_frame(), sender=Sender.SERVER)


def test_terminal_escapes_and_fake_rows_in_heartbeat_text_are_neutralised() -> None:
    hostile = "\x1b[2J\x1b]52;c;ZXZpbA==\x07web\n| mi-fake | Online |\u202e"
    got = decode(beat_frame(Hostname=hostile, PlatformName=hostile), sender=Sender.AGENT)
    assert isinstance(got, Heartbeat)
    for text in (got.hostname, got.platform_name):
        assert text.isprintable()
        assert "\x1b" not in text and "\n" not in text and "\x07" not in text
        assert "\u202e" not in text
    assert got.hostname.startswith("\ufffd[2J")


def test_long_text_is_cut_and_an_oversized_frame_is_refused() -> None:
    got = decode(beat_frame(Hostname="h" * 5000, PlatformVersion="9" * 500), sender=Sender.AGENT)
    assert isinstance(got, Heartbeat)
    assert len(got.hostname) == 253 and len(got.platform_version) == 64
    with pytest.raises(RemoteProtocolError, match="too large"):
        decode(beat_frame(Hostname="h" * MAX_CONTROL_MESSAGE), sender=Sender.AGENT)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("IPAddress", "not an address"),
        ("IPAddress", "fe80::1%eth0\x1b[2J"),
        ("IPAddress", "10.0.0.5\n"),
        ("AgentVersion", "1.0 \x1b[31mred"),
        ("AgentVersion", "x" * 40),
        ("ActiveSessions", -1),
        ("ActiveSessions", 2**40),
        ("ActiveSessions", MAX_SESSIONS_PER_NODE + 1),
        ("ActiveSessions", "2"),
        ("SessionIds", ["ok", "has space"]),
        ("SessionIds", [1]),
        ("SessionIds", [f"s-{i}" for i in range(MAX_SESSIONS_PER_NODE + 1)]),
        ("Hostname", 7),
    ],
)
def test_structured_heartbeat_fields_must_parse(field: str, value: object) -> None:
    with pytest.raises(RemoteProtocolError):
        decode(beat_frame(**{field: value}), sender=Sender.AGENT)


def test_addresses_are_normalised_and_may_be_empty() -> None:
    for given, stored in (
        ("", ""),
        ("FE80:0::1", "fe80::1"),
        ("10.0.0.5", "10.0.0.5"),
    ):
        got = decode(beat_frame(IPAddress=given), sender=Sender.AGENT)
        assert isinstance(got, Heartbeat) and got.ip_address == stored


@pytest.mark.parametrize(
    ("output", "code"),
    [
        ("0", 0),
        ("-1", -1),
        (" 127 ", 127),
        ("2147483647", 2**31 - 1),
        ("-2147483648", -(2**31)),
        ("²", None),
        ("٣", None),
        (str(2**70), None),
        ("2147483648", None),
        ("1e3", None),
        ("+1", None),
        ("", None),
        ("terminated by the server", None),
    ],
)
def test_exit_codes_are_strict_int32(output: str, code: int | None) -> None:
    assert parse_exit_code(output) == code
    got = decode(complete_frame(output), sender=Sender.AGENT)
    assert isinstance(got, TaskComplete) and got.exit_code == code


def test_task_complete_carries_the_frame_message_id_and_a_known_status() -> None:
    mid = uuid.uuid4()
    done = TaskComplete.create(
        task_id="admin-a", status=TaskStatus.FAILED, instance_id="mi-0", message_id=mid
    )
    got = decode(encode(done, now=NOW), sender=Sender.AGENT)
    assert isinstance(got, TaskComplete) and got.message_id == mid
    with pytest.raises(RemoteProtocolError, match="FinalTaskStatus"):
        decode(complete_frame("0", status="Pwned\x1b[2J"), sender=Sender.AGENT)
    got = decode(complete_frame("a\x1b[2J" + "x" * 10_000), sender=Sender.AGENT)
    assert isinstance(got, TaskComplete) and got.output.isprintable() and len(got.output) == 2048


def test_acknowledgements_must_name_a_message_id() -> None:
    payload = dumps({"SchemaVersion": 1, "MessageId": "nope", "TaskId": "t", "Topic": "x"})
    frame = control_frame(MessageType.AGENT_TASK_ACKNOWLEDGE, payload, now=NOW)
    with pytest.raises(RemoteProtocolError, match="not a UUID"):
        decode(frame, sender=Sender.SERVER)


def test_flood_meter_counts_a_sliding_window() -> None:
    meter = FloodMeter(limit=3, window=10.0)
    assert not any(meter.hit(t) for t in (0.0, 1.0, 2.0))
    assert not meter.hit(10.5)  # the first one left the window
    assert meter.hit(11.0)  # four within 10 s
    assert meter.total == 5


def test_log_budget_writes_a_burst_then_one_summary_per_period() -> None:
    budget = LogBudget(burst=2, period=10.0)
    decisions = [budget.admit(t) for t in (0.0, 0.1, 0.2, 0.3, 0.4)]
    assert decisions == [(True, 0), (True, 0), (False, 0), (False, 0), (False, 0)]
    assert budget.admit(10.5) == (True, 3)  # the next period reports what was left out
    assert budget.admit(10.6) == (True, 0)


def test_connection_reports_round_trip_and_are_bounded() -> None:
    from hatchway.protocol.controlchannel import (
        MAX_CONNECTIONS_PER_REPORT,
        ConnectionRecord,
        ConnectionReport,
    )

    ok = ConnectionRecord.create(
        destination="db.internal:5432", opened=1.5, closed=2.25, bytes_in=10, bytes_out=2**40
    )
    refused = ConnectionRecord.create(
        destination="10.0.0.9:22", opened=3.0, closed=3.0, bytes_in=0, bytes_out=0,
        error="connection refused",
    )  # fmt: skip
    report = ConnectionReport.create("admin-a", [ok, refused])
    assert decode(encode(report, now=NOW), sender=Sender.AGENT) == report
    with pytest.raises(RemoteProtocolError, match="unexpected control message"):
        decode(encode(report, now=NOW), sender=Sender.SERVER)
    hostile = ConnectionRecord.create(
        destination="\x1b[2Jx" * 200, opened=1.0, closed=None, bytes_in=0, bytes_out=0,
        error="\x07" * 999,
    )  # fmt: skip
    assert "\x1b" not in hostile.destination and len(hostile.destination) == 300
    assert len(hostile.error) == 256 and hostile.closed is None
    with pytest.raises(RemoteProtocolError):
        ConnectionReport.create("admin-a", [ok] * (MAX_CONNECTIONS_PER_REPORT + 1))
    with pytest.raises(RemoteProtocolError):
        ConnectionRecord.create(destination="x", opened=1, closed=1, bytes_in=-1, bytes_out=0)
    negative = report.to_json().replace(b'"BytesIn":10', b'"BytesIn":-10')
    with pytest.raises(RemoteProtocolError):
        ConnectionReport.from_json(negative)
