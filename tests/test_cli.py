"""The CLI's edge: one line per error, never a traceback, exit statuses from one table."""

from __future__ import annotations

from pathlib import Path

import pytest

from hatchway.cli import main
from hatchway.client.exitstatus import ExitStatus


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    code = exited.value.code
    return int(code) if isinstance(code, int) else 1, capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        ("server", "--data-dir", "/proc/nope/x", "--listen", "127.0.0.1:0"),
        (
            "agent", "register", "--endpoint", "https://127.0.0.1:9", "--ca-fingerprint", "00",
            "--activation-id", "x", "--activation-code", "y", "--state-dir", "/proc/nope/x",
        ),
        ("agent", "run", "--state-dir", "/proc/nope/x"),
    ],
)  # fmt: skip
def test_bad_local_paths_give_one_line(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    status, err = run(capsys, *args)
    assert status == ExitStatus.ERROR
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("hatchway: "), err


def test_missing_profile_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, err = run(capsys, "--config", str(tmp_path / "none.toml"), "nodes")
    assert status == ExitStatus.ERROR
    assert err.count("\n") == 1 and "no client configuration" in err


@pytest.mark.parametrize(
    "args",
    [
        ("start-session",),
        ("start-session", "--target", "mi-0123456789abcdef0", "--parameters", "nokey"),
        ("start-session", "--target", "mi-0123456789abcdef0", "--parameters", '{"a":'),
        ("exec", "--target", "mi-0123456789abcdef0"),
        ("exec", "--target", "mi-0123456789abcdef0", "--timeout", "0", "--", "true"),
        ("ssh-proxy", "--target", "mi-0123456789abcdef0", "--port", "0"),
        ("port-forward", "--target", "mi-0123456789abcdef0"),
        ("port-forward", "--target", "mi-0123456789abcdef0", "--remote-port", "70000"),
    ],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], args: tuple[str, ...]) -> None:
    status, _ = run(capsys, *args)
    assert status == ExitStatus.USAGE


def test_unexpected_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import hatchway.client.config as config

    def boom(*_: object, **__: object) -> None:
        raise RuntimeError("kaboom\nsecond line")

    monkeypatch.setattr(config, "load_profile", boom)
    status, err = run(capsys, "nodes")
    assert status == ExitStatus.ERROR
    assert err == "hatchway: unexpected error (RuntimeError): kaboom second line\n"
