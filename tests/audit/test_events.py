"""Audit events' JSON form: CloudTrail's field names, times to the millisecond in UTC."""

from __future__ import annotations

from hatchway.audit.events import (
    AuditEvent,
    AuditResource,
    DecisionRecord,
    EventCode,
    EventType,
    Identity,
    IdentityType,
    format_time,
    parse_time,
)


def test_times_are_cloudtrails_and_round_trip() -> None:
    assert format_time(1_796_040_000.1234) == "2026-11-30T12:00:00.123Z"
    assert parse_time("2026-11-30T12:00:00.123Z") == 1_796_040_000.123


def test_an_api_call_in_cloudtrails_shape() -> None:
    event = AuditEvent(
        event_id="e1",
        event_time=1_796_040_000.0,
        code=EventCode.ACCESS_DENIED,
        event_name="StartSession",
        event_source="ssm.amazonaws.com",
        identity=Identity(IdentityType.USER, arn="arn:u", user_name="dev", access_key_id="HWAK"),
        action="ssm:StartSession",
        source_ip="10.0.0.1",
        user_agent="ua",
        request_id="r1",
        resources=(AuditResource("AWS::SSM::ManagedInstance", "mi-1", "arn:n"),),
        request_parameters={"Target": "mi-1"},
        decision=DecisionRecord("implicitDeny", explanation="no policy allows it"),
        error_code="AccessDeniedException",
        error_message="no",
    )
    assert event.event_type is EventType.API_CALL
    assert event.to_json() == {
        "eventVersion": "1.0",
        "eventId": "e1",
        "eventTime": "2026-11-30T12:00:00.000Z",
        "eventCode": "HWA003",
        "eventType": "AwsApiCall",
        "eventSource": "ssm.amazonaws.com",
        "eventName": "StartSession",
        "readOnly": False,
        "userIdentity": {"type": "User", "arn": "arn:u", "userName": "dev", "accessKeyId": "HWAK"},
        "resources": [{"type": "AWS::SSM::ManagedInstance", "name": "mi-1", "arn": "arn:n"}],
        "action": "ssm:StartSession",
        "sourceIPAddress": "10.0.0.1",
        "userAgent": "ua",
        "requestId": "r1",
        "requestParameters": {"Target": "mi-1"},
        "decision": {"outcome": "implicitDeny", "explanation": "no policy allows it"},
        "errorCode": "AccessDeniedException",
        "errorMessage": "no",
    }


def test_codes_are_stable() -> None:
    assert {c.name: c.value for c in EventCode} == {
        "API_CALL": "HWA001",
        "API_CALL_FAILED": "HWA002",
        "ACCESS_DENIED": "HWA003",
        "AUTHENTICATION_FAILED": "HWA004",
        "SESSION_STARTED": "HWS001",
        "SESSION_ENDED": "HWS002",
        "SESSION_TERMINATED": "HWS003",
        "SESSION_FAILED": "HWS004",
        "NODE_REGISTERED": "HWN001",
        "NODE_DEREGISTERED": "HWN002",
        "IAM_CHANGED": "HWI001",
        "TRAIL_PRUNED": "HWT001",
    }
