"""Control-channel messages for both ends, checked and bounded (docs/protocol.md §10).

The server and the agent both turn control frames into the typed messages below with
:func:`decode` and back with :func:`encode`; neither parses a control payload anywhere else.
Each end accepts only what its peer may send (:class:`Sender`): the agent sends heartbeats and
task completions, the server session starts, session ends and acknowledgements.

A node is untrusted input (docs/protocol.md §10.7): every field it sends is bounded and checked
here, before anything stores or prints it. Free text (host name, platform, output) keeps
printable characters only — control characters, escape sequences and bidirectional overrides
become U+FFFD — and is cut to a documented length; structured fields (address, version, counts,
ids, exit code) must parse exactly or the whole message is refused. A refused message raises
:class:`~hatchway.errors.RemoteProtocolError`; :class:`FloodMeter` and :class:`LogBudget` help
the receiver count such messages and keep its log readable.

Sans-I/O: time comes in as ``now``; bytes go in and out.
"""

from __future__ import annotations

import collections
import ipaddress
import json
import re
import uuid
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Final

from hatchway.errors import RemoteProtocolError
from hatchway.protocol.control import control_frame
from hatchway.protocol.frames import MessageType, decode_frame
from hatchway.protocol.gojson import JsonObject, loads_object
from hatchway.protocol.payloads import (
    AgentHeartbeat,
    AgentTaskAcknowledge,
    AgentTaskComplete,
    AgentTaskPayload,
    ChannelClosedPayload,
    MGSPayload,
)

__all__ = [
    "AGENT_GENERATION_HEADER",
    "MAX_CONNECTIONS_PER_REPORT",
    "MAX_CONTROL_MESSAGE",
    "MAX_CONTROL_PAYLOAD",
    "MAX_SESSIONS_PER_NODE",
    "ConnectionRecord",
    "ConnectionReport",
    "ControlMessage",
    "EndSession",
    "FloodMeter",
    "Heartbeat",
    "LogBudget",
    "Sender",
    "StartSession",
    "TaskAcknowledge",
    "TaskComplete",
    "TaskStatus",
    "decode",
    "encode",
    "parse_exit_code",
    "printable",
]

#: The signed header of a control-channel upgrade that names the agent process's generation of
#: its state directory: the highest generation owns the node (docs/protocol.md §10.3).
AGENT_GENERATION_HEADER: Final = "X-Hatchway-Agent-Generation"
#: Largest control payload either end accepts: AWS's agent caps its replies at 120 000 bytes
#: (docs/protocol.md §13.2), and nothing Hatchway sends comes near it.
MAX_CONTROL_PAYLOAD: Final = 120_000
#: Largest control-channel WebSocket message: one frame (120-byte header plus payload), rounded
#: up to 128 KiB. The data channel's 1 MiB limit does not apply here.
MAX_CONTROL_MESSAGE: Final = 128 * 1024
#: Most sessions one agent runs at once; its heartbeat lists them all (docs/protocol.md §13.1).
MAX_SESSIONS_PER_NODE: Final = 1000

# Lengths in characters, after sanitising (docs/protocol.md §10.7).
HOSTNAME_MAX: Final = 253  # a DNS name
PLATFORM_TYPE_MAX: Final = 32
PLATFORM_NAME_MAX: Final = 128
PLATFORM_VERSION_MAX: Final = 64
AGENT_VERSION_MAX: Final = 32
OUTPUT_MAX: Final = 2048
TOPIC_MAX: Final = 64
DESTINATION_MAX: Final = 300  # host:port, a DNS name and a port
CONNECTION_ERROR_MAX: Final = 256
#: Connections one ``hatchway_connections`` message reports at most (its JSON stays ~20 KB).
MAX_CONNECTIONS_PER_REPORT: Final = 100
_BYTES_MAX: Final = 2**53  # what a JSON number holds exactly
_MS_MAX: Final = 253_402_300_799_000  # 9999-12-31, in milliseconds

#: ``1.2.3``, ``3.3.1802.0``, ``0.1.0rc1``, ``1.0.0+local.2`` — never free text.
_AGENT_VERSION: Final = re.compile(
    r"[0-9]{1,9}(?:\.[0-9]{1,9}){0,3}(?:[-+.]?[0-9A-Za-z.+-]{1,20})?"
)
#: Session ids are ``<user>-<random>`` (docs/protocol.md §2.2): printable ASCII without spaces.
_SESSION_ID: Final = re.compile(r"[\x21-\x7e]{1,96}")
#: An exit status as our agent writes it: decimal ASCII, no sign but ``-``, no spaces inside.
_EXIT_CODE: Final = re.compile(r"-?[0-9]{1,10}")
_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1
_REPLACEMENT: Final = "\ufffd"


