"""Hypothesis properties: frame round trips and reliable delivery over a hostile wire."""

from __future__ import annotations

import contextlib
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hatchway.errors import RemoteProtocolError
from hatchway.protocol.frames import Frame, PayloadType, decode_frame, encode_frame
from hatchway.protocol.reliability import MAX_RTO, Role

from .pair import T0, Pair, Wire

_TYPE_ALPHABET = st.characters(min_codepoint=0x21, max_codepoint=0x7E)

frames = st.builds(
    Frame,
    message_type=st.text(_TYPE_ALPHABET, min_size=1, max_size=32),
    sequence_number=st.integers(-(2**63), 2**63 - 1),
    flags=st.integers(0, 2**64 - 1),
    message_id=st.uuids(),
    payload_type=st.integers(0, 2**32 - 1),
    payload=st.binary(min_size=1, max_size=2048),
    created_date=st.integers(1, 2**64 - 1),
    schema_version=st.integers(0, 2**32 - 1),
)


@given(frames)
def test_decode_inverts_encode(frame: Frame) -> None:
    assert decode_frame(encode_frame(frame)) == frame


@given(st.binary(max_size=400))
def test_decode_fails_only_with_remote_protocol_error(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_frame(data)


@given(frames, st.integers(0, 119), st.binary(min_size=1, max_size=1))
def test_corrupted_frames_fail_cleanly(frame: Frame, offset: int, byte: bytes) -> None:
    data = bytearray(encode_frame(frame))
    data[offset] = byte[0]
    with contextlib.suppress(RemoteProtocolError):
        decode_frame(bytes(data))


messages = st.lists(st.binary(min_size=1, max_size=700), max_size=8)

wires = st.builds(
    Wire,
    loss=st.floats(0.0, 0.4),
    duplication=st.floats(0.0, 0.3),
    reorder=st.booleans(),
    rng=st.randoms(use_true_random=False),
)


def _send_all(pair: Pair, role: Role, chunks: list[bytes]) -> None:
    for chunk in chunks:
        pair.endpoint(role).send(PayloadType.OUTPUT, chunk, now=pair.now)


def _assert_delivered(pair: Pair, role: Role, sent: list[bytes]) -> None:
    stream = pair.stream(role)
    assert [e.sequence_number for e in stream] == list(range(len(stream)))
    assert pair.received(role) == b"".join(sent)
    sender = pair.agent if role is Role.CLIENT else pair.client
    assert len(stream) == sender.next_sequence_number


def _cut_or_rejoin(pair: Pair, role: Role) -> None:
    if role in pair.absent:
        pair.rejoin(role)
    else:
        pair.cut(role)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    wire=wires,
    to_agent=messages,
    to_client=messages,
    payload_size=st.sampled_from([1, 7, 64, 1024]),
    receive_capacity=st.sampled_from([0, 1, 4, 10_000]),
    cuts=st.lists(st.sampled_from([None, Role.CLIENT, Role.AGENT]), max_size=8),
)
def test_exactly_once_in_order_over_a_hostile_wire(
    wire: Wire,
    to_agent: list[bytes],
    to_client: list[bytes],
    payload_size: int,
    receive_capacity: int,
    cuts: list[Role | None],
) -> None:
    pair = Pair(wire=wire, max_payload_size=payload_size, receive_capacity=receive_capacity)
    # Interleave sending with carrying, timers and connections cut or made again, so frames
    # cross on the wire.
    for index in range(max(len(to_agent), len(to_client), len(cuts))):
        _send_all(pair, Role.CLIENT, to_agent[index : index + 1])
        _send_all(pair, Role.AGENT, to_client[index : index + 1])
        pair.collect()
        for _ in range(wire.rng.randrange(3)):
            pair.deliver_one()
        if index < len(cuts) and (role := cuts[index]) is not None:
            _cut_or_rejoin(pair, role)
        if wire.rng.random() < 0.2:
            pair.advance()
    for role in list(pair.absent):
        pair.rejoin(role)
    pair.run_until_acked(max_steps=200_000)
    _assert_delivered(pair, Role.AGENT, to_agent)
    _assert_delivered(pair, Role.CLIENT, to_client)
    assert pair.client.next_deadline() is None and pair.agent.next_deadline() is None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    to_agent=messages,
    to_client=st.lists(st.binary(min_size=1, max_size=700), min_size=1, max_size=12),
    payload_size=st.sampled_from([1, 7, 64, 1024]),
    steps=st.lists(
        st.sampled_from(["deliver", "deliver", "deliver", "timer", Role.CLIENT, Role.AGENT]),
        max_size=40,
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_aws_plugin_gets_everything_once_across_cuts_with_inferred_acks(
    to_agent: list[bytes],
    to_client: list[bytes],
    payload_size: int,
    steps: list[str | Role],
    seed: int,
) -> None:
    """The real deployment with AWS's plugin as the client: WebSockets deliver in order and
    lose nothing until cut; the plugin drops duplicates without an ack. No inferred ack may
    give up a frame the plugin does not have, and one new frame after the last reconnect
    settles every frame whose ack was lost."""
    pair = Pair(
        wire=Wire(rng=random.Random(seed)),
        client_drops_duplicates=True,
        max_payload_size=payload_size,
        agent={"cumulative_acks": True},
    )
    rng = random.Random(seed)
    for index, step in enumerate(steps):
        _send_all(pair, Role.CLIENT, to_agent[index : index + 1])
        _send_all(pair, Role.AGENT, to_client[index : index + 1])
        pair.collect()
        if step == "deliver":
            for _ in range(rng.randrange(6)):
                pair.deliver_one()
        elif step == "timer":
            pair.advance()
        else:
            assert isinstance(step, Role)
            _cut_or_rejoin(pair, step)
    _send_all(pair, Role.CLIENT, to_agent[len(steps) :])
    _send_all(pair, Role.AGENT, to_client[len(steps) :])
    for role in list(pair.absent):
        pair.rejoin(role)
    pair.deliver()  # no timers: a path change re-sends everything
    assert pair.client.all_acked
    _assert_delivered(pair, Role.AGENT, to_agent)
    _assert_delivered(pair, Role.CLIENT, to_client)
    probe = b"$ "
    pair.agent.send(PayloadType.OUTPUT, probe, now=pair.now)
    pair.deliver()
    assert pair.agent.all_acked
    _assert_delivered(pair, Role.CLIENT, [*to_client, probe])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    frames=st.integers(100, 3000),
    latency=st.floats(0.0002, 0.004),
    window=st.integers(8, 2000),
)
def test_a_slow_lossless_reader_causes_few_resends(
    frames: int, latency: float, window: int
) -> None:
    """Issue 5: a slow reader got 3,114 resent frames for 1,486 real ones.

    The agent writes as fast as its send window allows into a link that carries one frame
    per ``latency`` (acks included), so frames queue for up to ``2 * window * latency`` seconds,
    beyond the RTO's cap for the larger windows. Timers fire whenever due.
    """
    pair = Pair(latency=latency, agent={"max_payload_size": 1, "send_capacity": window})
    sent = 0
    while sent < frames:
        room = min(pair.agent.send_window(), frames - sent)
        if room:
            pair.agent.send(PayloadType.OUTPUT, bytes(room), now=pair.now)
            sent += room
        pair.collect()
        pair.fire_timers()
        pair.collect()
        if not pair.deliver_one():
            pair.advance()
    pair.run_until_acked(max_steps=1_000_000, timers_while_busy=True)
    assert pair.received(Role.CLIENT) == bytes(frames)
    elapsed = pair.now - T0
    assert pair.agent.retransmissions <= elapsed / MAX_RTO + 2
    assert pair.agent.retransmissions <= frames / 10


