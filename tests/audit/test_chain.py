"""The hash chain: any single change, removal, insertion or reordering of records is caught,
and the first record where the chain breaks is named."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.audit.chain import GENESIS, ChainedRecord, canonical, digest, link, verify


def chain(events: list[dict[str, Any]]) -> list[ChainedRecord]:
    records: list[ChainedRecord] = []
    previous = GENESIS
    for sequence, event in enumerate(events, start=1):
        record = link(sequence, previous, event)
        records.append(record)
        previous = record.hash
    return records


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)
events = st.builds(
    lambda i, name, extra: {"eventId": f"id-{i}", "eventName": name, "extra": extra},
    st.integers(0, 10**6),
    st.text(min_size=1, max_size=12),
    json_values,
)
chains = st.lists(events, min_size=2, max_size=12).map(chain)


def test_an_untouched_chain_verifies() -> None:
    records = chain([{"eventId": str(i), "n": i} for i in range(5)])
    verdict = verify(records, head_sequence=5, head_hash=records[-1].hash)
    assert verdict.intact
    assert (verdict.records, verdict.first_sequence, verdict.last_sequence) == (5, 1, 5)
    assert verdict.head_hash == records[-1].hash
    assert verdict.summary().startswith("audit chain intact: 5 records, sequence 1–5")


def test_the_hash_covers_the_canonical_body_with_the_previous_hash() -> None:
    record = link(1, GENESIS, {"b": 1, "a": "é"})
    assert record.body == '{"event":{"a":"é","b":1},"previousHash":"' + GENESIS + '","sequence":1}'
    assert record.hash == digest(record.body)
    assert ChainedRecord.from_json(record.to_json()) == record


def test_an_empty_chain_is_intact_unless_the_head_says_otherwise() -> None:
    assert verify([]).intact
    verdict = verify([], head_sequence=2)
    assert not verdict.intact
    assert verdict.broken is not None and verdict.broken.sequence == 1
    assert "records 1–2 are missing" in verdict.broken.reason


def test_canonical_refuses_what_json_cannot_say_exactly() -> None:
    with pytest.raises(ValueError):
        canonical({"x": float("nan")})


@given(chains, st.data())
def test_a_changed_record_is_named(records: list[ChainedRecord], data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(records) - 1))
    changed = dict(records[i].event)
    changed["eventName"] = changed["eventName"] + "!"
    tampered = [*records[:i], replace(records[i], event=changed), *records[i + 1 :]]
    verdict = verify(tampered)
    assert verdict.broken is not None
    assert verdict.broken.sequence == i + 1
    assert "changed" in verdict.broken.reason


@given(chains, st.data())
def test_a_changed_record_with_a_fresh_hash_is_named_by_its_successor_or_the_head(
    records: list[ChainedRecord], data: st.DataObject
) -> None:
    i = data.draw(st.integers(0, len(records) - 1))
    forged = link(records[i].sequence, records[i].previous_hash, {"eventId": "forged"})
    tampered = [*records[:i], forged, *records[i + 1 :]]
    verdict = verify(tampered, head_sequence=len(records), head_hash=records[-1].hash)
    assert verdict.broken is not None
    assert verdict.broken.sequence == min(i + 2, len(records))


@given(chains, st.data())
def test_a_removed_record_is_named(records: list[ChainedRecord], data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(records) - 1))
    tampered = records[:i] + records[i + 1 :]
    verdict = verify(tampered, head_sequence=len(records), head_hash=records[-1].hash)
    assert verdict.broken is not None
    assert verdict.broken.sequence == i + 1
    assert "removed" in verdict.broken.reason or "missing" in verdict.broken.reason


@given(chains, st.data())
def test_an_inserted_record_is_named(records: list[ChainedRecord], data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(records)))
    previous = records[i - 1].hash if i else GENESIS
    inserted = link(i + 1, previous, {"eventId": "inserted"})
    tampered = [*records[:i], inserted, *records[i:]]
    verdict = verify(tampered, head_sequence=len(records), head_hash=records[-1].hash)
    assert verdict.broken is not None
    # The inserted record links correctly; the one after it (or the head) does not.
    assert verdict.broken.sequence == i + 2 or (i == len(records) and verdict.broken.sequence)


@given(chains, st.data())
def test_reordered_records_are_named(records: list[ChainedRecord], data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(records) - 2))
    j = data.draw(st.integers(i + 1, len(records) - 1))
    tampered = list(records)
    tampered[i], tampered[j] = tampered[j], tampered[i]
    verdict = verify(tampered)
    assert verdict.broken is not None
    assert verdict.broken.sequence == i + 1
    assert f"found record {j + 1} where record {i + 1} belongs" in verdict.broken.reason


@given(chains)
def test_records_cut_from_the_end_are_caught_by_the_head(records: list[ChainedRecord]) -> None:
    verdict = verify(records[:-1], head_sequence=len(records), head_hash=records[-1].hash)
    assert verdict.broken is not None and verdict.broken.sequence == len(records)
    assert not verify(records[:-1], head_sequence=len(records) - 1, head_hash="x" * 64).intact


def test_a_rewritten_chain_is_caught_by_an_anchor() -> None:
    records = chain([{"eventId": str(i)} for i in range(4)])
    rewritten = chain([{"eventId": "0"}, {"eventId": "X"}, {"eventId": "2"}, {"eventId": "3"}])
    assert verify(rewritten, head_sequence=4, head_hash=rewritten[-1].hash).intact
    verdict = verify(rewritten, anchors={2: records[1].hash})
    assert verdict.broken is not None and verdict.broken.sequence == 2
    assert "anchor" in verdict.broken.reason
    assert verify(records, anchors={2: records[1].hash}).intact
    missing = verify(records[:1], anchors={3: records[2].hash})
    assert missing.broken is not None and missing.broken.sequence == 3


def test_a_segment_verifies_from_any_start() -> None:
    records = chain([{"eventId": str(i)} for i in range(6)])
    assert verify(records[2:], start=None).intact
    assert not verify(records[2:]).intact  # a whole trail starts at 1
