"""Authentication at the edge: SigV4 for users' access keys, RSA-signed SigV4 for agents.

An agent's WebSocket upgrade (control or data channel) must also carry a fresh server nonce
in a signed ``X-Hatchway-Nonce`` header, used once (docs/protocol.md §10.2): a captured upgrade
cannot be replayed, not even within the 5 minutes its signature date is accepted. A control
channel's upgrade also names the agent's generation (``X-Hatchway-Agent-Generation``, signed)
so that the newest agent on a state directory wins (docs/protocol.md §10.3).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Final

from hatchway.auth.nonce import NONCE_HEADER, NonceIssuer
from hatchway.auth.secretbox import SecretBox
from hatchway.auth.verify import (
    ParsedAuthorization,
    check_request_time,
    check_scope,
    check_signed_headers,
    parse_authorization,
    verify_hmac_signature,
    verify_rsa_signature,
)
from hatchway.errors import AuthError, HatchwayError, IncompleteSignature, InvalidSignature
from hatchway.protocol.controlchannel import AGENT_GENERATION_HEADER
from hatchway.server.principal import Principal
from hatchway.store.store import Store

log = logging.getLogger(__name__)

UNKNOWN_KEY = "The security token included in the request is invalid."
#: Seconds within which an access key's last use is recorded once (GetAccessKeyLastUsed).
KEY_USE_PRECISION: Final = 60.0
#: Seconds between two sweeps of expired nonces (done in passing, by whoever uses a nonce).
NONCE_PURGE_INTERVAL: Final = 60.0
_GENERATION: Final = re.compile(r"[0-9]{1,15}")


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    """Who opened an agent upgrade: the node, and (control channel only) the generation of
    the agent process, None when the request carries none."""

    node_id: str
    generation: int | None = None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lower = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lower), None)
    return value


class Authenticator:
    """Checks request signatures against the store's keys, and agents' nonces."""

    def __init__(
        self,
        store: Store,
        box: SecretBox,
        *,
        region: str,
        account_id: str,
        clock: Callable[[], float],
        nonces: NonceIssuer,
    ) -> None:
        self._store = store
        self._box = box
        self._region = region
        self._account_id = account_id
        self._clock = clock
        self._nonces = nonces
        self._next_purge = 0.0  # wall clock: the sweep is shared with other replicas' rows
        self._touched: dict[str, float] = {}  # access key id → when its use was last recorded

    def _parse(self, headers: Mapping[str, str], service: str) -> ParsedAuthorization:
        parsed = parse_authorization(headers)
        check_request_time(parsed, datetime.fromtimestamp(self._clock(), UTC))
        check_scope(parsed, region=self._region, service=service)
        return parsed

    async def user(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        must_sign: Collection[str] = (),
        service: str = "ssm",
    ) -> Principal:
        """The user whose access key signed this request (SigV4, for ``service``: ``ssm``,
        ``kms`` for the key service's operations, or ``logs`` for CloudWatch Logs' operations).

        ``must_sign``: lower-case header names the signature must cover besides ``host``.
        """
        parsed = self._parse(headers, service)
        check_signed_headers(parsed, must_sign)
        key = await self._store.identity.access_key(parsed.access_key_id)
        if key is None or key.status != "Active":
            raise AuthError(UNKNOWN_KEY)
        secret = self._box.decrypt(
            key.secret_encrypted, context=key.access_key_id.encode()
        ).decode()
        verify_hmac_signature(method, url, headers, body, parsed, secret)
        await self._touch(key.access_key_id)
        return Principal(
            key.user_id,
            key.user_name,
            self._account_id,
            key.access_key_id,
            tags=MappingProxyType(dict(key.user_tags)),
        )

    async def _touch(self, access_key_id: str) -> None:
        """Record the key's last use, at most once per ``KEY_USE_PRECISION`` seconds per key
        (a failure to record it never fails the request)."""
        now = self._clock()
        if now - self._touched.get(access_key_id, float("-inf")) < KEY_USE_PRECISION:
            return
        if len(self._touched) >= 10_000:
            self._touched.clear()
        self._touched[access_key_id] = now
        try:
            await self._store.identity.touch_access_key(access_key_id, now)
        except HatchwayError as exc:
            log.info("cannot record the use of key %s now: %s", access_key_id, exc.message)

    def issue_nonce(self, node_id: str) -> str:
        """A nonce for ``node_id``'s next upgrade (``GET /v1/agent-nonce``): no lookup, no
        state, so it costs an unauthenticated caller's server nothing but an HMAC.

        Raises:
            InvalidSignature: ``node_id`` is not a node id.
        """
        return self._nonces.issue(node_id, self._clock())

    async def node(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        service: str,
        *,
        must_sign: Collection[str] = (),
    ) -> str:
        """The node whose private key signed this upgrade (or API request: ``must_sign``
        names the headers it must sign besides the nonce), with a fresh, unused nonce
        (docs/protocol.md §10.2)."""
        return (await self.agent(method, url, headers, body, service, must_sign)).node_id

    async def agent(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        service: str,
        must_sign: Collection[str] = (),
    ) -> AgentIdentity:
        """Like :meth:`node`, plus the agent generation the upgrade names, if any.

        Cheap checks come first (syntax, time, scope, the nonce's MAC and binding), then the
        node's key, then the signature; only a correctly signed upgrade uses up its nonce.

        Raises:
            AuthError: unknown node, bad or stale signature, missing, forged, stale, foreign
                or already used nonce, unsigned nonce or generation header.
            StoreError: the database failed (the caller should answer "try again").
        """
        parsed = self._parse(headers, service)
        nonce = _header(headers, NONCE_HEADER)
        if nonce is None:
            raise IncompleteSignature(
                f"an agent upgrade must carry a signed {NONCE_HEADER} header "
                "(GET /v1/agent-nonce gives one)"
            )
        check_signed_headers(parsed, (NONCE_HEADER.lower(), *must_sign))
        now = self._clock()
        checked = self._nonces.check(nonce.strip(), parsed.access_key_id, now)
        generation = self._generation(headers, parsed)
        node = await self._store.nodes.get(parsed.access_key_id)
        if node is None:
            raise AuthError(UNKNOWN_KEY)
        verify_rsa_signature(method, url, headers, body, parsed, node.public_key)
        if not await self._store.nonces.use(checked.digest, node.instance_id, checked.expires_at):
            raise InvalidSignature("this agent nonce was already used: the request is a replay")
        if now >= self._next_purge:
            self._next_purge = now + NONCE_PURGE_INTERVAL
            await self._purge(now)
        return AgentIdentity(node.instance_id, generation)

    @staticmethod
    def _generation(headers: Mapping[str, str], parsed: ParsedAuthorization) -> int | None:
        raw = _header(headers, AGENT_GENERATION_HEADER)
        if raw is None:
            return None
        check_signed_headers(parsed, (AGENT_GENERATION_HEADER.lower(),))
        raw = raw.strip()
        if _GENERATION.fullmatch(raw) is None or int(raw) < 1:
            raise IncompleteSignature(f"{AGENT_GENERATION_HEADER} must be a positive integer")
        return int(raw)

    async def _purge(self, now: float) -> None:
        try:
            purged = await self._store.nonces.purge(now)
        except HatchwayError as exc:
            log.info("cannot purge used agent nonces now: %s", exc.message)
            return
        if purged:
            log.debug("forgot %d expired agent nonces", purged)
