"""Activations and managed nodes: CreateActivation, DescribeActivations, DeleteActivation,
RegisterManagedInstance, DescribeInstanceInformation, DeregisterManagedInstance."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from hatchway.audit.events import EventCode
from hatchway.auth.tokens import UNMATCHABLE_HASH, hash_secret, new_activation_code
from hatchway.errors import (
    ConfigError,
    InvalidActivation,
    InvalidFilterKey,
    InvalidInstanceId,
    InvalidResourceId,
    InvalidResourceType,
    StoreError,
    Throttled,
    ValidationError,
)
from hatchway.server.audit import AuditEvents, node_identity, user_identity
from hatchway.server.authz import Arns
from hatchway.server.control import NodeControl
from hatchway.server.events.catalog import EventCatalog
from hatchway.server.pagination import keyset_request, keyset_token
from hatchway.server.presence import online_window
from hatchway.server.principal import Principal
from hatchway.server.sessions import SessionService
from hatchway.server.settings import ServerSettings
from hatchway.server.throttle import Attempt, FailureLimiter, source_key
from hatchway.server.validation import echo
from hatchway.server.verifier import SecretVerifier
from hatchway.store.records import Activation, Node
from hatchway.store.store import Store

log = logging.getLogger(__name__)

DEFAULT_EXPIRY = 24 * 3600.0
MAX_EXPIRY = 30 * 24 * 3600.0
MAX_REGISTRATIONS = 1000
MAX_TAGS = 50
INVALID_ACTIVATION = "Activation ID or code is not valid."


class NodeService:
    """Registration of nodes by activation, and what the server knows of each node.

    Args:
        verifier: checks activation codes off the event loop (a bounded pool).
        limiter: per-source back-off after failed registrations (monotonic clock).
    """

    def __init__(
        self,
        store: Store,
        settings: ServerSettings,
        clock: Callable[[], float],
        control: NodeControl,
        sessions: SessionService,
        *,
        verifier: SecretVerifier,
        limiter: FailureLimiter,
        audit: AuditEvents | None = None,
    ) -> None:
        self._store = store
        self._audit = audit or AuditEvents(Arns(settings.region, ""), clock)
        self._settings = settings
        self._clock = clock
        self._control = control
        self._sessions = sessions
        self._verifier = verifier
        self._limiter = limiter
        self.events = EventCatalog(clock)

    def close(self) -> None:
        """Stop the pool that checks activation codes."""
        self._verifier.close()

    # ---- activations ----------------------------------------------------------------------

    async def create_activation(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        """CreateActivation; ``body`` has been validated against the model (api.Api)."""
        now = self._clock()
        expiry: float | None = body.get("ExpirationDate")
        expires_at = now + DEFAULT_EXPIRY if expiry is None else expiry
        # The model says a timestamp; the window is Hatchway's (AWS allows 30 days too).
        if expires_at <= now:
            raise ValidationError("ExpirationDate must be in the future")
        if expires_at - now > MAX_EXPIRY + 60:
            raise ValidationError("ExpirationDate must be at most 30 days ahead")
        tags = tags_from_list(body.get("Tags", []))
        code = new_activation_code()
        activation = Activation(
            activation_id=str(uuid.uuid4()),
            code_hash=hash_secret(code),
            description=body.get("Description", ""),
            default_instance_name=body.get("DefaultInstanceName", ""),
            iam_role=body.get("IamRole", ""),
            registration_limit=body.get("RegistrationLimit", 1),
            registrations_count=0,
            expiration_date=expires_at,
            created_date=now,
            tags=tags,
        )
        await self._store.activations.create(activation)
        log.info("activation %s created by %s", activation.activation_id, principal.user_name)
        return {"ActivationId": activation.activation_id, "ActivationCode": code}

    async def describe_activations(self, body: dict[str, Any]) -> dict[str, Any]:
        """DescribeActivations: keyset-paged in creation order, every filter in SQL."""
        limit, after = keyset_request(body, default=50)
        wanted: dict[str, set[str]] = {}
        for f in body.get("Filters", []):
            # The model makes FilterKey optional (and checks its values); a filter without one
            # would filter on nothing.
            if "FilterKey" not in f:
                raise ValidationError("each filter of DescribeActivations needs a FilterKey")
            values = set(f.get("FilterValues", []))
            key = f["FilterKey"]
            wanted[key] = wanted[key] & values if key in wanted else values
        now = self._clock()
        rows = await self._store.activations.page(
            limit=limit + 1,
            after=after,
            activation_ids=wanted.get("ActivationIds"),
            default_instance_names=wanted.get("DefaultInstanceName"),
            iam_roles=wanted.get("IamRole"),
        )
        page = rows[:limit]
        return {
            "ActivationList": [_activation_json(a, now) for a in page],
            **(
                {"NextToken": keyset_token((page[-1].created_date, page[-1].activation_id))}
                if len(rows) > limit
                else {}
            ),
        }

    async def delete_activation(self, body: dict[str, Any]) -> dict[str, Any]:
        await self._store.activations.delete(body["ActivationId"])
        return {}

    # ---- registration ---------------------------------------------------------------------

    async def register(self, body: dict[str, Any], attempt: Attempt) -> dict[str, Any]:
        """RegisterManagedInstance (anonymous; the activation code is the credential).

        A database that fails under load (a lock or pool wait that timed out) is answered
        ``ThrottlingException``, never a 500: registration is one transaction, so nothing was
        written, and the agent retries a throttled registration with back-off (issue 10 saw 5
        of 3,000 registrations under load answered "internal server error").

        ``body`` has been validated against ``validation.REGISTER_MODEL`` (api.Api): the three
        strings are present and well-formed; whether the key is a usable RSA key is checked here.

        Guessing is made slow and blind: a source that keeps failing must wait (``Throttled``,
        answered after ``throttled_answer_delay`` with no other work), checks run on a bounded
        pool off the event loop, an activation locks after ``activation_lock_after`` wrong
        codes, and an unknown or locked id costs the same scrypt as a known one and gets the
        same answer as a wrong code.

        Args:
            body: the validated request.
            attempt: from :meth:`attempt`; told whether the code was right or wrong.
        """
        try:
            return await self._register(body, attempt)
        except StoreError as exc:
            log.warning("registration refused for now, the database failed: %s", exc.message)
            raise Throttled("The server is busy; retry the registration later.") from exc

    async def _register(self, body: dict[str, Any], attempt: Attempt) -> dict[str, Any]:
        activation_id: str = body["ActivationId"]
        code: str = body["ActivationCode"]
        public_key: str = body["PublicKey"]
        _check_public_key(public_key)
        try:
            right, activation = await self._check_code(activation_id, code)
        except Throttled:
            await self._hold_refusal()
            raise
        attempt.outcome = right
        if not right:
            await self._failed(activation_id)
            # Same answer for an unknown id, a locked activation and a wrong code.
            raise InvalidActivation(INVALID_ACTIVATION)
        assert activation is not None
        now = self._clock()
        if activation.expired(now):
            raise InvalidActivation("Activation has expired.")
        node = Node(
            instance_id="mi-" + secrets.token_hex(9)[:17],
            activation_id=activation_id,
            public_key=public_key,
            public_key_type="Rsa",
            fingerprint=str(body.get("Fingerprint") or "")[:64],
            name=activation.default_instance_name,
            computer_name="",
            platform_type="",
            platform_name="",
            platform_version="",
            ip_address="",
            agent_version="",
            registration_date=now,
            last_ping_at=None,
            connected=False,
            tags=dict(activation.tags),
        )
        registered = self._audit.node(
            EventCode.NODE_REGISTERED,
            node.instance_id,
            node_identity(node.instance_id),
            {"activationId": activation_id, "name": node.name, "tags": dict(node.tags)},
        )
        if not await self._store.activations.register_node(
            activation_id, node, now, audit=[registered], events=self.events.node_registered(node)
        ):
            raise InvalidActivation("Activation has reached its registration limit or has expired.")
        log.info("node %s registered with activation %s", node.instance_id, activation_id)
        # Region is a Hatchway extension: the agent needs it for its signing scope.
        return {"InstanceId": node.instance_id, "Region": self._settings.region}

    @contextlib.asynccontextmanager
    async def attempt(self, source: str | None) -> AsyncIterator[Attempt]:
        """One registration attempt from ``source`` (its address), around reading and
        validating the request and :meth:`register`.

        A source that must wait is refused (``Throttled``, held ``throttled_answer_delay``)
        before its request is even read; a malformed request (``ValidationError``) counts as a
        failure of its source like a wrong code, and a registration forgets its failures. So a
        flood of either costs the server about one answer per second per connection.
        """
        try:
            attempt = self._limiter.begin(source_key(source))
        except Throttled:
            await self._hold_refusal()
            raise
        try:
            yield attempt
        except ValidationError:
            attempt.outcome = False
            raise
        finally:
            self._limiter.end(attempt)

    async def _hold_refusal(self) -> None:
        # Hold a Throttled answer a moment: a guesser that waits for its answers (any HTTP/1.1
        # client) then costs the server a request per second per connection, not as many as
        # the event loop can answer.
        await asyncio.sleep(self._settings.throttled_answer_delay)

    async def _check_code(self, activation_id: str, code: str) -> tuple[bool, Activation | None]:
        """Whether ``code`` is the activation's, checked on the bounded pool.

        An unknown id and a locked activation are checked against ``UNMATCHABLE_HASH``: the
        same scrypt work, and never a match.

        Raises:
            Throttled: the pool is full.
        """
        with self._verifier.admission():
            activation = await self._store.activations.get(activation_id)
            usable = activation is not None and not activation.locked
            hashed = activation.code_hash if activation is not None and usable else UNMATCHABLE_HASH
            return await self._verifier.verify(code, hashed) and usable, activation

    async def _failed(self, activation_id: str) -> None:
        """Count a wrong code against the activation (in the database).

        The counting ``UPDATE`` runs for unknown ids too (it matches no row), so a known and
        an unknown id cost the same statements as well as the same scrypt.
        """
        now = self._clock()
        locked_at = await self._store.activations.record_failure(
            activation_id, lock_after=self._settings.activation_lock_after, now=now
        )
        if locked_at == now:  # this failure locked it
            log.warning(
                "activation %s is locked after %d failed registration attempts; delete it and "
                "create a new one",
                activation_id,
                self._settings.activation_lock_after,
            )

    # ---- nodes ----------------------------------------------------------------------------

    def ping_status(self, node: Node) -> str:
        """Online while the control channel is up and heartbeats arrive (two missed → lost).

        The stored ping time lags the newest heartbeat by up to ``presence_write_interval``
        (``server.presence``), which the window allows for.
        """
        if node.last_ping_at is None or not node.connected:
            return "ConnectionLost"
        return "Online" if node.last_ping_at >= self._online_since() else "ConnectionLost"

    def _online_since(self) -> float:
        """The oldest stored ping time of a node that is ``Online`` now."""
        s = self._settings
        return self._clock() - online_window(s.heartbeat_interval, s.presence_write_interval)

    async def describe_instances(self, body: dict[str, Any]) -> dict[str, Any]:
        """DescribeInstanceInformation: keyset-paged (``pagination.keyset_request``) in
        registration order, every filter in SQL."""
        limit, after = keyset_request(body, default=50)
        ids: list[str] | None = None
        ping: set[str] | None = None
        tag_filters: list[tuple[str, set[str]]] = []
        # Two filter lists in the model, with different member names; validated already.
        filters = [(f["Key"], f["Values"]) for f in body.get("Filters", [])] + [
            (f["key"], f["valueSet"]) for f in body.get("InstanceInformationFilterList", [])
        ]
        for key, values in filters:
            if key == "InstanceIds":
                ids = values if ids is None else [i for i in ids if i in set(values)]
            elif key == "PingStatus":
                ping = set(values) if ping is None else ping & set(values)
            elif key.startswith("tag:"):
                tag_filters.append((key[4:], set(values)))
            else:
                raise InvalidFilterKey(f"The filter key {echo(key)} is not supported.")
        online: bool | None = None
        if ping is not None:
            wanted = ping & {"Online", "ConnectionLost"}
            if not wanted:  # "Inactive" (or nothing known): no node of ours is
                return {"InstanceInformationList": []}
            online = None if len(wanted) == 2 else "Online" in wanted
        nodes = await self._store.nodes.page(
            limit=limit + 1,
            after=after,
            instance_ids=ids,
            online=online,
            online_since=self._online_since(),
            tags=tag_filters,
        )
        page = nodes[:limit]
        more = len(nodes) > limit
        return {
            "InstanceInformationList": [self._node_json(n) for n in page],
            **(
                {"NextToken": keyset_token((page[-1].registration_date, page[-1].instance_id))}
                if more
                else {}
            ),
        }

    def _node_json(self, n: Node) -> dict[str, Any]:
        out: dict[str, Any] = {
            "InstanceId": n.instance_id,
            "PingStatus": self.ping_status(n),
            "AgentVersion": n.agent_version,
            "IsLatestVersion": True,
            "PlatformType": n.platform_type,
            "PlatformName": n.platform_name,
            "PlatformVersion": n.platform_version,
            "ActivationId": n.activation_id,
            "IamRole": "",
            "RegistrationDate": n.registration_date,
            "ResourceType": "ManagedInstance",
            "Name": n.name,
            "IPAddress": n.ip_address,
            "ComputerName": n.computer_name,
            "SourceId": n.instance_id,
            "SourceType": "AWS::SSM::ManagedInstance",
            "Tags": [{"Key": k, "Value": v} for k, v in sorted(n.tags.items())],
        }
        if n.last_ping_at is not None:
            out["LastPingDateTime"] = n.last_ping_at
        return out

    async def deregister(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        instance_id: str = body["InstanceId"]
        if await self._store.nodes.get(instance_id) is None:
            raise InvalidInstanceId(f"Instance {instance_id} does not exist.")
        await self._sessions.end_sessions_on(instance_id, "node deregistered")
        deregistered = self._audit.node(
            EventCode.NODE_DEREGISTERED, instance_id, user_identity(principal), {}
        )
        await self._store.nodes.delete(instance_id, audit=[deregistered])
        await self._control.drop(instance_id, "node deregistered")
        log.info("node %s deregistered by %s", instance_id, principal.user_name)
        return {}

    async def connection_status(self, body: dict[str, Any]) -> dict[str, Any]:
        """GetConnectionStatus: whether the node's control channel is up on this server."""
        target: str = body["Target"]
        connected = await self._control.reachable(target)
        return {"Target": target, "Status": "connected" if connected else "notconnected"}

    # ---- tags (AddTagsToResource, RemoveTagsFromResource, ListTagsForResource) --------------

    async def add_tags(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        node_id = _managed_instance(body)
        tags = await self._store.nodes.update_tags(node_id, tags_from_list(body["Tags"]), ())
        log.info("tags of %s set by %s: %s", node_id, principal.user_name, sorted(tags))
        return {}

    async def remove_tags(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        node_id = _managed_instance(body)
        await self._store.nodes.update_tags(node_id, {}, body["TagKeys"])
        log.info("tags %s removed from %s by %s", body["TagKeys"], node_id, principal.user_name)
        return {}

    async def list_tags(self, body: dict[str, Any]) -> dict[str, Any]:
        node_id = _managed_instance(body)
        node = await self._store.nodes.get(node_id)
        if node is None:
            raise InvalidResourceId(f"{node_id} is not a managed node of this server.")
        return {"TagList": [{"Key": k, "Value": v} for k, v in sorted(node.tags.items())]}


def _managed_instance(body: dict[str, Any]) -> str:
    """The node id of a tag request; Hatchway tags managed nodes only."""
    if body["ResourceType"] != "ManagedInstance":
        raise InvalidResourceType(
            f"ResourceType {echo(body['ResourceType'])} is not supported; "
            "this server tags ManagedInstance resources"
        )
    node_id: str = body["ResourceId"]
    return node_id


def tags_from_list(tags: list[dict[str, str]]) -> dict[str, str]:
    """AWS ``[{"Key":..,"Value":..}]`` tags (validated by the model) → dict.

    Adds what the model does not say: Hatchway keeps at most 50 tags (the model allows 1,000).
    """
    if len(tags) > MAX_TAGS:
        raise ValidationError(f"at most {MAX_TAGS} tags are allowed, not {len(tags)}")
    return {tag["Key"]: tag["Value"] for tag in tags}


def _activation_json(a: Activation, now: float) -> dict[str, Any]:
    return {
        "ActivationId": a.activation_id,
        "Description": a.description,
        "DefaultInstanceName": a.default_instance_name,
        "IamRole": a.iam_role,
        "RegistrationLimit": a.registration_limit,
        "RegistrationsCount": a.registrations_count,
        "ExpirationDate": a.expiration_date,
        "Expired": a.expired(now),
        "CreatedDate": a.created_date,
        "Tags": [{"Key": k, "Value": v} for k, v in sorted(a.tags.items())],
        # Hatchway extensions (boto3 ignores members it does not know).
        "Locked": a.locked,
        "FailedAttempts": a.failed_attempts,
        **({"LockedDate": a.locked_at} if a.locked_at is not None else {}),
    }


def _check_public_key(public_key: str) -> None:
    """The same check the signature verifier applies later (``auth.agentkey``), as a 400."""
    from hatchway.auth.agentkey import load_public_key_b64

    try:
        load_public_key_b64(public_key)
    except ConfigError as exc:
        raise ValidationError(exc.message) from exc
