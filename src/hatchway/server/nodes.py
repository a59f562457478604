"""Activations and managed nodes: CreateActivation, DescribeActivations, DeleteActivation,
RegisterManagedInstance, DescribeInstanceInformation, DeregisterManagedInstance."""

from __future__ import annotations

import base64
import binascii
import logging
import re
import secrets
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from hatchway.auth.tokens import hash_secret, new_activation_code, verify_secret
from hatchway.errors import (
    InvalidActivation,
    InvalidFilterKey,
    InvalidInstanceId,
    ValidationError,
)
from hatchway.protocol.timing import liveness_window
from hatchway.server.control import ControlChannels
from hatchway.server.pagination import page_request, page_response
from hatchway.server.principal import Principal
from hatchway.server.sessions import SessionService
from hatchway.server.settings import ServerSettings
from hatchway.store.records import Activation, Node
from hatchway.store.store import Store

log = logging.getLogger(__name__)

DEFAULT_EXPIRY = 24 * 3600.0
MAX_EXPIRY = 30 * 24 * 3600.0
MAX_REGISTRATIONS = 1000
_TAG_KEY = re.compile(r"^[\w.:/=+\-@ ]{1,128}$")


class NodeService:
    """Registration of nodes by activation, and what the server knows of each node."""

    def __init__(
        self,
        store: Store,
        settings: ServerSettings,
        clock: Callable[[], float],
        control: ControlChannels,
        sessions: SessionService,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._control = control
        self._sessions = sessions

    # ---- activations ----------------------------------------------------------------------

    async def create_activation(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        now = self._clock()
        limit = body.get("RegistrationLimit", 1)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
            raise ValidationError("RegistrationLimit must be an integer from 1 to 1000")
        expiry = body.get("ExpirationDate")
        expires_at = now + DEFAULT_EXPIRY if expiry is None else _timestamp(expiry)
        if expires_at <= now:
            raise ValidationError("ExpirationDate must be in the future")
        if expires_at - now > MAX_EXPIRY + 60:
            raise ValidationError("ExpirationDate must be at most 30 days ahead")
        tags = tags_from_list(body.get("Tags"))
        code = new_activation_code()
        activation = Activation(
            activation_id=str(uuid.uuid4()),
            code_hash=hash_secret(code),
            description=_str(body, "Description", 256),
            default_instance_name=_str(body, "DefaultInstanceName", 256),
            iam_role=_str(body, "IamRole", 64),
            registration_limit=limit,
            registrations_count=0,
            expiration_date=expires_at,
            created_date=now,
            tags=tags,
        )
        await self._store.activations.create(activation)
        log.info("activation %s created by %s", activation.activation_id, principal.user_name)
        return {"ActivationId": activation.activation_id, "ActivationCode": code}

    async def describe_activations(self, body: dict[str, Any]) -> dict[str, Any]:
        limit, offset = page_request(body, default=50, maximum=50)
        wanted: dict[str, set[str]] = {}
        for f in body.get("Filters") or []:
            if not isinstance(f, dict) or f.get("FilterKey") not in (
                "ActivationIds",
                "DefaultInstanceName",
                "IamRole",
            ):
                raise ValidationError(
                    "FilterKey must be ActivationIds, DefaultInstanceName or IamRole"
                )
            wanted[f["FilterKey"]] = {str(v) for v in f.get("FilterValues") or []}
        now = self._clock()
        rows = [
            a
            for a in await self._store.activations.list()
            if a.activation_id in wanted.get("ActivationIds", {a.activation_id})
            and a.default_instance_name
            in wanted.get("DefaultInstanceName", {a.default_instance_name})
            and a.iam_role in wanted.get("IamRole", {a.iam_role})
        ]
        page = rows[offset : offset + limit]
        return {
            "ActivationList": [_activation_json(a, now) for a in page],
            **page_response(len(rows) > offset + limit, offset + limit),
        }

    async def delete_activation(self, body: dict[str, Any]) -> dict[str, Any]:
        activation_id = body.get("ActivationId")
        if not isinstance(activation_id, str) or not activation_id:
            raise ValidationError("ActivationId is required")
        await self._store.activations.delete(activation_id)
        return {}

    # ---- registration ---------------------------------------------------------------------

    async def register(self, body: dict[str, Any]) -> dict[str, Any]:
        """RegisterManagedInstance (anonymous; the activation code is the credential)."""
        activation_id = body.get("ActivationId")
        code = body.get("ActivationCode")
        public_key = body.get("PublicKey")
        if not all(isinstance(v, str) and v for v in (activation_id, code, public_key)):
            raise ValidationError("ActivationId, ActivationCode and PublicKey are required")
        assert isinstance(activation_id, str) and isinstance(code, str)
        assert isinstance(public_key, str)
        if body.get("PublicKeyType", "Rsa") != "Rsa":
            raise ValidationError("PublicKeyType must be Rsa")
        _check_public_key(public_key)
        activation = await self._store.activations.get(activation_id)
        # Same answer for an unknown id and a wrong code: don't help guessers.
        if activation is None or not verify_secret(code, activation.code_hash):
            raise InvalidActivation("Activation ID or code is not valid.")
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
        if not await self._store.activations.register_node(activation_id, node, now):
            raise InvalidActivation("Activation has reached its registration limit or has expired.")
        log.info("node %s registered with activation %s", node.instance_id, activation_id)
        # Region is a Hatchway extension: the agent needs it for its signing scope.
        return {"InstanceId": node.instance_id, "Region": self._settings.region}

    # ---- nodes ----------------------------------------------------------------------------

    def ping_status(self, node: Node) -> str:
        """Online while the control channel is up and heartbeats arrive (two missed → lost)."""
        if node.last_ping_at is None or not node.connected:
            return "ConnectionLost"
        age = self._clock() - node.last_ping_at
        fresh = age <= liveness_window(self._settings.heartbeat_interval)
        return "Online" if fresh else "ConnectionLost"

    async def describe_instances(self, body: dict[str, Any]) -> dict[str, Any]:
        limit, offset = page_request(body, default=50, maximum=50)
        ids: list[str] | None = None
        ping: set[str] | None = None
        tag_filters: list[tuple[str, set[str]]] = []
        for f in (body.get("Filters") or []) + (body.get("InstanceInformationFilterList") or []):
            if not isinstance(f, dict):
                raise ValidationError("each filter must be an object")
            key = f.get("Key") or f.get("key")
            values = [str(v) for v in (f.get("Values") or f.get("valueSet") or [])]
            if key == "InstanceIds":
                ids = values
            elif key == "PingStatus":
                ping = set(values)
            elif isinstance(key, str) and key.startswith("tag:"):
                tag_filters.append((key[4:], set(values)))
            else:
                raise InvalidFilterKey(f"unsupported filter key {key!r}")
        nodes = await self._store.nodes.list(ids)
        rows = [
            n
            for n in nodes
            if (ping is None or self.ping_status(n) in ping)
            and all(n.tags.get(k) in vs for k, vs in tag_filters)
        ]
        page = rows[offset : offset + limit]
        return {
            "InstanceInformationList": [self._node_json(n) for n in page],
            **page_response(len(rows) > offset + limit, offset + limit),
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
        instance_id = body.get("InstanceId")
        if not isinstance(instance_id, str) or not instance_id:
            raise ValidationError("InstanceId is required")
        if await self._store.nodes.get(instance_id) is None:
            raise InvalidInstanceId(f"Instance {instance_id} does not exist.")
        await self._sessions.end_sessions_on(instance_id, "node deregistered")
        await self._store.nodes.delete(instance_id)
        await self._control.drop(instance_id, "node deregistered")
        log.info("node %s deregistered by %s", instance_id, principal.user_name)
        return {}


def tags_from_list(tags: Any) -> dict[str, str]:
    """AWS ``[{"Key":..,"Value":..}]`` tags → dict, validated."""
    if tags is None:
        return {}
    if not isinstance(tags, list) or len(tags) > 50:
        raise ValidationError("Tags must be a list of at most 50 {Key, Value} objects")
    out: dict[str, str] = {}
    for tag in tags:
        if not isinstance(tag, dict):
            raise ValidationError("each tag must be an object with Key and Value")
        key, value = tag.get("Key"), tag.get("Value", "")
        if not isinstance(key, str) or not _TAG_KEY.match(key) or not isinstance(value, str):
            raise ValidationError(f"invalid tag {tag!r}")
        if len(value) > 256:
            raise ValidationError(f"tag value for {key} is longer than 256 characters")
        out[key] = value
    return out


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
    }


def _str(body: dict[str, Any], key: str, max_len: int) -> str:
    value = body.get(key, "")
    if not isinstance(value, str) or len(value) > max_len:
        raise ValidationError(f"{key} must be a string of at most {max_len} characters")
    return value


def _timestamp(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    raise ValidationError(f"not a timestamp: {value!r}")


def _check_public_key(public_key: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    try:
        key = load_der_public_key(base64.b64decode(public_key, validate=True))
    except (ValueError, binascii.Error) as exc:
        raise ValidationError("PublicKey is not a base64 DER RSA public key") from exc
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size < 2048:
        raise ValidationError("PublicKey must be an RSA key of at least 2048 bits")
