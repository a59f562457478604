"""Secrets never reach the audit trail."""

from __future__ import annotations

from hatchway.audit.redact import REDACTED, is_secret, redact


def test_secret_members_are_redacted_at_any_depth() -> None:
    body = {
        "UserName": "dev",
        "Password": "hunter2hunter2",
        "ActivationCode": "abc",
        "Nested": [{"SecretAccessKey": "s", "Key": "Env"}],
        "TokenValue": "t",
        "NextToken": "50",
        "Parameters": {"command": ["ls"]},
    }
    assert redact(body) == {
        "UserName": "dev",
        "Password": REDACTED,
        "ActivationCode": REDACTED,
        "Nested": [{"SecretAccessKey": REDACTED, "Key": "Env"}],
        "TokenValue": REDACTED,
        "NextToken": "50",
        "Parameters": {"command": ["ls"]},
    }
    assert body["Password"] == "hunter2hunter2"  # a copy: the request is left alone


def test_names_of_secrets() -> None:
    for name in ("password", "NewPassword", "private_key", "PrivateKey", "sessionToken", "otp"):
        assert is_secret(name), name
    for name in ("UserName", "NextToken", "PasswordLastUsed", "Target", "DocumentName"):
        assert not is_secret(name), name
