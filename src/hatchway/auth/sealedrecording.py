"""The encrypted recording format: an append-only stream of sealed chunks (envelope encryption).

A recording is written incrementally (a flush at least every second) and must survive a
SIGKILL losing at most the last flush, so it cannot be one AES-GCM message. It is a header
line and then chunks, each sealed on its own::

    HWREC1 {"v":1,"session":…,"key":KEY-ARN,"wrapped":BASE64,"context":{…}}\\n
    length (4 bytes, big-endian) | flags (1) | nonce (12) | ciphertext | tag (16)
    …

* The header carries the data key wrapped by the KMS key (GenerateDataKey's CiphertextBlob,
  with the encryption context ``{"aws:ssm:SessionId": …}``) and that key's ARN: the file alone
  says which key opens it. ``length`` counts flags, nonce, ciphertext and tag.
* Each chunk is AES-256-GCM under the recording's data key with a fresh random nonce (a chunk
  cut off by a crash is written again under the same index: a counter nonce would repeat).
  Its associated data is a label, the SHA-256 of the header line, the chunk's index (8 bytes)
  and its flags: chunks cannot be reordered, dropped from the middle, moved to another
  recording, or marked final by anyone without the key.
* The last chunk of a finished recording has :data:`FINAL` set. A reader that runs out of
  chunks before a final one knows the recording is cut short (at chunk granularity); a trailing
  partial chunk (a crash mid-write) is recognised by its length and ignored or cut.
* The last chunk of each :meth:`ChunkSealer.seal` call (one flush of whole asciicast lines) has
  :data:`BOUNDARY` set: a writer resuming after a crash cuts the file back to the last boundary
  (:func:`complete_length`), never into the middle of a line.

Plaintext per chunk is at most :data:`MAX_PLAINTEXT` bytes, so a reader holds little at once.
Blocking-free and I/O-free: callers read and write the bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hatchway.errors import InvalidCiphertext

__all__ = [
    "BOUNDARY",
    "FINAL",
    "MAGIC",
    "MAX_HEADER",
    "MAX_PLAINTEXT",
    "ChunkOpener",
    "ChunkSealer",
    "Opened",
    "RecordingHeader",
    "complete_length",
    "parse_header",
]

MAGIC: Final = b"HWREC1 "
FINAL: Final = 0x01
BOUNDARY: Final = 0x02
MAX_PLAINTEXT: Final = 64 * 1024
MAX_HEADER: Final = 16 * 1024
"""A header line longer than this is not one of ours."""
_LEN: Final = struct.Struct(">I")
_INDEX: Final = struct.Struct(">Q")
_NONCE: Final = 12
_TAG: Final = 16
_MIN_BODY: Final = 1 + _NONCE + _TAG
_MAX_BODY: Final = _MIN_BODY + MAX_PLAINTEXT
_LABEL: Final = b"hatchway-recording-chunk-v1\x00"


@dataclass(frozen=True, slots=True)
class RecordingHeader:
    """What the header line says: whose recording, which KMS key, the wrapped data key."""

    session_id: str
    key_arn: str
    wrapped_key: bytes = field(repr=False)
    context: Mapping[str, str]

    def to_line(self) -> bytes:
        body = {
            "v": 1,
            "session": self.session_id,
            "key": self.key_arn,
            "wrapped": base64.b64encode(self.wrapped_key).decode("ascii"),
            "context": dict(self.context),
        }
        return MAGIC + json.dumps(body, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def parse_header(data: bytes) -> tuple[RecordingHeader, bytes]:
    """The header at the start of ``data`` and its line (newline included).

    Raises:
        InvalidCiphertext: ``data`` does not start with a whole, valid header line.
    """
    end = data.find(b"\n", 0, MAX_HEADER)
    if not data.startswith(MAGIC) or end < 0:
        raise InvalidCiphertext("not an encrypted Hatchway recording (no header line)")
    line = bytes(data[: end + 1])
    try:
        obj: Any = json.loads(line[len(MAGIC) :])
        context = obj["context"]
        header = RecordingHeader(
            session_id=str(obj["session"]),
            key_arn=str(obj["key"]),
            wrapped_key=base64.b64decode(obj["wrapped"], validate=True),
            context={str(k): str(v) for k, v in context.items()},
        )
        if obj["v"] != 1:
            raise ValueError(f"version {obj['v']}")
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise InvalidCiphertext(f"the encrypted recording's header is not valid ({exc})") from exc
    return header, line


def _aad(digest: bytes, index: int, flags: int) -> bytes:
    return _LABEL + digest + _INDEX.pack(index) + bytes([flags])


class ChunkSealer:
    """Seals a recording's plaintext into chunks, continuing at chunk ``next_index``."""

    __slots__ = ("_aead", "_digest", "next_index")

    def __init__(self, data_key: bytes, header_line: bytes, next_index: int = 0) -> None:
        self._aead = AESGCM(data_key)
        self._digest = hashlib.sha256(header_line).digest()
        self.next_index = next_index

    def __repr__(self) -> str:
        return f"ChunkSealer(<key hidden>, next_index={self.next_index})"

    def seal(self, plaintext: bytes, *, final: bool = False) -> bytes:
        """``plaintext`` as chunks of at most :data:`MAX_PLAINTEXT` bytes, the last one marked
        :data:`BOUNDARY` (and :data:`FINAL` with ``final``: then possibly empty). Nothing, for
        empty data not final."""
        out: list[bytes] = []
        view = memoryview(plaintext)
        while view or final:
            piece, view = view[:MAX_PLAINTEXT], view[MAX_PLAINTEXT:]
            flags = 0 if view else BOUNDARY | (FINAL if final else 0)
            nonce = secrets.token_bytes(_NONCE)
            sealed = self._aead.encrypt(
                nonce, bytes(piece), _aad(self._digest, self.next_index, flags)
            )
            body = bytes([flags]) + nonce + sealed
            out.append(_LEN.pack(len(body)) + body)
            self.next_index += 1
            if flags & FINAL:
                break
        return b"".join(out)


