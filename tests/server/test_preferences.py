"""Session Manager preferences parsed from SSM-SessionManagerRunShell's inputs: defaults, the
run-as order (the principal's tag, then the default user), and the time limits in seconds."""

from __future__ import annotations

import pytest

from hatchway.errors import InvalidDocument, ValidationError
from hatchway.server.preferences import DEFAULT_IDLE_MINUTES, RUN_AS_TAG, Preferences


def test_empty_inputs_are_aws_defaults() -> None:
    prefs = Preferences.from_inputs({"idleSessionTimeout": "", "maxSessionDuration": ""})
    assert prefs == Preferences()
    assert prefs.idle_minutes == DEFAULT_IDLE_MINUTES and prefs.max_minutes is None
    assert prefs.run_as({RUN_AS_TAG: "someone"}, "alice") == ""  # run-as not enabled


def test_inputs_as_strings_or_numbers() -> None:
    prefs = Preferences.from_inputs(
        {
            "idleSessionTimeout": 5,
            "maxSessionDuration": "90",
            "runAsEnabled": True,
            "runAsDefaultUser": "ops",
            "shellProfile": {"linux": "cd /srv", "windows": ""},
        }
    )
    assert (prefs.idle_minutes, prefs.max_minutes, prefs.shell_profile) == (5, 90, "cd /srv")
    assert prefs.applied("ops") == {
        "IdleSessionTimeout": 5,
        "MaxSessionDuration": 90,
        "RunAsEnabled": True,
        "RunAsUser": "ops",
        "ShellProfile": True,
    }


def test_run_as_prefers_the_principals_tag() -> None:
    prefs = Preferences(run_as_enabled=True, run_as_default_user="ops")
    assert prefs.run_as({RUN_AS_TAG: "alice_os"}, "alice") == "alice_os"
    assert prefs.run_as({"Other": "x"}, "alice") == "ops"
    with pytest.raises(InvalidDocument, match="alice has no SSMSessionRunAs tag"):
        Preferences(run_as_enabled=True).run_as({}, "alice")
    with pytest.raises(ValidationError, match="alice's SSMSessionRunAs tag"):
        prefs.run_as({RUN_AS_TAG: "Alice Smith" * 20}, "alice")


def test_limits_in_seconds_with_a_warning_a_minute_before() -> None:
    limits = Preferences(idle_minutes=20, max_minutes=60).limits(60.0)
    assert (limits.idle, limits.max_duration, limits.warn_before) == (1200.0, 3600.0, 60.0)
    short = Preferences(idle_minutes=1).limits(60.0)
    assert (short.idle, short.max_duration, short.warn_before) == (60.0, None, 30.0)
    assert Preferences(idle_minutes=3).limits(1.0).idle == 3.0  # the test-only unit


def test_logging_and_encryption_keys_choose_the_session_s_streams() -> None:
    prefs = Preferences.from_inputs(
        {
            "s3BucketName": "audit-bucket",
            "s3KeyPrefix": "/team/a/",
            "s3EncryptionEnabled": True,
            "kmsKeyId": "alias/sessions",
            "cloudWatchLogGroupName": "sessions",
            "cloudWatchStreamingEnabled": True,
        }
    )
    assert (prefs.s3_bucket, prefs.s3_prefix) == ("audit-bucket", "team/a")
    assert prefs.kms_key_id == "alias/sessions"
    assert (prefs.log_group, prefs.log_streaming) == ("sessions", True)
    assert Preferences.from_inputs({"cloudWatchLogGroupName": "x"}).log_streaming is False
