"""End-to-end session encryption's cipher (docs/protocol.md §7.9): AES-256-GCM, one key per
direction, AWS's ``nonce ‖ ciphertext ‖ tag`` layout."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import assume, given
from hypothesis import strategies as st

from hatchway.auth.sessioncipher import OVERHEAD, SessionCipher, Side
from hatchway.errors import PayloadAuthenticationError, ValidationError
from hatchway.protocol.encryption import split_data_key

# The 64-byte key of AWS's agent's own tests (agent/session/crypto/blockcipher_test.go), and
# the vectors of docs/protocol.md §7.9 (produced with Go's crypto).
KEY = b"wubba lubba dub dub wubba lubba dub dub wubba lubba dub dub wubb"
NONCE = bytes.fromhex("010000000200000003000000")
AGENT_TO_CLIENT_HELLO = bytes.fromhex(
    "010000000200000003000000c9a29342b3808fc557da0a2aafaa7e001fe27154fb"
)
CLIENT_TO_AGENT_HELLO = bytes.fromhex(
    "01000000020000000300000035f52fba17e116a14508f645faf8b4d54043f92cb1"
)


def pair(key: bytes = KEY) -> tuple[SessionCipher, SessionCipher]:
    return SessionCipher(key, Side.AGENT), SessionCipher(key, Side.CLIENT)


def test_aws_vectors_open_in_each_direction() -> None:
    agent, client = pair()
    assert client.open(AGENT_TO_CLIENT_HELLO) == b"hello"
    assert agent.open(CLIENT_TO_AGENT_HELLO) == b"hello"


def test_key_halves_are_the_directions() -> None:
    to_client, to_agent = split_data_key(KEY)
    assert NONCE + AESGCM(to_client).encrypt(NONCE, b"hello", None) == AGENT_TO_CLIENT_HELLO
    assert NONCE + AESGCM(to_agent).encrypt(NONCE, b"hello", None) == CLIENT_TO_AGENT_HELLO


def test_round_trip_per_direction_with_fresh_nonces() -> None:
    agent, client = pair()
    sealed = agent.seal(b"output")
    assert len(sealed) == len(b"output") + OVERHEAD
    assert client.open(sealed) == b"output"
    assert agent.seal(b"output")[:12] != sealed[:12]  # a fresh random nonce each time
    assert agent.open(client.seal(b"typed")) == b"typed"


def test_wrong_direction_is_refused() -> None:
    agent, client = pair()
    with pytest.raises(PayloadAuthenticationError, match="failed authentication"):
        agent.open(agent.seal(b"reflected back to its sender"))
    with pytest.raises(PayloadAuthenticationError):
        client.open(client.seal(b"x"))


def test_another_sessions_key_is_refused() -> None:
    agent, _ = pair()
    _, stranger = pair(bytes(64))
    with pytest.raises(PayloadAuthenticationError):
        stranger.open(agent.seal(b"secret"))


@pytest.mark.parametrize("where", [0, 11, 12, -17, -1])
def test_tampered_payload_is_refused_with_a_clear_error(where: int) -> None:
    agent, client = pair()
    sealed = bytearray(agent.seal(b"ls -la /root\r"))
    sealed[where] ^= 0x01
    with pytest.raises(PayloadAuthenticationError) as caught:
        client.open(bytes(sealed))
    assert "altered" in caught.value.message


def test_cut_payload_is_refused() -> None:
    agent, client = pair()
    with pytest.raises(PayloadAuthenticationError, match="shorter than its nonce and tag"):
        client.open(agent.seal(b"x")[: OVERHEAD - 1])
    with pytest.raises(PayloadAuthenticationError):
        client.open(agent.seal(b"abc")[:-1])


def test_data_key_must_be_64_bytes() -> None:
    with pytest.raises(ValidationError, match="64 bytes"):
        SessionCipher(bytes(32), Side.AGENT)


def test_repr_hides_the_keys() -> None:
    assert "wubba" not in repr(SessionCipher(KEY, Side.CLIENT))


@given(
    key=st.binary(min_size=64, max_size=64),
    payloads=st.lists(st.binary(min_size=1, max_size=4096), min_size=1, max_size=8),
)
def test_property_every_payload_round_trips_one_way_only(key: bytes, payloads: list[bytes]) -> None:
    assume(key[:32] != key[32:])  # two equal halves would make one key for both directions
    agent, client = pair(key)
    for payload in payloads:
        down, up = agent.seal(payload), client.seal(payload)
        assert client.open(down) == payload
        assert agent.open(up) == payload
        assert payload not in down[12:-16] or len(payload) < 4  # no plaintext on the wire
        with pytest.raises(PayloadAuthenticationError):
            agent.open(down)


@given(payload=st.binary(min_size=1, max_size=512), flip=st.integers(min_value=0))
def test_property_any_single_bit_flip_is_refused(payload: bytes, flip: int) -> None:
    agent, client = pair()
    sealed = bytearray(agent.seal(payload))
    bit = flip % (len(sealed) * 8)
    sealed[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(PayloadAuthenticationError):
        client.open(bytes(sealed))
