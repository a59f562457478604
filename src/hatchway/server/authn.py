"""Authentication at the edge: SigV4 for users' access keys, RSA-signed SigV4 for agents."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime

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
from hatchway.errors import AuthError
from hatchway.server.principal import Principal
from hatchway.store.store import Store

UNKNOWN_KEY = "The security token included in the request is invalid."


class Authenticator:
    """Checks request signatures against the store's keys."""

    def __init__(
        self,
        store: Store,
        box: SecretBox,
        *,
        region: str,
        account_id: str,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._box = box
        self._region = region
        self._account_id = account_id
        self._clock = clock

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
    ) -> Principal:
        """The user whose access key signed this request (SigV4, service ``ssm``).

        ``must_sign``: lower-case header names the signature must cover besides ``host``.
        """
        parsed = self._parse(headers, "ssm")
        check_signed_headers(parsed, must_sign)
        key = await self._store.identity.access_key(parsed.access_key_id)
        if key is None or key.status != "Active":
            raise AuthError(UNKNOWN_KEY)
        secret = self._box.decrypt(
            key.secret_encrypted, context=key.access_key_id.encode()
        ).decode()
        verify_hmac_signature(method, url, headers, body, parsed, secret)
        return Principal(key.user_id, key.user_name, self._account_id, key.access_key_id)

    async def node(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes, service: str
    ) -> str:
        """The node whose private key signed this request (protocol.md §9.1)."""
        parsed = self._parse(headers, service)
        node = await self._store.nodes.get(parsed.access_key_id)
        if node is None:
            raise AuthError(UNKNOWN_KEY)
        verify_rsa_signature(method, url, headers, body, parsed, node.public_key)
        return node.instance_id
