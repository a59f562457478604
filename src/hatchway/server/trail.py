"""Reading the audit trail: ``Hatchway.LookupEvents`` (CloudTrail's LookupEvents) and
``Hatchway.VerifyAuditTrail``.

LookupEvents answers in CloudTrail's shape: events newest first, each with ``EventId``,
``EventName``, ``ReadOnly``, ``AccessKeyId``, ``EventTime``, ``EventSource``, ``Username``,
``Resources`` and ``CloudTrailEvent`` (the whole record as a JSON string, with its place in the
chain under ``hatchwayChain``: ``sequence``, ``previousHash``, ``hash``, so that anyone can
recompute the hash). Unlike CloudTrail, several lookup attributes may be given (all must
hold), and a page holds up to 1,000 events.

VerifyAuditTrail walks the whole chain in the database, in pages, with the stored hashes
(``audit.chain.Verifier``), checks the columns kept for lookups against each hashed record and
the end against the chain's head row, and names the first record where it breaks.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import replace
from typing import Any, Final

from hatchway.audit.chain import Break, ChainedRecord, Verdict, Verifier
from hatchway.audit.events import AuditEvent, EventCode, parse_time
from hatchway.errors import InvalidNextToken, ValidationError
from hatchway.server.audit import AuditEvents
from hatchway.store.audit import AuditQuery, StoredRecord
from hatchway.store.store import Store

log = logging.getLogger(__name__)

DEFAULT_PAGE: Final = 50
VERIFY_PAGE: Final = 1000
TOKEN: Final = re.compile(r"[0-9]{1,18}")
ATTRIBUTE_FIELDS: Final = {
    "EventName": "event_name",
    "Username": "username",
    "AccessKeyId": "access_key_id",
    "EventId": "event_id",
    "ResourceName": "resource_name",
    "ReadOnly": "read_only",
}
ANCHOR: Final = re.compile(r"[0-9a-f]{64}")


class AuditTrailService:
    """LookupEvents and VerifyAuditTrail over the store's trail, and its pruning."""

    def __init__(self, store: Store, events: AuditEvents) -> None:
        self._store = store
        self._events = events

    async def lookup_events(self, body: dict[str, Any]) -> dict[str, Any]:
        """LookupEvents; ``body`` has been validated against the model (api.Api)."""
        query = _query(body)
        limit: int = body.get("MaxResults", DEFAULT_PAGE)
        before = _token(body.get("NextToken"))
        rows = await self._store.audit.lookup(query, limit=limit + 1, before=before)
        out: dict[str, Any] = {"Events": [lookup_event(row) for row in rows[:limit]]}
        if len(rows) > limit:
            out["NextToken"] = str(rows[limit - 1].sequence)
        return out

    async def verify(self, body: dict[str, Any]) -> dict[str, Any]:
        """VerifyAuditTrail: the whole chain, from its first record to the head row."""
        anchors = {int(a["Sequence"]): _anchor_hash(a["Hash"]) for a in body.get("Anchors", [])}
        verdict = await self.verdict(anchors)
        out: dict[str, Any] = {
            "Intact": verdict.intact,
            "Records": verdict.records,
            "HeadHash": verdict.head_hash,
            "Summary": verdict.summary(),
        }
        if verdict.first_sequence is not None:
            out["FirstSequence"] = verdict.first_sequence
            out["LastSequence"] = verdict.last_sequence
        if verdict.broken is not None:
            out["Break"] = {
                "Sequence": verdict.broken.sequence,
                "EventId": verdict.broken.event_id,
                "Reason": verdict.broken.reason,
            }
        return out

    async def verdict(self, anchors: dict[int, str] | None = None) -> Verdict:
        """Verify the stored chain (see the module docstring).

        A trail whose oldest records were pruned starts where the head row says, and some
        record of the chain must say so (``AuditTrailPruned``, naming the last record deleted
        and its hash): records deleted from the start otherwise are a break. Anchors below the
        start name pruned records and are not checked.
        """
        head = await self._store.audit.head()
        start = head.first_sequence
        kept = {s: h for s, h in (anchors or {}).items() if s >= start}
        verifier = Verifier(start, head.first_previous_hash, kept)
        prunings: set[tuple[int, str]] = set()
        after = start - 1
        while True:
            page = await self._store.audit.chain_page(after, VERIFY_PAGE)
            for row in page:
                if not _feed(verifier, row, prunings):
                    return verifier.finish()
            if len(page) < VERIFY_PAGE:
                break
            after = page[-1].sequence
        verdict = verifier.finish(head.sequence, head.hash)
        if verdict.intact and start > 1 and (start - 1, head.first_previous_hash) not in prunings:
            reason = (
                f"the trail starts at record {start} but no AuditTrailPruned record says that "
                f"records up to {start - 1} were pruned (records were deleted from its start)"
            )
            return replace(verdict, broken=Break(0, start, "", reason))
        return verdict

    async def prune(self, before: float) -> int:
        """Delete the records older than ``before`` (retention), recording that it did."""

        def record(through: int, through_hash: str, deleted: int) -> AuditEvent:
            return self._events.trail_pruned(through, through_hash, deleted, before)

        return await self._store.audit.prune(before, record)


