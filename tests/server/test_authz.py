"""The authorizer: ARNs and aliases, request context, denials, the node policy, live re-checks."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from hatchway.errors import AccessDenied
from hatchway.policy import NamedPolicy, parse_policy
from hatchway.server.authz import ANY, Arns, Authorizer
from hatchway.server.principal import Principal
from hatchway.store.records import Session, SessionStatus, StoredPolicy

ACCOUNT = "123456789012"
ARNS = Arns("local", ACCOUNT)
NODE = "mi-0123456789abcdef0"
DEV = Principal("AIDADEV", "dev-user", ACCOUNT, "HWAKDEV", tags={"team": "blue"})


def policy(*statements: dict[str, Any], label: str = "test") -> NamedPolicy:
    return NamedPolicy(
        label, parse_policy({"Version": "2012-10-17", "Statement": list(statements)})
    )


def allow(action: str, resource: str, **condition: Any) -> dict[str, Any]:
    st: dict[str, Any] = {"Effect": "Allow", "Action": action, "Resource": resource}
    if condition:
        st["Condition"] = condition
    return st


class FakeStore:
    """Just what the authorizer reads."""

    def __init__(self) -> None:
        self.policies: dict[str, list[StoredPolicy]] = {}
        self.users: dict[str, Any] = {}
        self.nodes_by_id: dict[str, Any] = {}
        self.identity = SimpleNamespace(policies_for=self._policies_for, user=self._user)
        self.nodes = SimpleNamespace(get=self._node)
        self.published: list[Any] = []
        self.events = SimpleNamespace(publish=self._publish)

    async def _publish(self, events: Any) -> None:
        self.published.extend(events)

    async def _policies_for(self, user_id: str) -> list[StoredPolicy]:
        return self.policies.get(user_id, [])

    async def _user(self, user_id: str) -> Any:
        return self.users.get(user_id)

    async def _node(self, node_id: str) -> Any:
        return self.nodes_by_id.get(node_id)


def authorizer(store: FakeStore | None = None) -> Authorizer:
    return Authorizer(store or FakeStore(), ARNS, lambda: 1_800_000_000.0)  # type: ignore[arg-type]


def test_a_node_has_its_aws_aliases_and_its_tags() -> None:
    r = ARNS.node(NODE, {"Env": "dev"})
    assert r.arns == (
        f"arn:aws:ssm:local:{ACCOUNT}:managed-instance/{NODE}",
        f"arn:aws:ec2:local:{ACCOUNT}:instance/{NODE}",
    )
    assert dict(r.tags) == {"Env": "dev"}


def test_built_in_documents_also_have_an_account_less_arn() -> None:
    assert ARNS.document("SSM-SessionManagerRunShell").arns[1] == (
        "arn:aws:ssm:local::document/SSM-SessionManagerRunShell"
    )
    assert len(ARNS.document("MyTeamShell").arns) == 1


def test_a_session_is_also_named_by_its_owners_user_id() -> None:
    r = ARNS.session("dev-user-0a1b2c3d4e5f60718", "AIDADEV")
    assert r.arns[1].endswith(":session/AIDADEV-0a1b2c3d4e5f60718")


def test_context_has_principal_resource_and_request_keys() -> None:
    p = Principal("AIDADEV", "dev-user", ACCOUNT, "K", tags={"team": "blue"}, source_ip="10.0.0.7")
    ctx = authorizer().context(p, ARNS.node(NODE, {"Env": "dev"}))
    assert ctx["aws:username"] == "dev-user"
    assert ctx["aws:userid"] == "AIDADEV"
    assert ctx["aws:PrincipalTag/team"] == "blue"
    assert ctx["ssm:resourceTag/Env"] == ctx["aws:ResourceTag/Env"] == "dev"
    assert ctx["aws:SourceIp"] == "10.0.0.7"
    assert ctx["aws:SecureTransport"] == "false"
    assert ctx["aws:CurrentTime"] == "2027-01-15T08:00:00Z"


def test_ec2_instance_policies_written_for_aws_match_our_nodes() -> None:
    a = authorizer()
    policies = [policy(allow("ssm:StartSession", "arn:aws:ec2:*:*:instance/*"))]
    assert a.decide(policies, DEV, "ssm:StartSession", ARNS.node(NODE)).allowed


@pytest.mark.asyncio
async def test_authorize_raises_aws_worded_access_denied() -> None:
    store = FakeStore()
    with pytest.raises(AccessDenied) as caught:
        await authorizer(store).authorize(DEV, "ssm:StartSession", [ARNS.node(NODE)])
    message = caught.value.message
    assert message.startswith(f"User: arn:aws:iam::{ACCOUNT}:user/dev-user is not authorized")
    assert "ssm:StartSession" in message and f"managed-instance/{NODE}" in message
    # ... and an access.denied event names who, what, on what and why (webhooks).
    [event] = store.published
    assert event.type == "access.denied"
    assert event.detail == {
        "principal": f"arn:aws:iam::{ACCOUNT}:user/dev-user",
        "action": "ssm:StartSession",
        "resource": ARNS.node(NODE).arn,
        "reason": message,
        "sourceIp": DEV.source_ip,
    }


@pytest.mark.asyncio
async def test_every_resource_must_be_allowed() -> None:
    store = FakeStore()
    doc = json.dumps(
        {"Version": "2012-10-17", "Statement": [allow("ssm:StartSession", "*:managed-instance/*")]}
    ).replace("*:managed-instance/*", "arn:aws:ssm:*:*:managed-instance/*")
    store.policies["AIDADEV"] = [StoredPolicy("p", doc)]
    a = authorizer(store)
    await a.authorize(DEV, "ssm:StartSession", [ARNS.node(NODE)])
    assert store.published == []  # an allowed request is no event
    with pytest.raises(AccessDenied):
        await a.authorize(
            DEV, "ssm:StartSession", [ARNS.node(NODE), ARNS.document("AWS-StartSSHSession")]
        )


def test_a_node_may_open_only_its_own_channels() -> None:
    a = authorizer()
    a.authorize_node(NODE, "ssmmessages:OpenControlChannel", NODE)
    a.authorize_node(NODE, "ssmmessages:OpenDataChannel", NODE)
    with pytest.raises(AccessDenied):
        a.authorize_node(NODE, "ssmmessages:OpenControlChannel", "mi-00000000000000000")
    with pytest.raises(AccessDenied):
        a.authorize_node(NODE, "ssm:StartSession", NODE)


def _session(owner_id: str = "AIDADEV") -> Session:
    return Session(
        session_id="dev-user-0a1b2c3d4e5f60718",
        target=NODE,
        status=SessionStatus.CONNECTED,
        start_date=0.0,
        end_date=None,
        document_name="SSM-SessionManagerRunShell",
        owner=f"arn:aws:iam::{ACCOUNT}:user/dev-user",
        owner_id=owner_id,
        source_ip="127.0.0.1",
        reason="",
        details="",
        max_session_duration="",
        parameters={},
        run_as="",
        exit_code=None,
        bytes_in=0,
        bytes_out=0,
    )


@pytest.mark.asyncio
async def test_a_live_session_follows_the_node_tags_and_the_owners_policies() -> None:
    store = FakeStore()
    store.users["AIDADEV"] = SimpleNamespace(user_id="AIDADEV", name="dev-user", tags={})
    store.nodes_by_id[NODE] = SimpleNamespace(tags={"Env": "dev"})
    doc = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Dev",
                "Effect": "Allow",
                "Action": "ssm:StartSession",
                "Resource": [
                    "arn:aws:ssm:*:*:managed-instance/*",
                    "arn:aws:ssm:*:*:document/SSM-SessionManagerRunShell",
                ],
                "Condition": {"StringEqualsIfExists": {"ssm:resourceTag/Env": "dev"}},
            }
        ],
    }
    store.policies["AIDADEV"] = [StoredPolicy("p", json.dumps(doc))]
    a = authorizer(store)
    assert (await a.session_decision(_session(), secure=True)).allowed
    store.nodes_by_id[NODE] = SimpleNamespace(tags={"Env": "prod"})
    assert not (await a.session_decision(_session(), secure=True)).allowed
    store.nodes_by_id[NODE] = SimpleNamespace(tags={"Env": "dev"})
    store.policies["AIDADEV"] = []
    assert not (await a.session_decision(_session(), secure=True)).allowed


@pytest.mark.asyncio
async def test_a_session_whose_owner_is_gone_is_denied() -> None:
    assert not (await authorizer().session_decision(_session("AIDAGONE"), secure=True)).allowed


def test_any_is_only_matched_by_a_star() -> None:
    a = authorizer()
    star = [policy(allow("ssm:DescribeSessions", "*"))]
    narrow = [policy(allow("ssm:DescribeSessions", "arn:aws:ssm:*:*:session/*"))]
    assert a.decide(star, DEV, "ssm:DescribeSessions", ANY).allowed
    assert not a.decide(narrow, DEV, "ssm:DescribeSessions", ANY).allowed


def test_session_manager_user_matches_only_its_own_sessions_exactly() -> None:
    """``session/${aws:username}-*`` would let user ``dev`` end ``dev-user``'s sessions; the
    built-in policy matches the 17 hex digits of a session id instead."""
    from importlib import resources

    text = resources.files("hatchway.server") / "builtin_policies" / "SessionManagerUser.json"
    builtin = [NamedPolicy("SessionManagerUser", parse_policy(text.read_text()))]
    dev = Principal("AIDAD", "dev", ACCOUNT, "K")
    a = authorizer()
    own = ARNS.session("dev-0a1b2c3d4e5f60718")
    other = ARNS.session("dev-user-0a1b2c3d4e5f60718")
    assert a.decide(builtin, dev, "ssm:TerminateSession", own).allowed
    assert not a.decide(builtin, dev, "ssm:TerminateSession", other).allowed
    assert a.decide(builtin, dev, "ssm:StartSession", ARNS.node(NODE)).allowed
    assert not a.decide(builtin, dev, "hatchway:CreateUser", ANY).allowed


NODES_ONLY = allow("ssm:StartSession", "arn:aws:ec2:*:*:instance/*")
SHELL = "SSM-SessionManagerRunShell"


def test_the_default_shell_document_needs_no_allow_as_on_aws() -> None:
    """AWS's published policies that name only nodes let users start the default shell."""
    a = authorizer()
    policies = [policy(NODES_ONLY)]
    decision = a.decide(policies, DEV, "ssm:StartSession", ARNS.document(SHELL))
    assert decision.allowed
    assert "ssm:SessionDocumentAccessCheck" in decision.explain()
    # Any other document must be allowed explicitly.
    ssh = ARNS.document("AWS-StartSSHSession")
    assert not a.decide(policies, DEV, "ssm:StartSession", ssh).allowed


def test_a_policy_testing_the_document_check_requires_an_explicit_allow() -> None:
    a = authorizer()
    check = {"BoolIfExists": {"ssm:SessionDocumentAccessCheck": "true"}}
    checked = dict(NODES_ONLY, Condition=check)
    assert not a.decide([policy(checked)], DEV, "ssm:StartSession", ARNS.document(SHELL)).allowed
    explicit = allow("ssm:StartSession", f"arn:aws:ssm:*:*:document/{SHELL}")
    assert a.decide(
        [policy(checked), policy(explicit)], DEV, "ssm:StartSession", ARNS.document(SHELL)
    ).allowed


def test_an_explicit_deny_of_the_default_document_applies() -> None:
    deny = {
        "Effect": "Deny",
        "Action": "ssm:StartSession",
        "Resource": "arn:aws:ssm:*:*:document/*",
    }
    decision = authorizer().decide(
        [policy(NODES_ONLY, deny)], DEV, "ssm:StartSession", ARNS.document(SHELL)
    )
    assert decision.outcome == "explicitDeny"