@settings(max_examples=60, deadline=None)
@given(
    to_agent=messages,
    to_client=messages,
    delivered_first=st.integers(0, 30),
    seed=st.integers(0, 2**32 - 1),
)
def test_retransmit_all_recovers_after_losing_everything_in_flight(
    to_agent: list[bytes], to_client: list[bytes], delivered_first: int, seed: int
) -> None:
    pair = Pair(wire=Wire(reorder=True, rng=random.Random(seed)), max_payload_size=100)
    _send_all(pair, Role.CLIENT, to_agent)
    _send_all(pair, Role.AGENT, to_client)
    pair.collect()
    for _ in range(delivered_first):
        pair.deliver_one()
    # The connection drops: everything on the wire and in the outboxes is gone.
    pair.in_flight.clear()
    pair.client.data_to_send()
    pair.agent.data_to_send()
    pair.client.retransmit_all(pair.now)
    pair.agent.retransmit_all(pair.now)
    pair.deliver()  # no timers needed
    assert pair.client.all_acked and pair.agent.all_acked
    _assert_delivered(pair, Role.AGENT, to_agent)
    _assert_delivered(pair, Role.CLIENT, to_client)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=10), st.randoms(use_true_random=False))
def test_endpoint_receive_fails_only_with_remote_protocol_error(
    garbage: list[bytes], rng: random.Random
) -> None:
    pair = Pair()
    pair.agent.send(PayloadType.OUTPUT, b"hello", now=pair.now)
    real = pair.agent.data_to_send()
    for data in garbage + real:
        if data and rng.random() < 0.5:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        with contextlib.suppress(RemoteProtocolError):
            pair.client.receive(data, now=pair.now)


def test_heavy_loss_converges_with_bounded_timer_rounds() -> None:
    wire = Wire(loss=0.5, duplication=0.3, reorder=True, rng=random.Random(1234))
    pair = Pair(wire=wire, max_payload_size=64, receive_capacity=4)
    rng = random.Random(99)
    to_agent = [rng.randbytes(rng.randrange(1, 500)) for _ in range(40)]
    to_client = [rng.randbytes(rng.randrange(1, 500)) for _ in range(40)]
    _send_all(pair, Role.CLIENT, to_agent)
    _send_all(pair, Role.AGENT, to_client)
    pair.run_until_acked(max_steps=500_000)
    _assert_delivered(pair, Role.AGENT, to_agent)
    _assert_delivered(pair, Role.CLIENT, to_client)
    sent = pair.client.next_sequence_number + pair.agent.next_sequence_number
    assert pair.frames_carried > 2 * sent  # losses really forced retransmissions