@dataclass(frozen=True, slots=True)
class Opened:
    """What :meth:`ChunkOpener.open` made of some bytes."""

    plaintext: bytes
    consumed: int
    """Bytes of whole chunks read (the next chunk starts there)."""
    chunks: int
    final: bool
    """The final chunk was among them (nothing may follow it)."""


class ChunkOpener:
    """Opens a recording's chunks in order, from chunk ``next_index``."""

    __slots__ = ("_aead", "_digest", "next_index")

    def __init__(self, data_key: bytes, header_line: bytes, next_index: int = 0) -> None:
        self._aead = AESGCM(data_key)
        self._digest = hashlib.sha256(header_line).digest()
        self.next_index = next_index

    def __repr__(self) -> str:
        return f"ChunkOpener(<key hidden>, next_index={self.next_index})"

    def open(self, data: bytes, *, limit: int | None = None) -> Opened:
        """Decrypt the whole chunks at the start of ``data`` (a partial one at its end is left
        for the next call), stopping once ``limit`` plaintext bytes are out.

        Raises:
            InvalidCiphertext: a chunk fails authentication (altered, reordered, from another
                recording), has an impossible length, or something follows the final chunk.
        """
        out: list[bytes] = []
        pos = total = count = 0
        final = False
        view = memoryview(data)
        while len(view) - pos >= _LEN.size and (limit is None or total < limit):
            if final:
                raise InvalidCiphertext("the recording has data after its final chunk")
            (length,) = _LEN.unpack_from(view, pos)
            if not _MIN_BODY <= length <= _MAX_BODY:
                raise InvalidCiphertext(
                    f"the recording's chunk {self.next_index} has an impossible length"
                )
            if len(view) - pos - _LEN.size < length:
                break
            body = view[pos + _LEN.size : pos + _LEN.size + length]
            flags = body[0]
            try:
                plain = self._aead.decrypt(
                    bytes(body[1 : 1 + _NONCE]),
                    bytes(body[1 + _NONCE :]),
                    _aad(self._digest, self.next_index, flags),
                )
            except InvalidTag as exc:
                raise InvalidCiphertext(
                    f"the recording's chunk {self.next_index} fails authentication: it was "
                    "altered, reordered or cut"
                ) from exc
            out.append(plain)
            total += len(plain)
            pos += _LEN.size + length
            count += 1
            self.next_index += 1
            final = bool(flags & FINAL)
        return Opened(b"".join(out), pos, count, final)


def complete_length(data: bytes, start: int) -> tuple[int, int]:
    """Where a crashed writer's file is cut back to: the end of the last whole chunk marked
    :data:`BOUNDARY` in ``data`` from ``start``, and how many chunks precede it (lengths and
    flags only, nothing decrypted; a forged flag fails authentication when read)."""
    pos, count = start, 0
    cut, cut_count = start, 0
    while len(data) - pos >= _LEN.size:
        (length,) = _LEN.unpack_from(data, pos)
        if not _MIN_BODY <= length <= _MAX_BODY or len(data) - pos - _LEN.size < length:
            break
        flags = data[pos + _LEN.size]
        pos += _LEN.size + length
        count += 1
        if flags & (BOUNDARY | FINAL):
            cut, cut_count = pos, count
    return cut, cut_count
