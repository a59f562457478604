"""``hatchway configure``: writes one profile of the client config file, privately and
atomically, keeping everything else; what it writes loads back with ``load_profile``."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import pytest

from hatchway.cli import main
from hatchway.client.config import load_profile
from hatchway.client.exitstatus import ExitStatus
from tests.client.fakeapi import invoke

NEW = ["--endpoint", "https://hw.example:8443", "--access-key-id", "HWAKDEV"]


def configure(config: Path, *args: str, input: str | None = None) -> tuple[int, str]:
    result = invoke("--config", str(config), "configure", *args, input=input)
    return result.exit_code, result.stderr


def test_writes_a_new_profile_privately_and_it_loads_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ca.pem").write_text("x")
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "sub" / "config.toml"
    status, err = configure(
        config, "--profile", "dev", *NEW, "--ca-file", "ca.pem", "--secret-access-key", "s3cr3t"
    )
    assert status == 0, err
    assert err == f"wrote profile dev to {config}\n"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    profile = load_profile(str(config), "dev", env={})
    assert profile.endpoint == "https://hw.example:8443"
    assert profile.access_key_id == "HWAKDEV"
    assert profile.secret_access_key == "s3cr3t"
    assert profile.region == "local"
    assert profile.ca_file == tmp_path / "ca.pem"  # stored absolute
    assert tomllib.loads(config.read_text())["profiles"]["dev"]["ca_file"] == str(
        tmp_path / "ca.pem"
    )


def test_updating_keeps_other_profiles_other_keys_and_the_secret(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        "[profiles.default]\n"
        'endpoint = "https://admin:8443"\naccess_key_id = "HWAKADMIN"\n'
        'secret_access_key = "admin-secret"\n\n'
        "[profiles.dev]\n"
        'endpoint = "https://old:8443"\naccess_key_id = "HWAKDEV"\n'
        'secret_access_key = "dev-secret"\nregion = "eu"\ncolour = "blue"\n\n'
        "[other]\nkept = 1\n"
    )
    config.chmod(0o644)
    status, err = configure(config, "--endpoint", "https://new:8443", "--profile=dev")
    assert status == 0, err
    data = tomllib.loads(config.read_text())
    assert data["other"] == {"kept": 1}
    assert data["profiles"]["default"] == {
        "endpoint": "https://admin:8443",
        "access_key_id": "HWAKADMIN",
        "secret_access_key": "admin-secret",
    }
    assert data["profiles"]["dev"] == {
        "endpoint": "https://new:8443",
        "access_key_id": "HWAKDEV",
        "secret_access_key": "dev-secret",
        "region": "eu",
        "colour": "blue",
    }
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


def test_values_and_names_are_escaped(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    secret = "a\"b\\c'd\te]\n[x]=#ü"
    name = 'we ird."name'
    status, err = configure(config, "--profile", name, *NEW, "--secret-access-key", secret,
                            "--region", 'r"1')  # fmt: skip
    assert status == 0, err
    profile = load_profile(str(config), name, env={})
    assert profile.secret_access_key == secret
    assert profile.region == 'r"1'
    assert list(tomllib.loads(config.read_text())["profiles"]) == [name]


def test_a_new_key_id_asks_for_its_secret_from_stdin(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    status, err = configure(config, *NEW, input="from-stdin\n")
    assert status == 0, err
    assert load_profile(str(config), None, env={}).secret_access_key == "from-stdin"


def test_the_prompt_does_not_echo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hatchway.client.secretprompt as secretprompt

    monkeypatch.setattr(secretprompt, "stdin_is_tty", lambda: True)
    config = tmp_path / "config.toml"
    result = invoke("--config", str(config), "configure", *NEW, input="typed-secret\n")
    assert result.exit_code == 0, result.output
    assert "typed-secret" not in result.output
    assert load_profile(str(config), None, env={}).secret_access_key == "typed-secret"


def test_a_new_profile_needs_endpoint_and_key(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    status, err = configure(config, "--access-key-id", "K", "--secret-access-key", "S")
    assert status == ExitStatus.USAGE
    assert "--endpoint" in err
    assert not config.exists()


@pytest.mark.parametrize(
    ("args", "word"),
    [
        (["--endpoint", "hw.example:8443"], "--endpoint"),
        (["--ca-file", "/nonexistent/ca.pem"], "--ca-file"),
    ],
)
def test_bad_values_are_refused(tmp_path: Path, args: list[str], word: str) -> None:
    config = tmp_path / "config.toml"
    status, err = configure(config, *NEW, "--secret-access-key", "S", *args)
    assert status == ExitStatus.USAGE
    assert word in err
    assert not config.exists()


def test_profile_and_config_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "env.toml"
    monkeypatch.setenv("HATCHWAY_CONFIG", str(config))
    monkeypatch.setenv("HATCHWAY_PROFILE", "envprof")
    main(["configure", *NEW, "--secret-access-key", "S"])
    assert list(tomllib.loads(config.read_text())["profiles"]) == ["envprof"]
    # --profile after the subcommand (hoisted by the group) names the profile to write
    main(["configure", *NEW, "--secret-access-key", "S", "--profile", "later"])
    assert sorted(tomllib.loads(config.read_text())["profiles"]) == ["envprof", "later"]
    assert "wrote profile later" in capsys.readouterr().err


def test_an_unreadable_config_is_not_overwritten(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("this is [not toml\n")
    status, _ = configure(config, *NEW, "--secret-access-key", "S")
    assert status != 0
    assert config.read_text() == "this is [not toml\n"
