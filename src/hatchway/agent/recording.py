"""The recording of an end-to-end encrypted session, made on the node (docs/design.md,
"End-to-end session encryption").

The gateway records what it relays; an encrypted session's stream is ciphertext to it, so
the agent, which holds the plaintext, records instead, as AWS's agent does. It writes the
same asciicast v2 the gateway writes (output and resizes, never keystrokes) and seals it in
the server's encrypted recording format (``auth.sealedrecording``) under a data key of its
own: GenerateDataKey as the node, under the session's KMS key, with the encryption context
``{"aws:ssm:SessionId": <session id>}`` that the server's readers use. The server then stores
a file it cannot open; a user allowed ``hatchway:GetSessionRecording`` on the session and
``kms:Decrypt`` on the key reads it as any encrypted recording.

The sealed recording is kept in memory (at most :data:`MAX_SEALED` bytes: output beyond is
dropped and the recording says so at its end) and sent when the session ends.
"""

from __future__ import annotations

from typing import Final

from hatchway.auth.sealedrecording import ChunkSealer, RecordingHeader
from hatchway.protocol.asciicast import Encoder, EventCode, Header

__all__ = ["MAX_SEALED", "SealedRecording", "recording_context"]

#: The most a recording holds on the node (sealed); later output is not recorded.
MAX_SEALED: Final = 64 * 1024 * 1024
#: Plaintext gathered before it is sealed into chunks.
SEAL_EVERY: Final = 64 * 1024


def recording_context(session_id: str) -> dict[str, str]:
    """The encryption context of a session recording's data key (the server's own)."""
    return {"aws:ssm:SessionId": session_id}


class SealedRecording:
    """One session's asciicast, sealed as it grows.

    Args:
        session_id, key_arn: whose, and under which KMS key.
        data_key, wrapped_key: the recording's data key and its blob (GenerateDataKey).
        start: Unix time of event time 0.
        cols, rows: the terminal size at the start.
    """

    def __init__(
        self,
        session_id: str,
        key_arn: str,
        data_key: bytes,
        wrapped_key: bytes,
        start: float,
        cols: int,
        rows: int,
    ) -> None:
        line = RecordingHeader(
            session_id, key_arn, wrapped_key, recording_context(session_id)
        ).to_line()
        self._sealer = ChunkSealer(data_key, line)
        self._encoder = Encoder()
        self._start = start
        self._sealed = bytearray(line)
        self._plain = bytearray(Header(cols, rows, int(start), session_id).to_line())
        self.dropped = 0
        self.finished = False

    def __repr__(self) -> str:
        return f"SealedRecording(<key hidden>, {len(self._sealed)} bytes sealed)"

    def output(self, now: float, data: bytes) -> None:
        """What the terminal showed at Unix time ``now``."""
        self._add(self._encoder.data(EventCode.OUTPUT, now - self._start, data), len(data))

    def resize(self, now: float, cols: int, rows: int) -> None:
        self._add(self._encoder.resize(now - self._start, cols, rows), 0)

    def _add(self, line: bytes, size: int) -> None:
        if self.finished or not line:
            return
        if len(self._sealed) + len(self._plain) + len(line) > MAX_SEALED:
            self.dropped += size
            return
        self._plain += line
        if len(self._plain) >= SEAL_EVERY:
            self._sealed += self._sealer.seal(bytes(self._plain))
            self._plain.clear()

    def finish(self, now: float) -> bytes:
        """The whole sealed file, its last chunk marked final."""
        if not self.finished:
            self.finished = True
            self._plain += self._encoder.finish(now - self._start)
            if self.dropped:
                note = f"\r\n[hatchway: {self.dropped} bytes of output were not recorded]\r\n"
                self._plain += self._encoder.data(
                    EventCode.OUTPUT, now - self._start, note.encode()
                )
            self._sealed += self._sealer.seal(bytes(self._plain), final=True)
            self._plain.clear()
        return bytes(self._sealed)
