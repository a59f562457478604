"""Session Manager preferences: the ``inputs`` of ``SSM-SessionManagerRunShell``, as in AWS.

They are read when a session starts (the document's latest version, which is what ``aws ssm
update-document --name SSM-SessionManagerRunShell --document-version '$LATEST'`` changes), and
what applied is kept with the session (``DescribeSessions`` filtered by ``SessionId`` shows it
as ``Preferences``). The server enforces the time limits (``server.limits``); the agent runs the
shell profile and the run-as user (``AgentTaskPayload``'s ``ShellProfile`` and
``RunAsEnabled``).

Run-as, when ``runAsEnabled``: the principal's tag ``SSMSessionRunAs``, else
``runAsDefaultUser``. IAM groups carry no tags (as in AWS), so the user's tag is the only
per-principal source.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from hatchway.errors import InvalidDocument, ValidationError
from hatchway.server.documentschema import MINUTE_RANGES, minutes_of

__all__ = ["DEFAULT_IDLE_MINUTES", "RUN_AS_TAG", "Preferences", "SessionLimits"]

DEFAULT_IDLE_MINUTES: Final = 20
"""AWS's default idle timeout, when the document leaves it empty."""
RUN_AS_TAG: Final = "SSMSessionRunAs"
_OS_USER: Final = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
"""What the agent accepts as a user name (``agent.runas``)."""


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """The time limits of one session, in seconds (``None``: no limit)."""

    idle: float | None
    max_duration: float | None
    #: How long before either limit the client is warned.
    warn_before: float
    #: Seconds per preference minute (60; less only under a test-only setting).
    unit: float = 60.0


@dataclass(frozen=True, slots=True)
class Preferences:
    """What the preferences document says, parsed once.

    Attributes:
        idle_minutes: ``idleSessionTimeout`` (1–60; 20 when unset).
        max_minutes: ``maxSessionDuration`` (1–1440), or None for no limit.
        run_as_enabled, run_as_default_user: ``runAsEnabled`` / ``runAsDefaultUser``.
        shell_profile: ``shellProfile.linux``.
        kms_key_id: ``kmsKeyId`` (kept for the key service; not enforced here).
        log_group, log_streaming: ``cloudWatchLogGroupName`` / ``cloudWatchStreamingEnabled``
            (the session's live log stream: ``server.logstreams.choose_log_group``).
        s3_bucket, s3_prefix: ``s3BucketName`` / ``s3KeyPrefix``: where the session's
            recording is uploaded (else the server's ``--recordings``).
    """

    idle_minutes: int = DEFAULT_IDLE_MINUTES
    max_minutes: int | None = None
    run_as_enabled: bool = False
    run_as_default_user: str = ""
    shell_profile: str = ""
    kms_key_id: str = ""
    log_group: str = ""
    log_streaming: bool = False
    s3_bucket: str = ""
    s3_prefix: str = ""

    @classmethod
    def from_inputs(cls, inputs: Mapping[str, Any]) -> Preferences:
        """Parse a (schema-checked) ``inputs`` object; unset or empty keys take defaults."""
        idle = minutes_of(
            inputs.get("idleSessionTimeout", ""), *MINUTE_RANGES["idleSessionTimeout"]
        )
        longest = minutes_of(
            inputs.get("maxSessionDuration", ""), *MINUTE_RANGES["maxSessionDuration"]
        )
        profile = inputs.get("shellProfile") or {}
        return cls(
            idle_minutes=idle if idle is not None else DEFAULT_IDLE_MINUTES,
            max_minutes=longest,
            run_as_enabled=inputs.get("runAsEnabled") is True,
            run_as_default_user=str(inputs.get("runAsDefaultUser") or ""),
            shell_profile=str(profile.get("linux") or "") if isinstance(profile, dict) else "",
            kms_key_id=str(inputs.get("kmsKeyId") or ""),
            log_group=str(inputs.get("cloudWatchLogGroupName") or ""),
            log_streaming=inputs.get("cloudWatchStreamingEnabled") is True,
            s3_bucket=str(inputs.get("s3BucketName") or ""),
            s3_prefix=str(inputs.get("s3KeyPrefix") or "").strip("/"),
        )

    def run_as(self, principal_tags: Mapping[str, str], principal_name: str) -> str:
        """The OS user to run as: "" for the agent's default (run-as not enabled).

        Raises:
            InvalidDocument: run-as is enabled but neither the principal's tag nor
                ``runAsDefaultUser`` names a user (AWS refuses such a session too).
            ValidationError: the name could not be an OS user (the agent's rule).
        """
        if not self.run_as_enabled:
            return ""
        tagged = principal_tags.get(RUN_AS_TAG, "")
        user = tagged or self.run_as_default_user
        if not user:
            raise InvalidDocument(
                f"Run As is enabled but {principal_name} has no {RUN_AS_TAG} tag and the "
                "preferences name no runAsDefaultUser."
            )
        if not _OS_USER.fullmatch(user):
            source = f"{principal_name}'s {RUN_AS_TAG} tag" if tagged else "runAsDefaultUser"
            raise ValidationError(
                f"The Run As user {user[:64]!r} ({source}) is not an OS user name: lower-case "
                "letters, digits, _ and -, at most 32 characters."
            )
        return user

    def limits(self, unit: float) -> SessionLimits:
        """The time limits, with ``unit`` seconds per minute (60, or less under a test-only
        setting). The warning comes one minute before a limit, or at half a one-minute limit."""
        idle = self.idle_minutes * unit
        longest = self.max_minutes * unit if self.max_minutes is not None else None
        shortest = min(idle, longest) if longest is not None else idle
        return SessionLimits(
            idle=idle, max_duration=longest, warn_before=min(unit, shortest / 2), unit=unit
        )

    def applied(self, run_as: str) -> dict[str, Any]:
        """What a session keeps of them (``DescribeSessions``' ``Preferences``)."""
        out: dict[str, Any] = {
            "IdleSessionTimeout": self.idle_minutes,
            "RunAsEnabled": self.run_as_enabled,
            "ShellProfile": bool(self.shell_profile),
        }
        if self.max_minutes is not None:
            out["MaxSessionDuration"] = self.max_minutes
        if run_as:
            out["RunAsUser"] = run_as
        return out
