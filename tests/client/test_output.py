"""Tables never pass a node's control characters to the terminal."""

from __future__ import annotations

import io

from hatchway.client.output import escape_controls, print_table


def test_escape_controls() -> None:
    assert escape_controls("web-1") == "web-1"
    assert escape_controls("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert escape_controls("\x9b31m") == "\\x9b31m"  # C1 CSI
    assert escape_controls("x\u202ey") == "x\\u202ey"  # right-to-left override
    assert escape_controls("naïve ünïcode") == "naïve ünïcode"


def test_a_hostile_node_cannot_draw_on_the_admins_terminal() -> None:
    out = io.StringIO()
    hostile = {
        "InstanceId": "mi-00000000000000001",
        "ComputerName": "\x1b[2J\x1b]52;c;ZXZpbA==\x07host\nmi-fake  Online",
        "Tags": [{"Key": "k\r", "Value": "\x1bv"}],
    }
    print_table([hostile], [("ID", "InstanceId"), ("HOST", "ComputerName"), ("TAGS", "Tags")], out)
    text = out.getvalue()
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text
    assert text.count("\n") == 2  # header and one row: no forged row
    assert "\\x1b[2J" in text


def test_secrets_stay_out_of_repr() -> None:
    from pathlib import Path

    from hatchway.client.config import Profile
    from hatchway.server.bootstrap import AdminCredentials

    profile = Profile("default", "https://h:1", "local", "HWAKX", "s3cr3t-value", Path("/ca"))
    admin = AdminCredentials("admin", "HWAKX", "s3cr3t-value")
    for value in (profile, admin):
        assert "s3cr3t-value" not in repr(value) and "HWAKX" in repr(value)
