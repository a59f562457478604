"""Handshake payloads (docs/protocol.md §7.3-§7.5) and the HatchwayExtensions negotiation."""

from __future__ import annotations

import pytest

from hatchway.errors import RemoteProtocolError
from hatchway.protocol.handshake import (
    AGENT_VERSION,
    CLIENT_VERSION,
    HATCHWAY_MAX_PAYLOAD,
    ActionStatus,
    ActionType,
    Extensions,
    HandshakeComplete,
    HandshakeRequest,
    HandshakeResponse,
    ProcessedClientAction,
    RequestedClientAction,
    answer_request,
    build_request,
    negotiated_from_response,
    peer_is_hatchway,
    response_failed,
)

VERIFIED_RESPONSE = (
    b'{"ClientVersion":"1.2.677.0","ProcessedClientActions":['
    b'{"ActionType":"SessionType","ActionStatus":1,"ActionResult":null,"Error":""},'
    b'{"ActionType":"KMSEncryption","ActionStatus":1,"ActionResult":'
    b'{"KMSCipherTextKey":"AQID","KMSCipherTextHash":null},"Error":""}],"Errors":null}'
)
VERIFIED_COMPLETE = (
    b'{"HandshakeTimeToComplete":1500000000,'
    b'"CustomerMessage":"This session is encrypted using AWS KMS."}'
)
# What AWS's plugin answers for an action it does not know (docs/protocol.md §7.4).
AWS_PLUGIN_RESPONSE = (
    b'{"ClientVersion":"1.2.677.0","ProcessedClientActions":['
    b'{"ActionType":"SessionType","ActionStatus":1,"ActionResult":null,"Error":""},'
    b'{"ActionType":"HatchwayExtensions","ActionStatus":0,"ActionResult":3,"Error":""}],'
    b'"Errors":null}'
)


