"""The hash chain that makes the audit trail tamper-evident.

Each record is the event's JSON with its place in the chain: ``sequence`` (1, 2, 3, … with no
gap) and ``previousHash`` (the hash of the record before it; :data:`GENESIS` for the first).
Its hash is the SHA-256 of its canonical JSON (:func:`canonical`: sorted keys, no spaces,
UTF-8), so it covers the previous hash too: changing, removing, inserting or reordering any
record breaks the link of the record after it, and :func:`verify` names the first record
where the chain breaks.

What the chain cannot show on its own: records cut from the end (the last record's successor
is missing, not wrong), and a chain rewritten from some record on with fresh hashes by someone
who can write the database. The store keeps the head (last sequence and hash) in a row of its
own, which catches the first when the head is left alone; keeping the head that ``hatchway
audit verify`` prints somewhere else (an export, a ticket) and checking later that the record
at that sequence still has that hash (``--anchor SEQUENCE:HASH``) catches both.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

GENESIS: Final = "0" * 64
"""``previousHash`` of the first record."""


def canonical(value: Mapping[str, Any]) -> str:
    """The one JSON text of ``value`` that is hashed: sorted keys, no insignificant spaces,
    non-ASCII characters as themselves (hashed as UTF-8).

    Raises:
        ValueError: ``value`` holds something JSON cannot say exactly (NaN, infinity).
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def digest(text: str) -> str:
    """The SHA-256 of ``text`` (UTF-8), in hex."""
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainedRecord:
    """One record of the chain: the event's JSON at its place, and the hash of it all.

    ``body`` is the canonical JSON that ``hash`` is the SHA-256 of; it is what the store keeps
    and what an export carries, so that anyone can recompute the hash.
    """

    sequence: int
    previous_hash: str
    event: Mapping[str, Any]
    hash: str

    @property
    def body(self) -> str:
        return canonical(record_body(self.sequence, self.previous_hash, self.event))

    def to_json(self) -> dict[str, Any]:
        """The record with its hash: one line of ``hatchway audit export``."""
        return {**record_body(self.sequence, self.previous_hash, self.event), "hash": self.hash}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChainedRecord:
        """A record from :meth:`to_json`'s form.

        Raises:
            ValueError: not an object, or a member is missing or of the wrong type.
        """
        if not isinstance(data, Mapping):
            raise ValueError("not a JSON object")
        sequence, previous, event, hash_ = (
            data.get("sequence"),
            data.get("previousHash"),
            data.get("event"),
            data.get("hash"),
        )
        if not isinstance(sequence, int) or isinstance(sequence, bool):
            raise ValueError("'sequence' is not an integer")
        if not isinstance(previous, str) or not isinstance(hash_, str):
            raise ValueError("'previousHash' or 'hash' is not a string")
        if not isinstance(event, dict):
            raise ValueError("'event' is not an object")
        return cls(sequence, previous, event, hash_)


def record_body(sequence: int, previous_hash: str, event: Mapping[str, Any]) -> dict[str, Any]:
    """What is hashed: the event at its place in the chain."""
    return {"sequence": sequence, "previousHash": previous_hash, "event": dict(event)}


def link(sequence: int, previous_hash: str, event: Mapping[str, Any]) -> ChainedRecord:
    """The record that puts ``event`` at ``sequence``, after a record hashed ``previous_hash``."""
    body = canonical(record_body(sequence, previous_hash, event))
    return ChainedRecord(sequence, previous_hash, event, digest(body))


@dataclass(frozen=True, slots=True)
class Break:
    """Where the chain breaks: the first record that was changed, removed, inserted or moved
    (``sequence`` is the one expected at that place) and what is wrong there."""

    position: int
    """0-based place in the records verified."""
    sequence: int
    event_id: str
    reason: str

    def describe(self) -> str:
        who = f" (event {self.event_id})" if self.event_id else ""
        return f"record {self.sequence}{who}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of :func:`verify`."""

    records: int
    first_sequence: int | None
    last_sequence: int | None
    head_hash: str
    broken: Break | None

    @property
    def intact(self) -> bool:
        return self.broken is None

    def summary(self) -> str:
        """One line for people."""
        if self.broken is not None:
            return f"audit chain broken at {self.broken.describe()}"
        if not self.records:
            return "audit chain intact: no records"
        return (
            f"audit chain intact: {self.records} records, sequence {self.first_sequence}–"
            f"{self.last_sequence}, head {self.head_hash}"
        )


