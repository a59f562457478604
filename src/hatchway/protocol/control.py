"""Encoders for the non-stream frames: control messages and acknowledgements.

Non-stream frames carry sequence number 0 and payload type 0 and are never acknowledged
(docs/protocol.md §5.1). Acknowledges and ``agent_session_state`` carry flags 3, other control
replies flags 0 (docs/protocol.md §4.3); receivers ignore flags.
"""

from __future__ import annotations

import uuid
from typing import Final

from hatchway.protocol.frames import FLAG_FIN, FLAG_SYN, Frame, MessageType, encode_frame
from hatchway.protocol.payloads import AcknowledgeContent, AgentSessionState

__all__ = ["ACK_FLAGS", "ack_for", "control_frame", "session_state_frame"]

#: Flags on acknowledges and ``agent_session_state`` frames (docs/protocol.md §4.3).
ACK_FLAGS: Final = FLAG_SYN | FLAG_FIN


def control_frame(
    message_type: str,
    payload: bytes,
    *,
    now: float,
    message_id: uuid.UUID | None = None,
    flags: int = 0,
) -> bytes:
    """Encode a non-stream frame: seq 0, payload type 0, CreatedDate from ``now``.

    ``now`` is wall-clock Unix seconds (``time.time()``), never a monotonic reading.

    Raises:
        LocalProtocolError: empty payload or an unencodable message type.
    """
    return encode_frame(
        Frame(
            message_type=str(message_type),
            sequence_number=0,
            flags=flags,
            message_id=message_id if message_id is not None else uuid.uuid4(),
            payload_type=0,
            payload=payload,
            created_date=int(now * 1000),
        )
    )


def ack_for(frame: Frame, *, now: float, message_id: uuid.UUID | None = None) -> bytes:
    """Encode the ``acknowledge`` frame for a received stream ``frame`` (docs/protocol.md §6.2).

    ``now`` is wall-clock Unix seconds: it only becomes the ack's CreatedDate.
    """
    content = AcknowledgeContent(
        acknowledged_message_type=frame.message_type,
        acknowledged_message_id=str(frame.message_id),
        acknowledged_sequence_number=frame.sequence_number,
    )
    return control_frame(
        MessageType.ACKNOWLEDGE, content.to_json(), now=now, message_id=message_id, flags=ACK_FLAGS
    )


def session_state_frame(
    state: str, session_id: str, *, now: float, message_id: uuid.UUID | None = None
) -> bytes:
    """Encode ``agent_session_state`` (docs/protocol.md §9.2), flags 3 like AWS's agent."""
    payload = AgentSessionState(session_state=state, session_id=session_id).to_json()
    return control_frame(
        MessageType.AGENT_SESSION_STATE, payload, now=now, message_id=message_id, flags=ACK_FLAGS
    )