def _versions(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_versions_clear_the_aws_thresholds() -> None:
    # docs/protocol.md §7.7: 4 components, above the mux and keepalive thresholds.
    assert len(_versions(AGENT_VERSION)) == 4
    assert len(_versions(CLIENT_VERSION)) == 4
    assert _versions(AGENT_VERSION) > _versions("3.1.1511.0") > _versions("3.0.196.0")
    assert _versions(CLIENT_VERSION) > _versions("1.2.331.0") > _versions("1.1.70.0")


def test_verified_response_round_trips_byte_exact() -> None:
    response = HandshakeResponse.from_json(VERIFIED_RESPONSE)
    assert response == HandshakeResponse(
        client_version="1.2.677.0",
        processed_client_actions=(
            ProcessedClientAction("SessionType", ActionStatus.SUCCESS, None),
            ProcessedClientAction(
                "KMSEncryption",
                ActionStatus.SUCCESS,
                {"KMSCipherTextKey": "AQID", "KMSCipherTextHash": None},
            ),
        ),
        errors=None,
    )
    assert response.to_json() == VERIFIED_RESPONSE


def test_verified_complete_round_trips_byte_exact() -> None:
    complete = HandshakeComplete(1_500_000_000, "This session is encrypted using AWS KMS.")
    assert complete.to_json() == VERIFIED_COMPLETE
    assert HandshakeComplete.from_json(VERIFIED_COMPLETE) == complete


def test_build_request_shape() -> None:
    request = build_request("Standard_Stream", None, Extensions(HATCHWAY_MAX_PAYLOAD, True))
    assert request.to_json() == (
        b'{"AgentVersion":"3.3.1802.0","RequestedClientActions":['
        b'{"ActionType":"SessionType","ActionParameters":'
        b'{"SessionType":"Standard_Stream","Properties":null}},'
        b'{"ActionType":"HatchwayExtensions","ActionParameters":'
        b'{"MaxPayloadSize":262144,"ExitCode":true}}]}'
    )
    assert HandshakeRequest.from_json(request.to_json()) == request


def test_negotiation_between_hatchway_peers() -> None:
    properties = {"portNumber": "22", "type": "LocalPortForwarding"}
    request = build_request("Port", properties, Extensions(HATCHWAY_MAX_PAYLOAD, True))
    wire_request = HandshakeRequest.from_json(request.to_json())

    response, session_type, props, client_side = answer_request(
        wire_request, supported=Extensions(4096, True)
    )
    assert (session_type, props) == ("Port", properties)
    assert client_side == Extensions(4096, True)
    assert response.client_version == CLIENT_VERSION
    assert response.errors is None

    wire_response = HandshakeResponse.from_json(response.to_json())
    assert response_failed(wire_response) is None
    assert negotiated_from_response(wire_response) == client_side
    assert peer_is_hatchway(wire_response)


@pytest.mark.parametrize(
    ("offer", "supported", "expected"),
    [
        (Extensions(65536, True), Extensions(1024, True), Extensions(1024, True)),
        (Extensions(2048, True), Extensions(65536, False), Extensions(2048, False)),
        (Extensions(65536, False), Extensions(65536, True), Extensions(65536, False)),
    ],
)
def test_negotiation_takes_min_and_and(
    offer: Extensions, supported: Extensions, expected: Extensions
) -> None:
    _, _, _, negotiated = answer_request(
        build_request("Standard_Stream", None, offer), supported=supported
    )
    assert negotiated == expected


def test_aws_plugin_answer_falls_back_to_defaults() -> None:
    response = HandshakeResponse.from_json(AWS_PLUGIN_RESPONSE)
    assert response.processed_client_actions[1].action_status == 0
    assert response.processed_client_actions[1].action_result == 3
    assert negotiated_from_response(response) == Extensions()
    assert response_failed(response) is None
    assert not peer_is_hatchway(response)  # its acks are then read cumulatively


def test_aws_plugin_without_any_extensions_entry() -> None:
    response = HandshakeResponse(
        "1.2.677.0", (ProcessedClientAction("SessionType", ActionStatus.SUCCESS, None),), None
    )
    assert negotiated_from_response(response) == Extensions()


@pytest.mark.parametrize(
    "result", [None, 3, {"ExitCode": True}, {"MaxPayloadSize": 0}, {"MaxPayloadSize": "big"}]
)
def test_malformed_extension_result_falls_back(result: object) -> None:
    response = HandshakeResponse(
        "1.2.700.0",
        (
            ProcessedClientAction("SessionType", ActionStatus.SUCCESS, None),
            ProcessedClientAction("HatchwayExtensions", ActionStatus.SUCCESS, result),
        ),
        None,
    )
    assert negotiated_from_response(response) == Extensions()
    assert not peer_is_hatchway(response)


def test_negotiated_result_is_clamped_to_the_offer() -> None:
    response = HandshakeResponse(
        "1.2.700.0",
        (
            ProcessedClientAction(
                "HatchwayExtensions",
                ActionStatus.SUCCESS,
                {"MaxPayloadSize": 1 << 20, "ExitCode": True},
            ),
        ),
        None,
    )
    assert negotiated_from_response(response, offer=Extensions(8192, False)) == Extensions(8192)


def test_aws_agent_request_without_extensions() -> None:
    # An AWS agent's request (docs/protocol.md §7.3): SessionType, then KMSEncryption.
    data = (
        b'{"AgentVersion":"3.3.987.0","RequestedClientActions":['
        b'{"ActionType":"SessionType","ActionParameters":'
        b'{"SessionType":"Standard_Stream","Properties":null}},'
        b'{"ActionType":"KMSEncryption","ActionParameters":'
        b'{"KMSKeyId":"alias/x","Challenge":"AAAA"}}]}'
    )
    response, session_type, props, negotiated = answer_request(
        HandshakeRequest.from_json(data), supported=Extensions(HATCHWAY_MAX_PAYLOAD, True)
    )
    assert (session_type, props, negotiated) == ("Standard_Stream", None, Extensions())
    kms = response.processed_client_actions[1]
    assert kms == ProcessedClientAction(
        "KMSEncryption", ActionStatus.FAILED, None, "KMS encryption is not supported"
    )
    assert response.errors == ("KMS encryption is not supported",)
    assert response_failed(response) is None


def test_unknown_action_is_unsupported() -> None:
    request = HandshakeRequest(
        "3.3.1802.0",
        (
            RequestedClientAction("SessionType", {"SessionType": "Port", "Properties": {}}),
            RequestedClientAction("Teleport", {"x": 1}),
        ),
    )
    response, *_ = answer_request(request, supported=Extensions())
    action = response.processed_client_actions[1]
    assert (action.action_type, action.action_status) == ("Teleport", ActionStatus.UNSUPPORTED)
    assert response.errors is None


def test_malformed_extension_offer_is_failed_not_fatal() -> None:
    request = HandshakeRequest(
        "3.3.1802.0",
        (
            RequestedClientAction("SessionType", {"SessionType": "Port", "Properties": None}),
            RequestedClientAction(ActionType.HATCHWAY_EXTENSIONS, {"MaxPayloadSize": -5}),
        ),
    )
    response, _, _, negotiated = answer_request(request, supported=Extensions(65536, True))
    assert negotiated == Extensions()
    assert response.processed_client_actions[1].action_status == ActionStatus.FAILED
    assert negotiated_from_response(response) == Extensions()


def test_unknown_session_type_fails_the_action() -> None:
    request = build_request("Telepathy", None, Extensions())
    response, session_type, _, _ = answer_request(request, supported=Extensions())
    assert session_type == "Telepathy"
    assert response.processed_client_actions[0].action_status == ActionStatus.FAILED
    assert response_failed(response) == "unknown session type 'Telepathy'"


def test_response_failed_cases() -> None:
    missing = HandshakeResponse("1", (), None)
    assert response_failed(missing) == "the client did not process the SessionType action"
    silent = HandshakeResponse("1", (ProcessedClientAction("SessionType", 2, None),), None)
    assert response_failed(silent) == "the SessionType action failed with status 2"


@pytest.mark.parametrize(
    "request_obj",
    [
        HandshakeRequest("1", ()),
        HandshakeRequest("1", (RequestedClientAction("SessionType", "Port"),)),
        HandshakeRequest("1", (RequestedClientAction("SessionType", {"Properties": None}),)),
    ],
)
def test_answer_request_rejects_bad_session_type_action(request_obj: HandshakeRequest) -> None:
    with pytest.raises(RemoteProtocolError):
        answer_request(request_obj, supported=Extensions())


@pytest.mark.parametrize(
    ("cls", "data"),
    [
        (HandshakeRequest, b'{"RequestedClientActions":[]}'),
        (HandshakeRequest, b'{"AgentVersion":"1","RequestedClientActions":[1]}'),
        (HandshakeRequest, b'{"AgentVersion":"1","RequestedClientActions":{}}'),
        (HandshakeResponse, b'{"ClientVersion":"1","ProcessedClientActions":["x"]}'),
        (HandshakeResponse, b'{"ClientVersion":"1","Errors":[1]}'),
        (HandshakeResponse, b'{"ClientVersion":"1","ProcessedClientActions":[{"ActionType":2}]}'),
        (HandshakeComplete, b'{"HandshakeTimeToComplete":"soon"}'),
        (HandshakeComplete, b"nope"),
    ],
)
def test_malformed_handshake_payloads(cls: type, data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        cls.from_json(data)  # type: ignore[attr-defined]


def test_response_with_errors_round_trips() -> None:
    response = HandshakeResponse(
        "1.2.700.0", (ProcessedClientAction("KMSEncryption", 2, None, "no"),), ("no",)
    )
    assert b'"Errors":["no"]' in response.to_json()
    assert HandshakeResponse.from_json(response.to_json()) == response


def test_no_payload_digest_is_agreed_only_when_both_offer_it() -> None:
    both = Extensions(65536, True, no_payload_digest=True)
    assert both.to_dict()["NoPayloadDigest"] is True
    assert Extensions.from_dict(both.to_dict()) == both
    assert "NoPayloadDigest" not in Extensions(65536, True).to_dict()  # older peers see nothing new
    assert not both.agreed(Extensions(65536, True)).no_payload_digest
    assert both.agreed(both).no_payload_digest


def test_stream_window_is_the_smaller_offer_and_zero_unless_both_offer_it() -> None:
    agent = Extensions(65536, True, stream_window=1 << 20)
    client = Extensions(65536, False, stream_window=1 << 18)
    assert agent.to_dict()["StreamWindow"] == 1 << 20
    assert Extensions.from_dict(agent.to_dict()) == agent
    assert "StreamWindow" not in Extensions(65536, True).to_dict()  # older peers see nothing new
    assert agent.agreed(client).stream_window == 1 << 18
    assert agent.agreed(Extensions(65536, True)).stream_window == 0  # e.g. a shell handler


@pytest.mark.parametrize("window", [-1, 1 << 31, "1", True, 1.5])
def test_stream_window_out_of_range_is_a_malformed_offer(window: object) -> None:
    with pytest.raises(RemoteProtocolError):
        Extensions.from_dict({"MaxPayloadSize": 1024, "StreamWindow": window})


# ---- KMSEncryption (docs/protocol.md §7.9) --------------------------------------------------


def test_kms_action_comes_after_session_type_and_before_extensions() -> None:
    from hatchway.protocol.encryption import KmsEncryptionRequest
    from hatchway.protocol.handshake import kms_request_of

    kms = KmsEncryptionRequest("arn:aws:kms:local:123456789012:key/k", "Y2hhbGxlbmdl")
    request = build_request("Standard_Stream", None, Extensions(), kms=kms)
    kinds = [a.action_type for a in request.requested_client_actions]
    assert kinds == ["SessionType", "KMSEncryption", "HatchwayExtensions"]
    assert b'"KMSEncryption","ActionParameters":{"KMSKeyId":"arn:aws:kms:local:' in (
        request.to_json()
    )
    assert kms_request_of(HandshakeRequest.from_json(request.to_json())) == kms
    assert kms_request_of(build_request("Standard_Stream", None, Extensions())) is None


def test_aws_plugins_kms_answer_parses_to_the_wrapped_key() -> None:
    from hatchway.protocol.handshake import kms_result_of

    result = kms_result_of(HandshakeResponse.from_json(VERIFIED_RESPONSE))
    assert result.ciphertext_key == b"\x01\x02\x03"
    assert result.challenge_acknowledged is False


def test_client_answers_kms_with_its_wrapped_key_or_its_reason() -> None:
    from hatchway.protocol.encryption import KmsEncryptionRequest, KmsEncryptionResult
    from hatchway.protocol.handshake import kms_result_of

    request = build_request(
        "Standard_Stream", None, Extensions(), kms=KmsEncryptionRequest("alias/s", "Yw==")
    )
    ok, *_ = answer_request(
        request,
        supported=Extensions(),
        kms=KmsEncryptionResult(b"blob", challenge_acknowledged=True),
    )
    assert b'"KMSCipherTextKey":"YmxvYg==","KMSCipherTextHash":null,' in ok.to_json()
    assert kms_result_of(HandshakeResponse.from_json(ok.to_json())) == KmsEncryptionResult(
        b"blob", challenge_acknowledged=True
    )
    refused, *_ = answer_request(
        request, supported=Extensions(), kms="AccessDeniedException: not allowed"
    )
    with pytest.raises(RemoteProtocolError, match="could not set up KMS encryption: Access"):
        kms_result_of(HandshakeResponse.from_json(refused.to_json()))
    unsupported, *_ = answer_request(request, supported=Extensions())
    with pytest.raises(RemoteProtocolError, match="not supported"):
        kms_result_of(unsupported)