class Sender(Enum):
    """Which end sent a control frame: decides which messages are legal."""

    AGENT = "agent"
    SERVER = "server"


class TaskStatus(StrEnum):
    """``FinalTaskStatus`` of ``agent_task_complete`` (docs/protocol.md §10.5)."""

    SUCCESS = "Success"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


def printable(text: str, limit: int) -> str:
    """``text`` with every non-printable character replaced by U+FFFD, cut to ``limit``.

    "Printable" is :meth:`str.isprintable`: it excludes C0/C1 controls (so ESC, BEL, CR, LF and
    with them every terminal escape sequence), format characters such as bidirectional
    overrides, separators other than the ASCII space, surrogates and unassigned code points.
    """
    if len(text) > limit:
        text = text[:limit]
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _REPLACEMENT for c in text)


def parse_exit_code(output: str) -> int | None:
    """The exit status in a task's ``Output``: a decimal int32, or None.

    Strict on purpose: ``str.isdigit`` accepts ``²`` (which ``int`` refuses) and ``int`` accepts
    any size, so neither may decide what reaches the database's integer column.
    """
    text = output.strip(" ")
    if _EXIT_CODE.fullmatch(text) is None:
        return None
    value = int(text)
    return value if _INT32_MIN <= value <= _INT32_MAX else None


def _session_id(value: str, what: str) -> str:
    if _SESSION_ID.fullmatch(value) is None:
        raise RemoteProtocolError(f"{what} {value[:40]!r} is not a valid session id")
    return value


