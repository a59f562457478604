"""The one error a policy document can raise: where it is wrong and what is wrong there."""

from __future__ import annotations

from hatchway.errors import ValidationError


class PolicyError(ValidationError):
    """A policy document that IAM's grammar or Hatchway's limits refuse.

    ``path`` locates the offending element the way an administrator reads the document
    (``Statement[1].Condition.StringLikee``), and the message reads ``"<path>: <what>"``, e.g.
    ``"Statement[1].Condition.StringLikee: unknown operator"``.
    """

    code = "MalformedPolicyDocument"
    status = 400

    def __init__(self, path: str, what: str) -> None:
        super().__init__(f"{path}: {what}")
        self.path = path
        self.what = what
