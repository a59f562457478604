"""Registration waits out a busy server (ThrottlingException) and gives up on anything else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hatchway.agent import registration
from hatchway.transport.apiclient import ApiClient, ApiError


def script(monkeypatch: pytest.MonkeyPatch, answers: list[Any]) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def call(self: ApiClient, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        assert operation == "RegisterManagedInstance"
        calls.append(body)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return dict(answer)

    monkeypatch.setattr(ApiClient, "call", call)
    return calls


def throttled() -> ApiError:
    return ApiError("ThrottlingException", "too many attempts", 400)


def test_throttled_registration_is_retried_with_back_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls = script(monkeypatch, [throttled(), throttled(), {"InstanceId": "mi-" + "a" * 17}])
    slept: list[float] = []
    state = registration.register(
        endpoint="http://127.0.0.1:9", activation_id="id", activation_code="c" * 28,
        state_dir=tmp_path / "agent", sleep=slept.append,
    )  # fmt: skip
    assert state.node_id == "mi-" + "a" * 17
    assert len(calls) == 3 and calls[0] == calls[2]  # the same key and fingerprint each time
    assert len(slept) == 2 and 0 < slept[0] <= slept[1] * 2


def test_registration_gives_up_after_its_patience(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    script(monkeypatch, [throttled()] * 1000)
    slept: list[float] = []
    with pytest.raises(ApiError, match="too many attempts"):
        registration.register(
            endpoint="http://127.0.0.1:9", activation_id="id", activation_code="c" * 28,
            state_dir=tmp_path / "agent", sleep=slept.append,
        )  # fmt: skip
    assert registration.THROTTLED_PATIENCE <= sum(slept) <= registration.THROTTLED_PATIENCE + 15
    assert not (tmp_path / "agent" / "registration.json").exists()


def test_other_refusals_are_not_retried(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = script(monkeypatch, [ApiError("InvalidActivation", "not valid", 400)])
    with pytest.raises(ApiError, match="not valid"):
        registration.register(
            endpoint="http://127.0.0.1:9", activation_id="id", activation_code="c" * 28,
            state_dir=tmp_path / "agent", sleep=lambda _: pytest.fail("slept"),
        )  # fmt: skip
    assert len(calls) == 1
