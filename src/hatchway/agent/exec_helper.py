"""Tiny exec helper run between fork and the session's shell (docs/design.md, "Shell start
and input").

The agent starts it with ``start_new_session=True``, so it already leads a new session, and with
the PTY's slave end on stdin/stdout/stderr. Here, still with the agent's privileges, we make
that PTY our controlling terminal (TIOCSCTTY), then drop to the run-as user (supplementary
groups, gid, uid — in that order, and verified), change to the home directory and exec the
shell. Doing it here rather than in ``preexec_fn`` keeps the threaded agent fork-safe, and
doing it before exec (not via ``subprocess``'s ``user=``) lets root run this helper from an
interpreter the unprivileged user could not even read.

It runs as a script with ``python -I -S``: only the standard library, a few ms to start.

Usage: exec_helper.py [--no-ctty] UID GID GROUPS(comma-separated, may be empty) HOME PATH ARGV0
[ARG...]. With ``--no-ctty`` (a command without a terminal, NonInteractiveCommands) stdin is
a pipe and no controlling terminal is taken.
"""

import fcntl
import os
import sys
import termios


def main() -> None:
    args = sys.argv[1:]
    tty = not (args and args[0] == "--no-ctty")
    if not tty:
        args = args[1:]
    uid, gid = int(args[0]), int(args[1])
    groups = [int(g) for g in args[2].split(",") if g]
    home, path, argv = args[3], args[4], args[5:]
    end = "\r\n" if tty else "\n"
    if tty:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    if os.geteuid() != uid:
        os.setgroups(groups)
        os.setgid(gid)
        os.setuid(uid)
        if os.getuid() != uid or os.geteuid() != uid or os.getegid() != gid:
            sys.stderr.write("hatchway: could not drop privileges" + end)
            os._exit(126)
    try:
        os.chdir(home)
    except OSError:
        os.chdir("/")
    try:
        os.execv(path, argv)
    except OSError as exc:
        sys.stderr.write(f"hatchway: cannot run {path}: {exc.strerror}{end}")
        os._exit(127)


if __name__ == "__main__":
    main()