# ---- messages ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """``agent_heartbeat`` (agent → server, docs/protocol.md §10.7), every field checked.

    Build one with :meth:`create`, which sanitises free text and checks the rest, so the agent
    never sends what the server would refuse.
    """

    hostname: str
    platform_type: str
    platform_name: str
    platform_version: str
    ip_address: str
    agent_version: str
    active_sessions: int
    #: The sessions the agent runs, sorted: the server ends those it thinks active but that the
    #: node no longer has (after a reconnect).
    session_ids: tuple[str, ...] = ()

    @classmethod
    def create(
        cls,
        *,
        hostname: str,
        platform_type: str,
        platform_name: str,
        platform_version: str,
        ip_address: str,
        agent_version: str,
        session_ids: tuple[str, ...] | list[str] | frozenset[str] = (),
        active_sessions: int | None = None,
    ) -> Heartbeat:
        """A checked heartbeat; ``active_sessions`` defaults to the number of ``session_ids``.

        Raises:
            RemoteProtocolError: a structured field is invalid (bad address, version or id, or
                more than :data:`MAX_SESSIONS_PER_NODE` sessions).
        """
        ids = tuple(sorted(set(session_ids)))
        count = len(ids) if active_sessions is None else active_sessions
        if len(ids) > MAX_SESSIONS_PER_NODE or not 0 <= count <= MAX_SESSIONS_PER_NODE:
            raise RemoteProtocolError(
                f"heartbeat reports {max(len(ids), count)} sessions; the limit is "
                f"{MAX_SESSIONS_PER_NODE}"
            )
        for sid in ids:
            _session_id(sid, "heartbeat SessionIds entry")
        return cls(
            hostname=printable(hostname, HOSTNAME_MAX),
            platform_type=printable(platform_type, PLATFORM_TYPE_MAX),
            platform_name=printable(platform_name, PLATFORM_NAME_MAX),
            platform_version=printable(platform_version, PLATFORM_VERSION_MAX),
            ip_address=_ip_address(ip_address),
            agent_version=_agent_version(agent_version),
            active_sessions=count,
            session_ids=ids,
        )

    def to_json(self) -> bytes:
        """The ``agent_heartbeat`` payload."""
        return AgentHeartbeat(
            hostname=self.hostname,
            platform_type=self.platform_type,
            platform_name=self.platform_name,
            platform_version=self.platform_version,
            ip_address=self.ip_address,
            agent_version=self.agent_version,
            active_sessions=self.active_sessions,
            session_ids=self.session_ids,
        ).to_json()

    @classmethod
    def _from_payload(cls, beat: AgentHeartbeat) -> Heartbeat:
        return cls.create(
            hostname=beat.hostname,
            platform_type=beat.platform_type,
            platform_name=beat.platform_name,
            platform_version=beat.platform_version,
            ip_address=beat.ip_address,
            agent_version=beat.agent_version,
            session_ids=beat.session_ids,
            active_sessions=beat.active_sessions,
        )


def _ip_address(value: str) -> str:
    """A literal IPv4 or IPv6 address (normalised, without a zone) or ``""``."""
    if value == "":
        return ""
    if len(value) > 45 or "%" in value:
        raise RemoteProtocolError(f"heartbeat IPAddress {value[:48]!r} is not an IP address")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError as exc:
        raise RemoteProtocolError(
            f"heartbeat IPAddress {value[:48]!r} is not an IP address"
        ) from exc


def _agent_version(value: str) -> str:
    if len(value) > AGENT_VERSION_MAX or _AGENT_VERSION.fullmatch(value) is None:
        raise RemoteProtocolError(f"heartbeat AgentVersion {value[:40]!r} is not a version")
    return value


@dataclass(frozen=True, slots=True)
class TaskComplete:
    """``agent_task_complete`` (agent → server, docs/protocol.md §10.5).

    ``message_id`` is the frame's MessageId, which the acknowledgement names; ``exit_code`` is
    :func:`parse_exit_code` of the output (None unless it is a decimal int32).
    """

    task_id: str
    final_task_status: TaskStatus
    instance_id: str
    output: str = ""
    message_id: uuid.UUID = field(default_factory=uuid.uuid4)
    topic: str = MessageType.AGENT_TASK_COMPLETE.value

    @property
    def exit_code(self) -> int | None:
        return parse_exit_code(self.output)

    @classmethod
    def create(
        cls,
        *,
        task_id: str,
        status: TaskStatus,
        instance_id: str,
        output: str = "",
        message_id: uuid.UUID | None = None,
    ) -> TaskComplete:
        """A checked completion; ``output`` is sanitised and cut to :data:`OUTPUT_MAX`."""
        return cls(
            task_id=_session_id(task_id, "TaskId"),
            final_task_status=status,
            instance_id=printable(instance_id, 64),
            output=printable(output, OUTPUT_MAX),
            message_id=message_id or uuid.uuid4(),
        )


@dataclass(frozen=True, slots=True)
class TaskAcknowledge:
    """``agent_task_acknowledge`` (server → agent): ``message_id`` names the completion."""

    message_id: uuid.UUID
    task_id: str
    topic: str = MessageType.AGENT_TASK_COMPLETE.value


@dataclass(frozen=True, slots=True)
class StartSession:
    """``interactive_shell`` (server → agent, docs/protocol.md §10.4)."""

    task: AgentTaskPayload
    topic: str = "aws.ssm.startSession"


@dataclass(frozen=True, slots=True)
class EndSession:
    """``channel_closed`` on the control channel (server → agent, docs/protocol.md §10.6)."""

    session_id: str
    node_id: str = ""
    output: str = ""


@dataclass(frozen=True, slots=True)
class ConnectionRecord:
    """One TCP connection a port session carried (agent's view).

    ``destination`` is ``host:port`` as dialled; times are epoch seconds (``closed`` is None
    while open); ``bytes_in`` went from the destination to the client, ``bytes_out`` the other
    way; ``error`` is empty for a clean close, else why it failed ("connection refused").
    """

    destination: str
    opened: float
    closed: float | None
    bytes_in: int
    bytes_out: int
    error: str = ""

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "Destination": self.destination,
            "OpenedDate": int(self.opened * 1000),
            "BytesIn": self.bytes_in,
            "BytesOut": self.bytes_out,
        }
        if self.closed is not None:
            out["ClosedDate"] = int(self.closed * 1000)
        if self.error:
            out["Error"] = self.error
        return out

    @classmethod
    def from_dict(cls, raw: object) -> ConnectionRecord:
        if not isinstance(raw, dict):
            raise RemoteProtocolError("hatchway_connections: each connection must be an object")
        obj = JsonObject(raw, "hatchway_connections connection")
        closed = obj.get_int("ClosedDate", -1, low=-1, high=_MS_MAX)
        return cls.create(
            destination=obj.get_str("Destination"),
            opened=obj.get_int("OpenedDate", low=0, high=_MS_MAX) / 1000,
            closed=None if closed < 0 else closed / 1000,
            bytes_in=obj.get_int("BytesIn", low=0, high=_BYTES_MAX),
            bytes_out=obj.get_int("BytesOut", low=0, high=_BYTES_MAX),
            error=obj.get_str("Error", ""),
        )

    @classmethod
    def create(
        cls,
        *,
        destination: str,
        opened: float,
        closed: float | None,
        bytes_in: int,
        bytes_out: int,
        error: str = "",
    ) -> ConnectionRecord:
        """A checked record: free text sanitised and cut, counts within range."""
        if not (0 <= bytes_in <= _BYTES_MAX and 0 <= bytes_out <= _BYTES_MAX):
            raise RemoteProtocolError("hatchway_connections: byte counts out of range")
        return cls(
            destination=printable(destination, DESTINATION_MAX),
            opened=opened,
            closed=closed,
            bytes_in=bytes_in,
            bytes_out=bytes_out,
            error=printable(error, CONNECTION_ERROR_MAX),
        )


@dataclass(frozen=True, slots=True)
class ConnectionReport:
    """``hatchway_connections`` (agent → server, docs/protocol.md §10.8): connections of one
    session that closed (or opened) since the last report, at most
    :data:`MAX_CONNECTIONS_PER_REPORT`."""

    session_id: str
    connections: tuple[ConnectionRecord, ...]

    @classmethod
    def create(
        cls, session_id: str, connections: tuple[ConnectionRecord, ...] | list[ConnectionRecord]
    ) -> ConnectionReport:
        if not 1 <= len(connections) <= MAX_CONNECTIONS_PER_REPORT:
            raise RemoteProtocolError(
                f"hatchway_connections carries 1 to {MAX_CONNECTIONS_PER_REPORT} connections, "
                f"not {len(connections)}"
            )
        return cls(_session_id(session_id, "SessionId"), tuple(connections))

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "SessionId": self.session_id,
                "Connections": [c.to_dict() for c in self.connections],
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, payload: bytes) -> ConnectionReport:
        obj = loads_object(payload, "hatchway_connections payload")
        raw = obj.get_list("Connections") or []
        if len(raw) > MAX_CONNECTIONS_PER_REPORT:
            raise RemoteProtocolError(
                f"hatchway_connections carries {len(raw)} connections; the limit is "
                f"{MAX_CONNECTIONS_PER_REPORT}"
            )
        return cls.create(obj.get_str("SessionId"), [ConnectionRecord.from_dict(c) for c in raw])


ControlMessage = (
    Heartbeat | TaskComplete | TaskAcknowledge | StartSession | EndSession | ConnectionReport
)

_FROM: Final = {
    Sender.AGENT: frozenset(
        {
            MessageType.AGENT_HEARTBEAT,
            MessageType.AGENT_TASK_COMPLETE,
            MessageType.HATCHWAY_CONNECTIONS,
        }
    ),
    Sender.SERVER: frozenset(
        {
            MessageType.INTERACTIVE_SHELL,
            MessageType.CHANNEL_CLOSED,
            MessageType.AGENT_TASK_ACKNOWLEDGE,
        }
    ),
}


def decode(data: bytes, *, sender: Sender) -> ControlMessage:
    """Decode one control-channel message that ``sender`` sent.

    Raises:
        RemoteProtocolError: the frame is malformed or larger than :data:`MAX_CONTROL_MESSAGE`,
            its type is not one ``sender`` may send, or a field is missing, mistyped or invalid.
    """
    frame = decode_frame(data, max_size=MAX_CONTROL_MESSAGE)
    kind = frame.message_type
    if kind not in _FROM[sender]:
        raise RemoteProtocolError(
            f"unexpected control message {kind[:32]!r} from the {sender.value}"
        )
    payload = frame.payload
    if len(payload) > MAX_CONTROL_PAYLOAD:
        raise RemoteProtocolError(f"control payload of {len(payload)} bytes is too large")
    if kind == MessageType.AGENT_HEARTBEAT:
        return Heartbeat._from_payload(AgentHeartbeat.from_json(payload))
    if kind == MessageType.HATCHWAY_CONNECTIONS:
        return ConnectionReport.from_json(payload)
    if kind == MessageType.AGENT_TASK_COMPLETE:
        done = AgentTaskComplete.from_json(payload)
        try:
            status = TaskStatus(done.final_task_status)
        except ValueError as exc:
            raise RemoteProtocolError(
                f"FinalTaskStatus {done.final_task_status[:32]!r} is not one of "
                f"{', '.join(TaskStatus)}"
            ) from exc
        return TaskComplete.create(
            task_id=done.task_id,
            status=status,
            instance_id=done.instance_id,
            output=done.output,
            message_id=frame.message_id,
        )
    if kind == MessageType.AGENT_TASK_ACKNOWLEDGE:
        ack = AgentTaskAcknowledge.from_json(payload)
        try:
            acked = uuid.UUID(ack.message_id)
        except ValueError as exc:
            raise RemoteProtocolError(
                f"agent_task_acknowledge MessageId {ack.message_id[:40]!r} is not a UUID"
            ) from exc
        return TaskAcknowledge(acked, ack.task_id, printable(ack.topic, TOPIC_MAX))
    if kind == MessageType.INTERACTIVE_SHELL:
        wrapped = MGSPayload.from_json(payload)
        task = wrapped.unwrap_task()
        _session_id(task.session_id, "SessionId")
        return StartSession(task, printable(wrapped.topic, TOPIC_MAX))
    # CHANNEL_CLOSED
    closed = ChannelClosedPayload.from_json(payload)
    return EndSession(
        session_id=_session_id(closed.session_id, "SessionId"),
        node_id=printable(closed.destination_id, 64),
        output=printable(closed.output, OUTPUT_MAX),
    )


def encode(message: ControlMessage, *, now: float, message_id: uuid.UUID | None = None) -> bytes:
    """Encode ``message`` as one control frame; ``now`` (wall clock) becomes CreatedDate.

    A :class:`TaskComplete` always travels with its own ``message_id``.

    Raises:
        LocalProtocolError: the message cannot be encoded.
    """
    if isinstance(message, Heartbeat):
        return control_frame(
            MessageType.AGENT_HEARTBEAT,
            message.to_json(),
            now=now,
            message_id=message_id,
        )
    if isinstance(message, ConnectionReport):
        return control_frame(
            MessageType.HATCHWAY_CONNECTIONS, message.to_json(), now=now, message_id=message_id
        )
    if isinstance(message, TaskComplete):
        payload = AgentTaskComplete(
            task_id=message.task_id,
            topic=message.topic,
            final_task_status=message.final_task_status.value,
            instance_id=message.instance_id,
            output=message.output,
        ).to_json()
        return control_frame(
            MessageType.AGENT_TASK_COMPLETE, payload, now=now, message_id=message.message_id
        )
    if isinstance(message, TaskAcknowledge):
        ack = AgentTaskAcknowledge(
            message_id=str(message.message_id), task_id=message.task_id, topic=message.topic
        )
        return control_frame(
            MessageType.AGENT_TASK_ACKNOWLEDGE, ack.to_json(), now=now, message_id=message_id
        )
    if isinstance(message, StartSession):
        wrapped = MGSPayload.wrap(message.task, topic=message.topic)
        return control_frame(
            MessageType.INTERACTIVE_SHELL, wrapped.to_json(), now=now, message_id=message_id
        )
    frame_id = message_id or uuid.uuid4()
    closed = ChannelClosedPayload(
        message_id=str(frame_id),
        created_date=str(int(now * 1000)),
        destination_id=message.node_id,
        session_id=message.session_id,
        output=message.output,
    )
    return control_frame(MessageType.CHANNEL_CLOSED, closed.to_json(), now=now, message_id=frame_id)


# ---- misbehaving peers ---------------------------------------------------------------------


class FloodMeter:
    """Counts one peer's bad messages in a sliding window: past ``limit`` it must go.

    ``now`` is a monotonic reading (the event loop's clock).
    """

    __slots__ = ("_times", "limit", "total", "window")

    def __init__(self, *, limit: int = 100, window: float = 10.0) -> None:
        self.limit = limit
        self.window = window
        self.total = 0
        self._times: collections.deque[float] = collections.deque(maxlen=limit + 1)

    def hit(self, now: float) -> bool:
        """Count one bad message; True once more than ``limit`` arrived within ``window``."""
        self.total += 1
        self._times.append(now)
        return len(self._times) > self.limit and now - self._times[0] <= self.window


class LogBudget:
    """Decides which of many similar log lines to write: ``burst`` per ``period``, then one
    summary of what was left out, at most once per period.

    ``now`` is a monotonic reading (the event loop's clock).
    """

    __slots__ = ("_count", "_start", "_suppressed", "burst", "period")

    def __init__(self, *, burst: int = 5, period: float = 10.0) -> None:
        self.burst = burst
        self.period = period
        self._start: float | None = None
        self._count = 0
        self._suppressed = 0

    def admit(self, now: float) -> tuple[bool, int]:
        """One more event: (write its line?, how many lines were left out before it).

        A non-zero second value is due at most once per period: the caller writes the summary.
        """
        left_out = 0
        if self._start is None or now - self._start >= self.period:
            left_out, self._suppressed = self._suppressed, 0
            self._start, self._count = now, 0
        self._count += 1
        if self._count <= self.burst:
            return True, left_out
        self._suppressed += 1
        return False, left_out
