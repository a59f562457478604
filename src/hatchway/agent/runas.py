"""Who a session runs as (docs/design.md, "Shell start and input"): the agent's own user,
or, when the agent is root, an unprivileged user (default ``hatchway-user``) created on first
use with a home and a login shell and no sudo rights."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hatchway.auth.atomicfile import exclusive_lock
from hatchway.errors import ConfigError

DEFAULT_RUN_AS = "hatchway-user"
_USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
#: Serialises ``useradd`` between agents on one machine. It lives in a directory that only
#: root can write (not in the world-writable ``/run/lock``, where anyone could plant a symlink
#: that root would then follow and truncate).
LOCK_DIR = Path("/run/hatchway")
LOCK_NAME = "useradd.lock"


@dataclass(frozen=True)
class RunAsUser:
    """A resolved account to run a session as."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    shell: str

    @property
    def switch_needed(self) -> bool:
        return self.uid != os.geteuid()


def _from_pwd(entry: pwd.struct_passwd) -> RunAsUser:
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    shell = entry.pw_shell if entry.pw_shell and os.path.exists(entry.pw_shell) else "/bin/sh"
    if shell.endswith(("nologin", "/false")):
        shell = "/bin/sh"
    return RunAsUser(entry.pw_name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir, shell)


def current_user() -> RunAsUser:
    return _from_pwd(pwd.getpwuid(os.geteuid()))


def resolve_run_as(
    default_user: str, requested: str = "", *, must_exist: bool = False
) -> RunAsUser:
    """The session's user: as the agent's user, or (as root) ``requested`` or the default.

    ``must_exist`` (the preferences' ``runAsEnabled``): ``requested`` is used only if it is
    an account on this node already; it is never created, as AWS's agent does.

    Raises:
        ConfigError: the name is not a user name, root by default, or (``must_exist``) no such
            user, or a user the agent (not being root) cannot switch to. The message says which.
    """
    if must_exist and requested:
        return existing_user(requested)
    if os.geteuid() != 0:
        return current_user()
    name = requested or default_user
    if not _USER_NAME.match(name):
        raise ConfigError(f"invalid run-as user name {name!r}")
    if name == "root" and not requested:
        raise ConfigError("refusing to run sessions as root by default")
    return ensure_user(name)


def existing_user(name: str) -> RunAsUser:
    """``name``'s account, which must exist (Run As, ``runAsEnabled``); never created."""
    if not _USER_NAME.match(name):
        raise ConfigError(f"the Run As user {name!r} is not a valid OS user name")
    try:
        user = _from_pwd(pwd.getpwnam(name))
    except KeyError:
        raise ConfigError(
            f"the Run As user {name} does not exist on this node; create it there or change "
            "the user's SSMSessionRunAs tag or the runAsDefaultUser preference"
        ) from None
    if user.switch_needed and os.geteuid() != 0:
        raise ConfigError(f"the agent does not run as root, so it cannot run sessions as {name}")
    return user


def ensure_user(name: str) -> RunAsUser:
    """Return the user, creating it (home, login shell, no extra groups) if missing.

    Idempotent and safe when several agents race: creation happens under an exclusive lock
    and re-checks the passwd database inside it.
    """
    try:
        return _from_pwd(pwd.getpwnam(name))
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    shell = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
    with exclusive_lock(LOCK_DIR, LOCK_NAME):
        try:
            return _from_pwd(pwd.getpwnam(name))
        except KeyError:
            pass
        result = subprocess.run(
            [useradd, "--create-home", "--shell", shell, "--user-group", name],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode not in (0, 9):  # 9: the name appeared meanwhile
            raise ConfigError(
                f"cannot create run-as user {name}: {result.stderr.strip() or result.returncode}"
            )
    return _from_pwd(pwd.getpwnam(name))


def login_environment(user: RunAsUser, term: str = "xterm-256color") -> dict[str, str]:
    """A clean login environment, as login(1) would give."""
    path = (
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        if user.uid == 0
        else "/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games"
    )
    return {
        "HOME": user.home,
        "SHELL": user.shell,
        "USER": user.name,
        "LOGNAME": user.name,
        "TERM": term,
        "PATH": path,
        "LANG": os.environ.get("LANG") or "C.UTF-8",
    }
