"""Arguments spelled as the ``aws`` CLI spells them."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from hatchway.client.awsargs import expand_list_options, load_param, parse_context, parse_tags


@pytest.mark.parametrize(
    ("args", "expanded"),
    [
        (["--tags", "a", "b", "--x", "c"], ["--tags", "a", "--tags", "b", "--x", "c"]),
        (["--tags=a", "b"], ["--tags=a", "--tags", "b"]),
        (["pos", "--tags", "a", "--", "b"], ["pos", "--tags", "a", "--", "b"]),
        (["--y", "a", "b"], ["--y", "a", "b"]),
        (
            ["--tags", "a", "--tag-keys", "k", "l"],
            ["--tags", "a", "--tag-keys", "k", "--tag-keys", "l"],
        ),
    ],
)  # fmt: skip
def test_expand_list_options(args: list[str], expanded: list[str]) -> None:
    assert expand_list_options(args, {"--tags", "--tag-keys"}) == expanded


def test_parse_tags_forms() -> None:
    assert parse_tags(
        ["Key=a,Value=1,2", "Value=x=y,Key=b", "c=", '[{"Key":"d","Value":"4"}]']
    ) == [
        {"Key": "a", "Value": "1,2"},
        {"Key": "b", "Value": "x=y"},
        {"Key": "c", "Value": ""},
        {"Key": "d", "Value": "4"},
    ]


@pytest.mark.parametrize("bad", ["novalue", "=v", "Key=a", "[1]", "[{", '[{"Key": "a"}]'])
def test_parse_tags_refuses(bad: str) -> None:
    with pytest.raises(click.BadParameter):
        parse_tags([bad])


def test_parse_context_groups_repeated_keys() -> None:
    assert parse_context(["a=1", "b=x=y", "a=2"]) == [
        {"ContextKeyName": "a", "ContextKeyValues": ["1", "2"], "ContextKeyType": "stringList"},
        {"ContextKeyName": "b", "ContextKeyValues": ["x=y"], "ContextKeyType": "string"},
    ]
    with pytest.raises(click.BadParameter):
        parse_context(["nokey"])


def test_load_param(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "t.txt").write_text("ü text")
    (tmp_path / "bin").write_bytes(b"\xff\xfe")
    monkeypatch.chdir(tmp_path)
    assert load_param("inline {}", "--x") == "inline {}"
    assert load_param("file://t.txt", "--x") == "ü text"
    assert load_param(f"file://{tmp_path}/t.txt", "--x") == "ü text"
    with pytest.raises(click.BadParameter, match="not UTF-8"):
        load_param("fileb://bin", "--x")
    with pytest.raises(click.BadParameter, match="cannot read"):
        load_param("file://missing", "--x")