def _feed(verifier: Verifier, row: StoredRecord, prunings: set[tuple[int, str]]) -> bool:
    try:
        body = json.loads(row.record)
        record = ChainedRecord.from_json({**body, "hash": row.hash})
    except (ValueError, TypeError, AttributeError):
        verifier.reject(
            "its stored text is not a record (it was changed)", row.event_id, row.sequence
        )
        return False
    if not verifier.feed(record, row.record, other_problem=_columns_problem(row, record)):
        return False
    if record.event.get("eventCode") == EventCode.TRAIL_PRUNED:
        details = record.event.get("additionalEventData") or {}
        through, through_hash = details.get("throughSequence"), details.get("throughHash")
        if isinstance(through, int) and isinstance(through_hash, str):
            prunings.add((through, through_hash))
    return True


def _columns_problem(row: StoredRecord, record: ChainedRecord) -> str | None:
    """Which columns kept beside the hashed record disagree with it (a lookup would be
    misled by an edit of them)."""
    event = record.event
    identity = event.get("userIdentity") or {}
    try:
        event_time = parse_time(str(event.get("eventTime", "")))
    except ValueError:
        event_time = None
    expected = {
        "sequence": (row.sequence, record.sequence),
        "previous_hash": (row.previous_hash, record.previous_hash),
        "event_id": (row.event_id, event.get("eventId")),
        "event_name": (row.event_name, str(event.get("eventName", ""))[:128]),
        "username": (
            row.username,
            str(identity.get("userName") or identity.get("nodeId") or "")[:128],
        ),
        "access_key_id": (row.access_key_id, str(identity.get("accessKeyId", ""))[:32]),
        "read_only": (row.read_only, bool(event.get("readOnly"))),
    }
    wrong = [name for name, (stored, hashed) in expected.items() if stored != hashed]
    if event_time is None or abs(row.event_time - event_time) > 0.0005:
        wrong.append("event_time")
    if wrong:
        return f"its column(s) {', '.join(wrong)} differ from its hashed record (changed)"
    return None


def lookup_event(row: StoredRecord) -> dict[str, Any]:
    """One record in LookupEvents' ``Events`` shape."""
    try:
        event = row.event()
    except ValueError:
        log.warning("audit record %d cannot be read (verify the trail)", row.sequence)
        event = {}
    full = {
        **event,
        "hatchwayChain": {
            "sequence": row.sequence,
            "previousHash": row.previous_hash,
            "hash": row.hash,
        },
    }
    resources = [
        {"ResourceType": r.get("type", ""), "ResourceName": r.get("name", "")}
        for r in event.get("resources") or []
        if isinstance(r, dict)
    ]
    out: dict[str, Any] = {
        "EventId": row.event_id,
        "EventName": row.event_name,
        "ReadOnly": "true" if row.read_only else "false",
        "EventTime": row.event_time,
        "EventSource": str(event.get("eventSource", "")),
        "Username": row.username,
        "Resources": resources,
        "CloudTrailEvent": json.dumps(full, ensure_ascii=False),
    }
    if row.access_key_id:
        out["AccessKeyId"] = row.access_key_id
    return out


def _query(body: dict[str, Any]) -> AuditQuery:
    criteria: dict[str, Any] = {}
    for attribute in body.get("LookupAttributes", []):
        key, value = attribute["AttributeKey"], attribute["AttributeValue"]
        field = ATTRIBUTE_FIELDS.get(key)
        if field is None:
            raise ValidationError(f"The lookup attribute {key} is not supported.")
        if field in criteria:
            raise ValidationError(f"The lookup attribute {key} is given more than once.")
        if field == "read_only":
            if value.lower() not in ("true", "false"):
                raise ValidationError("The ReadOnly lookup attribute must be true or false.")
            criteria[field] = value.lower() == "true"
        else:
            criteria[field] = value
    start, end = body.get("StartTime"), body.get("EndTime")
    if start is not None and end is not None and start > end:
        raise ValidationError("StartTime must not be after EndTime.")
    return AuditQuery(start_time=start, end_time=end, **criteria)


def _token(token: Any) -> int | None:
    if token is None:
        return None
    if not isinstance(token, str) or TOKEN.fullmatch(token) is None:
        raise InvalidNextToken("The specified token is not valid.")
    return int(token)


def _anchor_hash(value: str) -> str:
    if ANCHOR.fullmatch(value) is None:
        raise ValidationError("An anchor's Hash must be 64 lower-case hex digits.")
    return value