class Verifier:
    """Checks records one at a time, in chain order, so a trail of any length is verified in
    constant memory (the store feeds it page by page).

    Args:
        start: the sequence the first record must have (1 for a whole trail); ``None`` accepts
            any first sequence and trusts its ``previousHash`` (a segment, e.g. an export
            filtered by time).
        previous_hash: the hash the first record must name; ``None`` with ``start`` None.
    """

    def __init__(
        self,
        start: int | None = 1,
        previous_hash: str | None = GENESIS,
        anchors: Mapping[int, str] | None = None,
    ) -> None:
        self._anchors = dict(anchors or {})
        self._expected_sequence = start
        self._expected_previous = previous_hash if start is not None else None
        self._position = 0
        self._first: int | None = None
        self._last: int | None = None
        self._head = previous_hash or ""
        self.broken: Break | None = None

    def feed(
        self,
        record: ChainedRecord,
        stored_body: str | None = None,
        *,
        other_problem: str | None = None,
    ) -> bool:
        """Check the next record; returns False (and sets :attr:`broken`) at the first break.

        Args:
            stored_body: the text the store kept for the record, if it keeps one; it must be
                exactly the canonical body (a re-serialised or edited text is a change).
            other_problem: what the caller found wrong beside the chain (the store's columns
                disagree with the hashed record), reported if the chain itself holds here.
        """
        if self.broken is not None:
            return False
        event_id = str(record.event.get("eventId", ""))
        reason = self._problem(record, stored_body) or other_problem
        if reason is not None:
            self.reject(reason, event_id, record.sequence)
            return False
        if self._first is None:
            self._first = record.sequence
        self._last = record.sequence
        self._head = record.hash
        self._expected_sequence = record.sequence + 1
        self._expected_previous = record.hash
        self._position += 1
        return True

    def reject(self, reason: str, event_id: str = "", sequence: int | None = None) -> None:
        """Break the chain at the next record (one that cannot even be read, say)."""
        if self.broken is None:
            expected = self._expected_sequence
            place = expected if expected is not None else sequence
            self.broken = Break(self._position, place if place is not None else 0, event_id, reason)

    def _problem(self, record: ChainedRecord, stored_body: str | None) -> str | None:
        expected = self._expected_sequence
        if expected is not None and record.sequence != expected:
            found = f"found record {record.sequence} where record {expected} belongs"
            if record.sequence > expected:
                return f"{found} (record {expected} was removed or moved)"
            return f"{found} (moved or inserted)"
        if self._expected_previous is not None and record.previous_hash != self._expected_previous:
            return "its previousHash is not the hash of the record before it (a record before it was changed, removed or inserted)"  # noqa: E501
        try:
            body = record.body
        except (TypeError, ValueError):
            return "its event cannot be serialised canonically"
        if stored_body is not None and stored_body != body:
            return "its stored text was changed"
        if digest(body) != record.hash:
            return "its contents do not match its hash (the record was changed)"
        anchored = self._anchors.pop(record.sequence, None)
        if anchored is not None and anchored != record.hash:
            return (
                "its hash is not the one kept as an anchor (the chain was rewritten from here "
                "or before)"
            )
        return None

    def finish(self, head_sequence: int | None = None, head_hash: str | None = None) -> Verdict:
        """The verdict, checking the chain's end against a known head (the store's head row,
        or one kept elsewhere) when given: records cut from the end show up only there."""
        if self.broken is None and self._anchors:
            missing_anchor = min(self._anchors)
            self.broken = Break(
                self._position,
                missing_anchor,
                "",
                "the anchored record is not in the trail (the chain was cut or rewritten)",
            )
        if self.broken is None and head_sequence is not None:
            last = self._last if self._last is not None else 0
            if head_sequence > last:
                missing = last + 1
                self.broken = Break(
                    self._position,
                    missing,
                    "",
                    f"record {missing} is missing: the trail's head is record {head_sequence}"
                    if head_sequence == missing
                    else f"records {missing}–{head_sequence} are missing: the trail's head is "
                    f"record {head_sequence}",
                )
            elif head_sequence < last:
                self.broken = Break(
                    self._position - 1,
                    last,
                    "",
                    f"record {last} is past the trail's head (record {head_sequence})",
                )
            elif head_hash is not None and head_hash != self._head:
                self.broken = Break(
                    self._position - 1,
                    last,
                    "",
                    "its hash is not the trail's head hash (the last records were replaced)",
                )
        return Verdict(self._position, self._first, self._last, self._head, self.broken)


def verify(
    records: Iterable[ChainedRecord],
    *,
    start: int | None = 1,
    head_sequence: int | None = None,
    head_hash: str | None = None,
    anchors: Mapping[int, str] | None = None,
) -> Verdict:
    """Verify records in chain order (see :class:`Verifier`)."""
    verifier = Verifier(start, GENESIS if start == 1 else None, anchors)
    for record in records:
        if not verifier.feed(record):
            break
    return verifier.finish(head_sequence, head_hash)
