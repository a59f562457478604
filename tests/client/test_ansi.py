"""--strip-ansi: control sequences removed, text kept, the same however the text is cut."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hatchway.client.ansi import AnsiStripper, strip_ansi

# A shell prompt and output as bash with colours, readline and a title-setting PROMPT_COMMAND
# send them.
PROMPT = (
    "\x1b]0;alice@web-1: ~\x07\x1b[?2004h\x1b[01;32malice@web-1\x1b[00m:"
    "\x1b[01;34m~\x1b[00m$ ls\r\n\x1b[?2004l\r\x1b[0m\x1b[01;34mdir\x1b[0m  file.txt\r\n"
)


def test_csi_osc_and_escape_sequences_go_and_text_stays() -> None:
    assert strip_ansi(PROMPT) == "alice@web-1:~$ ls\r\n\rdir  file.txt\r\n"
    assert strip_ansi("a\x1b(Bb\x1b=c\x1b7d\x1b8e") == "abcde"  # charset, keypad, save/restore
    assert strip_ansi("\x1b]8;;https://x.example\x1b\\link\x1b]8;;\x1b\\") == "link"  # ST-ended
    assert strip_ansi("\x1bPq#0;2;0;0;0\x1b\\after") == "after"  # DCS (sixel)
    assert strip_ansi("\x9b31mred\x9b0m \x9d0;t\x9c.") == "red ."  # 8-bit C1 forms
    assert strip_ansi("tab\there\x07 bell") == "tab\there\x07 bell"  # BEL outside OSC stays


def test_cancel_aborts_a_sequence_and_controls_inside_are_kept() -> None:
    assert strip_ansi("a\x1b[12\x18b") == "ab"
    assert strip_ansi("a\x1b[1\n2mb") == "a\nb"
    assert strip_ansi("x\x1b[") == "x"  # unfinished at the end: removed


def test_malformed_sequences_never_swallow_text_after_them() -> None:
    assert strip_ansi("\x1b[1;é") == "é"
    assert strip_ansi("\x1b\x1b[31mz") == "z"


_PIECES = st.sampled_from(
    ["a", "é", "\r\n", "\t", "\x1b", "[", "]", "0", ";", "m", "\x07", "\\", "P", "(", "B",
     "\x9b", "\x9c", "\x18", "\x1b[31m", "\x1b]0;t\x07", "\x1b[?2004h", "世"]
)  # fmt: skip


@given(st.lists(_PIECES, max_size=40), st.data())
def test_stripping_in_pieces_equals_stripping_the_whole(pieces: list[str], data) -> None:
    text = "".join(pieces)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=5)))
    stripper = AnsiStripper()
    parts = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    assert "".join(stripper.feed(p) for p in parts) == strip_ansi(text)


@given(st.lists(_PIECES, max_size=40))
def test_no_escape_is_left_and_plain_text_is_untouched(pieces: list[str]) -> None:
    out = strip_ansi("".join(pieces))
    assert "\x1b" not in out and "\x9b" not in out and "\x9c" not in out


@given(st.text(alphabet=st.characters(blacklist_characters="\x1b\x9b\x9c\x9d\x90\x98\x9e\x9f")))
def test_text_without_sequences_is_unchanged(text: str) -> None:
    assert strip_ansi(text) == text
