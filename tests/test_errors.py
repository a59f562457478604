"""The exception tree is the API edge's table: every class names its AWS type and status."""

from __future__ import annotations

import inspect

import pytest

from hatchway import errors
from hatchway.server.errormap import error_body, error_status

CLASSES = [
    c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.HatchwayError)
]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_error_has_a_type_and_status(cls: type[errors.HatchwayError]) -> None:
    assert cls.code and cls.code.replace("Exception", "").isidentifier()
    assert cls.status in (400, 413, 500)
    assert cls.__doc__, f"{cls.__name__} needs a docstring"


def test_aws_types_come_from_the_class() -> None:
    assert error_body(errors.TargetNotConnected("mi-1 is not connected.")) == {
        "__type": "TargetNotConnected",
        "message": "mi-1 is not connected.",
    }
    assert error_status(errors.RequestTooLarge("too big")) == 413
    assert errors.InvalidNextToken("x").code == "InvalidNextToken"
    assert isinstance(errors.InvalidNextToken("x"), errors.ValidationError)


def test_server_faults_hide_their_message() -> None:
    for exc in (errors.StoreError("db down at 10.0.0.1"), errors.CorruptData("secret bad")):
        assert error_status(exc) == 500
        assert error_body(exc) == {
            "__type": "InternalServerError",
            "message": "internal server error",
        }


def test_long_messages_are_cut() -> None:
    body = error_body(errors.ValidationError("x" * 100_000))
    assert len(body["message"]) <= 1024


def test_the_tree_in_the_docstring_names_every_class() -> None:
    doc = errors.__doc__ or ""
    for cls in CLASSES:
        assert cls.__name__ in doc, cls.__name__
