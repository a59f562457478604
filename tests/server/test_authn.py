"""Agent upgrades: signed, bound to a fresh server nonce, used once (docs/protocol.md §10.2)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric import rsa

from hatchway.auth.agentkey import generate_private_key, pss_signer, public_key_b64
from hatchway.auth.nonce import NONCE_HEADER, NONCE_LIFETIME, NonceIssuer, derive_key
from hatchway.auth.secretbox import SecretBox
from hatchway.auth.sigv4 import sign_request_rsa
from hatchway.errors import AuthError, IncompleteSignature, InvalidSignature
from hatchway.protocol.controlchannel import AGENT_GENERATION_HEADER
from hatchway.server.authn import NONCE_PURGE_INTERVAL, Authenticator
from hatchway.store.database import sqlite_url
from hatchway.store.records import Activation, Node
from hatchway.store.store import Store
from tests.fakes import FakeClock

NODE = "mi-0123456789abcdef0"
OTHER = "mi-00000000000000001"
URL = "wss://hatchway.test/v1/control-channel/mi-0123456789abcdef0?role=subscribe"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return generate_private_key()


@pytest_asyncio.fixture
async def store(tmp_path: Path, key: rsa.RSAPrivateKey) -> AsyncIterator[Store]:
    store = Store.open(sqlite_url(tmp_path / "hatchway.db"))
    await store.activations.create(
        Activation("a-1", "h", "", "n", "", 10, 0, 2e9, 1.0, {})  # type: ignore[arg-type]
    )
    for node_id in (NODE, OTHER):
        node = Node(
            instance_id=node_id, activation_id="a-1", public_key=public_key_b64(key),
            public_key_type="Rsa", fingerprint="f", name="n", computer_name="",
            platform_type="", platform_name="", platform_version="", ip_address="",
            agent_version="", registration_date=1.0, last_ping_at=None, connected=False, tags={},
        )  # fmt: skip
        assert await store.activations.register_node("a-1", node, 1.0)
    try:
        yield store
    finally:
        await store.close()


class Setup:
    def __init__(self, store: Store, key: rsa.RSAPrivateKey) -> None:
        self.clock = FakeClock()
        self.issuer = NonceIssuer(derive_key(secrets.token_bytes(32), b"agent upgrade nonce"))
        self.authn = Authenticator(
            store,
            SecretBox(secrets.token_bytes(32)),
            region="local",
            account_id="123456789012",
            clock=self.clock,
            nonces=self.issuer,
        )
        self.sign = pss_signer(key)

    def upgrade(
        self, nonce: str | None, extra: dict[str, str] | None = None, node_id: str = NODE
    ) -> dict[str, str]:
        headers = dict(extra or {})
        if nonce is not None:
            headers[NONCE_HEADER] = nonce
        return sign_request_rsa(
            "GET",
            URL,
            headers,
            b"",
            node_id=node_id,
            private_key_sign=self.sign,
            region="local",
            service="ssmmessages",
            now=datetime.fromtimestamp(self.clock(), UTC),
        )

    async def check(self, headers: dict[str, str]) -> str:
        path = URL.split("hatchway.test", 1)[1]
        return await self.authn.node("GET", path, headers, b"", "ssmmessages")


@pytest.mark.asyncio
async def test_a_replayed_upgrade_is_refused(store: Store, key: rsa.RSAPrivateKey) -> None:
    s = Setup(store, key)
    headers = s.upgrade(s.authn.issue_nonce(NODE))
    assert await s.check(headers) == NODE
    s.clock.advance(30)  # well within the 5-minute signature window
    with pytest.raises(InvalidSignature, match="replay"):
        await s.check(headers)


@pytest.mark.asyncio
async def test_the_used_nonce_outlives_the_server_process(
    store: Store, key: rsa.RSAPrivateKey
) -> None:
    s = Setup(store, key)
    headers = s.upgrade(s.authn.issue_nonce(NODE))
    assert await s.check(headers) == NODE
    # Another replica (or this server after a restart) with the same master key.
    again = Authenticator(
        store,
        SecretBox(secrets.token_bytes(32)),
        region="local",
        account_id="123456789012",
        clock=s.clock,
        nonces=s.issuer,
    )
    with pytest.raises(InvalidSignature, match="replay"):
        await again.node("GET", URL.split("hatchway.test", 1)[1], headers, b"", "ssmmessages")


@pytest.mark.asyncio
async def test_an_upgrade_needs_a_signed_fresh_nonce_of_its_own(
    store: Store, key: rsa.RSAPrivateKey
) -> None:
    s = Setup(store, key)
    with pytest.raises(IncompleteSignature, match=NONCE_HEADER):
        await s.check(s.upgrade(None))
    # Added after signing: not covered by the signature.
    headers = s.upgrade(None)
    headers[NONCE_HEADER] = s.authn.issue_nonce(NODE)
    with pytest.raises(IncompleteSignature, match="SignedHeader"):
        await s.check(headers)
    with pytest.raises(InvalidSignature, match="another node"):
        await s.check(s.upgrade(s.authn.issue_nonce(OTHER)))
    forged = s.authn.issue_nonce(NODE)[:-4] + "AAAA"
    with pytest.raises(InvalidSignature, match="not issued"):
        await s.check(s.upgrade(forged))
    stale = s.authn.issue_nonce(NODE)
    s.clock.advance(NONCE_LIFETIME + 1)
    with pytest.raises(InvalidSignature, match="expired"):
        await s.check(s.upgrade(stale))
    with pytest.raises(InvalidSignature, match="malformed"):
        await s.check(s.upgrade("1.2.3"))
    # A nonce may be used by its own node once, even when another upgrade raced it.
    fresh = s.authn.issue_nonce(NODE)
    assert await s.check(s.upgrade(fresh)) == NODE
    with pytest.raises(InvalidSignature, match="replay"):
        await s.check(s.upgrade(fresh))


@pytest.mark.asyncio
async def test_a_nonce_is_only_for_node_ids(store: Store, key: rsa.RSAPrivateKey) -> None:
    s = Setup(store, key)
    with pytest.raises(AuthError):
        s.authn.issue_nonce("mi-../../etc")


@pytest.mark.asyncio
async def test_generation_header_must_be_signed_and_numeric(
    store: Store, key: rsa.RSAPrivateKey
) -> None:
    s = Setup(store, key)
    path = URL.split("hatchway.test", 1)[1]
    signed = s.upgrade(s.authn.issue_nonce(NODE), {AGENT_GENERATION_HEADER: "7"})
    agent = await s.authn.agent("GET", path, signed, b"", "ssmmessages")
    assert (agent.node_id, agent.generation) == (NODE, 7)
    none = await s.authn.agent(
        "GET", path, s.upgrade(s.authn.issue_nonce(NODE)), b"", "ssmmessages"
    )
    assert none.generation is None
    unsigned = s.upgrade(s.authn.issue_nonce(NODE))
    unsigned[AGENT_GENERATION_HEADER] = "99"
    with pytest.raises(IncompleteSignature, match="SignedHeader"):
        await s.authn.agent("GET", path, unsigned, b"", "ssmmessages")
    for bad in ("0", "-1", "²", "1" * 40):
        headers = s.upgrade(s.authn.issue_nonce(NODE), {AGENT_GENERATION_HEADER: bad})
        with pytest.raises(IncompleteSignature, match="positive integer"):
            await s.authn.agent("GET", path, headers, b"", "ssmmessages")


@pytest.mark.asyncio
async def test_expired_nonces_are_forgotten(store: Store, key: rsa.RSAPrivateKey) -> None:
    s = Setup(store, key)
    for _ in range(3):
        await s.check(s.upgrade(s.authn.issue_nonce(NODE)))
    s.clock.advance(max(NONCE_PURGE_INTERVAL, NONCE_LIFETIME) + 60)
    await s.check(s.upgrade(s.authn.issue_nonce(NODE)))  # sweeps in passing
    assert await store.nonces.purge(s.clock()) == 0
    from sqlalchemy import func, select

    from hatchway.store import schema

    async with store.engine.connect() as conn:
        left = (await conn.execute(select(func.count()).select_from(schema.used_nonces))).scalar()
    assert left == 1
