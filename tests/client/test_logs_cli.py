"""``hatchway logs …`` without a server: the requests each command sends, paging, --follow's
polling with ``e/<eventId>`` tokens, raw or stripped output, and bad options."""

from __future__ import annotations

import io
import json

import pytest

from hatchway.client.logs_cli import SERVICE, EventPrinter, follow_events, parse_since
from hatchway.errors import ConfigError
from tests.client.fakeapi import FakeApi, install, invoke


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    return install(monkeypatch)


def event(eid: int, message: str, stream: str = "alice-1") -> dict[str, object]:
    return {"eventId": str(eid), "message": message, "timestamp": eid, "logStreamName": stream}


def test_get_follows_forward_tokens_and_writes_the_raw_output(api: FakeApi) -> None:
    api.responses["GetLogEvents"] = [
        {"events": [{"message": "\x1b[1mbold\x1b[0m\r\n"}], "nextForwardToken": "f/1"},
        {"events": [{"message": "$ "}], "nextForwardToken": "f/2"},
        {"events": [], "nextForwardToken": "f/2"},
    ]
    result = invoke("logs", "get", "--group", "G", "--session", "alice-1")
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == b"\x1b[1mbold\x1b[0m\r\n$ "  # as it came, byte for byte
    bodies = [body for service, _, body in api.calls]
    assert {service for service, _, _ in api.calls} == {SERVICE}
    assert bodies[0] == {"logGroupName": "G", "logStreamName": "alice-1", "startFromHead": True}
    assert [b.get("nextToken") for b in bodies] == [None, "f/1", "f/2"]


def test_get_strips_ansi_and_prints_json(api: FakeApi) -> None:
    answer = {"events": [{"message": "\x1b[31mred\x1b["}, {"message": "0m!\n"}]}
    api.responses["GetLogEvents"] = [
        dict(answer, nextForwardToken="f/2"),
        {"events": [], "nextForwardToken": "f/2"},
    ]
    result = invoke("logs", "get", "--group", "G", "--session", "s", "--strip-ansi")
    assert result.stdout == "red!\n"  # the sequence cut between two events went too
    api.responses["GetLogEvents"] = [
        dict(answer, nextForwardToken="f/2"),
        {"events": [], "nextForwardToken": "f/2"},
    ]
    result = invoke("logs", "get", "--group", "G", "--session", "s", "--output", "json")
    assert json.loads(result.stdout) == {"events": answer["events"]}


def test_tail_follow_polls_after_the_last_event_it_printed() -> None:
    calls: list[dict[str, object]] = []
    answers = [
        {"events": [event(5, "one\n")], "nextToken": "e/5"},
        {"events": [event(6, "two\n", "bob-2")]},
        {"events": []},
        {"events": [event(9, "three\n")]},
    ]

    class Api:
        def call(self, operation: str, body: dict[str, object], *, service: str) -> dict:
            assert (operation, service) == ("FilterLogEvents", SERVICE)
            calls.append(dict(body))
            return answers.pop(0)

    out = io.BytesIO()
    slept: list[float] = []
    printer = EventPrinter(out, strip_ansi=False, prefix_stream=True)
    follow_events(
        Api(), "G", None, 600, printer, follow=True, clock=lambda: 1000.0, sleep=slept.append,
        polls=2,
    )  # fmt: skip
    assert out.getvalue() == b"alice-1 one\nbob-2 two\nalice-1 three\n"
    assert calls[0] == {"logGroupName": "G", "startTime": 400_000}
    assert calls[1]["nextToken"] == "e/5"  # the server's own next page
    assert calls[2]["nextToken"] == "e/6" and calls[3]["nextToken"] == "e/6"
    assert slept == [1.0, 1.0]


def test_tail_names_the_session_and_since(api: FakeApi) -> None:
    api.responses["FilterLogEvents"] = {"events": [event(1, "a")]}
    result = invoke("logs", "tail", "--group", "G", "--session", "alice-1", "--since", "2h")
    assert result.exit_code == 0 and result.stdout == "a"  # one session: raw, no prefix
    (_, op, body) = api.calls[0]
    assert op == "FilterLogEvents" and body["logStreamNames"] == ["alice-1"]


def test_groups_lists_every_page(api: FakeApi) -> None:
    group = {"logGroupName": "G", "creationTime": 1_700_000_000_000, "storedBytes": 5}
    api.responses["DescribeLogGroups"] = [
        {"logGroups": [group], "nextToken": "g/G"},
        {"logGroups": [dict(group, logGroupName="H", retentionInDays=7)]},
    ]
    result = invoke("logs", "groups")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split()[0] == "NAME" and "2023-11-14T22:13:20Z" in lines[1]
    assert "never expire" in lines[1] and lines[2].split()[0] == "H" and " 7 " in lines[2]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("10m", 600), ("2h", 7200), ("7d", 604800), ("1w", 604800), ("1.5m", 90)],
)
def test_since_takes_a_number_and_a_unit(text: str, seconds: float) -> None:
    assert parse_since(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "m", "-5m", "nanm", "10y", "1e99d"])
def test_a_bad_since_is_one_line(text: str) -> None:
    with pytest.raises(ConfigError, match="--since must be a duration"):
        parse_since(text)


def test_a_bad_since_from_the_command_line_exits_nonzero(api: FakeApi) -> None:
    result = invoke("logs", "tail", "--group", "G", "--since", "soon")
    assert result.exit_code != 0 and not api.calls
