"""Authenticated messages between replicas (no I/O here).

Every message on the cluster's NATS subjects is sealed with HMAC-SHA256 under a key derived
from the master key (``derive_key(master_key, b"cluster bus")``), over the subject and the
body, so a message cannot be forged, altered, or moved to another subject by anybody who
can reach the same NATS server without the master key (another tenant, a compromised client).
Replays are refused too: pipe frames carry a per-pipe sequence number that must increase, and
requests and broadcasts carry a time and a random id, refused when older than
:data:`MAX_AGE` or seen before.

Wire form: ``b"H1"`` | 32-byte MAC | body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

from hatchway.errors import RemoteProtocolError

__all__ = ["MAX_AGE", "Freshness", "PipeFrame", "Sealer", "pack_pipe", "unpack_pipe"]

MAGIC: Final = b"H1"
MAC_SIZE: Final = 32
#: Seconds a request or broadcast stays acceptable (clocks of replicas must agree this well).
MAX_AGE: Final = 30.0
_SEQ = struct.Struct(">Q")


class Sealer:
    """Seals and opens messages under the cluster key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the cluster key must be at least 32 bytes")
        self._key = key

    def seal(self, subject: str, body: bytes) -> bytes:
        return MAGIC + self._mac(subject, body) + body

    def open(self, subject: str, data: bytes) -> bytes:
        """The body of a sealed message, or RemoteProtocolError if it was not sealed by a
        holder of the key for this very subject."""
        if len(data) < len(MAGIC) + MAC_SIZE or not data.startswith(MAGIC):
            raise RemoteProtocolError("not a cluster message")
        mac, body = data[2 : 2 + MAC_SIZE], data[2 + MAC_SIZE :]
        if not hmac.compare_digest(mac, self._mac(subject, body)):
            raise RemoteProtocolError("cluster message with a bad MAC")
        return body

    def _mac(self, subject: str, body: bytes) -> bytes:
        h = hmac.new(self._key, subject.encode() + b"\n", hashlib.sha256)
        h.update(body)
        return h.digest()


class Freshness:
    """Refuses requests and broadcasts that are too old or seen before (replays)."""

    def __init__(self, clock: Callable[[], float] = time.time, max_age: float = MAX_AGE) -> None:
        self._clock = clock
        self._max_age = max_age
        self._seen: OrderedDict[str, float] = OrderedDict()

    @staticmethod
    def stamp(message: dict[str, Any], now: float) -> bytes:
        """``message`` as JSON with its time and a random id."""
        return json.dumps({**message, "at": now, "id": secrets.token_hex(12)}).encode()

    def check(self, body: bytes) -> dict[str, Any]:
        """The message in ``body``; RemoteProtocolError if malformed, stale or replayed."""
        try:
            message = json.loads(body)
        except ValueError as exc:
            raise RemoteProtocolError("cluster message is not JSON") from exc
        if not isinstance(message, dict):
            raise RemoteProtocolError("cluster message is not an object")
        at, mid = message.get("at"), message.get("id")
        if not isinstance(at, int | float) or not isinstance(mid, str):
            raise RemoteProtocolError("cluster message without its time and id")
        now = self._clock()
        if abs(now - at) > self._max_age:
            raise RemoteProtocolError(f"cluster message {now - at:.0f} s old")
        while self._seen and next(iter(self._seen.values())) < now - self._max_age:
            self._seen.popitem(last=False)
        if mid in self._seen:
            raise RemoteProtocolError("cluster message replayed")
        # Kept until the message itself is stale: one stamped ahead of this clock stays fresh
        # for longer than max_age after it arrived. (Pruning stops at the first entry still
        # kept, so an entry is kept at least this long, never dropped early.)
        self._seen[mid] = max(now, at)
        return message


class PipeFrame:
    """Kinds of message on a pipe (one byte after the sequence number)."""

    DATA: Final = b"D"  # a binary WebSocket message
    TEXT: Final = b"T"  # a text one (a client's OpenDataChannelInput)
    CLOSE: Final = b"C"  # the end closed / must be closed: JSON {"code", "reason"}


def pack_pipe(seq: int, kind: bytes, payload: bytes) -> bytes:
    return _SEQ.pack(seq) + kind + payload


def unpack_pipe(body: bytes) -> tuple[int, bytes, bytes]:
    """(sequence number, kind, payload); RemoteProtocolError if malformed."""
    if len(body) < _SEQ.size + 1:
        raise RemoteProtocolError("short pipe message")
    kind = body[_SEQ.size : _SEQ.size + 1]
    if kind not in (PipeFrame.DATA, PipeFrame.TEXT, PipeFrame.CLOSE):
        raise RemoteProtocolError("unknown pipe message kind")
    return _SEQ.unpack_from(body)[0], kind, body[_SEQ.size + 1 :]
