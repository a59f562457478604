"""Parsing document content: what JSON cannot carry, alias bombs and deep nesting are refused
with a clear ``InvalidDocumentContent`` (never a 500 further on), and every built-in document
passes the schema."""

from __future__ import annotations

import re

import pytest

from hatchway.errors import InvalidDocumentContent
from hatchway.server.documents import builtin_documents, parse_content
from hatchway.server.documentschema import check_content, parse, render


@pytest.mark.parametrize(
    ("text", "document_format", "message"),
    [
        ("a: &a [1, 2]\nb: [*a, *a]", "YAML", "aliases (*name) are not allowed"),
        ("[" * 5000 + "]" * 5000, "JSON", "more than 32 levels deep"),
        ("a: " + "[" * 5000 + "]" * 5000, "YAML", "more than 32 levels deep"),
        ("properties:\n  linux:\n    when: 2020-01-01", "YAML", "properties.linux.when: a date"),
        ("a: .nan", "YAML", "a: nan is not a number"),
        ('{"a": NaN}', "JSON", "a: nan is not a number"),
        ("1: x", "YAML", "1: keys must be strings"),
        ("a: !!python/object:os.system x", "YAML", "could not determine a constructor"),
        ("- 1", "YAML", "must be a YAML object"),
    ],
)
def test_content_json_cannot_carry_is_refused(
    text: str, document_format: str, message: str
) -> None:
    with pytest.raises(InvalidDocumentContent, match=re.escape(message)):
        parse(text, document_format)


@pytest.mark.parametrize("document", builtin_documents(0.0), ids=lambda d: d.name)
def test_builtin_documents_pass_the_schema_and_convert_both_ways(document: object) -> None:
    content = parse_content(document)  # type: ignore[arg-type]
    check_content(content)
    assert parse(render(content, "YAML"), "YAML") == content
    assert parse(render(content, "JSON"), "JSON") == content


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(InvalidDocumentContent) as caught:
        check_content({"schemaVersion": "1.0", "sessionType": "Nope", "extra": 1, "inputs": []})
    message = caught.value.message
    assert "(3 problems)" in message
    assert "sessionType: 'Nope'" in message and "extra: is not a field" in message
    assert "inputs: must be an object, not a list" in message
